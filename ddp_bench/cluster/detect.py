"""`--cluster auto`: which cluster is this, and why we think so.

What can be trusted, in order:
- `CC_CLUSTER`, which the Alliance's software environment sets on every one of its clusters (from
  /etc/environment; `computecanada` where it cannot name the cluster): ComputeCanada/software-stack-config,
  profile.d/z-000-init.sh, which also lists rorqual, nibi, fir, trillium, tamia, killarney and vulcan as values;
- the PBS server in `PBS_JOBID` (123.polaris-pbs-01.hsn.cm.polaris.alcf.anl.gov on Polaris);
- the host name: ALCF's login nodes (polaris-login-NN, *.polaris.alcf.anl.gov; ALCF's getting-started page), and
  sophia-* (how ezpz recognises Sophia).
Nothing else is guessed: where none of these answers, the generic profile is used and `check` says so.
"""

from __future__ import annotations

import fnmatch
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from ddp_bench.cluster.profiles import PROFILES, RETIRED, get_profile
from ddp_bench.errors import UsageError


@dataclass(frozen=True)
class Detection:
    name: str  # the profile chosen
    reason: str  # why, in words a user can check


def detect_cluster(env: Mapping[str, str], hostnames: tuple[str, ...]) -> Detection:
    """The profile for this machine, from its environment and host names (short and fully qualified)."""
    cc_cluster = env.get("CC_CLUSTER", "").strip().lower()
    if cc_cluster in RETIRED:
        raise UsageError(f"CC_CLUSTER={cc_cluster}: {RETIRED[cc_cluster].message()}")
    for profile in PROFILES.values():
        if cc_cluster and profile.cc_cluster == cc_cluster:
            return Detection(profile.name, f"CC_CLUSTER={cc_cluster}, set by the Alliance's software environment")
    server = env.get("PBS_JOBID", "").partition(".")[2].lower()
    for profile in PROFILES.values():
        if server and profile.pbs_server and profile.pbs_server in server:
            return Detection(profile.name, f"PBS_JOBID names the PBS server {server}")
    for profile in PROFILES.values():
        for host in hostnames:
            if any(fnmatch.fnmatch(host.lower(), pattern) for pattern in profile.host_patterns):
                return Detection(profile.name, f"the host name {host} is {profile.short_title}'s")
    if cc_cluster:
        return Detection("generic", f"CC_CLUSTER={cc_cluster} has no profile here: the generic one is used")
    return Detection(
        "generic", "no CC_CLUSTER, no known PBS server and no known host name: the generic profile is used"
    )


def resolve_cluster(name: str, env: Mapping[str, str], hostnames: tuple[str, ...]) -> Detection:
    """--cluster NAME as given (retired and unknown names refused), or what `auto` finds."""
    if name != "auto":
        return Detection(get_profile(name).name, "--cluster " + name)
    return detect_cluster(env, hostnames)


def this_host() -> tuple[str, ...]:
    short, full = socket.gethostname(), socket.getfqdn()
    return (short, full) if full != short else (short,)
