"""``course-lib gradient-lab``: chapter 2's sweep of how well theta - theta_u estimates the removed gradient."""
from __future__ import annotations

from .common import add_recipe_options, finish, output_folder


def register(sub) -> None:
    p = sub.add_parser("gradient-lab", help="chapter 2: sweep N, epochs and momentum; cosine of the estimate",
                       description="Sweep the training-set size, the fine-tuning epochs and the momentum; measure "
                                   "the cosine between theta - theta_u and the removed samples' gradient, and the "
                                   "recovery it allows (sizes from the profile's budget).")
    p.add_argument("--precision", choices=("auto", "float32", "float64"), default="auto",
                   help="the developer's weights (default auto: float64 where float32 rounding hides the update)")
    add_recipe_options(p, out="gradient-lab")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..experiments.gradient_lab import run_gradient_lab

    output_folder(args)
    result = run_gradient_lab(args.dataset, args.model, profile=args.profile, seed=args.seed,
                              precision=args.precision, progress=not args.json)
    return finish(args, result, f"gradient-lab-{args.dataset}-seed{args.seed}")
