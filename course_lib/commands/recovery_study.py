"""``course-lib recovery-study STUDY``: chapter 3's studies of feature recovery (chapters 3 and 3b).

``seeds`` (Fig. 3, both presets), ``sizes`` (Table 2), ``epochs`` (Fig. 7), ``multi`` (several
samples at once), ``shares`` (the gradient shares and one dummy), ``audit`` (search or objective?)
and ``ablation`` (the paper's attack, then each course addition). Sizes come from the
``recovery-studies`` budget of ``--profile`` (``course-lib profile show`` lists them).
"""
from __future__ import annotations

from ..errors import CourseError
from .common import add_recipe_options, finish, output_folder, positive_int

STUDIES = ("seeds", "sizes", "epochs", "multi", "shares", "audit", "ablation")


def register(sub) -> None:
    p = sub.add_parser("recovery-study", help="chapter 3's studies: seeds, sizes, epochs, multi, shares, audit, ablation",
                       description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("study", choices=STUDIES, help="which study to run")
    p.add_argument("--preset", choices=("paper", "course"), default=None,
                   help="inversion preset: the paper's attack or the course's (default: both for 'seeds', "
                        "course otherwise; 'ablation' runs every step)")
    p.add_argument("--seeds", type=positive_int, default=None,
                   help="how many seeds (removed samples) the study averages (default: the profile's)")
    p.add_argument("--label", choices=("known", "unknown"), default="known",
                   help="ablation only: whether the attacker knows the removed sample's label (default known)")
    p.add_argument("--precision", choices=("auto", "float64", "float32"), default="auto",
                   help="precision in which the developer keeps M and M_u (default auto)")
    add_recipe_options(p, out="recovery-study")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..experiments import recovery_further as F
    from ..experiments import recovery_studies as S

    output_folder(args)
    budget = S.RecoveryStudiesBudget.for_profile(args.profile)
    if args.seeds is not None:
        field = {"seeds": "seeds", "shares": "share_seeds", "audit": "audit_seeds",
                 "ablation": "ablation_seeds"}.get(args.study)
        if field is None:
            raise CourseError(f"--seeds does not apply to the {args.study!r} study (it removes fixed samples).")
        changes = {field: args.seeds}
        if args.study == "seeds":
            changes["paper_seeds"] = args.seeds  # the paper preset attacks the same seeds
        budget = budget.replace(**changes)
    if args.label != "known" and args.study != "ablation":
        raise CourseError("--label applies to the 'ablation' study only.")
    common = dict(profile=args.profile, seed=args.seed, budget=budget, precision=args.precision)
    preset = args.preset or "course"
    if args.study == "seeds":
        presets = S.PRESETS if args.preset is None else (args.preset,)
        result = S.run_recovery_seeds(args.dataset, args.model, presets=presets, **common)
    elif args.study == "sizes":
        result = S.run_recovery_sizes(args.dataset, args.model, preset=preset, out=args.out, **common)
    elif args.study == "epochs":
        result = S.run_recovery_epochs(args.dataset, args.model, preset=preset, **common)
    elif args.study == "multi":
        result = F.run_recovery_multi(args.dataset, args.model, preset=preset, **common)
    elif args.study == "shares":
        result = F.run_gradient_shares(args.dataset, args.model, **common)
    elif args.study == "audit":
        result = F.run_objective_audit(args.dataset, args.model, preset=preset, **common)
    else:
        if args.preset is not None:
            raise CourseError("The ablation runs every step from the paper's preset to the course's; drop --preset.")
        result = F.run_recovery_ablation(args.dataset, args.model, label=args.label, **common)
    text = result.table().to_string(float_format=lambda v: f"{v:.3f}")
    return finish(args, result, f"recovery-study-{args.study}-{result.settings['dataset']}-seed{args.seed}", text)
