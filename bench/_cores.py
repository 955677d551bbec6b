"""The timed rows' own readings of separate cores (bench/conftest.py's ``separate_cores``), read
back by bench/report.py: which groups ran a row while the host ran its CPUs on one core, the
report's line on them, and their rows timed once more in place of their first times."""

from __future__ import annotations

from typing import Any

from _machine import shared_core

SHARED = "shared core"  # a group one of whose rows ran while the host ran its CPUs on one core


def group_key(b: dict[str, Any]) -> tuple:
    """The (kind, device, workload) a benchmark's row belongs to: its peers share it."""
    info = b.get("extra_info", {})
    return info.get("kind"), info.get("device"), info.get("workload")


def shared(peers: dict[str, Any]) -> bool:
    return any(shared_core(b.get("extra_info", {})) for b in peers.values())


def _timed(groups: dict) -> list[dict[str, Any]]:
    # The groups whose times compare engines on this process's threads: not the memory and
    # cold-start rows, which measure processes of their own.
    return [peers for (kind, _, _), peers in groups.items() if kind not in ("memory", "cold start")]


def row_cores(groups: dict, remeasured: list[str], threads: Any) -> list[str]:
    """The report's line on the timed rows' readings of separate cores (none in older runs)."""
    read = [peers for peers in _timed(groups) if any("cores" in b["extra_info"] for b in peers.values())]
    if not read:
        return []
    waited = sum(b["extra_info"].get("cores_waited_s", 0) for peers in read for b in peers.values())
    again = f"; {len(remeasured)} rows of groups so marked were timed again at the end, in place of their first " \
        "times (the count and the marks are the second times')" if remeasured else ""
    return [f"Every timed row read the {threads}-thread matmul speedup (10 ms) before and after: "
            f"{sum(map(shared, read))} of {len(read)} groups had a row run while the CPUs shared a core (marked "
            f"\"{SHARED}\": not two cores' ratios); the rows waited {waited:.0f} s in all for separate cores{again}"]


def shared_rows(groups: dict) -> list[str]:
    """The pytest node ids of every timed row of the groups marked SHARED: report.py times them again."""
    return sorted(b["fullname"] for peers in _timed(groups) if shared(peers)
                  for b in peers.values() if "fullname" in b)


def merge_again(data: dict[str, Any], again: dict[str, Any]) -> dict[str, Any]:
    """``data`` with the rows timed again (``again``, a second run's JSON) in place of their first
    times, a whole group at a time (a group some of whose rows did not come back keeps all its
    first times: a ratio is read inside one run), and the node ids replaced under "remeasured"."""
    new = {b["fullname"]: b for b in again.get("benchmarks", [])}
    groups: dict[tuple, list[str]] = {}
    for b in data["benchmarks"]:
        groups.setdefault(group_key(b), []).append(b.get("fullname"))
    whole = {name for names in groups.values() if all(n in new for n in names) for name in names}
    return dict(data, benchmarks=[new[b["fullname"]] if b.get("fullname") in whole else b for b in data["benchmarks"]],
                remeasured=sorted(whole))
