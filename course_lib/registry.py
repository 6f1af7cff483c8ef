"""One registry type for everything the course looks up by name.

Datasets, models, unlearning methods (one registry per task), defenses, attacks, budgets and
recipes are each a :class:`Registry`. A learner adds an entry with the decorator and the rest of
the course (the benchmarks, the CLI, the chapters) finds it by name::

    from course_lib.unlearn import CLASSIFICATION_METHODS

    @CLASSIFICATION_METHODS.register("my-ga", description="gradient ascent, 3 steps")
    def my_ga(original, forget, retain, *, lr=1e-3, seed=0, progress=False):
        ...

``get`` raises a :class:`~course_lib.errors.CourseError` that lists the known names, so a typo
on the command line or in a parameters cell gets a useful answer.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Generic, Iterator, TypeVar

from .errors import CourseError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered object with its name, a one-line description and free-form metadata."""

    name: str
    obj: T
    description: str = ""
    meta: dict = field(default_factory=dict)


class Registry(Generic[T]):
    """Named objects of one kind, in registration order.

    Parameters
    ----------
    kind:
        What the entries are, for messages (``"dataset"``, ``"unlearning method"``).
    hint:
        One sentence appended to the unknown-name error (how to add an entry, say).
    check:
        Called as ``check(name, obj)`` before an entry is added; raises :class:`CourseError` for
        an object of the wrong shape (a method with the wrong signature, say).
    """

    def __init__(self, kind: str, *, hint: str = "", check: Callable[[str, T], None] | None = None):
        self.kind = kind
        self.hint = hint
        self._check = check
        self._entries: dict[str, Entry[T]] = {}

    # ------------------------------------------------------------------ adding

    def register(self, name: str, obj: T | None = None, *, description: str = "", overwrite: bool = True,
                 **meta):
        """Add ``obj`` under ``name`` and return it; without ``obj``, return a decorator that does.

        Re-registering a name replaces the old entry (handy in a notebook) unless
        ``overwrite=False``. ``description`` defaults to the first line of ``obj``'s docstring.
        """
        if not isinstance(name, str) or not name.strip() or "," in name or name != name.strip():
            raise CourseError(f"A {self.kind} name must be a non-empty string without commas or surrounding "
                              f"spaces; got {name!r}.")

        def add(target: T) -> T:
            if name in self._entries and not overwrite:
                raise CourseError(f"A {self.kind} named {name!r} is already registered; choose another name.")
            if self._check is not None:
                self._check(name, target)
            doc = description or ((getattr(target, "__doc__", None) or "").strip().split("\n")[0])
            self._entries[name] = Entry(name, target, doc.strip(), dict(meta))
            return target

        return add if obj is None else add(obj)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (nothing happens if it is not there)."""
        self._entries.pop(name, None)

    # ------------------------------------------------------------------ looking up

    def entry(self, name: str) -> Entry[T]:
        """The :class:`Entry` called ``name``; a :class:`CourseError` listing the names otherwise."""
        if not isinstance(name, str):
            raise CourseError(f"A {self.kind} is named by a string; got {name!r} ({type(name).__name__}).")
        if name not in self._entries:
            known = ", ".join(self._entries) or "none yet"
            raise CourseError(f"Unknown {self.kind} {name!r}. Choose one of: {known}." + (f" {self.hint}" if self.hint else ""))
        return self._entries[name]

    def get(self, name: str) -> T:
        """The object registered as ``name``."""
        return self.entry(name).obj

    def names(self) -> list[str]:
        """Every registered name, in registration order."""
        return list(self._entries)

    def entries(self) -> list[Entry[T]]:
        return list(self._entries.values())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"
