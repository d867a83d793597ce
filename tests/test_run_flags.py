"""The run's flags come from BenchConfig's fields (issue #24): their defaults and choices are pinned in a snapshot,
so a changed default is a visible, reviewed change, and a parse of no flags is exactly BenchConfig()."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from pathlib import Path

from ddp_bench.args import build_run_parser, parse_args
from ddp_bench.config import DEFAULT_IMAGE_SIZE, DEFAULT_STEPS, BenchConfig, flag_name
from ddp_bench.flag_bounds import BOUNDS

SNAPSHOT = Path(__file__).parent / "snapshots" / "run_flags.txt"
REGENERATE = "python tests/test_run_flags.py > tests/snapshots/run_flags.txt"


def run_flags_listing() -> str:
    """One line per run flag: its name, default, and choices or type, in the parser's order."""
    lines = []
    for action in build_run_parser()._actions:
        if not action.option_strings or action.dest in ("help", "version"):
            continue
        if action.choices:
            kind = "choices=" + ",".join(action.choices)
        elif isinstance(action, argparse._StoreTrueAction):
            kind = "switch"
        else:
            kind = "type=" + getattr(action.type, "__name__", "str").lstrip("_")
        hidden = " hidden" if action.help == argparse.SUPPRESS else ""
        lines.append(f"{action.option_strings[0]} default={action.default!r} {kind}{hidden}")
    lines.append(f"--steps when neither --steps nor --epochs is given: {DEFAULT_STEPS}")
    lines.append(f"--image-size with --data imagefolder when not given: {DEFAULT_IMAGE_SIZE}")
    return "\n".join(lines) + "\n"


def test_the_run_flags_and_their_defaults_match_the_snapshot():
    assert run_flags_listing() == SNAPSHOT.read_text(), f"a run flag or default changed; if intended: {REGENERATE}"


def test_no_flags_give_the_config_dataclass_defaults():
    assert parse_args([]) == BenchConfig()


def test_every_config_field_is_a_run_flag():
    flags = {option for action in build_run_parser()._actions for option in action.option_strings}
    assert {flag_name(field.name) for field in dataclasses.fields(BenchConfig)} <= flags


def test_every_numeric_run_flag_has_bounds():
    hints = typing.get_type_hints(BenchConfig)
    numeric = {
        flag_name(name)
        for name, hint in hints.items()
        if {int, float} & {hint, *typing.get_args(hint)} and name != "target_accuracy"  # a fraction: _check_target
    }
    assert numeric <= BOUNDS.keys()


if __name__ == "__main__":
    print(run_flags_listing(), end="")
