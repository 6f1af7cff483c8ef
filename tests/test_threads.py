"""CPU threading: COURSE_THREADS is validated and fixes the count; adapt() gives a busy core back."""
import os
import subprocess
import sys
import time

import pytest
import torch

from course_lib import threads
from course_lib.errors import CourseError


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_bad_course_threads_is_a_clear_error(monkeypatch, value):
    monkeypatch.setenv("COURSE_THREADS", value)
    with pytest.raises(CourseError, match="COURSE_THREADS"):
        threads.adapt(force=True)


def test_course_threads_fixes_the_count(monkeypatch):
    monkeypatch.setenv("COURSE_THREADS", "1")
    assert threads.adapt(force=True) == 1
    assert torch.get_num_threads() == 1
    assert threads.thread_info()["adaptive"] is False


def test_bad_course_threads_exits_2_in_the_cli():
    env = {**os.environ, "COURSE_THREADS": "zero"}
    out = subprocess.run([sys.executable, "-m", "course_lib", "info"], env=env, capture_output=True, text=True)
    assert out.returncode == 2
    assert "COURSE_THREADS" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.skipif(threads.available_cores()[0] < 2 or not os.path.exists("/proc/stat"),
                    reason="needs two cores and /proc/stat")
def test_adapt_leaves_a_busy_core_to_the_other_process(monkeypatch):
    monkeypatch.delenv("COURSE_THREADS", raising=False)
    cores = threads.available_cores()[0]
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        threads.adapt(force=True)
        time.sleep(1.5)
        n = threads.adapt(force=True)
    finally:
        busy.kill()
        busy.wait()
    assert threads.other_load() >= 0.5
    assert n <= cores - 1
    assert torch.get_num_threads() == n
