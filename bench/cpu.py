"""CPU time from /proc: a process tree's, and the whole machine's (Linux only)."""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")


def _process_ticks(pid: int) -> int:
    """utime + stime of one process, in clock ticks; 0 once it has gone."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return 0
    fields = stat[stat.rindex(")") + 2:].split()  # the command name may hold spaces and parentheses
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def _children(pid: int) -> list[int]:
    children: list[int] = []
    for task in (PROC / str(pid) / "task").glob("*"):
        try:
            children.extend(int(child) for child in (task / "children").read_text().split())
        except OSError:
            continue
    return children


def process_tree_pids(pid: int) -> list[int]:
    """The process and its live descendants, the process first."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        pending.extend(_children(current))
    return found


def process_tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and its live descendants."""
    return sum(_process_ticks(current) for current in process_tree_pids(pid)) / CLOCK_TICKS


@dataclass(frozen=True)
class MachineTimes:
    busy_s: float
    total_s: float


def machine_cpu_times() -> MachineTimes:
    """Busy and total CPU seconds of all cores since boot (the `cpu` line of /proc/stat)."""
    values = [int(value) for value in (PROC / "stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return MachineTimes(busy_s=(total - idle) / CLOCK_TICKS, total_s=total / CLOCK_TICKS)


def cpu_model() -> str:
    """The CPU's model name as lscpu (or /proc/cpuinfo) reports it."""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True, timeout=10).stdout
        for line in lscpu.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    for line in (PROC / "cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"
