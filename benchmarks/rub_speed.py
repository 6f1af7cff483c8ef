"""Timing benchmark of RUB for classification: seconds per unlearning method and per UMA attack.

Runs on the CPU, and on CUDA when PyTorch sees a GPU (``COURSE_DEVICE`` forces a device).

    python benchmarks/rub_speed.py                      # CIFAR-10 ResNet-18 if the shared copy exists, and mnist-5k ConvNet
    python benchmarks/rub_speed.py --only mnist-5k      # skip CIFAR-10
    python benchmarks/rub_speed.py --limit 5000 --epochs 2 --json

CIFAR-10 comes from the shared ImageFolder archive (``--cifar-archive``, default
``../shared/datasets/cifar10-imagefolder.tar.gz`` beside the checkout), extracted to a temporary
folder and read with ``folder:PATH``; when the archive is absent those rows are skipped. The
training subset (``--limit`` images, class-balanced) and the epochs are small on purpose: this
measures *cost*, not accuracy. Nothing is cached, and nothing is written inside the repository.
"""
from __future__ import annotations

import argparse
import json
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

from course_lib.attacks.uma import unlearning_mapping_attack
from course_lib.config import get_device, seed_everything
from course_lib.data import load
from course_lib.models import build_model
from course_lib.train import accuracy, train_model
from course_lib.unlearn import CLASSIFICATION_METHODS

DEFAULT_ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10-imagefolder.tar.gz"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(dataset: str, model_name: str, *, limit: int, test_limit: int, epochs: int, width: int,
          methods: list[str], attack_samples: int, steps: int, device: torch.device) -> dict:
    """Train an original model on ``limit`` images, then time each method and UMA at 8/255 and 16/255."""
    t0 = time.perf_counter()
    train = load(dataset, "train", limit=limit)
    test = load(dataset, "test", limit=test_limit)
    load_s = time.perf_counter() - t0
    seed_everything(0)
    model = build_model(model_name, train.input_shape, train.num_classes, width=width).to(device)
    sched = dict(epochs=epochs, lr=0.05, batch_size=64, momentum=0.9, weight_decay=5e-4, schedule="linear")
    t0 = time.perf_counter()
    train_model(model, train, seed=0, progress=False, device=device, **sched)
    sync(device)
    train_s = time.perf_counter() - t0
    forget_idx = torch.nonzero(train.y == 0).flatten()
    forget, retain = train.subset(forget_idx), train.without(forget_idx)
    keep = torch.nonzero(test.y != 0).flatten()
    test_r = test.subset(keep)
    rows = []
    x = forget.x[:attack_samples]
    for name in methods:
        hp = dict(sched, cache=False) if name == "retrain" else {}
        sync(device)
        t0 = time.perf_counter()
        unlearned = CLASSIFICATION_METHODS.get(name)(model, forget, retain, seed=0, **hp)
        sync(device)
        unlearn_s = time.perf_counter() - t0
        row = {"method": name, "unlearn_seconds": round(unlearn_s, 2),
               "ta": round(100 * accuracy(unlearned, test_r), 2), "ua": round(100 * accuracy(unlearned, forget), 2)}
        for eps in (8 / 255, 16 / 255):
            attack = unlearning_mapping_attack(model, unlearned, x.to(device), eps=eps, steps=steps, seed=0)
            sync(device)
            with torch.no_grad():
                pred = unlearned(attack.x_adv.to(device)).argmax(1).cpu()
            tag = f"{round(eps * 255)}/255"
            row[f"uma_seconds@{tag}"] = round(attack.seconds, 2)
            row[f"ua@{tag}"] = round(100 * float((pred == forget.y[:attack_samples]).float().mean()), 2)
        rows.append(row)
        print(f"  {name:10s} unlearn {row['unlearn_seconds']:8.2f} s   UMA 8/255 {row['uma_seconds@8/255']:7.2f} s"
              f"   UMA 16/255 {row['uma_seconds@16/255']:7.2f} s   TA {row['ta']:6.2f}  UA {row['ua']:6.2f}"
              f" -> {row['ua@8/255']:6.2f} / {row['ua@16/255']:6.2f}", flush=True)
    return {"dataset": dataset.split("/")[-1] if dataset.startswith("folder:") else dataset, "model": model_name,
            "device": str(device), "train_images": len(train), "epochs": epochs, "load_seconds": round(load_s, 2),
            "original_train_seconds": round(train_s, 2), "original_ta": round(100 * accuracy(model, test_r), 2),
            "attack_samples": int(len(x)), "uma_steps": steps, "rows": rows,
            "torch_threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", choices=["cifar10", "mnist-5k"], default=None, help="run one of the two settings")
    p.add_argument("--cifar-archive", type=Path, default=DEFAULT_ARCHIVE)
    p.add_argument("--limit", type=int, default=2000, help="training images (class-balanced subset)")
    p.add_argument("--test-limit", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=1, help="epochs of the original model and of retrain")
    p.add_argument("--methods", default="all", help="'all' or a comma-separated list")
    p.add_argument("--attack-samples", type=int, default=64)
    p.add_argument("--steps", type=int, default=10, help="UMA PGD steps")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    device = get_device()
    methods = CLASSIFICATION_METHODS.names() if args.methods == "all" else args.methods.split(",")
    print(f"device: {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
          f"torch threads {torch.get_num_threads()}", flush=True)
    results = []
    if args.only in (None, "mnist-5k"):
        print("mnist-5k, ConvNet (width 16):", flush=True)
        results.append(bench("mnist-5k", "convnet", limit=args.limit, test_limit=args.test_limit, epochs=args.epochs,
                             width=16, methods=methods, attack_samples=args.attack_samples, steps=args.steps,
                             device=device))
    if args.only in (None, "cifar10"):
        if not args.cifar_archive.exists():
            print(f"CIFAR-10 archive not found at {args.cifar_archive}: skipping the CIFAR-10 ResNet-18 rows.")
        else:
            with tempfile.TemporaryDirectory(prefix="rub-cifar10-") as tmp:
                t0 = time.perf_counter()
                with tarfile.open(args.cifar_archive) as tar:
                    tar.extractall(tmp)
                root = next(Path(tmp).glob("**/train")).parent
                print(f"CIFAR-10 (extracted in {time.perf_counter() - t0:.1f} s), ResNet-18:", flush=True)
                results.append(bench(f"folder:{root}", "resnet18", limit=args.limit, test_limit=args.test_limit,
                                     epochs=args.epochs, width=64, methods=methods,
                                     attack_samples=args.attack_samples, steps=args.steps, device=device))
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
