"""Checks for the course's exercises: one convention for every exercise page and every grader.

An exercise page (``book/exercises/exNN_*.ipynb``, see :mod:`course_lib.assignments`) gives each
exercise an answer cell and a check. The learner's answer starts as a *stub*: ``...`` (what
otter-grader leaves in a student copy), ``None``, or a function whose body is ``...`` and so
returns ``None``. The checks here tell a stub ("not attempted yet") from a wrong answer (what is
wrong, in numbers), so that a student copy runs top to bottom and every check says something
useful.

Two families:

* ``check`` and ``check_true`` print ``[ ] ... not attempted yet`` and return ``False`` for a
  stub; use them where an unanswered exercise must not stop the notebook;
* ``require_answer``, ``check_choice`` and ``check_in_range`` raise :class:`NotAttempted` for a
  stub; the autograder tests use them (``check(..., strict=True)`` behaves the same way), so a
  stub scores 0 points with the message "not attempted yet".

"Implement it" exercises also need the hidden tests to fail for an answer that merely calls the
library's own implementation: :func:`forbid` disables library functions while the test calls the
learner's code.
"""
from __future__ import annotations

import contextlib
import types
from typing import Callable, Iterable, Iterator

import numpy as np
import torch


class NotAttempted(AssertionError):
    """The answer is still the stub (``...`` or ``None``): the exercise has not been attempted."""


class ForbiddenCall(AssertionError):
    """The learner's answer called a library function that the exercise asks them to write."""


def is_stub(answer) -> bool:
    """True for what an unanswered exercise holds: ``None`` or ``...`` (``Ellipsis``)."""
    return answer is None or answer is Ellipsis


def _not_attempted_message(what: str) -> str:
    return (f"{what}: not attempted yet. Replace the `...` in the answer cell with your answer, run that "
            "cell, then run this check again.")


def require_answer(answer, what: str):
    """Return ``answer``; raise :class:`NotAttempted` if it is still a stub (``...`` or ``None``)."""
    if is_stub(answer):
        raise NotAttempted(_not_attempted_message(what))
    return answer


def _as_array(value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().double().numpy()
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], torch.Tensor):
        return np.concatenate([_as_array(v).reshape(-1) for v in value])
    try:
        return np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"expected numbers, an array or a tensor; got {type(value).__name__} ({exc}).") from exc


def check(answer, reference, what: str, *, rtol: float = 1e-3, atol: float = 1e-6, strict: bool = False) -> bool:
    """Compare a learner's ``answer`` with ``reference`` (numbers, arrays, tensors or lists of tensors).

    Returns ``True`` when they agree. A stub (``None`` or ``...``) prints a hint and returns
    ``False``, or raises :class:`NotAttempted` with ``strict=True`` (the autograder's tests).
    Raises ``AssertionError`` saying how far off the answer is when they disagree.
    """
    if is_stub(answer):
        if strict:
            raise NotAttempted(_not_attempted_message(what))
        print(f"[ ] {what}: not attempted yet; fill in the cell above and run this one again.")
        return False
    try:
        a = _as_array(answer)
    except AssertionError as exc:
        raise AssertionError(f"{what}: {exc}") from None
    r = _as_array(reference)
    if a.shape != r.shape:
        raise AssertionError(f"{what}: expected shape {r.shape}, got {a.shape}.")
    if not np.all(np.isfinite(a)):
        raise AssertionError(f"{what}: your answer contains NaN or infinite values.")
    if not np.allclose(a, r, rtol=rtol, atol=atol):
        worst = float(np.max(np.abs(a - r)))
        scale = float(np.max(np.abs(r))) if r.size else 0.0
        raise AssertionError(f"{what}: not quite; the largest difference from the reference is {worst:.3g} "
                             f"(the reference's largest entry is {scale:.3g}).")
    print(f"[x] {what}: correct.")
    return True


def check_true(condition: bool | None, what: str, hint: str, *, strict: bool = False) -> bool:
    """For yes/no checks: a stub is "not attempted" (raised with ``strict=True``), ``False`` raises ``hint``."""
    if is_stub(condition):
        if strict:
            raise NotAttempted(_not_attempted_message(what))
        print(f"[ ] {what}: not attempted yet.")
        return False
    if not condition:
        raise AssertionError(f"{what}: {hint}")
    print(f"[x] {what}: correct.")
    return True


def check_choice(answer, choices: Iterable, what: str, *, correct=None, why: str = "") -> bool:
    """A multiple-choice answer: it must be one of ``choices``, and equal ``correct`` when given.

    Raises :class:`NotAttempted` for a stub and ``AssertionError`` for an answer outside
    ``choices`` or different from ``correct`` (adding ``why``, a hint to re-read).
    """
    choices = list(choices)
    require_answer(answer, what)
    if isinstance(answer, str):
        answer = answer.strip()
    if answer not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise AssertionError(f"{what}: {answer!r} is not one of the options; answer with one of {listed}.")
    if correct is not None and answer != correct:
        raise AssertionError(f"{what}: {answer!r} is not what this run shows." + (f" {why}" if why else ""))
    print(f"[x] {what}: " + ("correct." if correct is not None else f"answer {answer!r} recorded."))
    return True


def check_in_range(value, low: float, high: float, what: str, *, hint: str = "") -> bool:
    """A number in ``[low, high]``: raises :class:`NotAttempted` for a stub, ``AssertionError`` otherwise."""
    require_answer(value, what)
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise AssertionError(f"{what}: expected a number, got {type(value).__name__}.") from None
    if not np.isfinite(v):
        raise AssertionError(f"{what}: expected a finite number, got {v}.")
    if not low <= v <= high:
        raise AssertionError(f"{what}: {v:.4g} lies outside the expected range [{low:.4g}, {high:.4g}]."
                             + (f" {hint}" if hint else ""))
    print(f"[x] {what}: {v:.4g} is in the expected range.")
    return True


def record_measurements(values: dict[str, float]):
    """Show what an exercise page measured, and glue each value for the instructors' guide.

    ``values`` maps what was measured (``"rank of the removed sample, approximate unlearning"``) to
    the number. Each number is glued with MyST-NB under that name (not displayed), so that
    ``course-lib assign measure`` collects it from the executed page; the returned DataFrame is the
    table the learner sees.
    """
    import pandas as pd

    try:
        from myst_nb import glue
    except ImportError:  # outside the book's environment: the table alone
        glue = None
    numbers = {what: float(value) for what, value in values.items()}
    if glue is not None:
        for what, number in numbers.items():
            glue(what, number, display=False)
    return pd.DataFrame({"measured": list(numbers.values())}, index=pd.Index(list(numbers), name="this run"))


def _forbidden_code(function: types.FunctionType, exercise: str) -> types.CodeType:
    """A code object that raises :class:`ForbiddenCall` naming ``function``, for ``function.__code__``."""
    qualified = f"{function.__module__}.{function.__qualname__}"
    message = (f"{exercise} asks you to write this yourself, but your answer calls the library's {qualified}. "
               "Write it with PyTorch operations (the exercise text says which library helpers you may use).")
    source = ("def forbidden(*args, **kwargs):\n"
              "    raise __import__('course_lib.exercises', fromlist=['ForbiddenCall']).ForbiddenCall(%r)\n"
              % message)
    namespace: dict = {}
    exec(compile(source, f"<forbidden {qualified}>", "exec"), namespace)
    return namespace["forbidden"].__code__


@contextlib.contextmanager
def forbid(*functions: Callable, exercise: str) -> Iterator[None]:
    """Within the block, calling any of ``functions`` raises :class:`ForbiddenCall`.

    The functions' code is swapped, so every reference to them is covered: ``from ... import f``
    in the learner's notebook, an alias ``my_f = f``, a ``functools.partial``, or a call made
    inside another library function. The original code is restored on exit, even on error.
    Only plain Python functions without a closure can be forbidden (the library's module-level
    functions); anything else is a ``TypeError`` for the exercise's author.
    """
    swapped: list[tuple[types.FunctionType, types.CodeType]] = []
    try:
        for function in functions:
            if not isinstance(function, types.FunctionType) or function.__closure__:
                raise TypeError(f"forbid() needs plain module-level Python functions; got {function!r}.")
            swapped.append((function, function.__code__))
            function.__code__ = _forbidden_code(function, exercise)
        yield
    finally:
        for function, code in reversed(swapped):
            function.__code__ = code
