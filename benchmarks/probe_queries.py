"""Benchmark: queries per probe of the paper's coordinate ZOO versus the NES estimator (chapter 4).

Both estimators start from the *same* Gaussian-noise probes (same seed), minimise the same loss
(eq. 8 on log-probabilities) and stop at the same confidence target (1 - 1e-3) on the deployed
model M of chapter 4 (M0 fine-tuned on 50 samples per class). The bar of issue 4: NES reaches
the target with at most a tenth of ZOO's queries.

Usage::

    python benchmarks/probe_queries.py --profile standard            # all classes, 1 probe each
    python benchmarks/probe_queries.py --profile quick --classes 0,3,7 --probes-per-class 1

Results are written to ``--out`` (default ``benchmarks/results/probing-<profile>.json``) after each
method, and a rerun with the same settings skips the methods already measured (delete the file to
measure again). Timings depend on the machine; the query counts do not.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from course_lib.attacks.probes import ProbeConfig, build_probes
from course_lib.results import atomic_write_text
from course_lib.commands.common import parse_int_list
from course_lib.config import get_profile
from course_lib.errors import CourseError
from course_lib.experiments.probing_setup import prepare_probing


def measure(setup, method: str, classes, probes_per_class: int, config: ProbeConfig, seed: int) -> dict:
    api = setup.api(name="original")
    probes = build_probes(api, num_classes=setup.num_classes, input_shape=setup.input_shape,
                          probes_per_class=probes_per_class, method=method, config=config, seed=seed,
                          classes=classes, progress=True)
    s = probes.summary()
    s["queries"] = probes.queries.tolist()
    s["reached"] = probes.reached.tolist()
    s["confidence"] = [float(c) for c in probes.confidence]
    s["api_queries"] = api.queries
    return s


def compare(results: dict) -> dict:
    """Queries per probe over the probes that both methods brought to the target, and their ratio."""
    zoo, nes = results["zoo"], results["nes"]
    both = [i for i, (a, b) in enumerate(zip(zoo["reached"], nes["reached"])) if a and b]
    out = {"probes_reached_by_both": len(both), "probes": len(zoo["reached"]),
           "zoo_reached_share": zoo["reached_share"], "nes_reached_share": nes["reached_share"],
           "zoo_queries_per_probe_all": zoo["queries_per_probe_mean"],
           "nes_queries_per_probe_all": nes["queries_per_probe_mean"]}
    if both:
        zq = sum(zoo["queries"][i] for i in both) / len(both)
        nq = sum(nes["queries"][i] for i in both) / len(both)
        out.update(zoo_queries_per_probe=zq, nes_queries_per_probe=nq, ratio_nes_over_zoo=nq / zq)
    # a probe ZOO did not finish counts with its whole budget: the ratio is then an upper bound
    out["ratio_all_probes"] = nes["queries_per_probe_mean"] / zoo["queries_per_probe_mean"]
    out["bar_nes_at_most_a_tenth"] = bool(out["ratio_all_probes"] <= 0.1 and zoo["reached_share"] > 0)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="mnist-5k")
    p.add_argument("--profile", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--classes", type=parse_int_list, default=None, help="target classes (default: all)")
    p.add_argument("--probes-per-class", type=int, default=1)
    p.add_argument("--zoo-max-queries", type=int, default=None,
                   help="ZOO's query budget per probe (default: the profile's max_queries x 5)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    try:
        prof = get_profile(args.profile)
        out = Path(args.out or Path(__file__).resolve().parent / "results" / f"probing-{prof.name}.json")
        setup = prepare_probing(args.dataset, profile=prof.name, seed=args.seed)
        classes = args.classes or list(range(setup.num_classes))
        base = ProbeConfig.for_profile(prof.name)
        configs = {"nes": base,
                   "zoo": ProbeConfig.for_profile(prof.name, max_queries=args.zoo_max_queries or 5 * base.max_queries)}
        settings = {"dataset": args.dataset, "profile": prof.name, "seed": args.seed, "classes": classes,
                    "probes_per_class": args.probes_per_class,
                    "configs": {k: v.to_dict() for k, v in configs.items()},
                    "deployed_test_accuracy": setup.metrics["deployed_test_accuracy"]}
        state = {}
        if out.exists():
            old = json.loads(out.read_text())
            if old.get("settings") == settings:
                state = old.get("results", {})
        for method in ("nes", "zoo"):
            if method in state:
                print(f"{method}: already measured in {out}")
                continue
            print(f"building {len(classes) * args.probes_per_class} probes with {method} ...", flush=True)
            state[method] = measure(setup, method, classes, args.probes_per_class, configs[method], args.seed)
            atomic_write_text(out, json.dumps({"settings": settings, "results": state}, indent=2))
        summary = compare(state)
        atomic_write_text(out, json.dumps({"settings": settings, "results": state, "comparison": summary}, indent=2))
    except CourseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"\nQueries per probe to reach confidence {base.target_confidence} "
          f"({args.dataset}, profile {prof.name}, classes {classes}, {args.probes_per_class} probe(s) each)")
    print(f"{'method':<6} {'reached':>8} {'mean queries':>13} {'median':>9} {'seconds':>9}")
    for method in ("zoo", "nes"):
        r = state[method]
        print(f"{method:<6} {r['reached_share']:>8.2f} {r['queries_per_probe_mean']:>13.0f} "
              f"{r['queries_per_probe_median']:>9.0f} {r['seconds']:>9.1f}")
    if "ratio_nes_over_zoo" in summary:
        print(f"on the {summary['probes_reached_by_both']} probes both reached: ZOO {summary['zoo_queries_per_probe']:.0f}"
              f" vs NES {summary['nes_queries_per_probe']:.0f} queries per probe, ratio {summary['ratio_nes_over_zoo']:.3f}")
    print(f"ratio over all probes (unfinished probes count their whole budget): {summary['ratio_all_probes']:.3f}")
    print(f"bar 'NES needs at most a tenth of ZOO's queries': {'holds' if summary['bar_nes_at_most_a_tenth'] else 'does NOT hold'}")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    raise SystemExit(main())
