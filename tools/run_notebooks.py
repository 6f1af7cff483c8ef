"""Execute the book's notebooks once, into a copy of the book that Jupyter Book then builds without re-running.

    python tools/run_notebooks.py --profile quick                 # every notebook of book/_toc.yml
    python tools/run_notebooks.py --profile quick book/03_feature_recovery.ipynb

The book folder is copied to ``--out`` (default ``_build/executed``); each notebook runs top to
bottom on a fresh kernel (in the copy's folder, so relative paths work) with ``COURSE_PROFILE``
set, and the executed notebook replaces its copy. The committed notebooks are never touched, so
they stay without outputs. Two notebooks run at a time by default (``--jobs``): each kernel adapts
its threads to the cores the other leaves free. A table of seconds per notebook is printed (and
written to ``<out>/timings.json``; with ``--jobs 1`` they are each chapter's time alone); the exit
code is 1 if any notebook failed.

The per-cell timeout catches hangs, not slow machines: it is sized from the profile (about eight
times a chapter's whole budget) and ``COURSE_CELL_TIMEOUT`` (seconds) overrides it. A timeout or
an error names the notebook, the cell and what to do.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
#: Per-cell timeout in seconds: a chapter's budget (quick 2 min, standard 5 min) times about eight.
CELL_TIMEOUT = {"quick": 900, "standard": 2400, "full": 7200}


def toc_notebooks(book: Path) -> list[Path]:
    """The notebooks that ``_toc.yml`` lists, in reading order."""
    import yaml

    toc = yaml.safe_load((book / "_toc.yml").read_text(encoding="utf-8"))
    files = [toc["root"]]

    def walk(entries):
        for e in entries or []:
            if "file" in e:
                files.append(e["file"])
            walk(e.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return [book / f"{f}.ipynb" for f in files if (book / f"{f}.ipynb").exists()]


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def static_outputs(nb):
    """Drop the live-widget parts of an executed notebook, keeping each output's static text or image.

    tqdm.auto draws its progress bars as ipywidgets in a kernel, and Jupyter Book then loads the
    widget manager and require.js from a CDN on every page that has one: a page that does not read
    offline. The book shows what a widget stood for (its text/plain or image), not the widget.
    """
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        kept = []
        for output in cell.get("outputs", []):
            data = output.get("data")
            if data and WIDGET_VIEW in data:
                del data[WIDGET_VIEW]
                if not data:
                    continue
            kept.append(output)
        if "outputs" in cell:
            cell["outputs"] = kept
    return nb


def run_one(path: Path, profile: str, timeout: int) -> dict:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    status, detail = "ok", ""
    try:
        client.execute()
    except CellTimeoutError:
        cell = next((i for i, c in enumerate(nb.cells) if c.get("cell_type") == "code" and not c.get("outputs")
                     and c.get("execution_count") is None), "?")
        status = "timeout"
        detail = (f"cell {cell} ran past {timeout} s under the {profile} profile. The machine may be busy, or the "
                  "profile too large for it: choose COURSE_PROFILE=quick, free the CPU, or allow more time with "
                  "COURSE_CELL_TIMEOUT=<seconds>.")
    except CellExecutionError as exc:
        status = "error"
        detail = str(exc).strip().splitlines()[-1][:500] if str(exc).strip() else repr(exc)
    finally:
        nbformat.write(static_outputs(nb), path)
    return {"notebook": str(path.relative_to(path.parents[1])), "status": status,
            "seconds": round(time.perf_counter() - start, 1), "detail": detail}


def schedule(notebooks: list[Path], previous: Path) -> list[Path]:
    """The order to start the notebooks in: longest first, so that two jobs finish together.

    The lengths come from the last run's ``timings.json`` where there is one; a notebook it does not
    know counts as long. Without one, the chapters go first and their exercise pages after them (the
    pages then also find the models their chapter cached).
    """
    try:
        rows = json.loads(previous.read_text())["rows"]
        seconds = {r["notebook"]: float(r["seconds"]) for r in rows}
    except (OSError, ValueError, KeyError, TypeError):
        seconds = {}

    def key(nb: Path):
        if seconds:   # the name run_one reports: the notebook with its folder
            return (-seconds.get(str(nb.relative_to(nb.parents[1])), float("inf")), notebooks.index(nb))
        return ("exercises" in nb.parts, notebooks.index(nb))

    return sorted(notebooks, key=key)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="*", help="notebooks to run (default: every notebook of book/_toc.yml)")
    ap.add_argument("--profile", default=os.environ.get("COURSE_PROFILE") or None,
                    help="quick, standard or full (default: $COURSE_PROFILE, else the course's default)")
    ap.add_argument("--out", default=str(ROOT / "_build" / "executed"), help="where the executed book copy goes")
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("COURSE_NOTEBOOK_JOBS", "2")),
                    help="notebooks run at the same time (default 2; each kernel adapts its threads to the "
                         "cores the others leave free, so two kernels share two cores without spinning)")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from course_lib.budgets import profile_name

    profile = profile_name(args.profile)
    os.environ["COURSE_PROFILE"] = profile
    timeout = int(os.environ.get("COURSE_CELL_TIMEOUT", CELL_TIMEOUT[profile]))
    out = Path(args.out) / "book"
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(BOOK, out, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "_build"))
    # the chapters show library code with {literalinclude} ../course_lib/...: the copy needs it beside it
    source_link = Path(args.out) / "course_lib"
    if not source_link.exists():
        source_link.symlink_to(ROOT / "course_lib", target_is_directory=True)
    chosen = [Path(n).resolve() for n in args.notebooks] or toc_notebooks(BOOK)
    from concurrent.futures import ThreadPoolExecutor

    def job(nb: Path) -> dict:
        copy = out / nb.relative_to(BOOK)
        print(f"running {nb.relative_to(ROOT)} (profile {profile}) ...", flush=True)
        row = run_one(copy, profile, timeout)
        print(f"  {row['notebook']}: {row['status']} in {row['seconds']} s"
              + (f": {row['detail']}" if row["detail"] else ""), flush=True)
        return row

    if args.jobs < 1:
        print("--jobs must be at least 1", file=sys.stderr)
        return 2
    start = time.perf_counter()
    order = schedule(chosen, Path(args.out) / "timings.json")
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # each notebook runs in its own kernel process
        done = dict(zip(order, pool.map(job, order)))
    rows = [done[nb] for nb in chosen]   # reported in reading order
    wall = time.perf_counter() - start
    (Path(args.out) / "timings.json").write_text(json.dumps({"profile": profile, "jobs": args.jobs,
                                                            "wall_seconds": round(wall, 1), "rows": rows}, indent=2))
    print(f"\n{'notebook':<48} {'status':<8} {'seconds':>8}")
    for r in rows:
        print(f"{r['notebook']:<48} {r['status']:<8} {r['seconds']:>8}")
    failed = [r for r in rows if r["status"] != "ok"]
    print(f"{sum(r['seconds'] for r in rows):.0f} s of notebook time in {wall:.0f} s with {args.jobs} job(s); "
          f"{len(failed)} failed")
    for r in failed:
        print(f"FAILED {r['notebook']}: {r['detail']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
