"""``course-lib infer-label``: infer which class was unlearned, with black-box queries only (chapter 4)."""
from __future__ import annotations

import argparse

from .common import add_recipe_options, finish, non_negative_int, output_folder, parse_int_list, positive_int


def register(sub) -> None:
    p = sub.add_parser(
        "infer-label", help="label inference: which class did the deployed model unlearn? (chapter 4)",
        description="Fine-tune M0 on ~50 samples per class (the deployed model M), unlearn a share of one or "
                    "more classes, and infer the unlearned class(es) from black-box queries only: probes "
                    "built on M (ZOO or NES) and their confidence drop on the unlearned model (eqs. 7-11), "
                    "or boundary probes through a label-only API.")
    p.add_argument("--unlearning", choices=("approximate", "exact"), default="approximate",
                   help="unlearning method (default approximate)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--forget-class", type=non_negative_int, default=None, metavar="C", help="unlearn class C")
    which.add_argument("--forget-classes", type=parse_int_list, default=None, metavar="C1,C2,...",
                       help="unlearn several classes at once; the attack answers the top-K")
    which.add_argument("--all-classes", action="store_true",
                       help="unlearn each class in turn and report the accuracy (Table 3)")
    p.add_argument("--forget-share", type=float, default=1.0, metavar="P",
                   help="share p_u of each class's samples that is unlearned, in (0, 1] (default 1.0)")
    p.add_argument("--probes-per-class", type=positive_int, default=None, metavar="M",
                   help="probes per class (default: the profile's, 10 at standard)")
    p.add_argument("--probe-method", choices=("zoo", "nes"), default="nes",
                   help="zeroth-order estimator for the probes: nes (query-efficient, default) or zoo "
                        "(the paper's coordinate-wise ZOO; tens of thousands of queries per probe)")
    p.add_argument("--api", choices=("probs", "labels"), default="probs",
                   help="what the server answers: probability vectors (default) or labels only")
    p.add_argument("--no-cache", action="store_true", help="rebuild the probes instead of loading cached ones")
    add_recipe_options(p, out="infer-label", model=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..experiments.label_attack import run_label_attack

    output_folder(args)
    classes = None
    if args.forget_class is not None:
        classes = [args.forget_class]
    elif args.forget_classes is not None:
        classes = args.forget_classes
    result = run_label_attack(args.dataset, unlearning=args.unlearning, forget_classes=classes,
                             all_classes=args.all_classes, forget_share=args.forget_share,
                             probes_per_class=args.probes_per_class, probe_method=args.probe_method,
                             api=args.api, profile=args.profile, seed=args.seed, use_cache=not args.no_cache,
                             progress=not args.json)
    lines = [f"{result.dataset}, {result.unlearning} unlearning of p_u = {result.forget_share}, "
             f"{'probability' if result.api == 'probs' else 'label-only'} API"
             + (f", {result.probes_per_class} {result.probe_method} probes per class" if result.api == "probs" else "")]
    score = "confidence drop" if result.api == "probs" else "flip share"
    for c in result.cases:
        top = sorted(range(len(c["delta"])), key=lambda i: -c["delta"][i])[:3]
        lines.append(f"  unlearned {c['true']} -> inferred {c['inferred']}   "
                     f"(largest {score}: " + ", ".join(f"{i}: {c['delta'][i]:.3g}" for i in top) + ")")
    if args.all_classes or len(result.cases[0]["true"]) > 1:
        lines.append(f"accuracy: {result.accuracy:.2f}")
    q = result.queries
    lines.append(f"queries: {q['construction']} to build the probes"
                 + (" (cached)" if q.get("probes_from_cache") else "") + f", {q['probing']} to probe")
    return finish(args, result, f"infer-label-{result.dataset}-{args.unlearning}-{args.api}-seed{args.seed}",
                  "\n".join(lines))
