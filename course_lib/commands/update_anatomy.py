"""``course-lib update-anatomy``: chapter 4's dissection of the approximate update (head, features, one sample)."""
from __future__ import annotations

from .common import add_recipe_options, finish, output_folder, parse_int_list, positive_int


def register(sub) -> None:
    p = sub.add_parser("update-anatomy", help="chapter 4: which part of the approximate update the probes see",
                       description="Unlearn each class (approximately), apply the head part, the feature part and the "
                                   "largest-loss sample's part of the update separately, and probe each.")
    p.add_argument("--classes", type=parse_int_list, default=None, help="unlearned classes, e.g. 0,3 (default: all)")
    p.add_argument("--forget-share", type=float, default=1.0, help="share p_u of each class removed (default 1)")
    p.add_argument("--probes-per-class", type=positive_int, default=None,
                   help="probes per class (default: the profile's)")
    add_recipe_options(p, out="update-anatomy", model=False)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..experiments.label_inference import LabelInferenceConfig
    from ..experiments.probing_setup import prepare_probing
    from ..experiments.update_anatomy import run_update_anatomy

    from ..errors import check_range

    check_range(args.forget_share, 0.0, 1.0, "--forget-share (the share p_u of each class removed)", low_open=True)
    output_folder(args)
    cfg = LabelInferenceConfig.for_profile(args.profile)
    setup = prepare_probing(args.dataset, profile=args.profile, seed=args.seed,
                            subset_per_class=cfg.subset_per_class, progress=not args.json)
    probes = setup.probes(args.probes_per_class or cfg.probes_per_class, cfg.probe_method, progress=not args.json)
    result = run_update_anatomy(setup, probes, classes=args.classes, forget_share=args.forget_share,
                                progress=not args.json)
    return finish(args, result, f"update-anatomy-{args.dataset}-seed{args.seed}")
