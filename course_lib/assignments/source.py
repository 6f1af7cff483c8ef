"""The exercise pages as otter-grader master notebooks: reading them and checking the convention.

An exercise page ``book/exercises/exNN_<chapter>.ipynb`` is an otter-grader (>= 7) master
notebook. Its delimiters are raw cells, which Jupyter Book does not render:

* the first cell, ``# ASSIGNMENT CONFIG``, names the assignment after the file and asks for
  exception-based tests (``tests: {ok_format: false}``), so no test needs saved outputs;
* each exercise is a ``# BEGIN QUESTION`` block with the keys ``name`` (``ex<chapter>_<k>``),
  ``points`` and, for open questions, ``manual: true``; the course adds ``kind`` (``implement``,
  ``choice``, ``number`` or ``open``) and, for ``implement``, ``trivial``: the answer that only
  calls the library (or copies the reference), which the hidden tests must fail;
* its markdown starts with ``**Exercise <chapter>.<k> (...).**``, then ``# BEGIN SOLUTION`` holds
  the answer cell (code cells tagged ``hide-input``, the solution between ``# BEGIN SOLUTION`` /
  ``# END SOLUTION`` lines or on lines ending in ``# SOLUTION``; for open questions a markdown
  dropdown with the model answer and the rubric), and ``# BEGIN TESTS`` holds the tests (code
  cells tagged ``remove-cell``: one ``def test_...(names)`` and its call, hidden ones opened by
  ``# HIDDEN``).

:func:`lint` checks all of this; :func:`read_page` returns the parsed :class:`Page`.
"""
from __future__ import annotations

import ast
import builtins
import re
import symtable
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import yaml

from ..errors import CourseError

#: The kinds of exercise, and what the convention asks of each.
KINDS = {
    "implement": "write a function; hidden tests disable the library's version and use other inputs",
    "choice": "a prediction or a multiple-choice answer, checked against this run or the theory",
    "number": "a number, checked against a range",
    "open": "a written answer, graded by hand with a rubric (model answer in the book)",
}
#: Keys the course adds to otter's question configuration (removed before otter reads it).
COURSE_KEYS = ("kind", "trivial")
SOLUTION_TAG = "hide-input"
TEST_TAG = "remove-cell"
PAGE_PATTERN = re.compile(r"^ex(\d{2})_[a-z0-9_]+$")
_BLOCK = re.compile(r"^#\s+(begin|end)\s+(question|solution|tests|prompt)\s*$", re.IGNORECASE)
_CONFIG = re.compile(r"^#\s+assignment\s+config\s*$", re.IGNORECASE)
_TEST_CONFIG = re.compile(r'^(?:.\s*=\s*)?""?"?\s*#\s*BEGIN\s*TEST\s*CONFIG', re.IGNORECASE)
_TITLE = re.compile(r"^\*\*Exercise\s+(\d+)\.(\d+)\b(.*?)\*\*")


@dataclass
class TestCell:
    index: int
    hidden: bool
    function: str
    params: list[str]
    source: str


@dataclass
class Question:
    name: str
    config: dict
    title: str = ""
    prompt: list[str] = field(default_factory=list)     # markdown of the exercise text
    solution_cells: list[int] = field(default_factory=list)
    model_answer: list[str] = field(default_factory=list)  # markdown solution cells (open questions)
    tests: list[TestCell] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return str(self.config.get("kind", ""))

    @property
    def manual(self) -> bool:
        return bool(self.config.get("manual", False))

    @property
    def points(self) -> float:
        return float(self.config.get("points", 1) or 0)

    @property
    def trivial(self) -> str | None:
        value = self.config.get("trivial")
        return None if value is None else str(value)


@dataclass
class Page:
    path: Path
    notebook: nbformat.NotebookNode
    config: dict
    questions: list[Question]
    problems: list[str]

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def chapter(self) -> str:
        match = PAGE_PATTERN.match(self.name)
        return str(int(match.group(1))) if match else ""

    @property
    def title(self) -> str:
        for cell in self.notebook.cells:
            if cell.cell_type == "markdown":
                for line in cell.source.splitlines():
                    if line.startswith("# "):
                        return line[2:].strip()
        return self.name

    def question(self, name: str) -> Question:
        for q in self.questions:
            if q.name == name:
                return q
        raise CourseError(f"{self.name} has no exercise {name!r}; it has {', '.join(q.name for q in self.questions)}.")


def read_notebook(path: Path) -> nbformat.NotebookNode:
    """Read a notebook file, or raise a CourseError that names it and says what is wrong."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CourseError(f"Cannot read {path} ({exc}).") from exc
    try:
        nb = nbformat.reads(text, as_version=4)
        nbformat.validate(nb)
    except Exception as exc:  # nbformat raises JSON, validation and reader errors of several types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CourseError(f"{path} is not a readable Jupyter notebook ({first}). If it is a submission, ask "
                          "the student to download the notebook again from JupyterLab (File > Download).") from exc
    return nb


def _yaml(cell, what: str, problems: list[str], index: int) -> dict:
    body = "\n".join(cell.source.splitlines()[1:])
    try:
        config = yaml.safe_load(body) or {}
    except yaml.YAMLError as exc:
        problems.append(f"cell {index + 1}: the {what} is not valid YAML ({exc}).")
        return {}
    if not isinstance(config, dict):
        problems.append(f"cell {index + 1}: the {what} must be a YAML mapping.")
        return {}
    return config


def _test_cell(cell, index: int, question: str, problems: list[str]) -> TestCell | None:
    lines = cell.source.splitlines()
    hidden = bool(lines) and lines[0].lstrip().startswith("#") and bool(re.search(r"\bhidden\b", lines[0], re.I))
    if lines and _TEST_CONFIG.match(lines[0]):
        end = next((i for i, line in enumerate(lines) if re.search(r'"""\s*#\s*END\s*TEST\s*CONFIG', line, re.I)), None)
        if end is None:
            problems.append(f"cell {index + 1} ({question}): BEGIN TEST CONFIG without END TEST CONFIG.")
            return None
        config = yaml.safe_load("\n".join(lines[1:end])) or {}
        hidden = bool(config.get("hidden", False))
        lines = lines[end + 1:]
    try:
        tree = ast.parse("\n".join(lines))
    except SyntaxError as exc:
        problems.append(f"cell {index + 1} ({question}): the test is not valid Python ({exc.msg}, line {exc.lineno}).")
        return None
    body = tree.body
    if len(body) != 2 or not isinstance(body[0], ast.FunctionDef) or not isinstance(body[1], ast.Expr) \
            or not isinstance(body[1].value, ast.Call) or not isinstance(body[1].value.func, ast.Name) \
            or body[1].value.func.id != body[0].name:
        problems.append(f"cell {index + 1} ({question}): a test cell holds one `def test_...(names):` and the call "
                        "of that function with the same names (the call runs it in the book; otter drops it).")
        return None
    func, call = body[0], body[1].value
    params = [a.arg for a in func.args.args]
    passed = [a.id if isinstance(a, ast.Name) else None for a in call.args]
    if passed != params or call.keywords:
        problems.append(f"cell {index + 1} ({question}): call {func.name} with exactly its parameter names "
                        f"({', '.join(params)}), as otter passes them from the notebook's variables.")
    undefined = _free_globals("\n".join(lines), func.name)
    if undefined:
        problems.append(f"cell {index + 1} ({question}): {func.name} uses {', '.join(undefined)} without importing "
                        "or receiving it; otter runs the test outside the notebook, so import inside the function.")
    return TestCell(index, hidden, func.name, params, cell.source)


def _free_globals(source: str, function: str) -> list[str]:
    """Names ``function`` reads from the global scope that are not builtins (otter's test file lacks them)."""
    table = symtable.symtable(source, "<test>", "exec")
    names: set[str] = set()

    def visit(scope) -> None:
        for symbol in scope.get_symbols():
            if symbol.is_global() and symbol.is_referenced() and not hasattr(builtins, symbol.get_name()):
                names.add(symbol.get_name())
        for child in scope.get_children():
            visit(child)

    for child in table.get_children():
        if child.get_name() == function:
            visit(child)
    return sorted(names)


def parse(path: Path, nb: nbformat.NotebookNode) -> Page:
    """Parse the otter blocks of a master notebook into a :class:`Page` (problems are collected, not raised)."""
    problems: list[str] = []
    config: dict = {}
    questions: list[Question] = []
    stack: list[str] = []
    current: Question | None = None
    for i, cell in enumerate(nb.cells):
        first = cell.source.splitlines()[0].strip() if cell.source.strip() else ""
        if cell.cell_type == "raw":
            if _CONFIG.match(first):
                if i != 0:
                    problems.append(f"cell {i + 1}: the ASSIGNMENT CONFIG cell must be the first cell.")
                config = _yaml(cell, "assignment configuration", problems, i)
                continue
            match = _BLOCK.match(first)
            if not match:
                problems.append(f"cell {i + 1}: a raw cell that is not an otter delimiter (raw cells are not shown "
                                "in the book; use markdown).")
                continue
            edge, block = match.group(1).lower(), match.group(2).lower()
            if edge == "begin":
                if block == "question":
                    if stack:
                        problems.append(f"cell {i + 1}: BEGIN QUESTION inside another block.")
                    qconfig = _yaml(cell, "question configuration", problems, i)
                    current = Question(str(qconfig.get("name", f"<unnamed, cell {i + 1}>")), qconfig)
                    questions.append(current)
                elif not stack:
                    problems.append(f"cell {i + 1}: BEGIN {block.upper()} outside a question.")
                stack.append(block)
            else:
                if not stack or stack[-1] != block:
                    problems.append(f"cell {i + 1}: END {block.upper()} does not close the open block "
                                    f"({stack[-1].upper() if stack else 'none'}).")
                else:
                    stack.pop()
                if block == "question":
                    current = None
            continue
        if current is None or not stack:
            continue
        if stack[-1] == "tests":
            if cell.cell_type != "code":
                problems.append(f"cell {i + 1} ({current.name}): only code cells belong in a TESTS block.")
                continue
            test = _test_cell(cell, i, current.name, problems)
            if test:
                current.tests.append(test)
        elif stack[-1] == "solution":
            if cell.cell_type == "code":
                current.solution_cells.append(i)
            else:
                current.model_answer.append(cell.source)
        elif stack[-1] == "question" and cell.cell_type == "markdown":
            if not current.title:
                match = _TITLE.match(cell.source.strip())
                if match:
                    current.title = f"Exercise {match.group(1)}.{match.group(2)}{match.group(3).rstrip('.')}"
            current.prompt.append(cell.source)
    if stack:
        problems.append(f"the notebook ends inside a {stack[-1].upper()} block.")
    return Page(Path(path), nb, config, questions, problems)


def read_page(path: Path) -> Page:
    path = Path(path)
    return parse(path, read_notebook(path))


def solution_lines(page: Page) -> list[str]:
    """The lines a student copy must not contain: the solutions' code and the model answers.

    Lines shorter than 8 characters (``else:``, ``:::``) are too generic to identify a solution.
    """
    lines: list[str] = []
    for q in page.questions:
        for index in q.solution_cells:
            inside = False
            for line in page.notebook.cells[index].source.splitlines():
                stripped = line.strip()
                if re.match(r"#\s*BEGIN SOLUTION", stripped):
                    inside = True
                    continue
                if re.match(r"#\s*END SOLUTION", stripped):
                    inside = False
                    continue
                if inside:
                    lines.append(stripped)
                elif re.search(r"#\s*SOLUTION\s*$", stripped):
                    lines.append(re.sub(r"#\s*SOLUTION\s*$", "", stripped).strip())
        for text in q.model_answer:
            lines.extend(line.strip() for line in text.splitlines()
                         if not line.strip().startswith((":::", ":class:", "```")))
    return [line for line in lines if len(line) >= 8]


def _has_markers(source: str) -> bool:
    return bool(re.search(r"#\s*BEGIN SOLUTION", source) or re.search(r"#\s*SOLUTION\s*$", source, re.M))


def lint(page: Page) -> list[str]:
    """Every way ``page`` departs from the exercise convention (an empty list: it follows it)."""
    problems = list(page.problems)
    nb = page.notebook
    if not PAGE_PATTERN.match(page.name):
        problems.append("the file name must be exNN_<chapter name>.ipynb (NN: the chapter, two digits).")
    if nb.metadata.get("kernelspec", {}).get("language", "").lower() != "python":
        problems.append("the notebook's kernelspec must declare language 'python'.")
    expected = {"name": page.name, "init_cell": True, "export_cell": False, "check_all_cell": False}
    for key, value in expected.items():
        if page.config.get(key) != value:
            problems.append(f"ASSIGNMENT CONFIG: set `{key}: {str(value).lower() if isinstance(value, bool) else value}`.")
    if (page.config.get("tests") or {}).get("ok_format", True) is not False:
        problems.append("ASSIGNMENT CONFIG: set `tests: {ok_format: false}` (exception-based tests need no outputs).")
    tags = [t for c in nb.cells for t in c.metadata.get("tags", [])]
    if "parameters" not in tags:
        problems.append("no code cell is tagged `parameters`.")
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None):
            problems.append(f"cell {i + 1}: commit the page with outputs stripped and no execution counts.")
    if len(page.questions) < 3:
        problems.append(f"a chapter needs at least 3 exercises; this page has {len(page.questions)}.")
    names = [q.name for q in page.questions]
    if len(set(names)) != len(names):
        problems.append("two exercises share a name.")
    functions = [t.function for q in page.questions for t in q.tests]
    if len(set(functions)) != len(functions):
        problems.append("two test functions share a name; give every test its own name.")
    for k, q in enumerate(page.questions, 1):
        where = f"{q.name}"
        if q.name != f"ex{page.chapter}_{k}":
            problems.append(f"{where}: exercise {k} of chapter {page.chapter} must be named ex{page.chapter}_{k}.")
        if not q.title:
            problems.append(f"{where}: its first markdown cell must open with **Exercise {page.chapter}.{k} (...).**")
        if q.kind not in KINDS:
            problems.append(f"{where}: kind must be one of {', '.join(KINDS)}; got {q.kind!r}.")
        if q.points <= 0:
            problems.append(f"{where}: give it a positive number of points.")
        for index in q.solution_cells:
            cell = nb.cells[index]
            if SOLUTION_TAG not in cell.metadata.get("tags", []):
                problems.append(f"{where}: tag its solution cell (cell {index + 1}) `{SOLUTION_TAG}` so that the "
                                "book shows it only on a click.")
            if not _has_markers(cell.source):
                problems.append(f"{where}: its solution cell (cell {index + 1}) has no BEGIN/END SOLUTION lines or "
                                "`# SOLUTION` line endings, so the student copy would keep the whole solution.")
        for test in q.tests:
            if TEST_TAG not in nb.cells[test.index].metadata.get("tags", []):
                problems.append(f"{where}: tag its test cell (cell {test.index + 1}) `{TEST_TAG}`.")
        if q.kind == "open":
            if not q.manual:
                problems.append(f"{where}: an open question is graded by hand: set `manual: true`.")
            text = "\n".join(q.model_answer)
            if "Model answer" not in text or "Rubric" not in text:
                problems.append(f"{where}: its solution block needs a markdown cell with a 'Model answer' and a "
                                "'Rubric' (in a dropdown admonition).")
            elif ":class: dropdown" not in text:
                problems.append(f"{where}: put the model answer and rubric in an admonition with `:class: dropdown`.")
            if q.tests:
                problems.append(f"{where}: an open question has no autograder tests.")
            continue
        if q.manual:
            problems.append(f"{where}: only open questions are graded by hand.")
        if not q.solution_cells:
            problems.append(f"{where}: it needs an answer cell (a code cell in its SOLUTION block).")
        if not any(not t.hidden for t in q.tests):
            problems.append(f"{where}: it needs a public test (the check the learner sees).")
        if not any(t.hidden for t in q.tests):
            problems.append(f"{where}: it needs a hidden test (for graders; open its cell with `# HIDDEN`).")
        if q.kind == "implement" and not q.trivial:
            problems.append(f"{where}: an implement exercise gives its trivial answer (`trivial:`), the one that "
                            "only calls the library, which its hidden tests must fail.")
        if q.kind != "implement" and q.trivial:
            problems.append(f"{where}: only implement exercises have a trivial answer.")
        if q.trivial:
            try:
                ast.parse(q.trivial)
            except SyntaxError as exc:
                problems.append(f"{where}: its trivial answer is not valid Python ({exc.msg}).")
    return problems
