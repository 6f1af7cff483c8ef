"""RUB's text-to-image unlearning methods (chapter 8), registered in :data:`course_lib.unlearn.T2I_METHODS`.

One module per method, each citing its source with its loss written out; the shared signature
and data types are in :mod:`course_lib.unlearn.t2i.common`:

``ESD`` (:mod:`.esd`), ``FMN`` (:mod:`.fmn`), ``SalUn`` (:mod:`.salun`), ``EraseDiff`` (:mod:`.erasediff`),
``Scissorhands`` (:mod:`.scissorhands`), ``SPM`` (:mod:`.spm`), ``AdvUnlearn`` (:mod:`.advunlearn`) and
the ``retrain`` control (:mod:`.retrain`).
"""
from . import esd, fmn, salun, erasediff, scissorhands, spm, advunlearn, retrain  # noqa: F401  (registration)
from .common import ConceptSet, RetainSet, diffusion_of  # noqa: F401
