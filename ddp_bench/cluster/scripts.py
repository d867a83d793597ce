"""Which script a profile gets: Slurm (`jobscript.py`) or PBS (`pbs.py`), for one job, a one-job series, and the
reference scripts shipped in slurm/ (one full node of each kind of GPU node of each profile)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

from ddp_bench.cluster.jobscript import (
    JobShape,
    SeriesStep,
    reference_script_name,
    reference_shape,
    render,
    render_series,
)
from ddp_bench.cluster.pbs import render_pbs, render_pbs_series
from ddp_bench.cluster.profiles import PROFILES, RETIRED
from ddp_bench.cluster.site_types import ClusterProfile, GpuNode


def render_job(profile: ClusterProfile, shape: JobShape, flags: Sequence[str], job_name: str, script_name: str) -> str:
    if profile.scheduler == "pbs":
        return render_pbs(profile, shape, flags, job_name, script_name, whole_job=False)
    return render(profile, shape, flags, job_name=job_name, script_name=script_name)


def render_job_series(
    profile: ClusterProfile, shape: JobShape, steps: Sequence[SeriesStep], job_name: str, script_name: str
) -> str:
    if profile.scheduler == "pbs":
        return render_pbs_series(profile, shape, steps, job_name, script_name)
    return render_series(profile, shape, steps, job_name, script_name)


def render_reference(profile: ClusterProfile, node: GpuNode | None = None) -> str:
    """The shipped script for one full node of this kind, with the profile's fast flags baked in."""
    node = node or profile.nodes[0]
    shape, name = reference_shape(profile, node), reference_script_name(profile, node)
    if profile.scheduler == "pbs":
        return render_pbs(profile, shape, profile.default_flags, "ddp_bench", name, whole_job=True)
    return render(profile, shape, profile.default_flags, script_name=name)


def shipped_files() -> Iterator[tuple[str, str]]:
    """(path under the checkout, text) of every shipped script, and of slurm/README.md, which lists them."""
    for profile in PROFILES.values():
        for node in profile.nodes:
            yield reference_script_name(profile, node), render_reference(profile, node)
    yield "slurm/README.md", slurm_readme()


def slurm_readme() -> str:
    """Every shipped script with its site's facts and where each came from (the scripts' own headers)."""
    parts = [
        "# Job scripts\n\n"
        "Rendered from the profile table (`ddp_bench/cluster/profiles.py`, `profiles_alcf.py`); regenerate them\n"
        "with `python -c 'from ddp_bench.cluster.scripts import write_shipped; write_shipped()'` (a test keeps them\n"
        "in sync). Every fact is from `../shared/notes/clusters-2026.md`, research notes of 2026-12-01 on stored\n"
        "copies of the sites' documentation, not checked on a live cluster; each names its page in [brackets], and\n"
        'each section lists the pages. Where the notes found nothing, the profile says "not found" instead of a\n'
        "number. `sweep` and `check` refuse what a site forbids before anything is submitted (docs/cluster.md).\n"
        "Retired clusters have no script; `--cluster NAME` names the successor:\n\n"
        "| cluster | | use |\n|---|---|---|\n"
    ]
    parts += [f"| {c.name} | {c.title} {c.retired} | `--cluster {c.successor}` |\n" for c in RETIRED.values()]
    for profile in PROFILES.values():
        scripts = ", ".join(f"`{reference_script_name(profile, node)}`" for node in profile.nodes)
        parts.append(f"\n## {profile.title}\n\n{scripts}: the facts at the top of the script\n\n```\n")
        parts += [f"{fact}\n" for fact in profile.facts]
        parts.append("```\n")
        if profile.sources:
            parts.append("\nSources:\n\n" + "".join(f"- {source}\n" for source in profile.sources))
    return "".join(parts)


def write_shipped(root: str = ".") -> None:
    for path, text in shipped_files():
        with open(os.path.join(root, path), "w", encoding="utf-8") as handle:
            handle.write(text)
