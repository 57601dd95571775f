"""The C heap of a long streaming job: large buffers go back to the system when freed.

glibc serves an allocation from its heap, not from a memory map of its own, once a map of that
size has been freed (its mmap threshold rises up to 32 MiB). A restore allocates and frees
buffers of a few MiB for every batch of tiles; from the heap, their freed space fragments and
resident memory creeps up with the number of tiles (about 0.6 times the stack's size on a
256 MiB stack), not with the tile size. A fixed threshold keeps such buffers in maps of their
own, returned to the system on free.
"""

from __future__ import annotations

import ctypes
import sys

M_MMAP_THRESHOLD = -3
"""glibc's `mallopt` parameter number for the mmap threshold."""
MMAP_THRESHOLD = 2**20
"""Allocations of at least this many bytes get a memory map of their own."""


def return_large_buffers() -> bool:
    """Fix the process's mmap threshold at `MMAP_THRESHOLD` (glibc on Linux); True when set.

    Elsewhere (macOS, Windows, musl) nothing changes and this returns False."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
