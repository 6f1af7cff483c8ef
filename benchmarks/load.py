"""Benchmark: the course's CPU loops on an idle machine and beside one busy core.

Learners' machines are rarely idle. This script runs three of the course's inner loops, each in a
fresh Python process (so that the OpenMP settings apply from the start), first alone and then
beside a process that keeps one core busy, and prints how much of the idle speed survives:

``inversion``
    The quick feature-recovery attack (chapter 3's cosine stage: a ConvNet double-backward step
    per iteration), for ``--inversion-steps`` steps.
``train``
    One training epoch of the quick pipeline's ConvNet on D0 (mnist-5k, batch 64).
``probes``
    NES probe construction on the quick deployed model (chapter 4), a fixed query budget.

Threading policies compared (``--policies``):

``course``
    What ``course_lib`` does (:mod:`course_lib.threads`): OpenMP's default waiting, and the
    intra-op threads adapted to the cores that other processes leave free.
``torch-default``
    What torch does on its own: one thread per core, always (``COURSE_THREADS`` = the core count).
``passive``
    One thread per core with ``OMP_WAIT_POLICY=PASSIVE`` (waiting threads sleep).
``one-thread``
    ``COURSE_THREADS=1``.

The bar of issue 21: under the ``course`` policy every loop keeps at least half its idle speed.

    python benchmarks/load.py                         # every workload, course and torch-default
    python benchmarks/load.py --policies course one-thread --workloads train

Rows are appended to ``--out`` (JSON lines, default ``benchmarks/results/load.jsonl``) as they are
measured and a rerun skips the (policy, workload, load) rows already there, so an interrupted run
resumes; delete the file to measure again. Run it alone: other processes would be a second load.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

WORKLOADS = ("inversion", "train", "probes")
POLICIES = ("course", "torch-default", "passive", "one-thread")
BUSY_LOOP = "import time\nwhile True:\n    pass\n"


# --------------------------------------------------------------------------- worker side

def _worker(workload: str, policy: str, args) -> dict:
    """Runs in the child process: set the policy up, prepare (cached), time the loop."""
    from course_lib import threads
    import torch

    if workload == "inversion":
        from course_lib.attacks.gradient_estimation import estimate_gradient
        from course_lib.attacks.inversion import InversionConfig, invert_gradient
        from course_lib.experiments.recovery import make_unlearning_case

        case = make_unlearning_case(profile="quick", unlearning="approximate", num_forget=1, seed=0)
        target = estimate_gradient(case.original, case.unlearned)
        cfg = InversionConfig.for_profile("quick", iterations=args.inversion_steps, feature_iterations=0,
                                          sharpen_iterations=0, prune_at=(), progress=False)
        model = case.original

        def loop():
            invert_gradient(model, target, input_shape=case.forget.input_shape,
                            num_classes=case.forget.num_classes, num_forget=1, labels=case.forget.y,
                            config=cfg, seed=0)
        units, unit = args.inversion_steps, "steps"
    elif workload == "train":
        from course_lib.train import prepare_pipeline, train_model

        pipe = prepare_pipeline("mnist-5k", profile="quick", progress=False)
        p = pipe.profile

        def loop():
            model = pipe.new_model()
            train_model(model, pipe.public, epochs=1, lr=p.pretrain_lr, batch_size=p.pretrain_batch_size,
                        seed=0, progress=False)
        units, unit = 1, "epochs"
    elif workload == "probes":
        from course_lib.attacks.probes import ProbeConfig, build_probes
        from course_lib.experiments.probing_setup import prepare_probing

        setup = prepare_probing("mnist-5k", profile="quick", seed=0)
        cfg = ProbeConfig.for_profile("quick", max_queries=args.probe_queries, target_confidence=1 - 1e-12,
                                      calibration_band=0.0)

        def loop():
            build_probes(setup.api(name="original"), num_classes=setup.num_classes, input_shape=setup.input_shape,
                         probes_per_class=1, method="nes", config=cfg, seed=0, classes=[0, 1], progress=False)
        units, unit = 2 * args.probe_queries, "queries"
    else:  # pragma: no cover - argparse restricts the choice
        raise SystemExit(f"unknown workload {workload}")
    loop()  # warm-up: caches, allocator, lazy imports
    t0 = time.perf_counter()
    loop()
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "units": units, "unit": unit, "rate": units / seconds,
            "torch_threads": torch.get_num_threads(), **{k: v for k, v in threads.thread_info().items()
                                                        if k in ("omp_wait_policy", "why")}}


# --------------------------------------------------------------------------- parent side

def _measure(workload: str, policy: str, loaded: bool, args) -> dict:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    env.pop("COURSE_THREADS", None)
    if policy == "one-thread":
        env["COURSE_THREADS"] = "1"
    elif policy in ("torch-default", "passive"):
        env["COURSE_THREADS"] = str(os.cpu_count() or 1)
        if policy == "passive":
            env["OMP_WAIT_POLICY"] = "PASSIVE"
    busy = subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) if loaded else None
    try:
        cmd = [sys.executable, __file__, "--worker", workload, "--policy", policy,
               "--inversion-steps", str(args.inversion_steps), "--probe-queries", str(args.probe_queries)]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"timed_out": True, "seconds": float("inf"), "rate": 0.0}
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    if out.returncode != 0:
        raise SystemExit(f"the {workload} worker failed under {policy}:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    ap.add_argument("--policies", nargs="+", choices=POLICIES, default=["course", "torch-default"])
    ap.add_argument("--inversion-steps", type=int, default=40)
    ap.add_argument("--probe-queries", type=int, default=2000)
    ap.add_argument("--timeout", type=float, default=900, help="seconds per measurement before giving up")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "load.jsonl"))
    ap.add_argument("--worker", choices=WORKLOADS, help=argparse.SUPPRESS)
    ap.add_argument("--policy", choices=POLICIES, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.worker, args.policy, args)))
        return 0
    out = Path(args.out)
    old = [json.loads(line) for line in out.read_text().splitlines() if line.strip()] if out.exists() else []
    settings = {"inversion_steps": args.inversion_steps, "probe_queries": args.probe_queries, "cores": os.cpu_count()}
    rows = []
    for policy in args.policies:
        for workload in args.workloads:
            for loaded in (False, True):
                key = {"policy": policy, "workload": workload, "loaded": loaded, **settings}
                found = [r for r in old if all(r.get(k) == v for k, v in key.items())]
                if found:
                    rows.append(found[-1])
                    continue
                print(f"measuring {workload} under {policy}, {'one busy core beside it' if loaded else 'idle'} ...",
                      flush=True)
                row = {**key, **_measure(workload, policy, loaded, args)}
                rows.append(row)
                out.parent.mkdir(parents=True, exist_ok=True)
                with out.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(row) + "\n")
    print(f"\n{'policy':<14} {'workload':<10} {'idle /s':>10} {'busy /s':>10} {'kept':>6}  unit  (bar: kept >= 0.50)")
    worst = {}
    for policy in args.policies:
        for workload in args.workloads:
            idle = next(r for r in rows if r["policy"] == policy and r["workload"] == workload and not r["loaded"])
            busy = next(r for r in rows if r["policy"] == policy and r["workload"] == workload and r["loaded"])
            kept = busy["rate"] / idle["rate"] if idle["rate"] else float("nan")
            worst[policy] = min(worst.get(policy, 1e9), kept)
            print(f"{policy:<14} {workload:<10} {idle['rate']:>10.2f} {busy['rate']:>10.2f} {kept:>6.2f}  "
                  f"{idle.get('unit', '')}{'  (timed out)' if busy.get('timed_out') else ''}")
    for policy, w in worst.items():
        print(f"{policy}: the slowest loop keeps {w:.2f} of its idle speed beside one busy core "
              f"-> bar {'holds' if w >= 0.5 else 'does NOT hold'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
