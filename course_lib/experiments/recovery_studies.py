"""The budget of chapter 3's studies of feature recovery (seeds, training-set sizes, epochs, several samples).

Chapter 3 repeats the attack of :func:`course_lib.experiments.recovery.run_recovery` over seeds
(one removed sample), over the training-set sizes of the paper's Table 2 (4, 8, 16), over the
fine-tuning epochs, and with several samples removed at once; :class:`RecoveryStudiesBudget` holds
how many of each a profile affords.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..budgets import Budget
from ..errors import CourseError


@dataclass(frozen=True)
class RecoveryStudiesBudget(Budget):
    """Sizes of chapter 3's studies.

    Attributes
    ----------
    seeds:
        Removed samples (one per seed) of the single-sample study.
    sizes:
        Training-set sizes N of the Table 2 study (the paper: 4, 8, 16).
    table2_samples:
        Removed samples per size (each sample of the training set in turn, up to this many).
    epochs:
        Fine-tuning epochs of the epochs study (the paper: 1, 2, 3).
    multi:
        How many samples are removed at once in the several-samples study (the paper: 8 to 128).
    restarts, iterations:
        The inversion budget of these studies (``None``: the profile's :class:`InversionConfig`).
    """

    budget_name: ClassVar[str] = "recovery-studies"
    PROFILES: ClassVar[dict] = {
        "quick": dict(seeds=1, sizes=(8,), table2_samples=2, epochs=(1, 2), multi=(2,), restarts=8, iterations=150),
        "standard": dict(),
        "full": dict(),
    }

    seeds: int = 8
    sizes: tuple[int, ...] = (4, 8, 16)
    table2_samples: int = 8
    epochs: tuple[int, ...] = (1, 2, 3)
    multi: tuple[int, ...] = (8, 16, 32)
    restarts: int | None = None
    iterations: int | None = None

    def check(self) -> None:
        if self.seeds < 1 or self.table2_samples < 1:
            raise CourseError("seeds and table2_samples must be at least 1.")
        if not self.sizes or not self.epochs or not self.multi:
            raise CourseError("sizes, epochs and multi each need at least one value.")
        if any(int(v) < 1 for v in self.sizes + self.epochs + self.multi):
            raise CourseError("Every training-set size, epoch count and number of removed samples must be >= 1.")
        for name in ("restarts", "iterations"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise CourseError(f"{name} must be at least 1 (or None: the inversion budget's); got {value}.")
