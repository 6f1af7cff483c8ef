"""``course-lib recover``: unlearn samples and recover their features from (M, M_u) (chapter 3)."""
from __future__ import annotations

from .common import add_recipe_options, finish, output_folder, positive_int


def register(sub) -> None:
    p = sub.add_parser("recover", help="white-box unlearning inversion: recover removed samples from theta - theta_u")
    p.add_argument("--unlearning", choices=("approximate", "exact"), default="approximate",
                   help="the developer's unlearning method (default approximate)")
    p.add_argument("--num-forget", type=positive_int, default=1, help="number of samples removed at once (default 1)")
    p.add_argument("--train-size", type=positive_int, default=None,
                   help="fine-tune M on this many samples of Du (default: all of Du)")
    p.add_argument("--epochs", type=positive_int, default=None, help="fine-tuning epochs of M (default: the profile's)")
    p.add_argument("--label", choices=("known", "unknown"), default="known",
                   help="whether the attacker knows the removed samples' labels (default known)")
    p.add_argument("--restarts", type=positive_int, default=None, help="random restarts (default: the profile's)")
    p.add_argument("--iterations", type=positive_int, default=None, help="Adam iterations (default: the profile's)")
    p.add_argument("--precision", choices=("auto", "float64", "float32"), default="auto",
                   help="precision in which the developer keeps M and M_u (default auto: float64 where "
                        "float32 rounding would hide the update)")
    p.add_argument("--estimator", choices=("difference", "reference"), default="difference",
                   help="gradient estimate: eq. 2 theta - theta_u (default), or 'reference', which also uses "
                        "M0 and the training-set size")
    add_recipe_options(p, out="recover")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..experiments.recovery import run_recovery

    output_folder(args)
    result = run_recovery(args.dataset, args.model, unlearning=args.unlearning, num_forget=args.num_forget,
                          train_size=args.train_size, epochs=args.epochs, label=args.label,
                          restarts=args.restarts, iterations=args.iterations, profile=args.profile,
                          seed=args.seed, precision=args.precision, estimator=args.estimator,
                          progress=not args.json)
    s = result.summary
    lines = [f"{args.unlearning} unlearning of {len(result.samples)} sample(s) from {result.settings['dataset']} "
             f"({result.settings['model']}, training set {result.settings['train_size']}, "
             f"profile {result.settings['profile']})",
             result.table().to_string(float_format=lambda v: f"{v:.3f}")]
    if result.kind == "image":
        lines.append(f"mean PSNR {s['mean_psnr']:.2f} dB (median {s['median_psnr']:.2f}); "
                     f"mean-image baseline {s.get('baseline_mean_image_psnr', float('nan')):.2f} dB")
    else:
        lines.append(f"mean RMSE {s['mean_rmse']:.4f} (median {s['median_rmse']:.4f})")
    if result.lpips_reason:
        lines.append(f"LPIPS not computed: {result.lpips_reason}")
    c = result.cost
    lines.append(f"cost: {c['restarts']} restarts x {c['iterations']} iterations in {c['seconds']:.1f} s "
                 f"({c['restart_iterations_per_second']:.1f} restart-iterations/s)")
    stem = f"recover-{result.settings['dataset']}-{args.unlearning}-seed{args.seed}"
    return finish(args, result, stem, "\n".join(lines))
