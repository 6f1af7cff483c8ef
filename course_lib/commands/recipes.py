"""``course-lib recipes``: every recipe of the course, the chapter that uses it and the command that runs it."""
from __future__ import annotations

from .common import add_common, emit


def register(sub) -> None:
    p = sub.add_parser("recipes", help="list every experiment (recipe) with its chapter and command")
    add_common(p, seed=False, profile=False)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..budgets import load_all_budgets
    from ..recipes import RECIPES

    load_all_budgets()  # imports every module, so every recipe has registered
    rows = [{"recipe": e.name, "function": f"{e.obj.__module__}.{e.obj.__name__}", "chapter": e.meta["chapter"],
             "command": e.meta["command"], "description": e.description} for e in RECIPES.entries()]
    rows.sort(key=lambda r: (r["chapter"], r["recipe"]))
    text = "\n".join(f"chapter {r['chapter']}  {r['recipe']:<20} {r['command']:<40} {r['function']}" for r in rows)
    emit(rows, args.json, text)
    return 0
