"""``course-lib defend``: one defense of Section 7 (or label-only answers) against one attack (chapter 6).

Prints the attack's success with and without the defense (feature recovery: PSNR, SSIM, LPIPS;
label inference: accuracy over the classes) and the utility (validation-accuracy ratio of the
defended to the undefended unlearned model).
"""
from __future__ import annotations

from ..data import dataset_names
from .common import add_common


def register(sub) -> None:
    from ..defenses import DEFENSES

    names = list(DEFENSES)
    grids = "; ".join(f"{n}: {d.parameter} in {', '.join(f'{s:g}' for s in d.paper_strengths)}"
                      for n, d in DEFENSES.items())
    p = sub.add_parser("defend", help="evaluate a defense against feature recovery or label inference",
                       description=f"Apply a defense to the unlearned model and attack it again. Paper grids: {grids}.")
    p.add_argument("--defense", required=True, choices=names, help="the defense to apply")
    p.add_argument("--strength", required=True, type=float,
                   help="sigma (obfuscation), p (pruning), lr (finetune), or 1 (label-only)")
    p.add_argument("--attack", choices=("recover", "infer-label"), default="recover",
                   help="feature recovery (server, white-box) or label inference (user, black-box); default recover")
    p.add_argument("--samples", type=int, default=None,
                   help="removed samples averaged by the recovery attack (default: the profile's)")
    p.add_argument("--dataset", default="mnist-5k",
                   help=f"an image dataset: one of {', '.join(dataset_names())}, or folder:PATH (default mnist-5k)")
    add_common(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from .common import emit
    from ..experiments.defenses import run_defend

    result = run_defend(args.defense, args.strength, attack=args.attack, samples=args.samples,
                        dataset=args.dataset, profile=args.profile, seed=args.seed, progress=not args.json)
    payload = result.to_dict()
    table = result.table()
    lines = [f"defense {args.defense} at strength {args.strength:g} against "
             f"{'feature recovery' if args.attack == 'recover' else 'label inference'} "
             f"({result.settings['dataset']}, profile {result.settings['profile']}, seed {args.seed})",
             table.to_string(index=False, float_format=lambda v: f"{v:.4g}")]
    if args.attack == "recover":
        drop = result.psnr_drop(args.defense, float(args.strength))
        if drop is not None:
            lines.append(f"mean recovery PSNR drops by {drop:.2f} dB against no defense")
        if result.settings.get("lpips_reason"):
            lines.append(f"LPIPS not computed: {result.settings['lpips_reason']}")
        lines.append(f"cost: {result.cost.get('inversions')} inversions, {result.cost.get('seconds')} s")
    else:
        q = result.cost.get("probing_queries", {})
        lines.append(f"queries: probe construction {result.cost.get('probe_construction_queries')}"
                     f"{' (cached)' if result.cost.get('probes_from_cache') else ''}, probing {q}; "
                     f"{result.cost.get('seconds')} s")
    emit(payload, args.json, "\n".join(lines))
    return 0
