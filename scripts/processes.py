"""This process's Ray processes and their memory, from /proc (Linux): shared by the benchmarks and the tests.

ray.init starts GCS and the raylet as children of the calling process, and the raylet starts the workers and
replicas, so the processes below the caller are its own Ray, never another session's.
"""

from __future__ import annotations

import os
from pathlib import Path


def descendants(root: int) -> set[int]:
    """Every process below `root`."""
    children: dict[int, list[int]] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # after the command name, which may hold spaces
        children.setdefault(ppid, []).append(int(pid))
    found: set[int] = set()
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def ray_processes(root: int | None = None) -> dict[int, str]:
    """The Ray processes (GCS, raylet, workers, replicas) below `root` (default: this process): pid -> title."""
    out: dict[int, str] = {}
    for pid in descendants(os.getpid() if root is None else root):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if "ray::" in title or "raylet" in title or "gcs_server" in title:
            out[pid] = title
    return out


def memory_mb(pid: int, field: str = "RssAnon", source: str = "status") -> float:
    """One "<field>: N kB" line of /proc/<pid>/<source> in MB (RssAnon of status: the private heap; Pss of
    smaps_rollup: the proportional share); 0 when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/{source}").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0
