"""Unlearning methods.

* :mod:`course_lib.unlearn.paper` — the inversion paper's approximate and exact unlearning (chapters 1-4).
* :mod:`course_lib.unlearn.registry` — one registry per RUB task, each with one signature;
  :mod:`course_lib.unlearn.classification` and :mod:`course_lib.unlearn.gradient_ascent` register
  RUB's classification methods (chapter 5), :mod:`course_lib.unlearn.i2i` its image-to-image
  methods (chapter 7) and the package :mod:`course_lib.unlearn.t2i` its seven text-to-image methods
  and the retrain control (chapter 8).
"""
from .registry import (CLASSIFICATION_METHODS, I2I_METHODS, T2I_METHODS, check_hyper_parameters,  # noqa: F401
                       method_defaults, unlearn)
from . import classification, gradient_ascent  # noqa: F401,E402  (register the built-in classification methods)
from . import i2i  # noqa: F401,E402  (registers the image-to-image methods of chapter 7)
from . import t2i  # noqa: F401,E402  (registers RUB's text-to-image methods, chapter 8)
