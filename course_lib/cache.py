"""Cache of trained models, keyed by their full configuration.

A model is saved as ``<data root>/cache/<kind>-<key>.safetensors`` (weights and buffers, never
pickled) beside ``<kind>-<key>.json`` (the configuration and the metrics measured when it was
trained). ``key`` is a hash of the configuration, so changing any setting trains a new model and
the same setting loads the old one. Files are written to a temporary name and renamed, so an
interrupted run never leaves a half-written checkpoint behind.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .config import cache_dir
from .errors import CacheCorruptError
from .results import FILE_MODE, atomic_write_text

#: Bump when a change to the training code makes old checkpoints wrong.
CACHE_VERSION = 1


def config_key(config: dict) -> str:
    """A short stable hash of a JSON-serialisable configuration."""
    payload = json.dumps({"cache_version": CACHE_VERSION, **config}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def save_tensors(tensors: dict[str, torch.Tensor], path: Path, meta: dict) -> None:
    """Save named tensors with safetensors and ``meta`` as a JSON sidecar, both atomically."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    atomic_write_text(path.with_suffix(".json"), json.dumps(meta, indent=2, sort_keys=True, default=str))


def save_state(model: nn.Module, path: Path, config: dict, metrics: dict) -> None:
    """Save ``model.state_dict()`` with safetensors and a JSON sidecar, atomically."""
    save_tensors(model.state_dict(), path, {"config": config, "metrics": metrics})


def load_state(model: nn.Module, path: Path) -> dict:
    """Load weights saved by :func:`save_state` into ``model``; return the sidecar's metrics.

    Raises :class:`CacheCorruptError` (with the file to delete) if either file is unreadable.
    """
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
        model.load_state_dict(state)
        meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    except Exception as exc:
        raise CacheCorruptError(
            f"The cached checkpoint {path} (or its .json beside it) cannot be read ({exc}). "
            f"Delete both files and run again; the model will be retrained.") from exc
    return meta.get("metrics", {})


def cached_model(kind: str, config: dict, build: Callable[[], nn.Module],
                 train: Callable[[nn.Module], dict], *, use_cache: bool = True) -> tuple[nn.Module, dict, Path]:
    """Return a trained model for ``config``, training it only when no checkpoint exists.

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
    use_cache:
        ``False`` always trains and does not write a checkpoint.

    Returns
    -------
    (model, metrics, path)
    """
    model = build()
    # the architecture's printout joins the key: a changed layer never loads stale weights
    path = cache_dir() / f"{kind}-{config_key({**config, 'architecture': repr(model)})}.safetensors"
    if use_cache and path.exists():
        metrics = load_state(model, path)
        return model, {**metrics, "from_cache": True}, path
    metrics = train(model)
    if use_cache:
        save_state(model, path, config, metrics)
    return model, {**metrics, "from_cache": False}, path


def clone_model(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` on the same device."""
    import copy

    return copy.deepcopy(model)


def state_equal(a: nn.Module, b: nn.Module) -> bool:
    """True when two models have bit-identical state dicts."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)
