"""``course-lib threat-model``: chapter 1's demonstration of the two observers of an unlearning request."""
from __future__ import annotations

from .common import add_recipe_options, finish, non_negative_int, output_folder


def register(sub) -> None:
    p = sub.add_parser("threat-model", help="chapter 1: unlearn one sample both ways and measure what changes",
                       description="Train (or load) M0 -> M, unlearn one sample of Du with exact and approximate "
                                   "unlearning, and measure the weight difference and the output change.")
    p.add_argument("--removed-index", type=non_negative_int, default=0,
                   help="which sample of the private split Du asks to be forgotten (default 0)")
    add_recipe_options(p, out="threat-model")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..experiments.threat_model import run_threat_model

    output_folder(args)
    result = run_threat_model(args.dataset, args.model, profile=args.profile, seed=args.seed,
                              removed_index=args.removed_index, progress=not args.json)
    return finish(args, result, f"threat-model-{args.dataset}-sample{args.removed_index}-seed{args.seed}")
