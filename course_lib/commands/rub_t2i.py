"""``course-lib rub --task t2i``: erase a digit from a diffusion model and prompt it back (chapter 8).

Adds the text-to-image options to ``course-lib rub`` (:mod:`course_lib.commands.rub`) and registers
the task in :data:`~course_lib.commands.rub.RUB_TASKS`. Every (method, seed) row goes to
``<out>/rub-t2i-<key>.jsonl`` as soon as it is computed (``rub-t2i-<key>.json`` beside it records the
configuration); the same command again resumes. The table and figure of the run are written to
``rub-t2i-<key>-summary.json`` / ``.png``. Bad input
(an unknown method or concept, a concept the vocabulary lacks, a step cap below 1) stops before
anything is trained or written.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import finish, output_folder, positive_int
from .rub import RUB_TASKS, RubTask


def add_options(parser: argparse.ArgumentParser) -> None:
    """Add the t2i options to ``course-lib rub`` and register the task (called by ``commands.rub.register``)."""
    g = parser.add_argument_group("text-to-image (--task t2i)")
    g.add_argument("--concept", default=None,
                   help="the digit to erase, as its word (seven) or class index (7); default seven")
    g.add_argument("--attack-steps", type=positive_int, default=None,
                   help="cap on the prompt attack's steps (RUB: 100; default: the profile's)")
    RUB_TASKS.register("t2i", RubTask("t2i", ("concept", "attack_steps"), run))


def run(args: argparse.Namespace) -> int:
    from ..experiments.rub_diffusion import T2IBudget, concept_label, run_rub_t2i, validate_request

    concept = args.concept if args.concept is not None else "seven"
    # every choice is checked before anything is trained or the results folder is touched
    validate_request(args.methods, args.seeds, args.attack_steps, {})
    concept_label(concept)
    config = T2IBudget.for_profile(args.profile)
    output_folder(args)
    result = run_rub_t2i(args.dataset, concept, config=config, methods=args.methods, seeds=args.seeds,
                         attack_steps=args.attack_steps, out=args.out, progress=not args.json)
    # "<rows file>-summary": the rows file's own .json sidecar (the RowStore's identity) keeps its name
    return finish(args, result, f"{Path(result.results_path).stem}-summary", result.text())
