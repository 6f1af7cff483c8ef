"""Cache of trained models, keyed by their full configuration, and verified when loaded.

A model is saved as ``<data root>/cache/<kind>-<key>.safetensors`` (weights and buffers, never
pickled) beside ``<kind>-<key>.json`` (the configuration, the metrics measured when it was trained,
the key and the SHA-256 of the weights file). ``key`` hashes the configuration -- the settings, the
architecture and a fingerprint of the training data's contents (:meth:`Dataset.fingerprint`) --
so changing any of them trains a new model and the same setting loads the old one.

Loading checks that the key stored *inside* the weights file and in the sidecar is the expected
one and that the weights hash to the recorded SHA-256. A checkpoint swapped in from another
configuration, or edited, is therefore never used: it is retrained (with a warning). The metrics
in the sidecar were measured on exactly the weights whose hash it records. Files are written to a
temporary name and renamed, so an interrupted run never leaves a half-written checkpoint behind.
Two processes that need the same checkpoint at once (two notebooks, two test workers) take turns
through :func:`cache_lock`: the first trains and saves, the second waits and loads what it saved.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .config import cache_dir
from .errors import CacheCorruptError, CourseError
from .results import FILE_MODE, atomic_write_text, prepare_output

#: Bump when a change to the training code makes old checkpoints wrong.
CACHE_VERSION = 2

#: Seconds this process has spent in :func:`cache_lock` waiting for another process to finish a
#: checkpoint (``make test``'s report reads it per test: a wait is a core that did no work).
lock_wait_seconds = 0.0


def config_key(config: dict) -> str:
    """A short stable hash of a JSON-serialisable configuration."""
    payload = json.dumps({"cache_version": CACHE_VERSION, **config}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def source_key(fn) -> str:
    """A short hash of a function's source code (its qualified name where there is no source).

    It joins the keys of results and cached models that a registered method made, so that a
    learner who edits the body of their own method (same name, same hyper-parameters) gets new
    rows and new models, never the old ones.
    """
    import inspect

    try:
        return config_key({"source": inspect.getsource(fn)})
    except (OSError, TypeError):   # no source (built in C, typed at a prompt): its name stands for it
        return getattr(fn, "__qualname__", repr(fn))


def library_key() -> str:
    """A short hash of the source of every module of ``course_lib``.

    It joins the key of a stored result that depends on many modules at once (chapter 4's label
    inference runs the unlearning, the probes and both attacks): any edit to the library computes
    it again, an unchanged library reads it.
    """
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_tensors(tensors: dict[str, torch.Tensor], path: Path, meta: dict, *, key: str | None = None) -> None:
    """Save named tensors with safetensors and ``meta`` as a JSON sidecar, both atomically.

    ``key`` (the configuration's hash) is stored inside the safetensors metadata and in the sidecar,
    with the SHA-256 of the weights file, so that :func:`read_verified` can tell a swapped file.
    """
    from safetensors.torch import save_file

    path = Path(path)
    ensure_writable(path.parent)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"course_key": key or ""})
        digest = file_sha256(Path(tmp))
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise CourseError(f"Cannot write {path}: {exc.strerror or exc}. Free some disk space, or point "
                          "COURSE_DATA_DIR (models) or COURSE_RESULTS_DIR (results) at a writable folder, and run "
                          "again.") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    atomic_write_text(path.with_suffix(".json"), json.dumps(
        {**meta, "key": key, "weights_sha256": digest, "cache_version": CACHE_VERSION},
        indent=2, sort_keys=True, default=str))


def ensure_writable(folder: Path) -> None:
    """Create ``folder`` if needed and check that files can be written there (a clear error otherwise)."""
    folder = Path(folder)
    try:
        prepare_output(folder)
    except CourseError as exc:
        raise CourseError(f"The model cache cannot be written: {exc} The cache lives under the data root "
                          f"({cache_dir().parent}); set COURSE_DATA_DIR to a writable folder.") from exc


@contextmanager
def cache_lock(path: Path):
    """Hold an exclusive lock on the checkpoint ``path`` (a ``.lock`` file beside it) while inside.

    Another process that asks for the same checkpoint waits here until this one has checked,
    trained and saved it. Where locking is not available (no ``fcntl``, a folder where the lock
    file cannot be created) it does nothing: the checkpoint's files are still written atomically.
    """
    try:
        import fcntl
    except ImportError:  # not a POSIX system
        yield
        return
    try:
        fh = open(Path(path).with_suffix(".lock"), "a")
    except OSError:
        yield
        return
    global lock_wait_seconds
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another process holds it: wait, and count the wait
            start = time.perf_counter()
            fcntl.flock(fh, fcntl.LOCK_EX)
            lock_wait_seconds += time.perf_counter() - start
        yield
    finally:
        fh.close()  # closing releases the lock


def read_verified(path: Path, key: str) -> tuple[dict[str, torch.Tensor], dict] | None:
    """The tensors and sidecar of a checkpoint if it is the one ``key`` names and intact, else ``None``.

    ``None`` (with a warning) means: the stored key differs, or the weights do not hash to the
    recorded SHA-256 -- retrain. Raises :class:`CacheCorruptError` if a file cannot be read at all.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    side = Path(path).with_suffix(".json")
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
        with safe_open(str(path), framework="pt") as fh:
            stored_key = (fh.metadata() or {}).get("course_key")
        if not isinstance(meta, dict):
            raise ValueError("the sidecar is not a JSON object")
    except Exception as exc:
        raise CacheCorruptError(
            f"The cached checkpoint {path} (or its .json beside it) cannot be read ({exc}). "
            f"Delete both files and run again; the model will be retrained.") from exc
    problem = None
    if stored_key != key or meta.get("key") != key:
        problem = "it was saved for another configuration"
    elif meta.get("weights_sha256") != file_sha256(Path(path)):
        problem = "its weights do not match the hash recorded when it was trained"
    if problem:
        warnings.warn(f"Ignoring the cached checkpoint {path}: {problem}. The model is retrained.", stacklevel=3)
        return None
    try:
        return load_file(str(path)), meta
    except Exception as exc:
        raise CacheCorruptError(f"The cached checkpoint {path} cannot be read ({exc}). Delete it and its .json "
                                "and run again; the model will be retrained.") from exc


def cached_model(kind: str, config: dict, build: Callable[[], nn.Module],
                 train: Callable[[nn.Module], dict], *, data=(), use_cache: bool = True) -> tuple[nn.Module, dict, Path]:
    """Return a trained model for ``config``, training it only when no valid checkpoint exists.

    Parameters
    ----------
    kind:
        A short label for the file name, e.g. ``"pretrained"``.
    config:
        Every setting that determines the weights (JSON-serialisable). The model's ``repr``
        (its layers and shapes) is added to the key, so a changed architecture retrains.
    build:
        Makes a fresh, untrained model of the right architecture.
    train:
        Trains the given model in place and returns a dict of metrics to store.
    data:
        The datasets the model is trained on: their content fingerprints join the key, so
        relabelled or replaced data (a ``folder:`` tree edited on disk) retrains.
    use_cache:
        ``False`` always trains and does not write a checkpoint.

    Returns
    -------
    (model, metrics, path). ``metrics["from_cache"]`` says whether the weights were loaded.
    """
    model = build()
    # the architecture's printout and the data's contents join the key: a changed layer or a
    # relabelled image never loads stale weights
    full = {**config, "architecture": repr(model), "data_fingerprints": [d.fingerprint() for d in data]}
    key = config_key(full)
    path = cache_dir() / f"{kind}-{key}.safetensors"
    if not use_cache:
        metrics = train(model)
        return model, {**metrics, "from_cache": False}, path
    if not path.exists():
        ensure_writable(path.parent)  # the folder exists for the lock, and can take the checkpoint
    with cache_lock(path):  # a process training the same checkpoint now finishes first
        if path.exists():
            found = read_verified(path, key)
            if found is not None:
                state, meta = found
                try:
                    model.load_state_dict(state)
                except RuntimeError as exc:
                    raise CacheCorruptError(f"The cached checkpoint {path} does not fit the model ({exc}). "
                                            "Delete it and its .json and run again.") from exc
                return model, {**meta.get("metrics", {}), "from_cache": True}, path
        ensure_writable(path.parent)  # before the training, not after it
        metrics = train(model)
        save_tensors(model.state_dict(), path, {"config": full, "metrics": metrics}, key=key)
    return model, {**metrics, "from_cache": False}, path


def cached_unlearning(kind: str, config: dict, build: Callable[[], nn.Module],
                      unlearn: Callable[[], nn.Module], *, data=()) -> tuple[nn.Module, dict]:
    """An unlearned model through :func:`cached_model`: ``unlearn()`` runs only on a cache miss.

    ``config`` names the original model, the method (its name, hyper-parameters and source) and the
    seed; ``build`` makes an empty model of the original's architecture; ``unlearn()`` returns the
    unlearned model, whose weights are copied into it. The info dict holds ``unlearn_seconds`` (wall
    seconds of the unlearning that made the checkpoint) and ``from_cache``.
    """
    def fit(model: nn.Module) -> dict:
        t0 = time.perf_counter()
        model.load_state_dict(unlearn().state_dict())
        return {"unlearn_seconds": time.perf_counter() - t0}

    model, info, _ = cached_model(kind, config, build, fit, data=data)
    return model.eval(), info


def clone_model(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` on the same device."""
    import copy

    return copy.deepcopy(model)


def state_equal(a: nn.Module, b: nn.Module) -> bool:
    """True when two models have bit-identical state dicts."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)
