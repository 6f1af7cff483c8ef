"""The model cache never returns a model that was not trained on what its key says."""
import shutil
import stat

import pytest
import torch

from course_lib.cache import cached_model
from course_lib.data import Dataset
from course_lib.errors import CacheCorruptError, CourseError
from course_lib.models.classifiers import MLP


@pytest.fixture
def cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    return tmp_path / "cache"


def _dataset(labels) -> Dataset:
    gen = torch.Generator().manual_seed(0)
    return Dataset("toy", torch.rand(8, 4, generator=gen), torch.tensor(labels), ["a", "b"], "tabular")


def _run(config: dict, data: Dataset, calls: list):
    def build():
        torch.manual_seed(0)
        return MLP(4, 2, hidden=3)

    def train(m):
        calls.append(config["value"])
        with torch.no_grad():
            for p in m.parameters():
                p.fill_(config["value"])
        return {"trained_with": config["value"]}

    return cached_model("toy", config, build, train, data=(data,))


def test_a_checkpoint_swapped_in_from_another_configuration_is_retrained(cache_root):
    calls, d = [], _dataset([0, 1] * 4)
    model_a, info_a, path_a = _run({"value": 1.0}, d, calls)
    _, _, path_b = _run({"value": 2.0}, d, calls)
    assert calls == [1.0, 2.0] and not info_a["from_cache"]
    again, info, _ = _run({"value": 1.0}, d, calls)
    assert calls == [1.0, 2.0] and info["from_cache"] and info["trained_with"] == 1.0
    shutil.copy(path_b, path_a)  # B's weights under A's name (sidecar untouched)
    with pytest.warns(UserWarning, match="another configuration"):
        model, info, _ = _run({"value": 1.0}, d, calls)
    assert calls == [1.0, 2.0, 1.0] and not info["from_cache"]
    assert all(torch.all(p == 1.0) for p in model.parameters())
    shutil.copy(path_b.with_suffix(".json"), path_a.with_suffix(".json"))
    shutil.copy(path_b, path_a)  # both files of B under A's name
    with pytest.warns(UserWarning, match="another configuration"):
        _run({"value": 1.0}, d, calls)
    assert calls[-1] == 1.0 and len(calls) == 4


def test_edited_weights_are_detected_by_their_hash(cache_root):
    calls, d = [], _dataset([0, 1] * 4)
    _, _, path = _run({"value": 3.0}, d, calls)
    raw = bytearray(path.read_bytes())
    raw[-4:] = b"\x00\x00\x80\x7f"  # the last float becomes +inf
    path.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="do not match the hash"):
        model, info, _ = _run({"value": 3.0}, d, calls)
    assert calls == [3.0, 3.0] and not info["from_cache"]
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_relabelled_data_trains_a_new_model(cache_root):
    calls = []
    _run({"value": 1.0}, _dataset([0, 1] * 4), calls)
    _run({"value": 1.0}, _dataset([0, 1] * 4), calls)
    assert calls == [1.0]
    _run({"value": 1.0}, _dataset([1, 0] * 4), calls)  # same images, other labels
    assert calls == [1.0, 1.0]


def test_a_sidecar_of_the_wrong_shape_is_a_clear_error(cache_root):
    calls, d = [], _dataset([0, 1] * 4)
    _, _, path = _run({"value": 1.0}, d, calls)
    path.with_suffix(".json").write_text("[1, 2, 3]")
    with pytest.raises(CacheCorruptError, match="Delete both files"):
        _run({"value": 1.0}, d, calls)


def test_cache_files_are_group_readable(cache_root):
    _, _, path = _run({"value": 1.0}, _dataset([0, 1] * 4), [])
    for p in (path, path.with_suffix(".json")):
        assert p.stat().st_mode & stat.S_IRGRP


def test_an_unwritable_cache_fails_before_training(monkeypatch):
    monkeypatch.setenv("COURSE_DATA_DIR", "/proc/course-lib-test")
    calls = []
    with pytest.raises(CourseError, match="COURSE_DATA_DIR"):
        _run({"value": 1.0}, _dataset([0, 1] * 4), calls)
    assert calls == []


def _train_slowly_in_another_process(data_dir: str, log: str) -> bool:
    """Run in a spawned process: ask the cache for the toy model; training takes a second and is logged."""
    import os
    import time

    os.environ["COURSE_DATA_DIR"] = data_dir

    def build():
        torch.manual_seed(0)
        return MLP(4, 2, hidden=3)

    def train(m):
        with open(log, "a") as fh:
            fh.write("trained\n")
        time.sleep(1.0)
        return {}

    return cached_model("toy", {"value": 1}, build, train, data=(_dataset([0, 1] * 4),))[1]["from_cache"]


def test_two_processes_asking_for_the_same_checkpoint_train_it_once(tmp_path):
    # two notebooks (or two test workers) at once: one trains, the other waits and loads its checkpoint
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    log = tmp_path / "log.txt"
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_train_slowly_in_another_process, str(tmp_path / "data"), str(log)) for _ in range(2)]
        from_cache = sorted(f.result() for f in futures)
    assert log.read_text().splitlines() == ["trained"]
    assert from_cache == [False, True]


def test_a_wait_for_the_lock_is_counted_and_a_free_lock_costs_nothing(tmp_path):
    import threading
    import time

    from course_lib import cache

    path = tmp_path / "m.safetensors"
    before = cache.lock_wait_seconds
    with cache.cache_lock(path):
        pass
    assert cache.lock_wait_seconds == before  # nobody held it: no wait recorded
    held = threading.Event()

    def holder():
        with cache.cache_lock(path):   # a second open file: flock makes the two wait for each other
            held.set()
            time.sleep(0.5)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(5)
    with cache.cache_lock(path):
        waited = cache.lock_wait_seconds - before
    thread.join()
    assert 0.3 <= waited < 5.0
