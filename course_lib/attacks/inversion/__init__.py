"""Step 2 of the white-box attack: decode an estimated gradient into samples (eqs. 3-6, chapter 3).

Dummy inputs x' (and, with unknown labels, a soft label y' = softmax(z)) are optimised so that
their gradient at theta, eq. (3), points the same way as the target gradient:

    minimise  1 - cos(grad_theta L(f_theta(x'), y'), target)  +  alpha * TV(x')      (eqs. 4-6)

The package follows the attack's stages:

:mod:`.config`      ``InversionConfig``: the budget, the paper's preset (``InversionConfig.paper``)
                    and the course's additions, each a named switch (``ADDITIONS``);
:mod:`.objective`   eqs. (3)-(6): ``image_tv``, ``cosine_loss``, ``soft_cross_entropy``,
                    ``attack_loss_terms`` (score any candidate, the truth included);
:mod:`.last_layer`  what the last layer reveals: ``analytic_labels`` (iDLG), ``classifier_input_estimate``;
:mod:`.search`      ``invert_gradient``: restarts, stages, pruning, the final pick.

``invert_gradient(model, target_gradient, *, input_shape, num_classes, num_forget=1, labels=None,
config=None, seed=0) -> InversionResult`` recovers ``num_forget`` samples whose summed gradient at
``model`` (theta, the deployed model) points along ``target_gradient`` (the +g estimate of
:func:`course_lib.attacks.gradient_estimation.estimate_gradient`); ``labels=None`` means unknown.
Several removed samples are recovered jointly (x' has shape ``(K, ...)``; they come back in no
particular order, :func:`course_lib.metrics.match_samples` pairs them for scoring).
"""
from .config import ADDITIONS, PAPER_SETTINGS, InversionConfig  # noqa: F401
from .last_layer import analytic_labels, classifier_input_estimate  # noqa: F401
from .objective import attack_loss_terms, cosine_loss, image_tv, smoothed_model, soft_cross_entropy  # noqa: F401
from .search import InversionResult, invert_gradient  # noqa: F401
