"""Timing benchmark of RUB's image-to-image task: seconds per unlearning method and per attack step.

Runs on the CPU, and on CUDA when PyTorch sees a GPU (``COURSE_DEVICE`` forces a device).

    python benchmarks/i2i_speed.py                          # digits and mnist-5k at the budgets' model sizes
    python benchmarks/i2i_speed.py --only mnist-5k --json
    python benchmarks/i2i_speed.py --cifar                  # also CIFAR-10 from the shared ImageFolder archive

For each dataset it trains an inpainter for ``--epochs`` epochs (a short run: this measures *cost*,
not quality), times every registered I2I method with its defaults (``retrain`` with the same
short schedule and no cache), and times the mapping attack per step on ``--samples`` forget
images: PGD at 8/255, and the unbounded search with Adam (the default) and with signed steps.
The attack runs the model against itself (f_u = f), which costs the same per step as against an
unlearned model. Nothing is cached and nothing is written inside the repository. Timings on a
shared machine are inflated by the other processes' load: the script prints the load average.
"""
from __future__ import annotations

import argparse
import json
import os
import tarfile
import tempfile
import time
from pathlib import Path

import torch

from course_lib.attacks.uma_i2i import UNBOUNDED, inpainting_mapping_attack
from course_lib.config import get_device, seed_everything
from course_lib.data import load
from course_lib.experiments.rub_inpainting import I2IConfig
from course_lib.models.inpainter import build_inpainter, train_inpainter
from course_lib.unlearn import I2I_METHODS

DEFAULT_ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "cifar10-imagefolder.tar.gz"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(dataset: str, profile: str, *, epochs: int, samples: int, steps: int, limit: int | None,
          device: torch.device) -> dict:
    """Train a short inpainter of ``profile``'s size on ``dataset``, then time the methods and the attack."""
    cfg = I2IConfig.for_profile(profile)
    train = load(dataset, "train", limit=limit)
    seed_everything(0)
    spec = cfg.mask_for(int(train.input_shape[-1]))
    model = build_inpainter(train.input_shape, width=cfg.width, latent=cfg.latent, mask_spec=spec).to(device)
    t0 = time.perf_counter()
    train_inpainter(model, train.x, epochs=epochs, lr=cfg.lr, batch_size=cfg.batch_size, progress=False)
    sync(device)
    train_s = time.perf_counter() - t0
    is_forget = torch.isin(train.y, torch.arange(5))
    forget, retain = train.subset(torch.nonzero(is_forget).flatten()), train.subset(torch.nonzero(~is_forget).flatten())
    methods = {}
    for name in I2I_METHODS.names():
        hp = {"epochs": epochs, "cache": False} if name == "retrain" else {}
        t0 = time.perf_counter()
        I2I_METHODS.get(name)(model, forget, retain, seed=0, **hp)
        sync(device)
        methods[name] = round(time.perf_counter() - t0, 3)
    x = forget.x[:samples]
    mask = spec.fixed(len(x), *x.shape[-2:], seed=1)
    t0 = time.perf_counter()
    inpainting_mapping_attack(model, model, x, mask, eps=8 / 255, steps=steps)
    sync(device)
    attack_s = time.perf_counter() - t0
    unbounded = {}
    for optimizer in ("adam", "sign"):   # the unbounded search: Adam (the default) and PGD's signed steps
        t0 = time.perf_counter()
        inpainting_mapping_attack(model, model, x, mask, eps=UNBOUNDED, steps=steps, optimizer=optimizer)
        sync(device)
        unbounded[optimizer] = round((time.perf_counter() - t0) / steps, 5)
    return {"dataset": dataset, "profile_sizes": profile, "device": str(device), "n_train": len(train),
            "width": cfg.width, "latent": cfg.latent, "epochs": epochs,
            "train_seconds_per_epoch": round(train_s / epochs, 3), "unlearn_seconds": methods,
            "retrain_note": f"retrain timed with {epochs} epochs (its default is the original's schedule)",
            "attack": {"samples": len(x), "steps": steps, "seconds": round(attack_s, 3),
                       "seconds_per_step": round(attack_s / steps, 5),
                       "milliseconds_per_image_step": round(1000 * attack_s / steps / len(x), 4),
                       "unbounded_seconds_per_step": unbounded}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["digits", "mnist-5k"], default=None)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cifar", action="store_true", help="also CIFAR-10 (full-profile model sizes)")
    parser.add_argument("--cifar-archive", type=Path, default=DEFAULT_ARCHIVE)
    parser.add_argument("--cifar-limit", type=int, default=5000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    device = get_device()
    runs = [("digits", "quick"), ("mnist-5k", "standard")]
    runs = [r for r in runs if args.only in (None, r[0])]
    results = []
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    for dataset, profile in runs:
        results.append(bench(dataset, profile, epochs=args.epochs, samples=args.samples, steps=args.steps,
                             limit=None, device=device))
    if args.cifar:
        if not args.cifar_archive.exists():
            print(f"skipping CIFAR-10: no archive at {args.cifar_archive}")
        else:
            with tempfile.TemporaryDirectory() as tmp:
                with tarfile.open(args.cifar_archive) as tar:
                    tar.extractall(tmp, filter="data")
                folder = next(Path(tmp).glob("*/train")).parent
                results.append(bench(f"folder:{folder}", "full", epochs=args.epochs, samples=args.samples,
                                     steps=args.steps, limit=args.cifar_limit, device=device))
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    if args.json:
        print(json.dumps({"load_average": [load_before, load_after], "results": results}, indent=2))
        return 0
    print(f"device {device}; 1-minute load average {load_before:.2f} before, {load_after:.2f} after "
          f"(on {os.cpu_count()} cores: timings on a busy machine are inflated)")
    for r in results:
        print(f"\n{r['dataset']} ({r['n_train']} training images, {r['profile_sizes']} sizes: width {r['width']}, "
              f"latent {r['latent']})")
        print(f"  train the inpainter: {r['train_seconds_per_epoch']:.2f} s per epoch")
        for name, s in r["unlearn_seconds"].items():
            print(f"  unlearn with {name:8s}: {s:7.2f} s")
        a = r["attack"]
        print(f"  attack at 8/255: {a['seconds_per_step']:.4f} s per PGD step on {a['samples']} images "
              f"({a['milliseconds_per_image_step']:.3f} ms per image and step)")
        u = a["unbounded_seconds_per_step"]
        print(f"  unbounded attack: {u['adam']:.4f} s per Adam step, {u['sign']:.4f} s per signed step")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
