"""Checks for the chapters' exercises.

An exercise cell leaves the learner's answer as ``None`` until they fill it in; :func:`check`
then says "not attempted yet" instead of failing, so every chapter still runs top to bottom. A
wrong answer raises an ``AssertionError`` that says what was expected.
"""
from __future__ import annotations

import numpy as np
import torch


def _as_array(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().double().numpy()
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], torch.Tensor):
        return np.concatenate([_as_array(v).reshape(-1) for v in value])
    return np.asarray(value, dtype=float)


def check(answer, reference, what: str, *, rtol: float = 1e-3, atol: float = 1e-6) -> bool:
    """Compare a learner's ``answer`` with ``reference`` (numbers, arrays, tensors or lists of tensors).

    Returns ``True`` when they agree, ``False`` (with a hint) when ``answer`` is ``None``; raises
    ``AssertionError`` when they disagree.
    """
    if answer is None:
        print(f"[ ] {what}: not attempted yet; fill in the cell above and run this one again.")
        return False
    a, r = _as_array(answer), _as_array(reference)
    if a.shape != r.shape:
        raise AssertionError(f"{what}: expected shape {r.shape}, got {a.shape}.")
    if not np.allclose(a, r, rtol=rtol, atol=atol):
        worst = float(np.max(np.abs(a - r)))
        raise AssertionError(f"{what}: not quite; the largest difference from the reference is {worst:.3g}.")
    print(f"[x] {what}: correct.")
    return True


def check_true(condition: bool | None, what: str, hint: str) -> bool:
    """For yes/no exercises: ``None`` = not attempted, ``False`` raises with ``hint``."""
    if condition is None:
        print(f"[ ] {what}: not attempted yet.")
        return False
    if not condition:
        raise AssertionError(f"{what}: {hint}")
    print(f"[x] {what}: correct.")
    return True
