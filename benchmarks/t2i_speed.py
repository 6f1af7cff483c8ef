"""Timing benchmark of RUB's text-to-image task: seconds per training step, per method, per attack step.

    python benchmarks/t2i_speed.py                    # the active profile (COURSE_PROFILE, else standard / full)
    python benchmarks/t2i_speed.py --profile quick --json
    python benchmarks/t2i_speed.py --methods ESD,AdvUnlearn --attack-steps 20

It trains the profile's original model (or loads it from the cache: its training time is then
measured on ``--train-steps`` fresh steps of the same recipe), then runs every unlearning method
from scratch (nothing of the methods is cached here) and the prompt attack with a fixed step cap,
and prints seconds per method, per attack step and per DDIM sample. Runs on CUDA when PyTorch sees
a GPU (``COURSE_DEVICE`` forces a device); on a GPU the ``full`` profile uses diffusers'
``UNet2DConditionModel``. The numbers depend on the machine's load: report it beside them.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from course_lib import threads
from course_lib.attacks.prompt_attack import unlearn_diff_attack
from course_lib.config import get_device, seed_everything
from course_lib.diffusion import train_t2i
from course_lib.experiments.rub_diffusion import T2IBudget, prepare_rub_t2i
from course_lib.models.t2i import build_t2i
from course_lib.unlearn import T2I_METHODS


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--profile", default=None, help="quick, standard or full (default: the active profile)")
    p.add_argument("--methods", default="all", help="'all' or a comma-separated list")
    p.add_argument("--attack-steps", type=int, default=10, help="attack steps per method (fixed cap)")
    p.add_argument("--train-steps", type=int, default=20, help="fresh training steps timed")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    cfg = T2IBudget.for_profile(args.profile)
    device = get_device()
    threads.configure_threads()
    t0 = time.perf_counter()
    setup = prepare_rub_t2i(config=cfg, progress=False)
    sync(device)
    report = {"profile": cfg.profile, "device": str(device), "threads": threads.thread_info(),
              "prepare_seconds": round(time.perf_counter() - t0, 2), "original": setup.original_info,
              "check_accuracy": setup.check["accuracy"], "targets": len(setup.target_seeds)}
    seed_everything(0)
    fresh = build_t2i(setup.original.arch, device)
    t0 = time.perf_counter()
    train_t2i(fresh, setup.diffusion, setup.retain.images, setup.retain.labels, steps=args.train_steps,
              batch_size=cfg.batch_size, lr=cfg.lr, p_uncond=cfg.p_uncond, progress=False)
    sync(device)
    report["seconds_per_train_step"] = round((time.perf_counter() - t0) / args.train_steps, 4)
    report["estimated_train_seconds"] = round(report["seconds_per_train_step"] * cfg.train_steps, 1)
    t0 = time.perf_counter()
    setup.diffusion.generate(setup.original, setup.target_prompts, setup.target_seeds, steps=cfg.sample_steps,
                             guidance=cfg.guidance)
    sync(device)
    report["seconds_per_sample"] = round((time.perf_counter() - t0) / len(setup.target_seeds), 5)
    names = T2I_METHODS.names() if args.methods == "all" else [m.strip() for m in args.methods.split(",")]
    rows = []
    for name in names:
        t0 = time.perf_counter()
        model = T2I_METHODS.get(name)(setup.original, setup.concept, setup.retain, seed=0)
        sync(device)
        unlearn_s = time.perf_counter() - t0
        attack = unlearn_diff_attack(setup.original, model, setup.diffusion, setup.classifier, setup.target_images,
                                     setup.target_prompts, setup.target_seeds, setup.label, steps=args.attack_steps,
                                     tokens=cfg.attack_tokens, lr=cfg.attack_lr, timesteps_per_step=cfg.attack_timesteps,
                                     sample_steps=cfg.sample_steps, guidance=cfg.guidance)
        rows.append({"method": name, "unlearn_seconds": round(unlearn_s, 2), "attack_seconds": round(attack.seconds, 2),
                     "seconds_per_attack_step": round(attack.step_seconds, 4), "post_asr": round(attack.post_asr, 3)})
    report["methods"] = rows
    report["other_cores_busy"] = threads.other_load()
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(f"profile {cfg.profile} on {device} ({report['threads']['why']}); other processes kept "
              f"{report['other_cores_busy'] or 0:.1f} cores busy")
        print(f"prepare (original + C + checks): {report['prepare_seconds']} s "
              f"(original from cache: {bool(setup.original_info.get('from_cache'))})")
        print(f"training: {report['seconds_per_train_step']} s/step -> {report['estimated_train_seconds']} s for "
              f"{cfg.train_steps} steps; sampling: {report['seconds_per_sample']} s/image")
        print(f"{'method':14s} {'unlearn s':>10s} {'attack s':>9s} {'s/attack step':>14s} {'post ASR':>9s}")
        for r in rows:
            print(f"{r['method']:14s} {r['unlearn_seconds']:10.2f} {r['attack_seconds']:9.2f} "
                  f"{r['seconds_per_attack_step']:14.4f} {r['post_asr']:9.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
