"""``course-lib label-inference``: chapter 4's Table 3 (every class in turn, every p_u) and the label-only attack."""
from __future__ import annotations

from .common import add_recipe_options, finish, output_folder


def register(sub) -> None:
    p = sub.add_parser("label-inference", help="chapter 4: Table 3, Figs. 4/9/10 and the label-only attack",
                       description="Unlearn each class in turn (every share p_u of the profile, exact and approximate) "
                                   "and infer it from black-box queries; sizes from the profile's budget.")
    p.add_argument("--no-cache", action="store_true",
                   help="rebuild the probes and compute the result again instead of reading the stored ones")
    add_recipe_options(p, out="label-inference", model=False)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..experiments.label_inference import run_label_inference

    output_folder(args)
    result = run_label_inference(args.dataset, profile=args.profile, seed=args.seed, use_cache=not args.no_cache,
                                 resume=not args.no_cache, out=args.out, progress=not args.json)
    return finish(args, result, f"label-inference-{args.dataset}-seed{args.seed}")
