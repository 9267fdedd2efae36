"""Helpers shared by the benchmark scripts: device naming, machine load and timing."""

from __future__ import annotations

import os
import platform
import time

import jax


def device_name() -> str:
    device = jax.devices()[0]
    kind = getattr(device, "device_kind", device.platform)
    if device.platform == "cpu":
        return f"cpu ({platform.processor() or platform.machine()}, {_cpu_count()} cores)"
    return f"{device.platform} ({kind}) x{jax.device_count()}"


def load_note() -> str:
    """The 1/5/15-minute load averages: a shared machine's other work shows in its timings."""
    if hasattr(os, "getloadavg"):
        return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    return "load average unknown"


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def timed(fn, *args, repeats: int = 3):
    """Best wall time of ``repeats`` calls after a warm-up call (which includes compilation).

    Returns ``(first_call_seconds, best_seconds, result)``.
    """
    start = time.perf_counter()
    result = jax.block_until_ready(fn(*args))
    first = time.perf_counter() - start
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return first, best, result
