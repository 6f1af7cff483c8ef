"""Unlearning methods.

* :mod:`course_lib.unlearn.paper` — the inversion paper's approximate and exact unlearning (chapters 1-4).
* :mod:`course_lib.unlearn.registry` — one registry per RUB task, each with one signature;
  :mod:`course_lib.unlearn.methods` registers RUB's classification methods (chapter 5).
"""
from .registry import (CLASSIFICATION_METHODS, I2I_METHODS, T2I_METHODS, check_hyper_parameters,  # noqa: F401
                       method_defaults, unlearn)
from . import methods  # noqa: F401,E402  (registers the built-in classification methods)
from . import t2i  # noqa: F401,E402  (registers RUB's text-to-image methods, chapter 8)
