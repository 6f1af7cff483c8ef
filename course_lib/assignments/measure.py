"""What the exercise pages cost and measure, per profile and seed, for the instructors' guide.

:func:`measure_pages` executes each exercise page (the solution version, as the book does) in a
fresh kernel at a profile, once per seed (``SEED = <seed>`` is appended to the page's parameters
cell, as papermill does), and records the wall-clock and CPU seconds, the machine's load, and
the values the page glued with :func:`course_lib.exercises.record_measurements`. The records are
merged into a JSON file that the instructors' guide reads (``book/exercises/measured.json``);
rerun ``course-lib assign measure`` to refresh it on another machine or profile.
"""
from __future__ import annotations

import json
import os
import platform
import re
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import nbformat

from ..errors import CourseError
from ..results import atomic_write_text
from .grade import _cpu_seconds, _environment
from .source import read_notebook

GLUE_MIME = "application/papermill.record/text/plain"


def glued_values(nb: nbformat.NotebookNode) -> dict[str, float]:
    """The numbers an executed notebook glued (MyST-NB's ``glue(..., display=False)``), by key."""
    values = {}
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            name = output.get("metadata", {}).get("scrapbook", {}).get("name")
            if name and GLUE_MIME in output.get("data", {}):
                try:
                    values[name] = float(output["data"][GLUE_MIME])
                except ValueError:
                    continue
    return values


def with_seed(nb: nbformat.NotebookNode, seed: int) -> nbformat.NotebookNode:
    """A copy of ``nb`` whose parameters cell ends with ``SEED = seed``."""
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            if "SEED" not in cell.source:
                raise CourseError("This page's parameters cell has no SEED; measure it without --seeds.")
            cell.source += f"\nSEED = {int(seed)}  # set by course-lib assign measure"
            return nb
    raise CourseError("This page has no cell tagged `parameters`.")


def run_page(path: Path, *, profile: str, seed: int | None, timeout: int = 1800) -> dict:
    """Execute one page at ``profile`` (and ``seed``); return its cost, the load and its glued values."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = read_notebook(path)
    if seed is not None:
        nb = with_seed(nb, seed)
    load_before = os.getloadavg()[0]
    start, cpu = time.perf_counter(), _cpu_seconds()
    with tempfile.TemporaryDirectory(prefix="course-measure-") as tmp, \
            _environment(COURSE_PROFILE=profile, MPLBACKEND="Agg"):
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": tmp}})
        try:
            client.execute()
        except CellExecutionError as exc:
            last = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip().splitlines()[-1]
            raise CourseError(f"{path.name} failed at profile {profile} (seed {seed}): {last}") from exc
    return {"page": path.stem, "profile": profile, "seed": seed, "seconds": round(time.perf_counter() - start, 1),
            "cpu_seconds": round(_cpu_seconds() - cpu, 1),
            "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)], "values": glued_values(nb)}


def measure_pages(pages: list[Path], out: Path, *, profile: str, seeds: list[int] | None,
                  progress=print) -> dict:
    """Run every page at ``profile`` for every seed and merge the records into ``out`` (JSON)."""
    out = Path(out)
    data = {"runs": []}
    if out.exists():
        try:
            data = json.loads(out.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CourseError(f"{out} cannot be read ({exc}); delete it or choose another --out.") from exc
    machine = {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    for path in pages:
        for seed in (seeds or [None]):
            progress(f"running {path.stem} at {profile}" + (f", seed {seed}" if seed is not None else "") + " ...")
            record = run_page(path, profile=profile, seed=seed)
            record["machine"] = machine
            record["date"] = datetime.now(timezone.utc).strftime("%Y-%m-%d")
            data["runs"] = [r for r in data["runs"]
                            if (r["page"], r["profile"], r["seed"]) != (record["page"], profile, seed)] + [record]
            atomic_write_text(out, json.dumps(data, indent=1, sort_keys=True))
            progress(f"  {record['seconds']:.0f} s ({record['cpu_seconds']:.0f} s CPU, load "
                     f"{record['load_average'][0]:.1f}), {len(record['values'])} values")
    return data


def summary_table(path: Path):
    """Per page and profile: runs, seconds (min-max), load, and each glued value's range over the seeds."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        return pd.DataFrame()
    runs = json.loads(path.read_text(encoding="utf-8"))["runs"]
    rows = []
    for (page, profile), group in pd.DataFrame(runs).groupby(["page", "profile"]):
        seconds = group["seconds"]
        row = {"page": page, "profile": profile, "runs": len(group), "seeds": ", ".join(str(s) for s in group["seed"]),
               "seconds": f"{seconds.min():.0f}-{seconds.max():.0f}" if len(group) > 1 else f"{seconds.iloc[0]:.0f}",
               "CPU seconds": f"{group['cpu_seconds'].min():.0f}-{group['cpu_seconds'].max():.0f}",
               "load average": f"{min(l[0] for l in group['load_average']):.1f}-"
                               f"{max(l[0] for l in group['load_average']):.1f}",
               "measured on": group["date"].max()}
        rows.append(row)
    return pd.DataFrame(rows).set_index(["page", "profile"])


def value_ranges(path: Path):
    """Per page, profile and glued value: min and max over the measured seeds."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        return pd.DataFrame()
    rows = [{"page": r["page"], "profile": r["profile"], "value": k, "seed": r["seed"], "x": v}
            for r in json.loads(path.read_text(encoding="utf-8"))["runs"] for k, v in r["values"].items()]
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame(rows).groupby(["page", "value", "profile"])["x"].agg(["min", "max", "count"])
    return table.rename(columns={"count": "seeds"})
