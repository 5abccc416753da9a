"""CPU time and resident memory of processes, and busy time per CPU, from /proc (Linux)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (nginx: master and workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry.name))[1])
        except (OSError, ValueError, IndexError):
            continue  # the process ended while we looked
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name is in parentheses and may hold spaces: split after its closing one.
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of all threads of ``pids``, in seconds (clock-tick resolution)."""
    user, system = user_system_seconds(pids)
    return user + system


def user_system_seconds(pids: list[int]) -> tuple[float, float]:
    """(utime, stime) of ``pids``: how much of a process's CPU is its own code and how much
    the kernel's work for it (socket syscalls, for a proxy)."""
    user = system = 0
    for pid in pids:
        try:
            fields = _stat_fields(pid)
        except OSError:
            continue
        user += int(fields[11])  # utime: field 14 of stat
        system += int(fields[12])  # stime: field 15
    return user / CLOCK_TICKS, system / CLOCK_TICKS


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
        except OSError:
            continue
    return total


@dataclass(frozen=True, slots=True)
class CpuTimes:
    busy: float  # seconds
    total: float


def per_cpu_times() -> dict[str, CpuTimes]:
    """Busy and total seconds per CPU since boot (to show which core ran out)."""
    result = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        ticks = [int(v) for v in values[:8]]
        idle = ticks[3] + ticks[4]  # idle + iowait
        result[name] = CpuTimes((sum(ticks) - idle) / CLOCK_TICKS, sum(ticks) / CLOCK_TICKS)
    return result


def sample_busy(seconds: float) -> dict[str, float]:
    """Busy % of each CPU over the next ``seconds`` (blocks)."""
    before = per_cpu_times()
    time.sleep(seconds)
    return busy_percent(before, per_cpu_times())


def busy_percent(before: dict[str, CpuTimes], after: dict[str, CpuTimes]) -> dict[str, float]:
    out = {}
    for name, end in after.items():
        start = before.get(name)
        if start is None or end.total <= start.total:
            continue
        out[name] = round(100 * (end.busy - start.busy) / (end.total - start.total), 1)
    return out
