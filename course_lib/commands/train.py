"""``course-lib train``: pre-train M0 on D0 and fine-tune M on Du (cached)."""
from __future__ import annotations

from .common import add_recipe_options, positive_int


def register(sub) -> None:
    p = sub.add_parser("train", help="train M0 (public D0) and M (private Du), cached by configuration")
    p.add_argument("--finetune-epochs", type=positive_int, default=None, help="epochs of fine-tuning on Du")
    add_recipe_options(p, out=None)
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
