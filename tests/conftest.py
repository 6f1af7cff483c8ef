"""Shared test settings: the quick profile, a non-interactive matplotlib backend, and the order that
lets ``make test`` run the tests on two pytest-xdist workers (``-n 2 --dist loadscope``).

The tests run with the course's adaptive threads: all cores on an idle machine, one per worker when
two workers share two cores (:mod:`course_lib.threads`). Results are bit-reproducible at a fixed
thread count; a test that compares two runs bit for bit fixes it with ``COURSE_THREADS``
(tests/test_bad_inputs.py), and tests/test_threads.py exercises the adaptation itself.

Scheduling: ``--dist loadscope`` runs every test module (and every test class) on one worker, so
that a module-scoped fixture (a trained model, a quick benchmark run) is computed once. The
assignment tests are one class per exercise page, so the eight pages are spread over both workers.
The modules with the longest fixtures are collected first (``--no-loadscope-reorder`` keeps this
order), so that the two workers finish at about the same time.
"""
import os

import pytest

os.environ.setdefault("COURSE_PROFILE", "quick")
os.environ.setdefault("MPLBACKEND", "Agg")

import matplotlib  # noqa: E402

matplotlib.use("Agg")

#: Modules whose tests take longest, in the order they should start (the rest follow in file order).
LONGEST_FIRST = ("test_rub_t2i", "test_assignments", "test_defenses", "test_rub", "test_rub_i2i",
                 "test_inversion", "test_probing", "test_recovery_studies")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.module.__name__.rsplit(".", 1)[-1], len(rank)))  # stable
