"""A registry of unlearning methods that share one signature (chapter 5, "Robust unlearning").

Every method is a function

    method(original, forget, retain, **hyper_parameters) -> unlearned model

``original``
    The trained model f(.; theta) (an ``nn.Module``); it is **never modified**: a method works on
    a copy and returns a new model in eval mode.
``forget``
    D_u, the samples to unlearn (:class:`~course_lib.data.Dataset`, ``x`` of shape (N_u, C, H, W)).
``retain``
    D_r = D \\ D_u, the samples the model keeps (:class:`~course_lib.data.Dataset`).
``hyper_parameters``
    Keyword arguments with defaults (``lr``, ``epochs``, ``seed``, ...). Every method accepts
    ``seed`` (its randomness: batch order, random labels, initialisation) and ``progress``.

A learner adds a method with the decorator, and the RUB benchmark of chapter 5 runs it like the
built-in ones::

    from course_lib.unlearn import register_method

    @register_method("my-ga", description="gradient ascent, 3 steps")
    def my_ga(original, forget, retain, *, lr=1e-3, seed=0, progress=False):
        ...
        return unlearned

The built-in methods live in :mod:`course_lib.unlearn.methods` and register themselves on import.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from ..errors import CourseError

UnlearningFn = Callable[..., nn.Module]


@dataclass(frozen=True)
class MethodSpec:
    """One registered method: its name, the function, a one-line description and its defaults."""

    name: str
    fn: UnlearningFn
    description: str = ""
    defaults: dict = field(default_factory=dict)

    def __call__(self, original, forget, retain, **hyper_parameters) -> nn.Module:
        return self.fn(original, forget, retain, **hyper_parameters)


_REGISTRY: dict[str, MethodSpec] = {}


def _defaults_of(fn: UnlearningFn) -> dict:
    """The keyword arguments of ``fn`` that have a default value (its documented hyper-parameters)."""
    sig = inspect.signature(fn)
    return {k: p.default for k, p in sig.parameters.items()
            if p.default is not inspect.Parameter.empty and k != "progress"}


def register_method(name: str, *, description: str = "", overwrite: bool = True):
    """Decorator: register ``fn(original, forget, retain, **hyper_parameters) -> nn.Module`` as ``name``.

    The function must take three positional arguments (original model, forget set, retain set)
    and hyper-parameters as keywords with defaults; it must accept ``seed`` and ``progress``
    keywords (or ``**kwargs``). Re-registering a name replaces the old entry (handy in a notebook)
    unless ``overwrite=False``. Used in chapter 5's exercises.
    """
    if not isinstance(name, str) or not name.strip() or "," in name:
        raise CourseError(f"A method name must be a non-empty string without commas; got {name!r}.")

    def decorator(fn: UnlearningFn) -> UnlearningFn:
        params = list(inspect.signature(fn).parameters.values())
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if len(positional) < 3 and not any(p.kind == p.VAR_POSITIONAL for p in params):
            raise CourseError(
                f"The unlearning method {name!r} must take (original, forget, retain, **hyper_parameters); "
                f"{fn.__name__} takes {[p.name for p in params]}.")
        if name in _REGISTRY and not overwrite:
            raise CourseError(f"An unlearning method named {name!r} is already registered; choose another name.")
        doc = (description or (inspect.getdoc(fn) or "").split("\n")[0]).strip()
        _REGISTRY[name] = MethodSpec(name, fn, doc, _defaults_of(fn))
        return fn

    return decorator


def _ensure_builtins() -> None:
    from . import methods  # noqa: F401  (registers the built-in methods on import)


def get_method(name: str) -> MethodSpec:
    """The registered method ``name``; a :class:`CourseError` listing the known ones otherwise."""
    _ensure_builtins()
    if name not in _REGISTRY:
        raise CourseError(f"Unknown unlearning method {name!r}. Known methods: {', '.join(_REGISTRY)}. "
                          "Register your own with @course_lib.unlearn.register_method(name).")
    return _REGISTRY[name]


def list_methods() -> list[str]:
    """Names of every registered method, built-in ones first (in the order of RUB's Table 1)."""
    _ensure_builtins()
    return list(_REGISTRY)


def unregister_method(name: str) -> None:
    """Remove ``name`` from the registry (for tests and notebooks; built-ins come back on re-import)."""
    _REGISTRY.pop(name, None)


def unlearn(name: str, original: nn.Module, forget, retain, **hyper_parameters) -> nn.Module:
    """Run the registered method ``name``; unknown hyper-parameters raise a :class:`CourseError`."""
    spec = get_method(name)
    sig = inspect.signature(spec.fn)
    if not any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
        unknown = sorted(set(hyper_parameters) - set(sig.parameters))
        if unknown:
            raise CourseError(f"Method {name!r} has no hyper-parameter(s) {', '.join(unknown)}; "
                              f"it takes: {', '.join(spec.defaults) or 'none'}.")
    if len(forget) == 0:
        raise CourseError("The forget set is empty: choose at least one sample or class to unlearn.")
    return spec(original, forget, retain, **hyper_parameters)
