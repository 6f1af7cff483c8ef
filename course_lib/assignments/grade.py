"""Grading a folder of submissions without Docker: points per exercise and per student, as CSV and JSON.

:func:`grade_folder` first checks everything it was given (the built autograder, the folder, every
notebook in it: readable, and a submission of *this* assignment), so that bad input stops before
any grading with one clear :class:`~course_lib.errors.CourseError`. It then grades each notebook
with otter-grader's non-containerised runner (``otter.api.grade_submission``: the notebook is
executed in a fresh kernel with the public and hidden tests), and writes ``<stem>.csv`` and
``<stem>.json`` together at the end (both or neither, each replaced atomically), so an
interrupted run never leaves a half-written grade sheet. ``jobs`` > 1 grades that many notebooks
at a time, each in its own process (and kernel); the sheet is the same, in the folder's order.

The CSV has one row per student (the notebook's file name without ``.ipynb``), one column per
exercise (points; empty for the open questions, which are graded by hand with ``rubrics.md``),
the autograded total and the number of cells that raised. The JSON adds, per exercise, which
tests failed and why, hidden ones included, for the instructor.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import multiprocessing
import os
import resource
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from ..errors import CourseError
from ..results import FILE_MODE, _os_error, prepare_output
from .build import read_manifest
from .source import read_notebook


@contextlib.contextmanager
def _environment(**values: str):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _last_line(message: str) -> str:
    lines = [line for line in str(message).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def grade_notebook(notebook: Path, autograder_zip: Path, *, name: str, profile: str = "quick") -> dict:
    """Run one notebook under its autograder; return points per exercise, failures and cells that raised.

    The notebook is graded under the file name ``<name>.ipynb`` that its otter cell opens, whatever
    the student called the file. ``seconds`` is wall-clock time, ``cpu_seconds`` the CPU time of this
    process and the kernel together (the better measure on a shared machine).
    """
    from otter.api import grade_submission

    start, cpu = time.perf_counter(), _cpu_seconds()
    with tempfile.TemporaryDirectory(prefix="course-grade-") as tmp:
        copy = Path(tmp) / f"{name}.ipynb"
        shutil.copyfile(notebook, copy)
        with _environment(COURSE_PROFILE=profile, MPLBACKEND="Agg"):
            results = grade_submission(str(copy), str(autograder_zip), quiet=True)
    if results.has_catastrophic_failure():
        raise CourseError(f"Grading {notebook} failed before any test ran: {results.catastrophic_error}.")
    questions = {}
    for name, test_file in results.results.items():
        failures, hidden_failed, public_failed = [], 0, 0
        for tc in test_file.test_case_results:
            if tc.passed:
                continue
            hidden = bool(tc.test_case.hidden)
            hidden_failed += hidden
            public_failed += not hidden
            failures.append(("hidden: " if hidden else "public: ") + _last_line(tc.message))
        questions[name] = {"score": float(test_file.score), "possible": float(test_file.possible),
                           "public_failed": public_failed, "hidden_failed": hidden_failed, "failures": failures}
    errors = []
    executed = getattr(results, "notebook", None)
    for i, cell in enumerate(executed.cells if executed is not None else []):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                errors.append({"cell": i, "error": f"{output.get('ename')}: {output.get('evalue')}"})
    return {"questions": questions, "autograded": float(results.total), "autograded_possible": float(results.possible),
            "errors": errors, "seconds": round(time.perf_counter() - start, 1),
            "cpu_seconds": round(_cpu_seconds() - cpu, 1)}


def resolve_page(assignment: str, assignments_dir: Path) -> dict:
    """The manifest entry of ``assignment`` (a chapter number such as ``3``, or a page name such as ``ex03_feature_recovery``)."""
    manifest = read_manifest(assignments_dir)
    pages = manifest["pages"]
    if not pages:
        raise CourseError(f"No assignments are built under {assignments_dir}. Run `make assignments` (or "
                          "`course-lib assign build`) first, or point --assignments at the folder it wrote.")
    from . import matches

    for name, entry in pages.items():
        if matches(name, assignment):
            return entry
    raise CourseError(f"No built assignment matches {assignment!r}. Built: "
                      + ", ".join(f"{e['chapter']} ({n})" for n, e in sorted(pages.items())) + ".")


def collect_submissions(folder: Path, expected: str) -> list[Path]:
    """The ``.ipynb`` files of ``folder``, each checked: readable, and a submission of ``expected``."""
    folder = Path(folder)
    if not folder.exists():
        raise CourseError(f"The submissions folder {folder} does not exist. Give the folder that holds the "
                          "students' notebooks (one .ipynb per student, named after the student).")
    if not folder.is_dir():
        raise CourseError(f"{folder} is a file; give the folder that holds the students' notebooks.")
    notebooks = sorted(p for p in folder.glob("*.ipynb") if not p.name.startswith("."))
    if not notebooks:
        raise CourseError(f"{folder} holds no .ipynb file. Put one notebook per student there, named after the "
                          "student (for example alice.ipynb).")
    for path in notebooks:
        nb = read_notebook(path)
        got = nb.metadata.get("otter", {}).get("assignment_name")
        if got is None:
            raise CourseError(f"{path} is not a student copy of a course assignment (it carries no assignment name). "
                              f"Students start from the student copy of {expected} that `make assignments` writes.")
        if got != expected:
            raise CourseError(f"{path} is a submission of {got}, not of {expected}. Move it to the folder of its "
                              "own assignment, or grade that assignment instead.")
    return notebooks


def sheet_rows(entry: dict, graded: dict[str, dict]) -> list[dict]:
    """One CSV row per student: points per exercise (empty for hand-graded ones) and the totals."""
    rows = []
    for student, result in graded.items():
        row = {"student": student}
        for q in entry["questions"]:
            if q["manual"]:
                row[q["name"]] = ""
            else:
                row[q["name"]] = result["questions"].get(q["name"], {}).get("score", 0.0)
        row["autograded"] = result["autograded"]
        row["autograded_possible"] = result["autograded_possible"]
        row["percent"] = round(100 * result["autograded"] / result["autograded_possible"], 1) \
            if result["autograded_possible"] else 0.0
        row["manual_possible"] = sum(q["points"] for q in entry["questions"] if q["manual"])
        row["cells_with_errors"] = len(result["errors"])
        rows.append(row)
    return rows


def _write_both(csv_path: Path, csv_text: str, json_path: Path, json_text: str) -> None:
    staged = []
    try:
        for final, text in ((csv_path, csv_text), (json_path, json_text)):
            fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
            staged.append((tmp, final))
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
                fh.write(text)
            os.chmod(tmp, FILE_MODE)
        for tmp, final in staged:
            os.replace(tmp, final)
    except OSError as exc:
        raise _os_error(csv_path.parent, exc, "write the grades into") from exc
    finally:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)


def _graded(notebooks: list[Path], zip_path: Path, *, name: str, profile: str, jobs: int, progress):
    """``(path, result)`` of :func:`grade_notebook` for each notebook: in order, or as they finish
    when ``jobs`` > 1 (each in a fresh ``spawn`` process: a forked copy of a process that runs torch
    can hang in OpenMP)."""
    if jobs <= 1 or len(notebooks) < 2:
        for path in notebooks:
            progress(f"grading {path.name} ...")
            yield path, grade_notebook(path, zip_path, name=name, profile=profile)
        return
    progress(f"grading {len(notebooks)} notebooks, {min(jobs, len(notebooks))} at a time ...")
    with ProcessPoolExecutor(max_workers=min(jobs, len(notebooks)), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(grade_notebook, path, zip_path, name=name, profile=profile): path for path in notebooks}
        for future in as_completed(futures):
            yield futures[future], future.result()


def grade_folder(assignment: str, submissions: Path, *, assignments_dir: Path, out: Path | None = None,
                 profile: str = "quick", jobs: int = 1, progress=print) -> dict:
    """Grade every notebook of ``submissions`` for ``assignment``; write ``out`` (.csv) and its .json.

    ``jobs``: how many notebooks are graded at a time (each in its own process and kernel).
    """
    if not isinstance(jobs, int) or jobs < 1:
        raise CourseError(f"jobs is how many notebooks are graded at a time: a whole number >= 1; got {jobs!r}.")
    assignments_dir = Path(assignments_dir)
    entry = resolve_page(assignment, assignments_dir)
    zip_path = assignments_dir / entry["autograder"]
    if not zip_path.is_file():
        raise CourseError(f"The autograder {zip_path} is missing; run `make assignments` again.")
    notebooks = collect_submissions(Path(submissions), entry["name"])
    csv_path = Path(out) if out is not None else assignments_dir / entry["name"] / "grades.csv"
    if csv_path.suffix != ".csv":
        raise CourseError(f"The grade sheet must be a .csv file; got {csv_path}.")
    json_path = csv_path.with_suffix(".json")
    prepare_output(csv_path.parent, [csv_path.name, json_path.name])
    graded = {}
    for path, result in _graded(notebooks, zip_path, name=entry["name"], profile=profile, jobs=jobs, progress=progress):
        graded[path.stem] = r = {"file": str(path), **result}
        progress(f"  {path.stem}: {r['autograded']:g}/{r['autograded_possible']:g} autograded points, "
                 f"{len(r['errors'])} cell(s) raised, {r['seconds']:.0f} s ({r['cpu_seconds']:.0f} s CPU)")
    graded = {path.stem: graded[path.stem] for path in notebooks}   # the folder's order, whatever finished first
    rows = sheet_rows(entry, graded)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    report = {"assignment": entry["name"], "chapter": entry["chapter"], "profile": profile,
              "questions": entry["questions"], "students": graded,
              "files": {"csv": str(csv_path), "json": str(json_path)}}
    _write_both(csv_path, buffer.getvalue(), json_path, json.dumps(report, indent=2))
    return report
