"""The registries of unlearning methods, one per RUB task, each with one signature.

Classification (chapter 5), :data:`CLASSIFICATION_METHODS`::

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

Image-to-image (:data:`I2I_METHODS`) and text-to-image (:data:`T2I_METHODS`) unlearning have
registries of the same type; their modules document their signatures.

A learner adds a method with the registry's decorator, and the RUB benchmark runs it like the
built-in ones::

    from course_lib.unlearn import CLASSIFICATION_METHODS

    @CLASSIFICATION_METHODS.register("my-ga", description="gradient ascent, 3 steps")
    def my_ga(original, forget, retain, *, lr=1e-3, seed=0, progress=False):
        ...
        return unlearned

The built-in methods live in the modules of :mod:`course_lib.unlearn` and register themselves
when the package is imported.
"""
from __future__ import annotations

import inspect
from typing import Callable

from torch import nn

from ..errors import CourseError
from ..registry import Registry

UnlearningFn = Callable[..., nn.Module]


def _positional_check(count: int, signature: str):
    def check(name: str, fn) -> None:
        if not callable(fn):
            raise CourseError(f"The unlearning method {name!r} must be a function; got {fn!r}.")
        params = list(inspect.signature(fn).parameters.values())
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if len(positional) < count and not any(p.kind == p.VAR_POSITIONAL for p in params):
            raise CourseError(f"The unlearning method {name!r} must take {signature}; "
                              f"{getattr(fn, '__name__', fn)} takes {[p.name for p in params]}.")
    return check


CLASSIFICATION_METHODS: Registry[UnlearningFn] = Registry(
    "unlearning method (classification)", check=_positional_check(3, "(original, forget, retain, **hyper_parameters)"),
    hint="Register your own with @course_lib.unlearn.CLASSIFICATION_METHODS.register(name).")
I2I_METHODS: Registry[UnlearningFn] = Registry(
    "image-to-image unlearning method",
    check=_positional_check(3, "(original, forget, retain, **hyper_parameters)"),
    hint="Register your own with @course_lib.unlearn.I2I_METHODS.register(name).")
T2I_METHODS: Registry[UnlearningFn] = Registry(
    "text-to-image unlearning method",
    check=_positional_check(3, "(original, concept, retain, **hyper_parameters)"),
    hint="Register your own with @course_lib.unlearn.T2I_METHODS.register(name).")


def method_defaults(fn: UnlearningFn) -> dict:
    """The keyword arguments of ``fn`` that have a default value (its documented hyper-parameters)."""
    sig = inspect.signature(fn)
    return {k: p.default for k, p in sig.parameters.items()
            if p.default is not inspect.Parameter.empty and k != "progress"}


def check_hyper_parameters(registry: Registry, name: str, hyper_parameters: dict) -> None:
    """Raise :class:`CourseError` if ``hyper_parameters`` names a keyword method ``name`` does not take."""
    fn = registry.get(name)
    sig = inspect.signature(fn)
    if any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):
        return
    unknown = sorted(set(hyper_parameters) - set(sig.parameters))
    if unknown:
        raise CourseError(f"Method {name!r} has no hyper-parameter(s) {', '.join(unknown)}; "
                          f"it takes: {', '.join(method_defaults(fn)) or 'none'}.")


def unlearn(name: str, original: nn.Module, forget, retain, **hyper_parameters) -> nn.Module:
    """Run the classification method ``name``; unknown hyper-parameters raise a :class:`CourseError`."""
    check_hyper_parameters(CLASSIFICATION_METHODS, name, hyper_parameters)
    if len(forget) == 0:
        raise CourseError("The forget set is empty: choose at least one sample or class to unlearn.")
    return CLASSIFICATION_METHODS.get(name)(original, forget, retain, **hyper_parameters)
