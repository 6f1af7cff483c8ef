"""``course-lib rub --task i2i``: RUB's image-to-image benchmark (chapter 7), resumable.

Adds its options to ``course-lib rub`` in an argument group and registers the task in
:data:`~course_lib.commands.rub.RUB_TASKS`. It shares ``--forget-classes`` and ``--eps`` with the
classification task; ``--eps`` also reads ``unbounded`` (no radius: on [0, 1] pixels, eps = 1),
which this module teaches the shared option. Every (method, seed, eps) row goes to
``<out>/rub-i2i-<key>.jsonl`` as soon as it is computed (``rub-i2i-<key>.json`` beside it records
the configuration); the same command again resumes. The table and figure of the run are written
to ``rub-i2i-<key>-summary.json`` / ``.png``.

Example::

    course-lib rub --task i2i --profile quick --eps 0,8/255,16/255,unbounded
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import finish, output_folder, parse_eps, parse_int_list
from .rub import RUB_TASKS, RubTask


def eps_or_unbounded_list(text: str) -> list[float]:
    """``0,8/255,unbounded`` -> radii on [0, 1] pixels; ``unbounded`` (or ``inf``) is 1 (argparse ``type=``)."""
    values = []
    for token in (t.strip() for t in text.split(",")):
        if not token:
            continue
        values.append(1.0 if token.lower() in ("unbounded", "inf", "infinity") else parse_eps(token))
    if not values:
        raise argparse.ArgumentTypeError(f"expected radii like 0,8/255,16/255,unbounded; got {text!r}")
    return values


def add_options(parser: argparse.ArgumentParser) -> None:
    """Add the i2i options to ``course-lib rub`` and register the task (called by ``commands.rub.register``)."""
    g = parser.add_argument_group("image-to-image (--task i2i)")
    g.add_argument("--retain-classes", type=parse_int_list, default=None,
                   help="--task i2i: the classes kept (default 5,6,7,8,9); --forget-classes defaults to 0,1,2,3,4")
    # the shared --eps learns the word "unbounded" (1 on [0, 1] pixels, which every task reads the same way)
    eps_action = parser._option_string_actions.get("--eps")
    if eps_action is not None:
        eps_action.type = eps_or_unbounded_list
        eps_action.help = ("UMA radii on [0, 1] pixels, e.g. 0,8/255,16/255 (classification's default); "
                           "i2i also takes 'unbounded' (its default: 0,8/255,16/255,unbounded)")
    RUB_TASKS.register("i2i", RubTask("i2i", ("forget_classes", "retain_classes", "eps"), run))


def run(args: argparse.Namespace) -> int:
    from ..experiments.rub_inpainting import (DEFAULT_EPS, DEFAULT_FORGET_CLASSES, DEFAULT_RETAIN_CLASSES,
                                              check_request, run_rub_i2i)

    request = dict(forget_classes=args.forget_classes if args.forget_classes is not None else DEFAULT_FORGET_CLASSES,
                   retain_classes=args.retain_classes if args.retain_classes is not None else DEFAULT_RETAIN_CLASSES,
                   eps=args.eps if args.eps is not None else DEFAULT_EPS, methods=args.methods)
    check_request(args.dataset, profile=args.profile, **request)   # bad input: exit 2 before anything is written
    output_folder(args)
    result = run_rub_i2i(args.dataset, profile=args.profile, seeds=args.seeds, out=args.out, progress=not args.json,
                         **request)
    table = result.table()
    table.columns = [" ".join(c) for c in table.columns]
    # "<rows file>-summary": the rows file's own .json sidecar (the RowStore's identity) keeps its name
    return finish(args, result, f"{Path(result.results_path).stem}-summary", result.text(),
                  extra={"table": table.reset_index().to_dict(orient="records")})
