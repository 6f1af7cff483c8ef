"""Shared test settings: the quick profile and a non-interactive matplotlib backend.

``make test`` runs them in two pytest-xdist workers, each keeping whole test files (``--dist
loadfile``), with one torch thread each (``COURSE_THREADS=1``): results are bit-reproducible at a
fixed thread count, so every run of the suite checks the same numbers (with adaptive threads a
worker flips between one and two threads as the other works, and bars that read one digit or four
probes moved with it). Run alone (plain ``pytest``), the tests use the course's adaptive threads;
a test that compares two runs bit for bit, or whose bar reads a cliff-like curve, fixes the count
itself (tests/test_bad_inputs.py, tests/test_defenses.py), and tests/test_threads.py exercises the
adaptation.

The three RUB benchmarks' quick fixtures, the defense-grid test, chapter 4's label-inference
fixture and the exact-unlearning test of chapter 3's Table 2 study call their recipes with the
chapters' exact arguments and write into ``results_root``: ``make test`` points
``COURSE_RESULTS_DIR`` at one fresh folder for the tests and the chapters, so chapters 3 to 8 read
those results instead of computing them again.
"""
import os
import time
from pathlib import Path

import pytest

os.environ.setdefault("COURSE_PROFILE", "quick")
os.environ.setdefault("MPLBACKEND", "Agg")

import matplotlib  # noqa: E402

matplotlib.use("Agg")


@pytest.fixture(scope="session")
def results_root(tmp_path_factory) -> Path:
    """Where the benchmark fixtures write: ``COURSE_RESULTS_DIR`` when set (make test), else a fresh folder."""
    env = os.environ.get("COURSE_RESULTS_DIR", "").strip()
    return Path(env) if env else tmp_path_factory.mktemp("results")


@pytest.fixture(scope="session")
def computed_here():
    """``computed_here(result)`` fails unless that run computed every row it returns (none from an earlier run)."""
    def check(result) -> None:
        assert result.computed_rows == len(result.rows), (
            f"{len(result.rows) - result.computed_rows} of the rows in {result.results_path} come from an earlier "
            "run, so this test would check old results: delete that folder (make test starts from a fresh one).")
    return check


def pytest_collection_modifyitems(config, items):
    """Start the longest test files first (seconds from tests/durations.json), keeping each file's order.

    With two workers that each take whole files, the last long file to start decides when the run
    ends; longest first lets the two finish together. The seconds come from a past run
    (``python tools/time_report.py --write-durations tests/durations.json``); a file they do not
    list starts last. ``make test`` passes ``--no-loadscope-reorder`` so that xdist keeps this order.
    """
    import json

    try:
        seconds = json.loads((Path(__file__).parent / "durations.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    items.sort(key=lambda item: -float(seconds.get(item.path.stem, 0.0)))  # a stable sort: files stay in order


_CLOCK = pytest.StashKey[tuple]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Note when each test starts and how long it has waited for another worker's checkpoint so far."""
    from course_lib import cache

    item.stash[_CLOCK] = (time.time(), cache.lock_wait_seconds)
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """Record, in the JUnit report, the worker, the start time and the seconds spent waiting in
    ``cache_lock`` during the test (its fixtures' set-up included); ``tools/time_report.py`` reads them."""
    yield
    from course_lib import cache

    start, waited = item.stash.get(_CLOCK, (time.time(), cache.lock_wait_seconds))
    item.user_properties += [("worker", os.environ.get("PYTEST_XDIST_WORKER", "main")),
                             ("started", f"{start:.3f}"),
                             ("lock_wait_seconds", f"{cache.lock_wait_seconds - waited:.3f}")]
