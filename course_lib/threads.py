"""CPU threading that degrades gracefully when other programs share the cores.

PyTorch's CPU kernels run on an OpenMP thread pool with one thread per core. A thread that has
finished its share of a parallel loop *spins* while it waits for the others. That is what makes
small kernels fast on an idle machine, and what makes them slow on a busy one: when another
program keeps one core busy, the operating system deschedules one of torch's threads and every
parallel loop waits for it. ``benchmarks/load.py`` measured, on a 2-core machine with one busy
core, a ConvNet double-backward step at a fifth of its idle speed. Sleeping instead of spinning
(``OMP_WAIT_POLICY=PASSIVE``) cures the slowdown but costs about 40 % of the idle speed of the
same loop, because every wake-up is slow.

The course therefore keeps OpenMP's default and adapts the *number* of threads instead:

:func:`adapt`
    Called by the long loops (training, the inversion, probe construction, UMA, ...). At most once
    a second it reads how much CPU time the other processes on this process's cores took since the
    last reading (``/proc/stat`` minus this process's own time) and sets torch's intra-op threads
    to the cores left free: two on an idle 2-core machine, one beside a busy core. It costs a few
    microseconds when nothing changes.
``COURSE_THREADS``
    A number fixes the thread count and switches the adaptation off; unset (or ``auto``) adapts.
    The cores this process may use come from its CPU affinity and a container's cgroup CPU quota.
``OMP_WAIT_POLICY``
    Left to the user; ``PASSIVE`` still works on top of the adaptation.

``course-lib info`` prints :func:`thread_info`: the threads in use and why.
"""
from __future__ import annotations

import math
import os
import time

#: Seconds between two load readings of :func:`adapt`.
ADAPT_INTERVAL = 1.0

_state: dict = {"last": None, "other_cores": None}


def _cgroup_cpu_limit() -> float | None:
    """CPUs allowed by a cgroup-v2 (``cpu.max``) or v1 (``cfs_quota_us``) quota, or ``None``."""
    try:
        with open("/sys/fs/cgroup/cpu.max", encoding="ascii") as fh:
            quota, period = fh.read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", encoding="ascii") as fh:
            quota_us = int(fh.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us", encoding="ascii") as fh:
            period_us = int(fh.read())
        return quota_us / period_us if quota_us > 0 else None
    except (OSError, ValueError):
        return None


def _affinity() -> set[int] | None:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def available_cores() -> tuple[int, str]:
    """How many cores this process may use, and where that number comes from."""
    cpus = _affinity()
    cores, source = (len(cpus), "CPU affinity") if cpus else (os.cpu_count() or 1, "cpu_count")
    quota = _cgroup_cpu_limit()
    if quota is not None and math.ceil(quota) < cores:
        return max(1, math.ceil(quota)), f"cgroup CPU quota ({quota:g} CPUs)"
    return max(1, cores), source


def fixed_threads() -> int | None:
    """The thread count ``COURSE_THREADS`` fixes, or ``None`` when it asks to adapt (unset / ``auto``)."""
    from .errors import CourseError

    text = os.environ.get("COURSE_THREADS", "").strip().lower()
    if text in ("", "auto"):
        return None
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise CourseError(f"COURSE_THREADS must be a whole number of threads >= 1, or 'auto'; got {text!r}. "
                          "Unset it to let the course adapt to the free cores.")
    return n


def _busy_seconds() -> float | None:
    """CPU-seconds spent (by anyone) on this process's cores since boot, from ``/proc/stat``."""
    cpus = _affinity()
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            lines = [ln.split() for ln in fh if ln.startswith("cpu") and ln[3:4].isdigit()]
    except OSError:
        return None
    ticks = 0
    for fields in lines:
        if cpus is not None and int(fields[0][3:]) not in cpus:
            continue
        # user nice system idle iowait irq softirq steal ...: everything but idle and iowait is busy
        values = [int(v) for v in fields[1:9]]
        ticks += sum(values) - values[3] - values[4]
    return ticks / os.sysconf("SC_CLK_TCK")


def other_load() -> float | None:
    """Cores the *other* processes kept busy between the last two readings (``None`` before two)."""
    return _state["other_cores"]


def adapt(force: bool = False) -> int:
    """Set torch's intra-op threads to the cores other processes leave free; return the count.

    Cheap to call on every step of a loop: it reads the load at most every :data:`ADAPT_INTERVAL`
    seconds (``force`` reads now). With ``COURSE_THREADS`` set it applies that number instead.
    """
    import torch

    fixed = fixed_threads()
    if fixed is not None:
        if torch.get_num_threads() != fixed:
            torch.set_num_threads(fixed)
        return fixed
    now = time.monotonic()
    last = _state["last"]
    if last is not None and not force and now - last[0] < ADAPT_INTERVAL:
        return torch.get_num_threads()
    busy, own = _busy_seconds(), time.process_time()
    cores, _ = available_cores()
    n = cores
    if busy is not None:
        if last is not None and now > last[0]:
            other = max(0.0, ((busy - last[1]) - (own - last[2])) / (now - last[0]))
            _state["other_cores"] = other
            n = min(cores, max(1, cores - int(round(other))))
        elif _state["other_cores"] is not None:
            n = min(cores, max(1, cores - int(round(_state["other_cores"]))))
        _state["last"] = (now, busy, own)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def configure_threads() -> int:
    """Apply the thread choice once (``course_lib`` calls it on import); return the count."""
    return adapt(force=True)


def thread_info() -> dict:
    """Threads in use and why: what ``course-lib info`` prints."""
    import torch

    fixed = fixed_threads()
    cores, source = available_cores()
    if fixed is not None:
        why = "fixed by COURSE_THREADS"
    else:
        other = other_load()
        seen = "" if other is None else f"; other processes last used {other:.1f} of them"
        why = f"adapted to the free cores: {cores} available ({source}){seen}"
    policy = os.environ.get("OMP_WAIT_POLICY", "")
    return {"torch_threads": torch.get_num_threads(), "available_cores": cores, "adaptive": fixed is None,
            "why": why, "omp_wait_policy": policy or "OpenMP default"}
