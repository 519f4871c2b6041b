"""Peak memory of this process, as every benchmark reports it."""

from __future__ import annotations

import resource
from pathlib import Path

__all__ = ["memory_line", "peak_rss_mb"]


def peak_rss_mb() -> float:
    """Peak resident memory of this process since its ``exec`` (MiB).

    ``VmHWM`` of ``/proc/self/status`` where there is one: unlike the rusage ``ru_maxrss``,
    it does not include the pages of the parent that forked this process.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def memory_line(peak_rss_mb: float, cuda_mb: float | None) -> str:
    """The memory line of a report's summary."""
    cuda = "" if cuda_mb is None else f", CUDA max allocated {cuda_mb:.0f} MiB"
    return f"peak RSS {peak_rss_mb:.0f} MiB{cuda}"
