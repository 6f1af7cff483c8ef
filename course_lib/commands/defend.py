"""``course-lib defend``: the defenses of Section 7 (and label-only answers) against both attacks (chapter 6).

Prints the attacks' success with and without each defense (feature recovery: PSNR, SSIM, LPIPS;
label inference: accuracy over the classes) and the utility (validation-accuracy ratio of the
defended to the undefended unlearned model). Without ``--defense`` it runs chapter 6's whole grid.
"""
from __future__ import annotations

import argparse

from .common import add_recipe_options, finish, output_folder, parse_eps, positive_int


def strengths_list(text: str) -> list[float]:
    values = [parse_eps(t) for t in text.split(",") if t.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"expected strengths like 0.005 or 0.7,0.9; got {text!r}")
    return values


def register(sub) -> None:
    from ..defenses import DEFENSES

    grids = "; ".join(f"{n}: {d.parameter} in {', '.join(f'{s:g}' for s in d.paper_strengths)}"
                      for n, d in ((e.name, e.obj) for e in DEFENSES.entries()))  # the paper's grids
    p = sub.add_parser("defend", help="evaluate defenses against feature recovery and label inference",
                       description=f"Apply a defense to the unlearned model and attack it again. Paper grids: {grids}. "
                                   "Without --defense, every defense of chapter 6's grid is evaluated.")
    p.add_argument("--defense", default=None, help=f"one of {', '.join(DEFENSES)} (default: chapter 6's grid)")
    p.add_argument("--strength", type=strengths_list, default=None,
                   help="strength(s) of --defense, e.g. 0.005 or 0.7,0.9: sigma (obfuscation), p (pruning), "
                        "lr (finetune), or 1 (label-only); default: its grid")
    p.add_argument("--attack", choices=("recover", "infer-label", "both"), default="recover",
                   help="feature recovery (server, white-box), label inference (user, black-box) or both; "
                        "default recover")
    p.add_argument("--grid", choices=("course", "paper"), default="course",
                   help="the strengths evaluated without --strength: the course's grid (an addition, spanning "
                        "the range in which the attack degrades; default) or the paper's (Table 4)")
    p.add_argument("--samples", type=positive_int, default=None,
                   help="removed samples averaged by the recovery attack (default: the profile's)")
    add_recipe_options(p, out="defend", model=False)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..defenses import get_defense
    from ..errors import CourseError
    from ..experiments.defense_evaluation import DefenseConfig, run_defenses

    if args.strength is not None and args.defense is None:
        raise CourseError("--strength needs --defense (which defense the strengths belong to).")
    if args.defense is not None:
        get_defense(args.defense)
    output_folder(args)
    attacks = ("recover", "infer-label") if args.attack == "both" else (args.attack,)
    defenses = [args.defense] if args.defense else None
    strengths = {args.defense: args.strength} if args.strength else None
    label_only = args.defense is None or get_defense(args.defense).api == "labels"
    result = run_defenses(args.dataset, profile=args.profile, seed=args.seed, attacks=attacks, defenses=defenses,
                          strengths=strengths, samples=args.samples, include_label_only=label_only,
                          config=(DefenseConfig.paper if args.grid == "paper" else DefenseConfig.for_profile)(args.profile),
                          out=args.out, progress=not args.json)
    what = " and ".join("feature recovery" if a == "recover" else "label inference" for a in attacks)
    lines = [f"{args.defense or 'every defense'} against {what} ({result.settings['dataset']}, profile "
             f"{result.settings['profile']}, seed {args.seed})",
             result.table().to_string(index=False, float_format=lambda v: f"{v:.4g}")]
    if "recover" in attacks:
        for d in ([args.defense] if args.defense else result.defenses_with_recovery()):
            drop = result.psnr_drop(d)
            if drop is not None:
                lines.append(f"{d}: mean recovery PSNR drops by {drop:.2f} dB at its strongest setting")
        if result.settings.get("lpips_reason"):
            lines.append(f"LPIPS not computed: {result.settings['lpips_reason']}")
    lines.append(f"cost: {result.cost.get('inversions', 0)} inversions, probing queries "
                 f"{result.cost.get('probing_queries', {})}, {result.cost.get('seconds')} s")
    stem = f"defend-{args.defense or 'grid'}-{args.attack}-seed{args.seed}"
    return finish(args, result, stem, "\n".join(lines))
