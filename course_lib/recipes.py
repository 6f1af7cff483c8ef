"""One recipe contract: what the chapters, the CLI and the tests call.

A recipe is an end-to-end experiment of one chapter::

    run_<topic>(dataset, model, *, keyword-only options) -> <Topic>Result

It validates every option before it trains or writes anything, reads its sizes from its budget
(:mod:`course_lib.budgets`), and returns a :class:`Result`: an object with

``table()``
    the numbers as a pandas DataFrame (what a chapter displays and the CLI prints);
``plot()``
    a matplotlib figure of them;
``to_dict()``
    everything as JSON-serialisable data (what ``--json`` prints and the results file holds).

Every recipe registers in :data:`RECIPES` with the chapter that uses it and the ``course-lib``
command that runs it, so ``course-lib recipes`` lists them and a test checks that each one is
reachable from the command line.
"""
from __future__ import annotations

import abc

from .registry import Registry

#: Every recipe: name -> run function; ``meta``: ``chapter`` and ``command`` (the CLI call).
RECIPES: Registry = Registry("recipe", hint="`course-lib recipes` lists them with their commands.")


def recipe(name: str, *, chapter: str, command: str):
    """Decorator: register a ``run_<topic>`` function as recipe ``name``.

    ``chapter`` names the chapter that calls it (``"3"``, ``"5"``); ``command`` is the CLI that
    runs it (``"course-lib recover"``).
    """
    def decorator(fn):
        RECIPES.register(name, fn, chapter=chapter, command=command)
        return fn

    return decorator


class Result(abc.ABC):
    """What every recipe returns: a table, a figure and a JSON-serialisable dict."""

    @abc.abstractmethod
    def table(self):
        """The result's numbers as a :class:`pandas.DataFrame`."""

    @abc.abstractmethod
    def plot(self):
        """A :class:`matplotlib.figure.Figure` of the result."""

    @abc.abstractmethod
    def to_dict(self) -> dict:
        """Everything as JSON-serialisable data (``--json``, results files)."""

    def text(self) -> str:
        """What the CLI prints without ``--json`` (the table, by default)."""
        return self.table().to_string()
