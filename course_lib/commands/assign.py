"""``course-lib assign build|grade|lint|list``: assignments for university courses (otter-grader, no Docker)."""
from __future__ import annotations

from pathlib import Path

from ..budgets import PROFILE_NAMES
from ..errors import CourseError
from .common import parse_int_list, parse_name_list, positive_int


def register(sub) -> None:
    p = sub.add_parser("assign", help="student copies, autograders and grading of the exercise pages")
    asub = p.add_subparsers(dest="assign_command", metavar="ACTION", required=True)

    b = asub.add_parser("build", help="write every chapter's student notebook, autograder zip, samples and rubrics")
    _pages_option(b)
    b.add_argument("--out", default="_build/assignments", help="output folder (default _build/assignments)")
    b.add_argument("--only", type=parse_name_list, default=None,
                   help="chapters or pages to build, e.g. 1,3 or ex02_gradient_estimation (default: all)")
    b.add_argument("--no-check", action="store_true",
                   help="skip grading each solution notebook with its own autograder (faster; not recommended)")
    b.set_defaults(func=run_build)

    g = asub.add_parser("grade", help="grade a folder of submissions into a CSV and a JSON of points")
    g.add_argument("assignment", help="the chapter (e.g. 3) or the page name (e.g. ex03_feature_recovery)")
    g.add_argument("submissions", help="folder with one .ipynb per student, named after the student")
    g.add_argument("--assignments", default="_build/assignments",
                   help="the folder `make assignments` wrote (default _build/assignments)")
    g.add_argument("--out", default=None,
                   help="the grade sheet (.csv; its .json is written beside it); default "
                        "<assignments>/<page>/grades.csv")
    g.add_argument("--profile", choices=PROFILE_NAMES, default="quick",
                   help="the profile the submissions run at while graded (default quick)")
    g.add_argument("--jobs", type=positive_int, default=1,
                   help="how many submissions to grade at a time, each in its own process (default 1)")
    g.add_argument("--json", action="store_true", help="print the full report as JSON")
    g.set_defaults(func=run_grade)

    lint = asub.add_parser("lint", help="check that the exercise pages follow the course's exercise convention")
    _pages_option(lint)
    lint.add_argument("--only", type=parse_name_list, default=None, help="chapters or pages to check")
    lint.set_defaults(func=run_lint)

    m = asub.add_parser("measure", help="run each exercise page at a profile and seeds; record its time and "
                                         "measured values for the instructors' guide")
    _pages_option(m)
    m.add_argument("--only", type=parse_name_list, default=None, help="chapters or pages to run")
    m.add_argument("--profile", choices=PROFILE_NAMES, default="quick", help="the profile to run at (default quick)")
    m.add_argument("--seeds", type=parse_int_list, default=None,
                   help="seeds, e.g. 0,1,2 (set as SEED in each page's parameters cell; default: the page's own)")
    m.add_argument("--out", default=None, help="the JSON file to merge the runs into (default "
                                               "<pages>/measured.json, which the instructors' guide reads)")
    m.set_defaults(func=run_measure)

    ls = asub.add_parser("list", help="every exercise: chapter, name, kind, points, graded how")
    _pages_option(ls)
    ls.add_argument("--json", action="store_true", help="print machine-readable JSON")
    ls.set_defaults(func=run_list)


def _require_tools() -> None:
    """The assignments need otter-grader (and nbformat, PyYAML); say how to install them if missing."""
    try:
        import nbformat  # noqa: F401
        import otter  # noqa: F401
        import yaml  # noqa: F401
    except ImportError as exc:
        raise CourseError(f"course-lib assign needs otter-grader, which is not installed here ({exc}). Install the "
                          "course with its assignment tools: pip install -e '.[assign]' (make installs '.[dev]', "
                          "which includes them).") from exc


def _pages_option(parser) -> None:
    parser.add_argument("--pages", default=None,
                        help="folder of the exercise pages exNN_*.ipynb (default: book/exercises of the course)")


def run_build(args) -> int:
    _require_tools()
    from ..assignments import build_all, find_pages

    pages = find_pages(args.pages, args.only)
    manifest = build_all(pages, Path(args.out), check=not args.no_check)
    built = [manifest["pages"][p.stem] for p in pages]
    print(f"Built {len(built)} assignment(s) under {args.out}: the student copies are "
          f"<page>/student/<page>.ipynb, the autograders <page>/autograder/<page>-autograder.zip.")
    print(f"Try the grading on the two sample submissions: course-lib assign grade {built[0]['chapter']} "
          f"{Path(args.out) / built[0]['name'] / 'samples'}")
    return 0


def run_grade(args) -> int:
    _require_tools()
    from ..assignments import grade_folder
    from .common import emit

    report = grade_folder(args.assignment, Path(args.submissions), assignments_dir=Path(args.assignments),
                          out=None if args.out is None else Path(args.out), profile=args.profile, jobs=args.jobs,
                          progress=(lambda _m: None) if args.json else print)
    lines = [f"{report['assignment']}: graded {len(report['students'])} submission(s); "
             f"grades in {report['files']['csv']} (details, hidden tests included, in {report['files']['json']})."]
    manual = [q["name"] for q in report["questions"] if q["manual"]]
    if manual:
        lines.append(f"Grade {', '.join(manual)} by hand with {Path(args.assignments) / report['assignment'] / 'rubrics.md'}.")
    emit(report, args.json, "\n".join(lines))
    return 0


def run_lint(args) -> int:
    _require_tools()
    from ..assignments import find_pages, lint, read_page

    reports = []
    for path in find_pages(args.pages, args.only):
        problems = lint(read_page(path))
        reports.append((path, problems))
        print(f"{path.name}: " + ("follows the convention." if not problems else f"{len(problems)} problem(s)"))
        for problem in problems:
            print(f"  - {problem}")
    bad = [p.name for p, problems in reports if problems]
    if bad:
        raise CourseError(f"{', '.join(bad)} do(es) not follow the exercise convention; fix the problems listed "
                          "above (the instructors' guide describes the convention).")
    return 0


def run_measure(args) -> int:
    _require_tools()
    from ..assignments import default_pages_dir, find_pages
    from ..assignments.measure import measure_pages

    pages = find_pages(args.pages, args.only)
    out = Path(args.out) if args.out else Path(args.pages or default_pages_dir()) / "measured.json"
    measure_pages(pages, out, profile=args.profile, seeds=args.seeds)
    print(f"Recorded {len(pages)} page(s) at {args.profile} in {out}.")
    return 0


def run_list(args) -> int:
    _require_tools()
    from ..assignments import catalogue
    from .common import emit

    table = catalogue(args.pages)
    emit(table.to_dict(orient="records"), args.json, table.to_string(index=False))
    return 0
