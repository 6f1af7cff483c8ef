"""Benchmark: restarts batched into one optimisation vs restarts run one after another.

For the same problem (the quick pipeline's convnet-spatial, one or several samples removed by
approximate unlearning, float64 weights) this prints, per device and mode:

* restart-iterations per second (higher is better), and
* seconds until the best restart first reaches a PSNR threshold against the true sample
  (measured by a monitor every ``--check-every`` steps; its own time is not counted).

Both modes run the *same* maths (:func:`course_lib.attacks.inversion.invert_gradient` with
``batched=True`` or ``False``, pruning off so the restarts are identical), so the final PSNR is
the same and only the speed differs. Results are appended to ``--out`` (JSON lines) as they come,
and configurations already there are skipped, so an interrupted run resumes.

    python benchmarks/inversion_speed.py --restarts 8 --iterations 300 --threshold 20
    python benchmarks/inversion_speed.py --devices cpu cuda --num-samples 1 4 --json

On a 2-core CPU shared with other jobs the timings are inflated; compare modes measured together.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch


def run_one(pipe, device: str, batched: bool, num_forget: int, restarts: int, iterations: int,
            threshold: float, check_every: int, seed: int, feature_iterations: int = 0) -> dict:
    import copy

    from course_lib import metrics
    from course_lib.attacks.gradient_estimation import estimate_gradient
    from course_lib.attacks.inversion import InversionConfig, invert_gradient
    from course_lib.experiments.recovery import make_unlearning_case

    case = make_unlearning_case(setup=pipe, unlearning="approximate", num_forget=num_forget, seed=seed,
                                precision="float64")
    target = estimate_gradient(case.original, case.unlearned)
    model = copy.deepcopy(case.original).float().to(device).eval()
    truth = case.forget.x.float().to(device)
    state = {"reached": None, "monitor_seconds": 0.0, "start": None, "best": -1.0}

    def monitor(offset: int, it: int, x: torch.Tensor) -> None:
        if it % check_every and it != iterations - 1:
            return
        t0 = time.perf_counter()
        if state["start"] is None:
            state["start"] = t0
        for r in range(x.shape[0]):
            rec = x[r]
            if num_forget > 1:
                rec = rec[metrics.match_samples(rec, truth)]
            p = sum(metrics.psnr(truth, rec)) / num_forget if num_forget > 1 else metrics.psnr(truth[0], rec[0])
            state["best"] = max(state["best"], p)
        if state["reached"] is None and state["best"] >= threshold:
            state["reached"] = (offset, it, t0)
        state["monitor_seconds"] += time.perf_counter() - t0

    cfg = InversionConfig(restarts=restarts, iterations=iterations, batched=batched, prune_at=(), progress=False,
                          feature_iterations=feature_iterations)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    res = invert_gradient(model, [t.to(device) for t in target], input_shape=case.forget.input_shape,
                          num_classes=case.forget.num_classes, num_forget=num_forget, labels=case.forget.y,
                          config=cfg, seed=seed, monitor=monitor)
    total = time.perf_counter() - start - state["monitor_seconds"]
    reached = None
    if state["reached"] is not None:
        # monitor time spent before the threshold was reached is not counted either
        reached = max(0.0, state["reached"][2] - start)
    rec = res.images
    if num_forget > 1:
        rec = rec[metrics.match_samples(rec, case.forget.x)]
    final = metrics.psnr(case.forget.x, rec)
    final = sum(final) / num_forget if isinstance(final, list) else final
    return {"device": device, "mode": "batched" if batched else "sequential", "num_forget": num_forget,
            "restarts": restarts, "iterations": iterations, "seconds": total,
            "restart_iterations_per_second": restarts * (iterations + feature_iterations) / total,
            "feature_iterations": feature_iterations,
            "seconds_to_threshold": reached, "threshold_db": threshold, "final_psnr_best_by_loss": final,
            "best_psnr_any_restart": state["best"], "torch_threads": torch.get_num_threads()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda when available")
    ap.add_argument("--num-samples", nargs="+", type=int, default=[1], help="removed samples recovered jointly")
    ap.add_argument("--restarts", type=int, default=8)
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--feature-iterations", type=int, default=0,
                    help="stage-0 feature-initialisation steps (default 0: the cosine stage alone)")
    ap.add_argument("--threshold", type=float, default=20.0, help="PSNR threshold in dB")
    ap.add_argument("--check-every", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", default="quick", help="pipeline profile (model width); default quick")
    ap.add_argument("--dataset", default="mnist-5k", help="image dataset (default mnist-5k; digits is 8x8)")
    ap.add_argument("--model", default="convnet-spatial", help="architecture (default convnet-spatial, chapter 3's)")
    ap.add_argument("--out", default="benchmarks/results/inversion.jsonl",
                    help="JSON-lines results file (default benchmarks/results/inversion.jsonl, not tracked)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: on a shared 2-core machine more threads oversubscribe)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from course_lib.train import prepare_pipeline

    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    out = Path(args.out)
    done = []
    if out.exists():
        done = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    pipe = prepare_pipeline(args.dataset, args.model, profile=args.profile, progress=False)
    rows = []
    for device in devices:
        if device.startswith("cuda") and not torch.cuda.is_available():
            print(f"skipping {device}: no CUDA GPU visible", file=sys.stderr)
            continue
        for k in args.num_forget:
            for batched in (True, False):
                key = {"device": device, "mode": "batched" if batched else "sequential", "num_forget": k,
                       "restarts": args.restarts, "iterations": args.iterations, "profile": args.profile,
                       "dataset": args.dataset, "feature_iterations": args.feature_iterations,
                       "model": args.model}
                old = [d for d in done if all(d.get(a) == b for a, b in key.items())]
                if old:
                    rows.append(old[-1])
                    continue
                row = {**run_one(pipe, device, batched, k, args.restarts, args.iterations, args.threshold,
                                 args.check_every, args.seed, args.feature_iterations),
                       "profile": args.profile, "dataset": args.dataset, "model": args.model}
                rows.append(row)
                out.parent.mkdir(parents=True, exist_ok=True)
                with out.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"dataset {args.dataset}, profile {args.profile}, torch threads {torch.get_num_threads()}")
    print(f"{'device':7} {'mode':10} {'K':>2} {'R':>3} {'iters':>5} {'r-it/s':>8} {'s to ' + str(args.threshold) + ' dB':>12} "
          f"{'final dB':>8}")
    for r in rows:
        tt = "never" if r["seconds_to_threshold"] is None else f"{r['seconds_to_threshold']:.1f}"
        print(f"{r['device']:7} {r['mode']:10} {r['num_forget']:>2} {r['restarts']:>3} {r['iterations']:>5} "
              f"{r['restart_iterations_per_second']:>8.1f} {tt:>12} {r['final_psnr_best_by_loss']:>8.2f}")
    for device in devices:
        for k in args.num_forget:
            b = [r for r in rows if r["device"] == device and r["num_forget"] == k and r["mode"] == "batched"]
            s = [r for r in rows if r["device"] == device and r["num_forget"] == k and r["mode"] == "sequential"]
            if b and s:
                print(f"{device}, K={k}: batched is {b[0]['restart_iterations_per_second'] / s[0]['restart_iterations_per_second']:.2f}x "
                      "the restart-iterations per second of one-after-another restarts")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
