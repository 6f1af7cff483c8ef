"""The shape of the library (ARCHITECTURE.md): no import cycle, small modules, one budget system, every
recipe on the command line, no profile-dependent constant in a chapter."""
import ast
import json
import re
from pathlib import Path

import pytest

import course_lib
from course_lib.budgets import BUDGETS, PROFILE_NAMES, load_all_budgets
from course_lib.cli import build_parser, main
from course_lib.errors import CourseError
from course_lib.recipes import RECIPES

PACKAGE = Path(course_lib.__file__).resolve().parent
BOOK = PACKAGE.parent / "book"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _import_graph() -> dict[str, set[str]]:
    """Module -> the course_lib modules it imports at module level (imports inside functions are lazy)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        base = name.split(".") if is_pkg else name.split(".")[:-1]
        edges = set()
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    root = base[: len(base) - (node.level - 1)]
                    target = ".".join(root + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    edges.add(sub if sub in modules else target)
            elif isinstance(node, ast.Import):
                edges.update(a.name for a in node.names)
        graph[name] = {e for e in edges if e in modules and e != name}
    return graph


def test_no_import_cycle():
    graph = _import_graph()
    # a package importing its own submodules (registration) is not a cycle unless they import it back
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert cycles == [], f"import cycles: {cycles}"


def test_no_module_over_450_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 450}
    assert long == {}


def test_every_budget_has_every_profile_and_rejects_unknown_settings():
    budgets = load_all_budgets()
    assert {"pipeline", "inversion", "probes", "label-only", "label-inference", "gradient-lab", "defenses", "rub",
            "recovery-studies", "evaluator"} <= set(BUDGETS.names())
    for cls in budgets:
        for profile in PROFILE_NAMES:
            cls.for_profile(profile)
        with pytest.raises(CourseError, match="Unknown"):
            cls.for_profile("quick", no_such_setting=1)


def test_profile_show_lists_every_budget(capsys):
    assert main(["profile", "show", "quick", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["budgets"]
    assert set(shown) == set(BUDGETS.names())
    assert shown["inversion"]["settings"]["restarts"] == 16 and "restarts" in shown["inversion"]["profile_dependent"]


def test_every_recipe_is_reachable_from_the_cli_with_json():
    load_all_budgets()
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # the sub-command parsers
    assert len(RECIPES) >= 8
    for entry in RECIPES.entries():
        words = entry.meta["command"].split()
        assert words[0] == "course-lib" and words[1] in commands, entry.name
        options = {o for a in commands[words[1]]._actions for o in a.option_strings}
        assert "--json" in options, entry.name
        assert entry.obj.__name__.startswith("run_"), entry.name


def test_no_chapter_defines_a_profile_dependent_constant():
    for nb in sorted(BOOK.rglob("*.ipynb")):
        for cell in json.loads(nb.read_text(encoding="utf-8"))["cells"]:
            if cell["cell_type"] != "code":
                continue
            src = "".join(cell["source"])
            assert not re.search(r"\}\[PROFILE\]|PROFILE ==|PROFILE !=|if PROFILE\b", src), (nb.name, src[:200])
