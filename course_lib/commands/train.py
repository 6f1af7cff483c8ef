"""``course-lib train``: pre-train M0 on D0 and fine-tune M on Du (cached)."""
from __future__ import annotations

from ..data import dataset_names
from ..models import model_names
from .common import add_common


def register(sub) -> None:
    p = sub.add_parser("train", help="train M0 (public D0) and M (private Du), cached by configuration")
    p.add_argument("--dataset", default="mnist-5k",
                   help=f"one of {', '.join(dataset_names())}, or folder:PATH (default mnist-5k)")
    p.add_argument("--model", choices=model_names(), default=None,
                   help="architecture (default: mlp for tables, convnet for images)")
    p.add_argument("--finetune-epochs", type=int, default=None, help="epochs of fine-tuning on Du")
    add_common(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from .common import emit
    from ..train import prepare_pipeline

    pipe = prepare_pipeline(args.dataset, args.model, profile=args.profile, seed=args.seed,
                            finetune_epochs=args.finetune_epochs, progress=not args.json)
    s = pipe.summary()
    text = (f"M0 (pre-trained on D0, {s['public_size']} samples): test accuracy {s['pretrained_test_accuracy']:.4f}"
            f"{' (cached)' if s['pretrained_from_cache'] else ''}\n"
            f"M  (fine-tuned on Du, {s['private_size']} samples): test accuracy {s['deployed_test_accuracy']:.4f}"
            f"{' (cached)' if s['deployed_from_cache'] else ''}\n"
            f"cache: {s['cache_paths']['pretrained']}\n       {s['cache_paths']['deployed']}")
    emit(s, args.json, text)
    return 0
