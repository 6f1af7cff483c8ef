"""Where the time of ``make test`` goes: seconds per test file and per notebook, biggest first.

    python tools/time_report.py                                   # _build/pytest-junit.xml, _build/executed/timings.json
    python tools/time_report.py --junit path/junit.xml --timings path/timings.json --top 15
    python tools/time_report.py --write-durations tests/durations.json   # refresh the test scheduler's estimates

``make test`` writes pytest's JUnit report to ``_build/pytest-junit.xml`` and the notebook runner
writes ``_build/executed/timings.json``; this script reads whichever of the two exists and prints
seconds per test file (with its slowest test), per notebook, and the total of each stage (the
tests' own seconds, summed over the pytest workers, and the stage's wall-clock time). Per pytest
worker it prints when its last test ended and how long its tests waited for a checkpoint that
another worker was training (``cache_lock``; tests/conftest.py records both in the report). A
module-scoped fixture's time counts towards the first test that uses it, as pytest records it.
It measures nothing itself, so it can run while another job holds the CPU.

``--write-durations`` writes the seconds per test file to a JSON file: ``tests/durations.json`` is
what ``tests/conftest.py`` orders the test files by, longest first, so that the two workers finish
together. Those seconds change only the order in which the files start, never what a test checks.
"""
from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def case_times(junit: Path) -> list[dict]:
    """One row per test case of a JUnit XML report: file, test, seconds, outcome."""
    rows = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = child.tag
        module = case.get("classname", "").split(".")
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        rows.append({"file": next((m for m in module if m.startswith("test_")), ".".join(module)),
                     "test": case.get("name", "?"), "seconds": float(case.get("time", 0.0)), "outcome": outcome,
                     "worker": props.get("worker"), "started": _number(props.get("started")),
                     "lock_wait": _number(props.get("lock_wait_seconds")) or 0.0})
    return rows


def _number(text) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def worker_lines(rows: list[dict]) -> list[str]:
    """Per pytest worker: its tests' seconds, the span from its first start to its last end, and the
    seconds its tests waited in ``cache_lock`` for a checkpoint another worker was making (recorded by
    tests/conftest.py; an old report without them gives no lines)."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["worker"] and r["started"] is not None:
            groups[r["worker"]].append(r)
    if not groups:
        return []
    t0 = min(r["started"] for rs in groups.values() for r in rs)
    lines = []
    for worker, rs in sorted(groups.items()):
        busy = sum(r["seconds"] for r in rs)
        end = max(r["started"] + r["seconds"] for r in rs) - t0
        waits = sorted((r for r in rs if r["lock_wait"] >= 1.0), key=lambda r: -r["lock_wait"])
        line = (f"worker {worker}: {len(rs)} tests, {busy:.0f} s of test time, done at {end:.0f} s; "
                f"{sum(r['lock_wait'] for r in rs):.0f} s waiting for another worker's checkpoint")
        if waits:
            line += " (" + ", ".join(f"{r['file']}::{r['test'][:40]} {r['lock_wait']:.0f} s" for r in waits[:3]) + ")"
        lines.append(line)
    return lines


def suite_seconds(junit: Path) -> float | None:
    """The wall-clock seconds of the whole run, as the report's test suite records them."""
    root = ET.parse(junit).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    try:
        return float(suite.get("time"))
    except (AttributeError, TypeError, ValueError):
        return None


def by_file(rows: list[dict]) -> list[tuple[str, float, int, dict]]:
    """(file, seconds, tests, slowest test row), biggest file first."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[r["file"]].append(r)
    out = [(f, sum(r["seconds"] for r in rs), len(rs), max(rs, key=lambda r: r["seconds"])) for f, rs in groups.items()]
    return sorted(out, key=lambda t: -t[1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--junit", default=str(ROOT / "_build" / "pytest-junit.xml"), help="pytest's --junitxml report")
    ap.add_argument("--timings", default=str(ROOT / "_build" / "executed" / "timings.json"),
                    help="tools/run_notebooks.py's timings.json")
    ap.add_argument("--top", type=int, default=25, help="rows per table (default 25)")
    ap.add_argument("--write-durations", metavar="JSON", help="also write the seconds per test file to JSON "
                    "(tests/durations.json: the order tests/conftest.py starts the files in)")
    args = ap.parse_args(argv)
    junit, timings = Path(args.junit), Path(args.timings)
    if not junit.is_file() and not timings.is_file():
        print(f"Neither {junit} nor {timings} exists: run `make test` first (or pass --junit / --timings).",
              file=sys.stderr)
        return 2
    if junit.is_file():
        try:
            rows = case_times(junit)
        except ET.ParseError as exc:
            print(f"{junit} is not a JUnit XML report ({exc}).", file=sys.stderr)
            return 2
        total, wall = sum(r["seconds"] for r in rows), suite_seconds(junit)
        print(f"unit tests: {len(rows)} tests, {total:.0f} s of test time"
              + (f" in {wall:.0f} s wall" if wall is not None else "") + f" ({junit})")
        print(f"{'file':<28} {'seconds':>8} {'share':>6} {'tests':>6}  slowest test")
        for name, seconds, n, slowest in by_file(rows)[:args.top]:
            print(f"{name:<28} {seconds:>8.0f} {seconds / max(total, 1e-9):>6.0%} {n:>6}  "
                  f"{slowest['test'][:60]} ({slowest['seconds']:.0f} s)")
        for line in worker_lines(rows):
            print(line)
        if args.write_durations:
            seconds = {name: round(sec, 1) for name, sec, _, _ in by_file(rows)}
            Path(args.write_durations).write_text(json.dumps(seconds, indent=1) + "\n", encoding="utf-8")
            print(f"seconds per test file written to {args.write_durations}")
        bad = [r for r in rows if r["outcome"] in ("failure", "error")]
        if bad:
            print(f"{len(bad)} failed: " + ", ".join(f"{r['file']}::{r['test']}" for r in bad))
        print()
    if timings.is_file():
        try:
            data = json.loads(timings.read_text())
            nbs = sorted(data["rows"], key=lambda r: -float(r["seconds"]))
        except (ValueError, KeyError, TypeError) as exc:
            print(f"{timings} is not a timings file of tools/run_notebooks.py ({exc}).", file=sys.stderr)
            return 2
        busy = sum(float(r["seconds"]) for r in nbs)
        print(f"notebooks ({data.get('profile', '?')}, {data.get('jobs', '?')} job(s)): {busy:.0f} s of notebook "
              f"time in {float(data.get('wall_seconds', 0)):.0f} s wall ({timings})")
        print(f"{'notebook':<44} {'seconds':>8} {'status':>8}")
        for r in nbs[:args.top]:
            print(f"{r['notebook']:<44} {float(r['seconds']):>8.0f} {r['status']:>8}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
