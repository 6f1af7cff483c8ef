"""Assignments for university courses, built on otter-grader: one exercise convention for every chapter.

Each chapter's exercises live on one exercise page, ``book/exercises/exNN_<chapter>.ipynb``, an
otter-grader master notebook (the convention is described in :mod:`.source`). From those pages:

* :func:`~.build.build_all` (``make assignments``, ``course-lib assign build``) writes a student
  copy, an otter autograder zip, two sample submissions and the graders' rubrics per chapter;
* :func:`~.grade.grade_folder` (``course-lib assign grade``) grades a folder of submissions
  without Docker into a CSV and a JSON of points per exercise and per student;
* :func:`~.source.lint` (``course-lib assign lint``) says where a page departs from the convention.
"""
from __future__ import annotations

import re
from pathlib import Path

from ..errors import CourseError
from .build import build_all, build_page, read_manifest, rubrics_markdown  # noqa: F401
from .grade import grade_folder, grade_notebook  # noqa: F401
from .source import KINDS, Page, lint, read_page  # noqa: F401


def default_pages_dir() -> Path:
    """``book/exercises`` of the course checkout that holds this package (else of the current folder)."""
    project = Path(__file__).resolve().parents[2]
    for root in (project, Path.cwd()):
        if (root / "book" / "exercises").is_dir():
            return root / "book" / "exercises"
    return project / "book" / "exercises"


def matches(page_name: str, key: str) -> bool:
    """Whether ``key`` names the page ``page_name``: its chapter (``3``, ``03``), ``ex03`` or the full name."""
    key = str(key).strip().lower()
    return key in (page_name, page_name[:4]) or (key.isdigit() and int(key) == int(page_name[2:4]))


def find_pages(pages_dir: Path | None = None, only: list[str] | None = None) -> list[Path]:
    """The exercise pages (``exNN_*.ipynb``) of ``pages_dir``, in chapter order; ``only``: chapters or names."""
    pages_dir = Path(pages_dir) if pages_dir is not None else default_pages_dir()
    if not pages_dir.is_dir():
        raise CourseError(f"The exercise pages folder {pages_dir} does not exist. Run this from the course "
                          "repository, or give --pages the folder that holds exNN_*.ipynb.")
    pages = sorted(pages_dir.glob("ex[0-9][0-9]_*.ipynb"))
    if not pages:
        raise CourseError(f"{pages_dir} holds no exercise page (exNN_<chapter>.ipynb).")
    if only:
        wanted = [str(o).strip().lower() for o in only]
        unknown = [w for w in wanted if not any(matches(p.stem, w) for p in pages)]
        if unknown:
            raise CourseError(f"No exercise page for {', '.join(unknown)}. Pages: "
                              + ", ".join(p.stem for p in pages) + ".")
        pages = [p for p in pages if any(matches(p.stem, w) for w in wanted)]
    return pages


def catalogue(pages_dir: Path | None = None):
    """A DataFrame of every exercise: page, chapter, name, title, kind, points, graded by hand or not."""
    import pandas as pd

    rows = []
    for path in find_pages(pages_dir):
        page = read_page(path)
        for q in page.questions:
            rows.append({"chapter": page.chapter, "page": page.name, "exercise": q.name, "title": q.title,
                         "kind": q.kind, "points": q.points, "graded": "by hand (rubric)" if q.manual else "autograder"})
    return pd.DataFrame(rows)


def page_seed(page: Page) -> int | None:
    """The ``SEED`` that the page's parameters cell sets (``None`` if it sets none)."""
    for cell in page.notebook.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            match = re.search(r"^SEED\s*=\s*(\d+)", cell.source, re.M)
            return int(match.group(1)) if match else None
    return None


def suggested_assignments(pages_dir: Path | None = None):
    """One row per chapter: the page, its exercises, autograded and hand-graded points, the grading profile and seed."""
    import pandas as pd

    rows = []
    for path in find_pages(pages_dir):
        page = read_page(path)
        auto = [q for q in page.questions if not q.manual]
        hand = [q for q in page.questions if q.manual]
        rows.append({"chapter": page.chapter, "page": page.name,
                     "exercises": f"{page.questions[0].name} to {page.questions[-1].name} ({len(page.questions)})",
                     "autograded points": sum(q.points for q in auto), "points by rubric": sum(q.points for q in hand),
                     "grade at": "quick", "seed": page_seed(page)})
    return pd.DataFrame(rows).set_index("chapter")
