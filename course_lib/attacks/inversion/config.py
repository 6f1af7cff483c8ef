"""The budget and settings of the inversion attack, and the paper's preset (chapter 3)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ...budgets import Budget
from ...errors import CourseError, check_choice

#: The course's additions switched off: :meth:`InversionConfig.paper` is the paper's attack.
PAPER_SETTINGS = {"feature_iterations": 0, "smooth_beta": 0.0, "sharpen_iterations": 0, "tv_final_factor": 1.0,
                  "prune_at": (), "label_strategy": "joint"}

#: The course's additions, in the order chapter 3's ablation switches them on: name -> settings.
ADDITIONS = {
    "restart pruning": {"prune_at": (0.15, 0.3)},
    "analytic labels": {"label_strategy": "analytic"},
    "Softplus smoothing": {"smooth_beta": 20.0},
    "feature initialisation": {"feature_iterations": None},   # None: the profile's budget
    "TV continuation": {"tv_final_factor": 0.25},
    "sharpening": {"sharpen_iterations": None},
}


@dataclass(frozen=True)
class InversionConfig(Budget):
    """Budget and settings of :func:`invert_gradient` (chapter 3).

    :meth:`paper` is the attack as the paper runs it (Section 3.2.1, eqs. 3-6, with Geiping et
    al.'s optimiser): cosine + TV, signed Adam with step decay, restarts ranked by the attack loss.
    The default, :meth:`for_profile`, adds the course's additions on top; each is a named switch
    with its "off" value in :data:`PAPER_SETTINGS`, and chapter 3's ablation measures each one.

    Attributes
    ----------
    restarts:
        Random initialisations optimised together; the best by attack loss is kept.
    iterations:
        Adam steps per restart of the cosine stage.
    lr:
        Adam's initial learning rate (pixels live in [0, 1]).
    tv_weight:
        alpha of eq. (4), weight of the mean total variation (ignored for tabular rows). The paper
        does not state alpha; this is the course's value.
    tv_final_factor, tv_decay_window:
        TV continuation (addition; ``tv_final_factor=1`` is the paper's constant alpha). The
        cosine stage uses ``tv_weight`` until the fraction ``tv_decay_window[0]`` of its
        iterations, then lowers it geometrically to ``tv_final_factor * tv_weight`` at the
        fraction ``tv_decay_window[1]``; that final weight also ranks the restarts and drives the
        sharpening stage (:attr:`final_tv_weight`). Why: the TV prior lets the search find the
        digit's basin, but at the end it rewards a smoother, dimmer digit than the true one.
    signed:
        Feed the sign of the gradient to Adam (Geiping et al., the optimiser the paper adopts),
        robust to the tiny, badly scaled gradients of a cosine loss.
    decay_at, decay_factor:
        Step decay: the learning rate is multiplied by ``decay_factor`` at these fractions of
        ``iterations`` (Geiping et al.: 3/8, 5/8, 7/8, factor 0.2).
    init:
        ``"uniform"`` (U[0, 1) pixels), ``"gray"`` (0.5 plus small noise) or ``"dark"``.
    feature_iterations:
        Steps of the feature-initialisation stage (addition; 0 switches it off); ignored when the
        model has no final linear layer with a bias. See :mod:`course_lib.attacks.inversion`.
    label_strategy:
        With unknown labels: ``"analytic"`` (addition, default) reads the labels from the last
        layer's gradient and then treats them as known; ``"joint"`` optimises a soft label per
        sample together with x' (the paper's Appendix B, initialised uniform).
    soft_known_label:
        With known labels, still optimise the dummy label y' of eq. (3) as a soft vector, started
        at the known label (off by default: the label stays fixed, as the paper assumes it known).
    layer_weighting:
        ``"none"``: eq. (5), one cosine over all parameters (the paper). ``"equal"``: the mean of
        per-parameter-tensor cosines, so early layers weigh as much as deep ones (a variant for
        experiments).
    smooth_beta:
        Smoothing (addition): the attacker optimises eq. (4) on a copy of the model whose ReLUs are
        replaced by ``Softplus(beta=smooth_beta)`` (same weights); ``0`` uses the model as it is
        (the paper). Why: the cosine loss of a ReLU network is piecewise smooth in x' with pieces
        far smaller than an Adam step. Restarts are still ranked by the loss of the real model.
        Ignored for tabular rows (like ``tv_weight``).
    refine_lr:
        Adam's initial learning rate of the cosine stage when it starts from the feature stage's
        images (a refinement: ``lr`` would throw the good start away). With known labels the
        feature stage's images stay candidates: the result is the lowest attack loss (real model)
        over them and the refined ones.
    sharpen_beta, sharpen_iterations, sharpen_lr:
        Sharpening (addition; images only): the returned restart is refined for
        ``sharpen_iterations`` Adam steps (learning rate ``sharpen_lr``, gradient scaled to a
        maximum of 1) on a *sharper* Softplus copy, ``beta = sharpen_beta``, and kept only if the
        real model's attack loss went down. Why: Softplus(20) finds the basin but biases it; on a
        sharper copy the true image scores better again. ``sharpen_iterations=0`` switches it off.
    batched:
        ``True`` optimises all restarts in one vmapped batch; ``False`` one after another (the
        same maths; ``benchmarks/inversion_speed.py`` compares their speed).
    prune_at, prune_keep:
        Successive halving (addition; batched mode only): at each fraction of ``iterations`` in
        ``prune_at``, keep only the ``prune_keep`` share of restarts with the lowest attack loss
        (at least one), so many cheap starts buy a better basin for the long refinement.
    progress:
        Show a tqdm progress bar.
    """

    restarts: int = 4
    iterations: int = 600
    lr: float = 0.1
    tv_weight: float = 0.02
    tv_final_factor: float = 0.25
    tv_decay_window: tuple[float, float] = (0.3, 0.9)
    signed: bool = True
    decay_at: tuple[float, ...] = (0.375, 0.625, 0.875)
    decay_factor: float = 0.2
    init: str = "uniform"
    feature_iterations: int = 200
    label_strategy: str = "analytic"
    soft_known_label: bool = False
    layer_weighting: str = "none"
    smooth_beta: float = 20.0
    refine_lr: float = 0.01
    sharpen_beta: float = 100.0
    sharpen_iterations: int = 400
    sharpen_lr: float = 0.01
    batched: bool = True
    prune_at: tuple[float, ...] = (0.15, 0.3)
    prune_keep: float = 0.25
    progress: bool = True

    budget_name: ClassVar[str] = "inversion"
    #: Per-profile budgets: a profile changes only restarts and iterations.
    PROFILES: ClassVar[dict] = {
        "quick": {"restarts": 16, "iterations": 300, "feature_iterations": 200, "sharpen_iterations": 100},
        "standard": {"restarts": 32, "iterations": 600, "feature_iterations": 300, "sharpen_iterations": 400},
        "full": {"restarts": 128, "iterations": 3000, "feature_iterations": 1000, "sharpen_iterations": 1000},
    }

    def check(self) -> None:
        """Raise :class:`CourseError` for a setting out of its range."""
        if self.restarts < 1:
            raise CourseError(f"restarts must be at least 1; got {self.restarts}.")
        if self.iterations < 1:
            raise CourseError(f"iterations must be at least 1; got {self.iterations}.")
        if self.feature_iterations < 0:
            raise CourseError(f"feature_iterations must be >= 0; got {self.feature_iterations}.")
        if self.lr <= 0 or self.refine_lr <= 0:
            raise CourseError(f"The learning rates must be positive; got lr={self.lr}, refine_lr={self.refine_lr}.")
        if self.sharpen_iterations < 0 or self.sharpen_beta < 0 or self.sharpen_lr <= 0:
            raise CourseError("sharpen_iterations and sharpen_beta must be >= 0 and sharpen_lr positive; got "
                              f"{self.sharpen_iterations}, {self.sharpen_beta}, {self.sharpen_lr}.")
        if self.smooth_beta < 0:
            raise CourseError(f"smooth_beta must be >= 0 (0 switches smoothing off); got {self.smooth_beta}.")
        if self.tv_weight < 0:
            raise CourseError(f"tv_weight must be >= 0; got {self.tv_weight}.")
        if not 0 < self.tv_final_factor <= 1:
            raise CourseError(f"tv_final_factor must lie in (0, 1] (1 keeps alpha constant); got {self.tv_final_factor}.")
        start, end = self.tv_decay_window
        if not 0 <= start < end <= 1:
            raise CourseError(f"tv_decay_window must be two fractions 0 <= start < end <= 1; got {self.tv_decay_window}.")
        check_choice(self.init, ("uniform", "gray", "dark"), "initialisation")
        check_choice(self.label_strategy, ("joint", "analytic"), "label strategy")
        check_choice(self.layer_weighting, ("none", "equal"), "layer weighting")
        if not 0 < self.prune_keep <= 1:
            raise CourseError(f"prune_keep must lie in (0, 1]; got {self.prune_keep}.")

    @classmethod
    def paper(cls, profile=None, **overrides) -> "InversionConfig":
        """The paper's attack (eqs. 3-6, Geiping et al.'s optimiser) at ``profile``'s budget.

        Every addition of the course is switched off (:data:`PAPER_SETTINGS`); ``overrides``
        change single settings on top, e.g. ``InversionConfig.paper("quick", smooth_beta=20)``
        for one row of an ablation.
        """
        return cls.for_profile(profile, **{**PAPER_SETTINGS, **overrides})

    @property
    def final_tv_weight(self) -> float:
        """alpha at the end of the cosine stage: what ranks the restarts and drives the sharpening."""
        return self.tv_weight * self.tv_final_factor

    def tv_scale(self, step: int) -> float:
        """Factor on ``tv_weight`` at cosine-stage step ``step`` (0-based): 1, then geometric decay."""
        start, end = self.tv_decay_window
        f = step / max(1, self.iterations)
        if self.tv_final_factor == 1 or f < start:
            return 1.0
        return self.tv_final_factor ** min(1.0, (f - start) / (end - start))
