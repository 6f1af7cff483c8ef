"""Errors that speak to the learner.

Every error a learner can cause (an unknown dataset, a value out of range, missing data) is a
:class:`CourseError`: its message says what went wrong and what to do next. The CLI prints the
message and exits with code 2, without a traceback. Anything else is a bug in ``course_lib``.
"""
from __future__ import annotations


class CourseError(Exception):
    """A problem the learner can fix; the message says how."""


class DatasetNotAvailableError(CourseError):
    """A downloadable dataset is not on disk (and could not be downloaded)."""


class CacheCorruptError(CourseError):
    """A cached checkpoint or result file cannot be read."""


def check_choice(value, choices, what: str):
    """Return ``value`` if it is one of ``choices``, else raise a :class:`CourseError` listing them."""
    if value not in choices:
        raise CourseError(f"Unknown {what} {value!r}. Choose one of: {', '.join(map(str, choices))}.")
    return value


def check_range(value: float, low: float, high: float, what: str, *, low_open: bool = False,
                high_open: bool = False) -> float:
    """Return ``value`` if ``low <= value <= high`` (open ends as asked), else raise a CourseError."""
    ok_low = value > low if low_open else value >= low
    ok_high = value < high if high_open else value <= high
    if not (ok_low and ok_high):
        lb = "(" if low_open else "["
        hb = ")" if high_open else "]"
        raise CourseError(f"{what} must lie in {lb}{low}, {high}{hb}; got {value}.")
    return value
