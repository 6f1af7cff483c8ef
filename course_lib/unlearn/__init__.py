"""Unlearning methods.

* :mod:`course_lib.unlearn.paper` — the inversion paper's approximate and exact unlearning (chapters 1-4).
* :mod:`course_lib.unlearn.registry` and :mod:`course_lib.unlearn.methods` — RUB's classification
  methods behind one signature ``(original, forget, retain, **hyper_parameters) -> model`` and a
  registry a learner can add to with :func:`register_method` (chapter 5).
"""
from .registry import MethodSpec, get_method, list_methods, register_method, unlearn, unregister_method  # noqa: F401
