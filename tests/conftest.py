"""Shared test settings: the quick profile, a non-interactive matplotlib backend, one thread per worker.

``make test`` runs the tests on two workers (pytest-xdist); each uses one intra-op thread, so the two
cores are shared without oversubscription and results are bit-reproducible (the thread count is
fixed: the same seed gives the same numbers). tests/test_threads.py exercises the adaptive count.
"""
import os

os.environ.setdefault("COURSE_PROFILE", "quick")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("COURSE_THREADS", "1")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
