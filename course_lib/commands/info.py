"""``course-lib info``: version, device, profile and which datasets are available."""
from __future__ import annotations

from .. import __version__
from ..config import data_root, describe_device, get_device, get_profile
from ..data import DATASETS, is_available
from ..threads import thread_info
from .common import add_common


def register(sub) -> None:
    p = sub.add_parser("info", help="version, device, profile and dataset availability")
    add_common(p, seed=False)
    p.set_defaults(func=run)


def collect(profile: str | None = None) -> dict:
    device = get_device()  # a bad COURSE_DEVICE / profile is reported before any dataset is read
    profile_name = get_profile(profile).name
    datasets = []
    for name, spec in ((e.name, e.obj) for e in DATASETS.entries()):
        ok, why = is_available(name)
        datasets.append({"name": name, "embedded": spec.embedded, "available": ok, "why": why,
                         "description": spec.description})
    return {"version": __version__, "device": str(device), "device_message": describe_device(device),
            "profile": profile_name, "data_root": str(data_root()), "threads": thread_info(),
            "datasets": datasets}


def run(args) -> int:
    from .common import emit

    info = collect(args.profile)
    lines = [f"course_lib {info['version']}", info["device_message"], f"profile: {info['profile']}",
             f"data root: {info['data_root']}",
             f"CPU threads: {info['threads']['torch_threads']} ({info['threads']['why']}; "
             f"OMP_WAIT_POLICY: {info['threads']['omp_wait_policy']}; COURSE_THREADS=N fixes the number)",
             "datasets:"]
    for d in info["datasets"]:
        mark = "yes" if d["available"] else "no "
        lines.append(f"  [{mark}] {d['name']:<14} {d['why']}")
    emit(info, args.json, "\n".join(lines))
    return 0
