"""Assignments (issue 19): one exercise convention, student copies, otter autograders, grading without Docker.

The slow tests build every chapter's assignment from the repository's exercise pages once, then
grade each chapter's two sample submissions (the untouched student copy, and the copy whose
implement exercises call the library's own functions) through ``course-lib assign grade``.
"""
import copy
import csv
import json
import re
from pathlib import Path

import nbformat
import pytest
import yaml

from course_lib import exercises
from course_lib.assignments import find_pages, lint, read_page
from course_lib.assignments.build import SAMPLES, leaks, read_manifest
from course_lib.assignments.source import solution_lines
from course_lib.cli import main
from course_lib.errors import CourseError

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
PAGES = find_pages(BOOK / "exercises")


# --------------------------------------------------------------------------- the checks learners see

def test_stubs_are_not_attempted_and_wrong_answers_say_what_is_wrong(capsys):
    assert exercises.is_stub(...) and exercises.is_stub(None) and not exercises.is_stub(0)
    assert exercises.check(..., 1.0, "E") is False
    assert "not attempted yet" in capsys.readouterr().out
    with pytest.raises(exercises.NotAttempted, match="not attempted yet"):
        exercises.check(None, 1.0, "E", strict=True)
    with pytest.raises(AssertionError, match="largest difference from the reference is 0.5"):
        exercises.check([1.0, 2.5], [1.0, 2.0], "E")
    with pytest.raises(AssertionError, match="expected shape"):
        exercises.check([1.0], [1.0, 2.0], "E")
    assert exercises.check([1.0, 2.0], [1.0, 2.0], "E")


def test_choice_and_range_checks():
    with pytest.raises(exercises.NotAttempted):
        exercises.check_choice(..., ["a", "b"], "E")
    with pytest.raises(AssertionError, match="not one of the options"):
        exercises.check_choice("z", ["a", "b"], "E")
    with pytest.raises(AssertionError, match="not what this run shows. Re-read"):
        exercises.check_choice("a", ["a", "b"], "E", correct="b", why="Re-read 2.4.")
    assert exercises.check_choice(" b ", ["a", "b"], "E", correct="b")
    with pytest.raises(AssertionError, match="outside the expected range"):
        exercises.check_in_range(1.5, 0.0, 1.0, "E")
    with pytest.raises(exercises.NotAttempted):
        exercises.check_in_range(None, 0.0, 1.0, "E")
    assert exercises.check_in_range(0.5, 0.0, 1.0, "E")


def _library_square(v):
    return v * v


def test_forbid_switches_a_library_function_off_for_every_alias_and_restores_it():
    alias = _library_square

    def learner(v):
        return alias(v) + 0

    with exercises.forbid(_library_square, exercise="Exercise 9.9"):
        with pytest.raises(exercises.ForbiddenCall, match="Exercise 9.9 asks you to write this yourself.*_library_square"):
            learner(3)
    assert learner(3) == 9
    with pytest.raises(ValueError):
        with exercises.forbid(_library_square, exercise="E"):
            raise ValueError("the code is restored on errors too")
    assert _library_square(4) == 16
    with pytest.raises(TypeError, match="plain module-level"):
        with exercises.forbid(learner, exercise="E"):
            pass


# --------------------------------------------------------------------------- the convention, on every page

def test_every_chapter_has_an_exercise_page_that_follows_the_convention():
    # one page per chapter number: a chapter's "going further" part (03b_...) shares its chapter's page
    chapters = sorted({p.stem[:2] for p in BOOK.glob("0*.ipynb")})
    assert sorted(p.stem[2:4] for p in PAGES) == chapters
    for path in PAGES:
        page = read_page(path)
        assert lint(page) == [], (path.name, lint(page))
        assert len(page.questions) >= 3
        for q in page.questions:
            if q.kind == "open":
                assert "Rubric" in "\n".join(q.model_answer) and "Model answer" in "\n".join(q.model_answer)
            if q.kind == "implement":
                assert q.trivial and any(t.hidden for t in q.tests)


def test_lint_names_each_departure_from_the_convention():
    page = read_page(PAGES[0])
    nb = copy.deepcopy(page.notebook)
    q = page.questions[0]
    solution = nb.cells[q.solution_cells[0]]
    solution.metadata["tags"] = []
    solution.source = re.sub(r".*#\s*(BEGIN|END) SOLUTION.*\n?", "", solution.source)
    hidden = next(t for t in q.tests if t.hidden)
    nb.cells[hidden.index].source = nb.cells[hidden.index].source.replace("# HIDDEN\n", "")
    nb.cells[q.tests[0].index].source += "\nprint(torch)"
    config = yaml.safe_load("\n".join(nb.cells[0].source.splitlines()[1:]))
    config["tests"]["ok_format"] = True
    nb.cells[0].source = "# ASSIGNMENT CONFIG\n" + yaml.safe_dump(config)
    from course_lib.assignments.source import parse
    problems = "\n".join(lint(parse(PAGES[0], nb)))
    assert "hide-input" in problems
    assert "no BEGIN/END SOLUTION" in problems
    assert "needs a hidden test" in problems
    assert "exactly its parameter names" in problems or "one `def test_" in problems
    assert "ok_format: false" in problems


def test_pages_are_in_the_toc_right_after_their_chapter_and_committed_stripped():
    toc = yaml.safe_load((BOOK / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    for path in PAGES:
        chapter = next(p.stem for p in BOOK.glob(f"{path.stem[2:4]}_*.ipynb"))
        assert files[files.index(chapter) + 1] == f"exercises/{path.stem}", path.name
    assert "instructors" in files
    for path in PAGES:
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, path.name


def test_every_chapter_links_to_its_exercise_page_and_keeps_no_exercise_cell():
    for path in PAGES:
        chapter = next(BOOK.glob(f"{path.stem[2:4]}_*.ipynb"))
        nb = nbformat.read(chapter, as_version=4)
        last = nb.cells[-1]
        assert last.cell_type == "markdown" and last.source.startswith("## Exercises"), chapter.name
        assert f"(exercises/{path.stem}.ipynb)" in last.source, chapter.name
        assert sum("## Exercises" in c.source for c in nb.cells if c.cell_type == "markdown") == 1, chapter.name
        assert not any(c.cell_type == "code" and re.search(r"\bcheck(_true)?\(|my_\w+\(", c.source) for c in nb.cells), \
            chapter.name


def test_measure_sets_the_seed_and_reads_the_glued_values():
    from course_lib.assignments.measure import GLUE_MIME, glued_values, with_seed

    nb = with_seed(nbformat.read(PAGES[0], as_version=4), 7)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert params.source.rstrip().endswith("SEED = 7  # set by course-lib assign measure")
    bare = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]})])
    with pytest.raises(CourseError, match="no SEED"):
        with_seed(bare, 1)
    cell = nbformat.v4.new_code_cell("glue")
    cell.outputs = [nbformat.v4.new_output("display_data", data={GLUE_MIME: "0.25"},
                                           metadata={"scrapbook": {"name": "cosine", "mime_prefix": GLUE_MIME}})]
    assert glued_values(nbformat.v4.new_notebook(cells=[cell])) == {"cosine": 0.25}


# --------------------------------------------------------------------------- built from the repository

_BUILT: dict[str, Path] = {}


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """``build(page)``: that page's assignment, built once per test process (``course-lib assign build
    --only``)."""
    def _build(page: str) -> Path:
        if page not in _BUILT:
            out = tmp_path_factory.mktemp(f"assignment-{page}")
            assert main(["assign", "build", "--pages", str(BOOK / "exercises"), "--only", page, "--out", str(out)]) == 0
            _BUILT[page] = out
        return _BUILT[page]
    return _build


@pytest.mark.slow
class PageChecks:
    """One exercise page built into an assignment; a class per page (below), so that a failure
    names its page and ``-k ex05`` checks one page alone."""

    page: str
    #: ``assign grade --jobs``: chapter 1's page grades its two samples at once (each in a spawned process
    #: of its own), the others one after the other in this process; beside the other pytest worker on two
    #: cores a second process only adds another import of torch.
    grade_jobs: int = 1

    def test_the_solution_scores_full_marks_under_its_own_autograder(self, build):
        built = build(self.page)
        manifest = read_manifest(built)
        assert sorted(manifest["pages"]) == [self.page]
        entry = manifest["pages"][self.page]
        score = entry["solution"]
        assert score["autograded_possible"] > 0
        assert score["autograded"] == score["autograded_possible"], score["questions"]
        assert score["errors"] == [], score["errors"]
        print(f"{self.page}: built in {entry['seconds']:.0f} s ({entry['cpu_seconds']:.0f} s CPU), "
              f"solution graded in {score['seconds']:.0f} s")

    def test_no_solution_and_no_hidden_test_is_left_in_the_student_copy(self, build):
        page = read_page(BOOK / "exercises" / f"{self.page}.ipynb")
        student = nbformat.read(build(page.name) / page.name / "student" / f"{page.name}.ipynb", as_version=4)
        assert leaks(page, student) == []
        text = "\n".join(c.source for c in student.cells)
        assert not [line for line in solution_lines(page) if line in text.splitlines()]
        public = json.dumps(student.metadata["otter"]["tests"])
        for q in page.questions:
            for test in q.tests:
                assert (f"def {test.function}(" in public) == (not test.hidden), (page.name, test.function)
        tags = {t for c in student.cells for t in c.metadata.get("tags", [])}
        assert not tags & {"hide-input", "remove-cell"}
        assert student.metadata["otter"]["assignment_name"] == page.name

    def test_grading_two_sample_submissions(self, build, capsys):
        page = self.page
        built = build(page)
        entry = read_manifest(built)["pages"][page]
        sheet = built / f"grades-{page}.csv"
        assert main(["assign", "grade", entry["chapter"], str(built / page / "samples"), "--assignments", str(built),
                     "--out", str(sheet), "--jobs", str(self.grade_jobs)]) == 0
        rows = {r["student"]: r for r in csv.DictReader(sheet.open())}
        assert set(rows) == {Path(s).stem for s in SAMPLES}
        report = json.loads(sheet.with_suffix(".json").read_text())
        questions = {q["name"]: q for q in entry["questions"]}
        assert set(questions) <= set(next(iter(rows.values())))
        unanswered, calls = report["students"]["unanswered"], report["students"]["library-calls"]
        # the student copy runs top to bottom: every stub answered by "not attempted yet", no cell raised
        assert unanswered["errors"] == [] and calls["errors"] == []
        assert unanswered["autograded"] == 0 < unanswered["autograded_possible"]
        for name, result in unanswered["questions"].items():
            assert result["failures"] and all("not attempted yet" in f for f in result["failures"]), (name, result)
        # calling the library's own implementation fails the hidden tests of every implement exercise
        assert calls["autograded"] < calls["autograded_possible"]
        for name, q in questions.items():
            if q["kind"] == "implement":
                result = calls["questions"][name]
                assert result["hidden_failed"] >= 1 and result["score"] < result["possible"], (name, result)
        for q in questions.values():
            assert (rows["unanswered"][q["name"]] == "") == q["manual"]
        print(f"{page}: graded 2 submissions in {unanswered['seconds'] + calls['seconds']:.0f} s "
              f"({unanswered['cpu_seconds'] + calls['cpu_seconds']:.0f} s CPU)")


# --------------------------------------------------------------------------- bad input to the grader

def _grade(built, folder, capsys, out):
    code = main(["assign", "grade", "1", str(folder), "--assignments", str(built), "--out", str(out)])
    err = capsys.readouterr().err
    return code, err


@pytest.mark.slow
class GraderBadInput:
    """Bad input to ``course-lib assign grade``, on chapter 1's built assignment (its class below)."""

    def test_bad_submissions_get_one_clear_message_exit_2_and_no_grade_sheet(self, build, tmp_path, capsys):
        built = build("ex01_threat_model")
        sheet = tmp_path / "grades.csv"
        code, err = _grade(built, tmp_path / "missing", capsys, sheet)
        assert code == 2 and "does not exist" in err and "Traceback" not in err
        folder = tmp_path / "subs"
        folder.mkdir()
        code, err = _grade(built, folder, capsys, sheet)
        assert code == 2 and "holds no .ipynb" in err
        student = built / "ex01_threat_model" / "student" / "ex01_threat_model.ipynb"
        (folder / "alice.ipynb").write_text(student.read_text())
        (folder / "bob.ipynb").write_text('{"cells": [ this is not json')
        code, err = _grade(built, folder, capsys, sheet)
        assert code == 2 and "bob.ipynb is not a readable Jupyter notebook" in err
        other = nbformat.read(student, as_version=4)   # a student copy of another assignment
        other.metadata["otter"]["assignment_name"] = "ex02_gradient_estimation"
        nbformat.write(other, folder / "bob.ipynb")
        code, err = _grade(built, folder, capsys, sheet)
        assert code == 2 and "bob.ipynb is a submission of ex02_gradient_estimation, not of ex01_threat_model" in err
        plain = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")])
        nbformat.write(plain, folder / "bob.ipynb")
        code, err = _grade(built, folder, capsys, sheet)
        assert code == 2 and "not a student copy of a course assignment" in err
        code = main(["assign", "grade", "1", str(folder), "--assignments", str(built), "--jobs", "0"])
        assert code == 2 and "whole number >= 1" in capsys.readouterr().err
        code = main(["assign", "grade", "9", str(folder), "--assignments", str(built)])
        assert code == 2 and "No built assignment matches '9'" in capsys.readouterr().err
        code = main(["assign", "grade", "1", str(folder), "--assignments", str(tmp_path / "nothing-built")])
        assert code == 2 and "make assignments" in capsys.readouterr().err
        assert not sheet.exists() and not sheet.with_suffix(".json").exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".grades")]


    def test_a_grading_run_that_fails_midway_writes_no_grade_sheet(self, build, tmp_path, monkeypatch, capsys):
        from course_lib.assignments import grade

        built = build("ex01_threat_model")
        folder = tmp_path / "subs"
        folder.mkdir()
        for name in ("alice", "bob"):
            (folder / f"{name}.ipynb").write_text((built / "ex01_threat_model" / "samples" / SAMPLES[0]).read_text())
        calls = []

        def flaky(path, zip_path, *, name, profile):
            calls.append(path)
            if len(calls) == 2:
                raise CourseError("the kernel died while grading bob.ipynb")
            return {"questions": {}, "autograded": 0.0, "autograded_possible": 10.0, "errors": [], "seconds": 0.0,
                    "cpu_seconds": 0.0}

        monkeypatch.setattr(grade, "grade_notebook", flaky)
        sheet = tmp_path / "out" / "grades.csv"
        code = main(["assign", "grade", "1", str(folder), "--assignments", str(built), "--out", str(sheet)])
        assert code == 2 and "kernel died" in capsys.readouterr().err
        assert not sheet.exists() and not sheet.with_suffix(".json").exists()
        assert [p.name for p in sheet.parent.iterdir()] == []


for _path in PAGES:   # TestPage_ex01_threat_model, ...: one test class per exercise page
    _first = _path.stem == "ex01_threat_model"
    _bases = (PageChecks, GraderBadInput) if _first else (PageChecks,)
    globals()[f"TestPage_{_path.stem}"] = type(f"TestPage_{_path.stem}", _bases,
                                               {"page": _path.stem, "grade_jobs": 2 if _first else 1})
