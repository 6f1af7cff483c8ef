"""Shared test settings: the quick profile and a non-interactive matplotlib backend.

``make test`` runs them in two pytest-xdist workers, each keeping whole test files (``--dist
loadfile``); every process uses the course's adaptive threads (one thread beside a busy worker,
all cores on an idle machine). Results are bit-reproducible at a fixed thread count; a test that
compares two runs bit for bit fixes it with ``COURSE_THREADS`` (tests/test_bad_inputs.py), and
tests/test_threads.py exercises the adaptation itself.
"""
import os

os.environ.setdefault("COURSE_PROFILE", "quick")
os.environ.setdefault("MPLBACKEND", "Agg")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
