"""What `retrieval bench` reads about the machine, its own processes (Linux /proc first) and
the files it measures (sizes, megapixels).

Peak RSS: `VmHWM` of /proc/self/status, restartable by writing 5 to /proc/self/clear_refs, so
each stage gets its own high-water mark; elsewhere `ru_maxrss`, which only grows.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
from collections.abc import Iterator, Sequence
from typing import Any

from ..sources.baseline import megapixels


def reset_peak_rss() -> None:
    """Restart this process's RSS high-water mark (Linux; elsewhere it only grows)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


class WorkerPeak:
    """The largest peak RSS seen among this process's children (the decode workers).

    Polled while they run: a spawned child's `ru_maxrss` also counts the parent's pages it
    held between fork and exec, so `RUSAGE_CHILDREN` would report the parent's size.
    """

    def __init__(self) -> None:
        self.peak = 0

    def poll(self, *_: object) -> None:
        for pid in _children():
            self.peak = max(self.peak, _status_bytes("VmHWM:", pid))


def _children() -> list[str]:
    pids: list[str] = []
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/children") as fh:
                pids.extend(fh.read().split())
    except OSError:
        pass
    return pids


def current_rss() -> int:
    """This process's RSS in bytes now (0 where /proc is missing)."""
    return _status_bytes("VmRSS:")


def peak_rss() -> int:
    """This process's peak RSS in bytes since the last reset."""
    return _status_bytes("VmHWM:") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _status_bytes(field: str, pid: str = "self") -> int:
    """A kB field of /proc/PID/status in bytes; 0 when unreadable."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def machine_facts() -> dict[str, Any]:
    return {
        "cpu": _cpu_name(),
        "cpus": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "cpu_flags": sorted(_cpu_flags() & {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _cpuinfo() -> Iterator[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            yield from fh
    except OSError:
        return


def _cpu_name() -> str:
    for line in _cpuinfo():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _cpu_flags() -> set[str]:
    for line in _cpuinfo():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def megapixels_summary(paths: Sequence[bytes]) -> dict[str, float]:
    """Mean and largest megapixels (from headers) and total bytes of `paths`."""
    sizes = []
    for path in paths:
        try:
            sizes.append(megapixels(path))
        except Exception:  # noqa: BLE001 - unreadable files count as 0 MP
            sizes.append(0.0)
    return {
        "megapixels_mean": round(statistics.fmean(sizes), 2),
        "megapixels_max": round(max(sizes), 2),
        "bytes_total": sum(file_size(p) for p in paths),
    }


def file_size(path: bytes) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
