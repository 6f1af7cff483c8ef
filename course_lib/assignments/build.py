"""Student copies, autograders and sample submissions from the exercise pages (``make assignments``).

For each page, :func:`build_page` runs otter-grader's ``otter assign`` on a copy of the page
(the course's own question keys removed) and writes, under ``<out>/<page>/``:

* ``student/<page>.ipynb``: solutions replaced by stubs, outputs cleared, hidden tests removed,
  and the book-only tags (``hide-input``, ``remove-cell``) dropped so the answer cells show;
* ``autograder/<page>-autograder.zip``: otter's autograder (public and hidden tests), graded
  without Docker by :mod:`course_lib.assignments.grade`; ``autograder/<page>.ipynb`` is the
  solution notebook with the otter cells;
* ``samples/``: two submissions for a dry run of the grading, ``unanswered.ipynb`` (the student
  copy itself) and ``library-calls.ipynb`` (every implement exercise answered by its trivial
  answer: calling the library's own function);
* ``rubrics.md``: the open questions with their model answers and rubrics, for graders.

The student copy is then checked: no line of a solution or a model answer and no hidden test may
be left in it. With ``check=True`` the solution notebook is graded by its own autograder and
must score 100 %. Each page is built in a temporary folder and moved into place at the end, so a
failed build never leaves half a page behind. ``manifest.json`` records what was built.
"""
from __future__ import annotations

import copy
import json
import re
import shutil
import tempfile
import time
from pathlib import Path

import nbformat
import yaml

from ..errors import CourseError
from ..results import atomic_write_text, prepare_output
from .source import COURSE_KEYS, Page, lint, read_page, solution_lines

#: Tags that only the book uses; the student copy drops them so every cell shows in JupyterLab.
BOOK_TAGS = ("hide-input", "hide-output", "hide-cell", "remove-cell", "remove-input", "remove-output")
ANSWER_KEY = "course_answer"  # cell metadata that marks an answer cell (removed from the student copy)
MANIFEST = "manifest.json"
SAMPLES = ("unanswered.ipynb", "library-calls.ipynb")


def _dump(config: dict, header: str) -> str:
    return header + "\n" + yaml.safe_dump(config, sort_keys=False, allow_unicode=True).rstrip()


def otter_master(page: Page) -> nbformat.NotebookNode:
    """A copy of the page that otter reads: course keys removed, answer cells marked, no test run by otter."""
    nb = copy.deepcopy(page.notebook)
    config = dict(page.config)
    config["run_tests"] = False  # the course grades the solution itself (build_page, check=True)
    nb.cells[0].source = _dump(config, "# ASSIGNMENT CONFIG")
    by_cell = {i: q.name for q in page.questions for i in q.solution_cells}
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "raw" and re.match(r"#\s+begin\s+question", cell.source, re.I):
            qconfig = yaml.safe_load("\n".join(cell.source.splitlines()[1:])) or {}
            cell.source = _dump({k: v for k, v in qconfig.items() if k not in COURSE_KEYS}, "# BEGIN QUESTION")
        if i in by_cell:
            cell.metadata[ANSWER_KEY] = by_cell[i]
    return nb


def _strip_book_only(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        tags = [t for t in cell.metadata.get("tags", []) if t not in BOOK_TAGS]
        if tags:
            cell.metadata["tags"] = tags
        else:
            cell.metadata.pop("tags", None)
        cell.metadata.pop(ANSWER_KEY, None)
        jupyter = cell.metadata.get("jupyter", {})
        jupyter.pop("source_hidden", None)
        if not jupyter:
            cell.metadata.pop("jupyter", None)
    return nb


def library_calls_submission(page: Page, student: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The student copy with each implement exercise answered by its trivial answer (the library's call)."""
    nb = copy.deepcopy(student)
    trivial = {q.name: q.trivial for q in page.questions if q.trivial}
    done = set()
    for cell in nb.cells:
        name = cell.metadata.get(ANSWER_KEY)
        if name in trivial and name not in done:
            cell.source = trivial[name]
            done.add(name)
    missing = sorted(set(trivial) - done)
    if missing:
        raise CourseError(f"{page.name}: the answer cells of {', '.join(missing)} were not found in the student copy.")
    return nb


def leaks(page: Page, student: nbformat.NotebookNode) -> list[str]:
    """What of the solutions a student copy still contains (an empty list: nothing)."""
    found = []
    text_lines = {line.strip() for cell in student.cells for line in cell.source.splitlines()}
    for line in solution_lines(page):
        if line in text_lines:
            found.append(f"solution line {line!r}")
    public = json.dumps(student.metadata.get("otter", {}).get("tests", {}))
    for q in page.questions:
        for test in q.tests:
            if test.hidden and (f"def {test.function}(" in public
                                or any(f"def {test.function}(" in c.source for c in student.cells)):
                found.append(f"hidden test {test.function} of {q.name}")
    for cell in student.cells:
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None):
            found.append("a cell with outputs")
            break
    return found


def rubrics_markdown(page: Page, headings: bool = True) -> str:
    """The open questions of ``page`` with their prompts, model answers and rubrics (for graders).

    ``headings=False`` writes the titles in bold instead of as headings (for a page's output cell).
    """
    title = (lambda text, level: f"{'#' * level} {text}") if headings else (lambda text, level: f"**{text}**")
    parts = [title(f"{page.title}: rubrics for the open questions", 1), ""]
    for q in page.questions:
        if q.kind != "open":
            continue
        parts += [title(f"{q.title} ({q.name}, {q.points:g} points)", 2), ""]
        parts += [text.strip() + "\n" for text in q.prompt]
        for text in q.model_answer:
            kept = [line for line in text.splitlines() if not line.strip().startswith((":::", ":class:"))]
            parts += ["\n".join(kept).strip(), ""]
    return "\n".join(parts).rstrip() + "\n"


def _run_otter_assign(master: Path, result: Path) -> None:
    from otter.assign import main as otter_assign

    try:
        otter_assign(str(master), str(result), no_pdfs=True, no_run_tests=True)
    except Exception as exc:  # otter raises ValueError/RuntimeError/its own format errors
        raise CourseError(f"otter assign rejected {master.name}: {exc}. Run `course-lib assign lint` and fix the "
                          "page.") from exc


def solution_score(page_dir: Path, name: str) -> dict:
    """Grade the solution notebook of a built page with its own autograder: per exercise, and in total."""
    from .grade import grade_notebook

    return grade_notebook(page_dir / "autograder" / f"{name}.ipynb", page_dir / "autograder" / f"{name}-autograder.zip",
                          name=name)


def build_page(page_path: Path, out: Path, *, check: bool = True) -> dict:
    """Build the assignment of one exercise page into ``out/<page>/``; return its manifest entry."""
    from .grade import _cpu_seconds

    start, cpu = time.perf_counter(), _cpu_seconds()
    page = read_page(page_path)
    problems = lint(page)
    if problems:
        raise CourseError(f"{page.path} does not follow the exercise convention:\n  - " + "\n  - ".join(problems))
    prepare_output(out)
    staging = Path(tempfile.mkdtemp(dir=out, prefix=f".{page.name}."))
    try:
        src = staging / "src"
        src.mkdir()
        nbformat.write(otter_master(page), src / f"{page.name}.ipynb")
        built = staging / page.name
        _run_otter_assign(src / f"{page.name}.ipynb", built)
        zips = sorted((built / "autograder").glob(f"{page.name}-autograder_*.zip"))
        if len(zips) != 1:
            raise CourseError(f"otter assign wrote {len(zips)} autograder zips for {page.name}; expected one.")
        zips[0].rename(built / "autograder" / f"{page.name}-autograder.zip")
        student_path = built / "student" / f"{page.name}.ipynb"
        raw_student = nbformat.read(student_path, as_version=4)
        student = _strip_book_only(raw_student)
        found = leaks(page, student)
        if found:
            raise CourseError(f"The student copy of {page.name} still contains " + "; ".join(found) + ". Mark those "
                              "lines as solution (BEGIN/END SOLUTION) or move them out of the answer cells.")
        nbformat.write(student, student_path)
        solution_path = built / "autograder" / f"{page.name}.ipynb"
        nbformat.write(_strip_book_only(nbformat.read(solution_path, as_version=4)), solution_path)
        samples = built / "samples"
        samples.mkdir()
        nbformat.write(student, samples / SAMPLES[0])
        nbformat.write(_strip_book_only(library_calls_submission(page, raw_student)), samples / SAMPLES[1])
        (built / "rubrics.md").write_text(rubrics_markdown(page), encoding="utf-8")
        entry = {
            "name": page.name, "chapter": page.chapter, "title": page.title, "source": str(page.path),
            "student": f"{page.name}/student/{page.name}.ipynb",
            "autograder": f"{page.name}/autograder/{page.name}-autograder.zip",
            "samples": [f"{page.name}/samples/{s}" for s in SAMPLES],
            "questions": [{"name": q.name, "title": q.title, "kind": q.kind, "points": q.points, "manual": q.manual}
                          for q in page.questions],
        }
        if check:
            score = solution_score(built, page.name)
            if score["autograded"] < score["autograded_possible"]:
                failing = [f"{n}: {m}" for n, q in score["questions"].items() for m in q.get("failures", [])]
                raise CourseError(f"The solution notebook of {page.name} scores {score['autograded']:g} of "
                                  f"{score['autograded_possible']:g} under its own autograder:\n  "
                                  + "\n  ".join(failing))
            entry["solution"] = score
        final = out / page.name
        if final.exists():
            old = staging / "previous"
            final.rename(old)
        built.rename(final)
        entry["seconds"] = round(time.perf_counter() - start, 1)
        entry["cpu_seconds"] = round(_cpu_seconds() - cpu, 1)
        return entry
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def read_manifest(out: Path) -> dict:
    path = Path(out) / MANIFEST
    if not path.exists():
        return {"pages": {}}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CourseError(f"{path} cannot be read ({exc}); run `make assignments` again.") from exc
    return manifest if isinstance(manifest.get("pages"), dict) else {"pages": {}}


def build_all(pages: list[Path], out: Path, *, check: bool = True, progress=print) -> dict:
    """Build every page in ``pages`` into ``out`` and update ``out/manifest.json``; return the manifest."""
    out = prepare_output(out, [MANIFEST])
    manifest = read_manifest(out)
    for path in pages:
        progress(f"building {Path(path).stem} ...")
        entry = build_page(Path(path), out, check=check)
        manifest["pages"][entry["name"]] = entry
        atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2))
        score = entry.get("solution")
        progress(f"  {entry['name']}: {len(entry['questions'])} exercises"
                 + (f", solution {score['autograded']:g}/{score['autograded_possible']:g}" if score else "")
                 + f", {entry['seconds']:.0f} s ({entry['cpu_seconds']:.0f} s CPU)")
    return manifest
