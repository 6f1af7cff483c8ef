"""``course-lib recover``: unlearn samples and recover their features from (M, M_u) (chapter 3)."""
from __future__ import annotations

from pathlib import Path

from ..data import dataset_names
from ..models import model_names
from .common import add_common


def register(sub) -> None:
    p = sub.add_parser("recover", help="white-box unlearning inversion: recover removed samples from theta - theta_u")
    p.add_argument("--dataset", default="mnist-5k",
                   help=f"one of {', '.join(dataset_names())}, or folder:PATH (default mnist-5k)")
    p.add_argument("--model", choices=model_names(), default=None,
                   help="architecture (default: mlp for tables, convnet-spatial for images, see course_lib.models)")
    p.add_argument("--unlearning", choices=("approximate", "exact"), default="approximate",
                   help="the developer's unlearning method (default approximate)")
    p.add_argument("--num-unlearn", type=int, default=1, help="number of samples removed at once (default 1)")
    p.add_argument("--train-size", type=int, default=None,
                   help="fine-tune M on this many samples of Du (default: all of Du)")
    p.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs of M (default: the profile's)")
    p.add_argument("--label", choices=("known", "unknown"), default="known",
                   help="whether the attacker knows the removed samples' labels (default known)")
    p.add_argument("--restarts", type=int, default=None, help="random restarts (default: the profile's)")
    p.add_argument("--iterations", type=int, default=None, help="Adam iterations (default: the profile's)")
    p.add_argument("--precision", choices=("auto", "float64", "float32"), default="auto",
                   help="precision in which the developer keeps M and M_u (default auto: float64 where "
                        "float32 rounding would hide the update)")
    p.add_argument("--estimator", choices=("difference", "reference"), default="difference",
                   help="gradient estimate: eq. 2 theta - theta_u (default), or 'reference', which also uses "
                        "M0 and the training-set size")
    p.add_argument("--out", default="recover-out", help="folder for the figure and JSON (default recover-out)")
    add_common(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..results import atomic_write_text
    from .common import emit
    from ..errors import CourseError
    from ..experiments.recovery import run_recovery

    for name in ("num_unlearn", "restarts", "iterations", "epochs", "train_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise CourseError(f"--{name.replace('_', '-')} must be a positive integer; got {value}.")
    result = run_recovery(args.dataset, args.model, args.unlearning, num_unlearn=args.num_unlearn,
                          train_size=args.train_size, epochs=args.epochs, label=args.label,
                          restarts=args.restarts, iterations=args.iterations, profile=args.profile,
                          seed=args.seed, precision=args.precision, estimator=args.estimator,
                          progress=not args.json)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"recover-{result.settings['dataset'].replace(':', '_').replace('/', '_')}-{args.unlearning}-seed{args.seed}"
    fig = result.plot()
    fig_path = out / f"{stem}.png"
    fig.savefig(fig_path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    result.figure_path = str(fig_path)
    payload = result.to_dict()
    atomic_write_text(out / f"{stem}.json", json.dumps(payload, indent=2, default=str))
    s = result.summary
    lines = [f"{args.unlearning} unlearning of {len(result.samples)} sample(s) from {result.settings['dataset']} "
             f"({result.settings['model']}, training set {result.settings['train_size']}, "
             f"profile {result.settings['profile']})"]
    lines.append(result.table().to_string(float_format=lambda v: f"{v:.3f}"))
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
    lines.append(f"figure: {fig_path}")
    emit(payload, args.json, "\n".join(lines))
    return 0
