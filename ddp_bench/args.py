"""The run's flags: `parse_args(argv)` turns a command line into a `BenchConfig`, and `Parser` is argparse with
one-line errors. Pure (no torch import), so every verb and the tests share it and a bad flag is answered at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Sequence
from typing import Literal

from ddp_bench import __version__
from ddp_bench.config import BenchConfig, flag_name
from ddp_bench.errors import UsageError


class Parser(argparse.ArgumentParser):
    """argparse, but its complaints become one-line UsageErrors instead of usage text and sys.exit."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(message)


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def build_run_parser() -> argparse.ArgumentParser:
    """The run's flags, one per BenchConfig field: its default, help text, type and choices come from the field."""
    parser = Parser(
        prog="python -m ddp_bench",
        description="Benchmark DistributedDataParallel CNN training; writes one CSV row per rank.",
        epilog=(
            "Verbs: run (default), download, report, sweep, check, allreduce. "
            "Launch with torchrun, srun or mpiexec for several ranks."
        ),
    )
    parser.add_argument("--version", action="version", version=f"ddp_bench {__version__}")
    hints = typing.get_type_hints(BenchConfig)
    exclusive_groups: dict[str, argparse._MutuallyExclusiveGroup] = {}
    for config_field in dataclasses.fields(BenchConfig):
        option = config_field.metadata
        target = parser
        if option["one_of"]:
            if option["one_of"] not in exclusive_groups:
                exclusive_groups[option["one_of"]] = parser.add_mutually_exclusive_group()
            target = exclusive_groups[option["one_of"]]
        help_text = argparse.SUPPRESS if option["hidden"] else option["help"]
        target.add_argument(
            flag_name(config_field.name),
            default=config_field.default,
            help=help_text,
            **_value_kind(hints[config_field.name]),
        )
    return parser


def _value_kind(hint: object) -> dict[str, object]:
    """How argparse reads a field of this annotation: a switch for bool, choices for a Literal, else its type."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))  # int | None reads an int
    if hint is bool:
        return {"action": "store_true"}
    if typing.get_origin(hint) is Literal:
        return {"choices": typing.get_args(hint)}
    return {"type": {int: _integer, float: float, str: None}[hint]}


def parse_args(argv: Sequence[str]) -> BenchConfig:
    args = build_run_parser().parse_args(list(argv))
    return BenchConfig(**vars(args))
