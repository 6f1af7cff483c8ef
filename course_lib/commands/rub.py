"""``course-lib rub --task classification|i2i|t2i``: the RUB benchmark, resumable, with a table and a figure.

One runner for RUB's three tasks. Every (method, seed, radius or step cap) row goes to a JSON-lines
results file as soon as it is computed, and running the same command again resumes. The options
every task shares are defined here; each task adds its own in an argument group and registers in
:data:`RUB_TASKS` with ``add_options(parser)`` and ``run(args)``:

``classification``
    this module (chapter 5);
``i2i``, ``t2i``
    :mod:`course_lib.commands.rub_i2i` and :mod:`course_lib.commands.rub_t2i` (the generative
    chapters), imported by :func:`register`.

An option that belongs to another task than ``--task`` is an error, never silently ignored.
"""
from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass
from typing import Callable

from ..errors import CourseError
from ..registry import Registry
from .common import add_recipe_options, finish, output_folder, parse_eps, parse_int_list, parse_name_list, positive_int


@dataclass(frozen=True)
class RubTask:
    """One RUB task of the command: its options (``dest`` names) and how to run it."""

    name: str
    options: tuple[str, ...]
    run: Callable[[argparse.Namespace], int]


#: The tasks of ``course-lib rub``.
RUB_TASKS: Registry[RubTask] = Registry("RUB task")

#: Modules that add a generative task (imported if present).
TASK_MODULES = ("rub_i2i", "rub_t2i")


def eps_list(text: str) -> list[float]:
    """``0,8/255,16/255`` -> radii (argparse ``type=``)."""
    values = [parse_eps(t) for t in text.split(",") if t.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"expected radii like 0,8/255,16/255; got {text!r}")
    return values


def methods_option(text: str):
    """``all`` or a comma-separated list of method names (argparse ``type=``)."""
    return "all" if text.strip() == "all" else parse_name_list(text)


def register(sub) -> None:
    p = sub.add_parser("rub", help="RUB: unlearn, attack, report the task's metrics over seeds (resumable)",
                       description="Robust unlearning benchmark (RUB): every method x seed x attack setting becomes "
                                   "one row of a JSON-lines results file, written as soon as it is computed; "
                                   "running the same command again resumes.")
    p.add_argument("--task", default="classification",
                   help="RUB task: classification (chapter 5), i2i (inpainting) or t2i (diffusion); default classification")
    add_recipe_options(p, out="rub", dataset=None, seed=False)
    p.add_argument("--dataset", default=None, help="dataset (default: the task's, mnist-5k for classification)")
    p.add_argument("--methods", type=methods_option, default="all",
                   help="'all' or a comma-separated list, e.g. retrain,FT,SalUn (default all)")
    p.add_argument("--seeds", type=positive_int, default=None, help="unlearning seeds (default: the profile's)")
    g = p.add_argument_group("classification (--task classification)")
    forget = g.add_mutually_exclusive_group()
    forget.add_argument("--forget-classes", type=parse_int_list, default=None,
                        help="class-wise forgetting of these classes, e.g. 0 or 0,3 (default 0)")
    forget.add_argument("--forget-share", type=float, default=None,
                        help="random forgetting of this share of the training samples, e.g. 0.1")
    g.add_argument("--eps", type=eps_list, default=None, help="UMA radii on [0, 1] pixels, e.g. 0,8/255,16/255 (the default)")
    g.add_argument("--mia-seeds", type=positive_int, default=None, help="MIA seeds (default: the profile's)")
    g.add_argument("--landing", type=parse_eps, default=None,
                   help="the adaptive landing (a course addition, off by default): GA and IU stop at this forget "
                        "accuracy, e.g. 0.08; without it every method runs its fixed recipe")
    RUB_TASKS.register("classification", RubTask("classification",
                                                  ("forget_classes", "forget_share", "eps", "mia_seeds", "landing"),
                                                  run_classification))
    for name in TASK_MODULES:
        try:
            module = importlib.import_module(f"{__package__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.{name}":
                raise
            continue
        module.add_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    task = RUB_TASKS.get(args.task)
    defaults = {}
    for other in RUB_TASKS.entries():
        if other.name != task.name:
            for dest in other.obj.options:
                if dest not in task.options and getattr(args, dest, None) not in (None, False):
                    defaults.setdefault(dest, other.name)
    if defaults:
        given = ", ".join(f"--{d.replace('_', '-')} (--task {t})" for d, t in defaults.items())
        raise CourseError(f"{given} does not apply to --task {task.name}; remove it or choose that task.")
    return task.run(args)


def run_classification(args: argparse.Namespace) -> int:
    from ..experiments.rub_classification import DEFAULT_EPS, RubConfig, run_rub

    output_folder(args)
    if args.forget_share is not None:
        forget_classes = None
    else:
        forget_classes = args.forget_classes if args.forget_classes is not None else [0]
    result = run_rub(args.dataset or "mnist-5k", args.model, profile=args.profile, methods=args.methods,
                     forget_classes=forget_classes, forget_share=args.forget_share,
                     eps=args.eps if args.eps is not None else DEFAULT_EPS, seeds=args.seeds,
                     mia_seeds=args.mia_seeds, out=args.out, progress=not args.json,
                     config=RubConfig.for_profile(args.profile, landing=args.landing))
    table = result.table()
    pattern = result.rub_pattern()
    text = (f"{table.to_string()}\n\n"
            f"RUB pattern at eps={pattern['eps']:.4f}: retrain UA under attack {pattern['retrain_ua_under_attack']:.2f} %, "
            f"RUB's methods regaining >= 30 UA points: {', '.join(pattern['methods_regaining_30_points']) or 'none'}"
            f" (extras: {', '.join(pattern['extras_regaining_30_points']) or 'none'})"
            f" -> {'shown' if pattern['pattern'] else 'not shown'}\n"
            f"rows: {len(result.rows)} ({result.computed_rows} computed now) in {result.results_path}")
    from pathlib import Path

    stem = Path(result.results_path).stem
    return finish(args, result, stem, text, extra={"table": table.reset_index().to_dict(orient="records")})
