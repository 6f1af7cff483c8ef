"""One budget system: every number that depends on the profile, in one kind of configuration.

The course runs the *same* algorithms at three budgets (profiles):

``quick``
    CI on a 2-core CPU: every chapter in well under two minutes.
``standard``
    A learner's laptop CPU: a few minutes per chapter, large enough to show the papers' effects.
``full``
    A GPU: the papers' settings (120 pre-training epochs, many restarts and iterations).

A profile changes sizes and iteration counts, never the algorithm. Each stage of the course that
has a budget declares it as a frozen dataclass deriving from :class:`Budget`, with its fields
(documented, with defaults) and a ``PROFILES`` table of the fields that change per profile::

    @dataclass(frozen=True)
    class InversionConfig(Budget):
        budget_name: ClassVar[str] = "inversion"
        PROFILES: ClassVar[dict] = {"quick": {"iterations": 300}, "standard": {...}, "full": {...}}
        iterations: int = 600
        ...
        def check(self):                       # raise CourseError for a bad value
            ...

``InversionConfig.for_profile("quick", restarts=8)`` is the quick budget with one field changed;
an unknown field or a bad value raises :class:`~course_lib.errors.CourseError`, the same way for
every budget. Every subclass registers itself in :data:`BUDGETS`, so ``course-lib profile show
quick`` lists every budget of the course, and notebooks read their numbers from here rather than
define their own.

The profile is chosen by an explicit argument, else the ``COURSE_PROFILE`` environment variable,
else ``full`` when a CUDA GPU is present and ``standard`` otherwise.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import pkgutil
from typing import ClassVar

from .errors import CourseError
from .registry import Registry

PROFILE_NAMES = ("quick", "standard", "full")

#: Every budget class of the course, by ``budget_name`` (filled as the modules are imported).
BUDGETS: Registry[type] = Registry("budget", hint="`course-lib profile show quick` lists them.")


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def default_profile_name() -> str:
    """``COURSE_PROFILE`` if set, else ``full`` on a CUDA GPU and ``standard`` on a CPU."""
    env = os.environ.get("COURSE_PROFILE", "").strip().lower()
    if env:
        return env
    return "full" if _cuda_available() else "standard"


def profile_name(profile=None) -> str:
    """The profile name that ``profile`` (a name, a budget with a ``name``, or ``None``) means.

    Raises :class:`CourseError` for a name that is not one of ``quick``, ``standard``, ``full``.
    """
    if profile is not None and not isinstance(profile, str):
        profile = getattr(profile, "name", profile)
    if profile is not None and not isinstance(profile, str):
        raise CourseError(f"A profile is one of {', '.join(PROFILE_NAMES)}; got {profile!r}.")
    name = (profile or default_profile_name()).strip().lower()
    if name not in PROFILE_NAMES:
        raise CourseError(f"Unknown profile {name!r}. Choose one of {', '.join(PROFILE_NAMES)} "
                          "(set it with --profile or the COURSE_PROFILE environment variable).")
    return name


def merge_overrides(config_cls, settings: dict, overrides: dict, what: str) -> dict:
    """``settings`` updated with the ``overrides`` that are not ``None`` (so CLI arguments pass through).

    Raises :class:`CourseError` naming any override that is not a field of the dataclass
    ``config_cls``; ``what`` names the configuration in that message.
    """
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = set(overrides) - fields
    if unknown:
        raise CourseError(f"Unknown {what} setting(s): {', '.join(sorted(unknown))}. "
                          f"Its settings are: {', '.join(sorted(fields))}.")
    return {**settings, **{k: v for k, v in overrides.items() if v is not None}}


class Budget:
    """Base of every profile-dependent configuration (a frozen dataclass; see the module docstring).

    Class attributes of a subclass
    ------------------------------
    budget_name:
        The name ``course-lib profile show`` lists it under (unique).
    PROFILES:
        ``{"quick": {...}, "standard": {...}, "full": {...}}``: per profile, the fields whose
        values differ from the dataclass defaults.
    """

    budget_name: ClassVar[str] = ""
    PROFILES: ClassVar[dict] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("budget_name"):
            missing = set(PROFILE_NAMES) - set(cls.PROFILES)
            if missing:
                raise TypeError(f"Budget {cls.__name__} has no PROFILES entry for {sorted(missing)}.")
            BUDGETS.register(cls.budget_name, cls, description=(cls.__doc__ or "").strip().split("\n")[0])

    @classmethod
    def for_profile(cls, profile=None, **overrides):
        """The budget of ``profile`` (default: the active profile) with ``overrides`` applied.

        ``overrides`` whose value is ``None`` are ignored, so CLI arguments can be passed through;
        an unknown name or a bad value raises :class:`CourseError`.
        """
        name = profile_name(profile)
        values = merge_overrides(cls, cls.PROFILES[name], overrides, f"{cls.budget_name or cls.__name__} budget")
        try:
            budget = cls(**values)
        except TypeError as exc:  # a required field without a value
            raise CourseError(f"The {cls.budget_name or cls.__name__} budget needs more settings: {exc}.") from exc
        return budget.validated()

    def replace(self, **changes):
        """A copy with ``changes`` applied (``None`` values ignored), validated like :meth:`for_profile`."""
        values = merge_overrides(type(self), {}, changes, f"{self.budget_name or type(self).__name__} budget")
        return dataclasses.replace(self, **values).validated()

    def check(self) -> None:
        """Raise :class:`CourseError` for a setting out of its range (subclasses override)."""

    def validated(self):
        """Return ``self`` after :meth:`check`."""
        self.check()
        return self

    def to_dict(self) -> dict:
        """The settings as a JSON-serialisable dict (tuples become lists)."""
        def plain(v):
            if isinstance(v, tuple):
                return [plain(x) for x in v]
            if isinstance(v, dict):
                return {k: plain(x) for k, x in v.items()}
            return v

        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def load_all_budgets() -> list[type]:
    """Import every module of ``course_lib`` (so every budget registers) and return the classes."""
    import course_lib

    for info in pkgutil.walk_packages(course_lib.__path__, prefix="course_lib."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    return [BUDGETS.get(n) for n in BUDGETS.names()]


def profile_table(profile=None) -> dict[str, dict]:
    """Every budget of the course at ``profile``: ``{budget name: {setting: value}}``."""
    name = profile_name(profile)
    return {cls.budget_name: cls.for_profile(name).to_dict() for cls in load_all_budgets()}


def profile_dependent_settings(cls) -> list[str]:
    """The settings of budget ``cls`` whose value changes between profiles."""
    tables = [cls.for_profile(p).to_dict() for p in PROFILE_NAMES]
    return [k for k in tables[0] if len({repr(t[k]) for t in tables}) > 1]
