"""``course-lib rub``: the RUB benchmark for classification (chapter 5), resumable, with a table and a figure."""
from __future__ import annotations

import argparse

from ..data import dataset_names
from ..models import MODEL_NAMES
from .common import add_common, parse_eps, parse_int_list


def _eps_list(text: str) -> list[float]:
    return [parse_eps(t) for t in text.split(",") if t.strip()]


def _methods(text: str):
    text = text.strip()
    return "all" if text == "all" else [t.strip() for t in text.split(",") if t.strip()]


def register(sub) -> None:
    p = sub.add_parser("rub", help="RUB: unlearn, attack with UMA, report TA/UA/MIA over seeds (resumable)",
                       description="Robust unlearning benchmark (RUB) for classification: every method x seed x "
                                   "eps becomes one row of a JSONL results file, written as soon as it is "
                                   "computed; running the same command again resumes.")
    p.add_argument("--task", choices=["classification"], default="classification",
                   help="RUB task (only classification is implemented)")
    p.add_argument("--dataset", default="mnist-5k",
                   help=f"one of {', '.join(dataset_names())}, or folder:PATH (default mnist-5k)")
    p.add_argument("--model", choices=MODEL_NAMES, default=None, help="architecture (default convnet for images)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--forget-classes", type=parse_int_list, default=None,
                       help="class-wise forgetting of these classes, e.g. 0 or 0,3 (default 0)")
    group.add_argument("--forget-share", type=float, default=None,
                       help="random forgetting of this share of the training samples, e.g. 0.1")
    p.add_argument("--methods", type=_methods, default="all",
                   help="'all' or a comma-separated list, e.g. retrain,FT,GA (default all)")
    p.add_argument("--eps", type=_eps_list, default=None,
                   help="UMA radii on [0, 1] pixels, e.g. 0,8/255,16/255 (the default)")
    p.add_argument("--seeds", type=int, default=None, help="unlearning seeds (default: the profile's)")
    p.add_argument("--mia-seeds", type=int, default=None, help="MIA seeds (default: the profile's)")
    p.add_argument("--out", default="results/rub", help="folder of the results file and figure (default results/rub)")
    add_common(p, seed=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..cli import emit
    from ..experiments.rub import DEFAULT_EPS, run_rub

    forget_classes = args.forget_classes if args.forget_share is None else None
    if forget_classes is None and args.forget_share is None:
        forget_classes = [0]
    result = run_rub(args.dataset, args.model, profile=args.profile, methods=args.methods,
                     forget_classes=forget_classes, forget_share=args.forget_share,
                     eps=args.eps if args.eps is not None else DEFAULT_EPS, seeds=args.seeds,
                     mia_seeds=args.mia_seeds, out=args.out, progress=not args.json)
    fig = result.plot()
    fig_path = Path(result.results_path).with_suffix(".png")
    fig.savefig(fig_path, dpi=120, bbox_inches="tight")
    table = result.table()
    payload = result.to_dict()
    payload["table"] = table.reset_index().to_dict(orient="records")
    payload["figure"] = str(fig_path)
    pattern = result.rub_pattern()
    text = (f"{table.to_string()}\n\n"
            f"RUB pattern at eps={pattern['eps']:.4f}: retrain UA under attack {pattern['retrain_ua_under_attack']:.2f} %, "
            f"methods regaining >= 30 UA points: {', '.join(pattern['methods_regaining_30_points']) or 'none'}"
            f" -> {'shown' if pattern['pattern'] else 'not shown'}\n"
            f"rows: {len(result.rows)} ({result.computed_rows} computed now) in {result.results_path}\n"
            f"figure: {fig_path}")
    emit(payload, args.json, text)
    return 0
