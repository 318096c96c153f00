"""A process's CPU time, page faults and memory, read from ``/proc`` (proc(5)), for the
benchmarks: they count CPU time, never wall time (DESIGN.md §10)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Usage:
    """A process's CPU time in seconds, in user space and in the kernel, and page faults."""

    user: float
    system: float
    faults: int
    """Minor page faults: each new page the kernel hands out (zeroed) counts one."""

    @property
    def total(self) -> float:
        return self.user + self.system

    def __sub__(self, other: Usage) -> Usage:
        return Usage(self.user - other.user, self.system - other.system, self.faults - other.faults)


def usage(pid: int) -> Usage:
    """utime, stime and minflt of ``pid`` (fields 14, 15 and 10; field 2, the name, may hold
    spaces, so fields are counted after its closing parenthesis). OSError if it has gone."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return Usage(int(fields[11]) / TICKS, int(fields[12]) / TICKS, int(fields[7]))


def rss(pid: int) -> int | None:
    """Resident memory of ``pid`` in bytes (VmRSS), or None where the kernel gives none."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None
