"""Chapter 6's recipe: the defenses of Section 7 against both attacks, and the privacy-utility trade-off.

For every defense of :mod:`course_lib.defenses` and every strength of its grid, the model developer
post-processes the unlearned model M_u into a defended model M_d, releases it, and the two attackers
of the inversion paper try again:

* **feature recovery** (the server, white-box, chapter 3): approximate unlearning of a single
  sample (the setting of Section 7, "which in general leaks more information"), repeated for
  ``samples`` randomly chosen removed samples; the server inverts ``theta_d - theta`` and we score
  the recovery with PSNR, SSIM and LPIPS (when the VGG weights are on disk) against the removed
  sample;
* **label inference** (a user, black-box, chapter 4): every class in turn is unlearned (share
  ``label_forget_share``), the defense is applied, and the probing attack (eqs. 9-11) and the
  label-only attack infer the unlearned class; accuracy over the classes.

The **utility** of a setting is the validation-accuracy ratio of Section 7: the accuracy of M_d
over the accuracy of the undefended M_u on the test split, averaged over the removed samples.

``run_defenses(dataset, *, profile, seed, attacks, defenses, strengths, ...)`` -> :class:`DefensesResult`
    Table 4's analogue (``.table()``), the privacy-utility plot (``.plot()``), the recovered images
    under growing strength (``.image_grid()``, Figs. 11-12), the label-inference table
    (``.label_table()``) and the ipywidgets explorer (``.explorer()``). Chapter 6 runs the whole
    grid; ``course-lib defend`` one defense at chosen strengths.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from .. import defenses as D
from ..attacks.inversion import InversionConfig
from ..budgets import Budget, profile_name
from ..cache import config_key
from ..config import get_profile, results_dir
from ..data import Dataset
from ..errors import CourseError, check_choice
from ..recipes import recipe
from ..results import RowStore, prepare_output
from .defense_attacks import labels_under_defenses, recovery_row_id, recovery_under_defenses
from .defense_result import DefensesResult

ATTACKS = ("recover", "infer-label")

#: The paper's grids (Table 4): ``DefenseConfig.paper()``.
PAPER_GRIDS = tuple((name, D.get_defense(name).paper_strengths) for name in D.PARAMETER_DEFENSES)
#: The course's grids (an addition, ``DefenseConfig``'s default), read at the scale of what the attack
#: reads. Approximate unlearning of one sample moves the weights by u = (eta m / b) g: on mnist-5k's
#: convnet-spatial (quick, the digit of seed 6) ||u|| is about 5e-11 and ||g|| about 6e-6 over 138k
#: parameters, so every strength of the paper's grids perturbs theta_d - theta by orders of magnitude
#: more than u and kills the attack, whatever it costs. The course's values sit where the cosine between
#: the released and the true update falls from about 1 to about 0 (``signal_table``):
#:
#: * obfuscation: noise of variance sigma on the clipped unlearning gradient (the paper's reading), with
#:   the course's bound C = 3e-6 (below that gradient's norm, so that clipping binds), per-coordinate
#:   noise std sqrt(sigma) around the gradient's per-coordinate size, then the paper's smallest sigma;
#: * pruning in update space (``pruning_space="update"``): the share p of the smallest entries of u is
#:   zeroed, with p = 0.875 between 0.75 (the attack intact) and 0.9 (about 5 dB lower, on either side
#:   of 5 dB as the float summation order moves); pruning the weights themselves (the paper's) moves
#:   theta_d - theta by at least the smallest weight, about 2e-7 here, and leaves nothing to recover at any p;
#: * fine-tuning at learning rates whose 20 SGD steps move the weights by about as much as u (2e-13
#:   between 1e-13, the attack intact, and 6e-13, about 6 dB lower on one digit), one rate between them
#:   and the paper's (1e-8, so that the curve does not jump from intact to dead), then the paper's
#:   smallest lr (where the utility cost appears).
COURSE_GRIDS = (("obfuscation", (1e-17, 1e-16, 1e-15, 1e-3)),
                ("pruning", (0.5, 0.75, 0.875, 0.9, 0.97, 0.99)),
                ("finetune", (1e-13, 2e-13, 6e-13, 3e-12, 1e-11, 3e-11, 1e-10, 1e-8, 1e-3)))
#: The quick profile's course grid (one removed sample): the same values.
QUICK_GRIDS = COURSE_GRIDS
#: C of the course's obfuscation (a course choice): below the one-sample unlearning gradient's norm.
COURSE_CLIP_NORM = 3e-6


@dataclass(frozen=True)
class DefenseConfig(Budget):
    """Sizes of chapter 6's evaluation. A profile changes sizes and grids, never the algorithms.

    Attributes
    ----------
    samples:
        Removed samples (one at a time) averaged per setting of the recovery attack (paper: 100).
    grids:
        ``((defense, (strength, ...)), ...)``: the strengths evaluated. The default is the course's
        grid (:data:`COURSE_GRIDS`, an addition: it spans the range in which the attack degrades);
        :meth:`paper` uses the paper's (Table 4, :data:`PAPER_GRIDS`).
    restarts, iterations, feature_iterations, sharpen_iterations:
        The inversion budget of the sweep (``None``: the profile's :class:`InversionConfig`).
    unlearning:
        ``"approximate"`` (Section 7's setting) or ``"exact"``.
    finetune_samples, finetune_epochs, finetune_batch_size:
        The fine-tuning defense's additional data (drawn from the public split D0) and schedule.
    clip_norm:
        C of parameter obfuscation (paper: 1.2, which never binds on a one-sample gradient of a few
        1e-6; the course's grid uses :data:`COURSE_CLIP_NORM`, below it, so that it binds).
    pruning_space:
        ``"update"`` (the course's grid: prune the unlearning update's smallest entries) or
        ``"parameters"`` (the paper's: prune M_u's weights); see :func:`course_lib.defenses.prune_model`.
    obfuscation_space, noise_reading:
        Where obfuscation clips and adds noise (``"gradient"``: the unlearning gradient, the
        paper's reading; ``"parameters"``: the weights) and how sigma is read (``"variance"`` as
        the paper writes, or ``"std"``); see :func:`course_lib.defenses.obfuscate`.
    label_forget_share:
        Share p_u of the class unlearned in the label-inference part (1.0: the whole class).
    label_classes:
        Unlearn classes 0..label_classes-1 in turn (``None``: every class).
    label_grid:
        ``"all"`` strengths of ``grids`` in the label-inference part, or only the ``"strongest"``.
    validation_size:
        Test samples on which the accuracy ratio is measured (``None``: the whole test split;
        a fixed random subset otherwise).
    label_seed:
        Seed of chapter 4's probing setup (subset X_u, M, probes). Kept apart from the recovery
        seed so that the probes chapter 4 built and cached on disk are reused: building them
        costs tens of thousands of queries.
    probes_per_class:
        Probes of the probability attack (chapter 4's NES probes, cached on disk).
    label_only_attack:
        Also run chapter 4's label-only attack (boundary probes, flip shares).
    """

    samples: int = 4
    grids: tuple = COURSE_GRIDS
    restarts: int | None = None
    iterations: int | None = None
    feature_iterations: int | None = None
    sharpen_iterations: int | None = None
    unlearning: str = "approximate"
    finetune_samples: int = 100
    finetune_epochs: int = 5
    finetune_batch_size: int = 25
    clip_norm: float = COURSE_CLIP_NORM
    pruning_space: str = "update"
    obfuscation_space: str = "gradient"
    noise_reading: str = "variance"
    label_forget_share: float = 1.0
    label_classes: int | None = None
    label_grid: str = "all"
    probes_per_class: int = 10
    label_only_attack: bool = True
    validation_size: int | None = None
    label_seed: int = 0

    budget_name: ClassVar[str] = "defenses"
    PROFILES: ClassVar[dict] = {
        "quick": dict(samples=1, grids=QUICK_GRIDS, restarts=8, iterations=100, feature_iterations=100,
                      sharpen_iterations=50, probes_per_class=4, label_classes=3, validation_size=500,
                      label_grid="strongest"),
        "standard": dict(samples=3, restarts=8, iterations=100, feature_iterations=100, sharpen_iterations=50,
                         probes_per_class=10, label_grid="strongest"),
        "full": dict(samples=100, probes_per_class=10),
    }

    def check(self) -> None:
        if self.samples < 1:
            raise CourseError(f"samples must be at least 1; got {self.samples}.")
        if self.finetune_samples < 1:
            raise CourseError(f"finetune_samples must be at least 1; got {self.finetune_samples}.")
        check_choice(self.unlearning, ("approximate", "exact"), "unlearning method")
        check_choice(self.obfuscation_space, D.OBFUSCATION_SPACES, "obfuscation space")
        check_choice(self.noise_reading, D.NOISE_READINGS, "noise reading")
        check_choice(self.pruning_space, D.PRUNING_SPACES, "pruning space")
        if not self.clip_norm > 0:
            raise CourseError(f"clip_norm must be positive; got {self.clip_norm}.")
        for name, strengths in self.grids:
            D.get_defense(name)
            if len(strengths) == 0:
                raise CourseError(f"The grid of {name!r} is empty; give at least one strength.")
        check_choice(self.label_grid, ("all", "strongest"), "label grid")
        if self.label_classes is not None and self.label_classes < 1:
            raise CourseError(f"label_classes must be at least 1; got {self.label_classes}.")
        if self.validation_size is not None and self.validation_size < 1:
            raise CourseError(f"validation_size must be at least 1; got {self.validation_size}.")
        if not 0 < self.label_forget_share <= 1:
            raise CourseError(f"label_forget_share must lie in (0, 1]; got {self.label_forget_share}.")

    def grid(self) -> dict[str, tuple[float, ...]]:
        return {name: tuple(float(s) for s in strengths) for name, strengths in self.grids}

    @classmethod
    def paper(cls, profile=None, **overrides) -> "DefenseConfig":
        """Section 7 as the paper ran it: Table 4's grids (:data:`PAPER_GRIDS`), C = 1.2, noise of
        variance sigma on the unlearning gradient. Sizes from ``profile`` (``quick``: the strongest
        strength of each grid only); ``overrides`` on top."""
        grids = PAPER_GRIDS if profile_name(profile) != "quick" else tuple((n, v[-1:]) for n, v in PAPER_GRIDS)
        return cls.for_profile(profile, **{"grids": grids, "clip_norm": D.DEFAULT_CLIP_NORM,
                                           "obfuscation_space": "gradient", "noise_reading": "variance",
                                           "pruning_space": "parameters", **overrides})

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["grids"] = {name: list(s) for name, s in self.grids}
        return d


@recipe("defenses", chapter="6", command="course-lib defend")
def run_defenses(dataset: str = "mnist-5k", *, profile: str | None = None, seed: int = 0,
                 attacks=ATTACKS, defenses=None, strengths: dict | None = None, samples: int | None = None,
                 config: DefenseConfig | None = None, inversion_config: InversionConfig | None = None,
                 include_label_only: bool = True, out: str | Path | None = None,
                 progress: bool = True) -> DefensesResult:
    """Evaluate the defenses of Section 7 (and label-only answers, Section 9) against both attacks.

    Parameters
    ----------
    dataset:
        An image dataset (default: the embedded MNIST-5k).
    profile, seed:
        Budget and randomness (the removed samples, the noise, the fine-tuning data, the attack's starts).
    attacks:
        Any of ``"recover"`` (feature recovery) and ``"infer-label"`` (label inference).
    defenses:
        Names of the defenses to evaluate (default: those in the budget's grids).
    strengths:
        ``{defense: [strength, ...]}`` replacing a defense's grid (checked before any work starts).
    samples:
        Removed samples per setting of the recovery attack (default: the budget's).
    config:
        :class:`DefenseConfig` (default: the profile's).
    inversion_config:
        The inversion's settings (default: the profile's :class:`InversionConfig`, with
        ``config.restarts`` / ``config.iterations`` when set).
    include_label_only:
        Add the label-only API to the label-inference part.
    out:
        Folder of the feature-recovery rows, ``defenses-<key>.jsonl`` (default
        ``results_dir("defend")``: ``$COURSE_RESULTS_DIR/defend``, else ``results/defend``). Each row
        (one defense, strength and removed sample, with its recovered image) is written as soon as
        it is computed; the key hashes the configuration (dataset, profile, seed, budget without
        the grids, inversion settings), so a rerun resumes and a changed grid computes only its
        new strengths.

    Returns
    -------
    :class:`DefensesResult`. Used by chapter 6 and ``course-lib defend``.
    """
    start = time.perf_counter()
    prof = get_profile(profile)
    attacks = tuple(attacks)
    for a in attacks:
        check_choice(a, ATTACKS, "attack")
    if defenses is not None:
        for name in defenses:
            D.get_defense(name)
    for name, values in (strengths or {}).items():
        D.get_defense(name)
        if not values:
            raise CourseError(f"Give at least one strength for {name!r}.")
        for value in values:
            _check_strength_early(name, value)
    if samples is not None and (not isinstance(samples, int) or samples < 1):
        raise CourseError(f"samples must be a whole number >= 1; got {samples!r}.")
    cfg = (config or DefenseConfig.for_profile(prof.name)).replace(samples=samples)
    grid = cfg.grid()
    if defenses is not None:
        grid = {name: grid.get(name, D.get_defense(name).paper_strengths) for name in defenses}
    for name, values in (strengths or {}).items():
        grid[name] = tuple(float(v) for v in values)
    param_settings = [(name, float(s)) for name, values in grid.items() if D.get_defense(name).api == "probs"
                      for s in values]
    inv_cfg = inversion_config or InversionConfig.for_profile(
        prof.name, restarts=cfg.restarts, iterations=cfg.iterations, feature_iterations=cfg.feature_iterations,
        sharpen_iterations=cfg.sharpen_iterations, progress=False)
    result = DefensesResult(settings={"dataset": dataset, "profile": prof.name, "seed": seed,
                                      "attacks": list(attacks), "config": cfg.to_dict(),
                                      "inversion": inv_cfg.to_dict()})
    # label-only answers: strength 1 is on, 0 is off (the probability API, i.e. no defense)
    api_settings = [(name, float(s)) for name, values in grid.items() if D.get_defense(name).api == "labels"
                    for s in values]
    if "recover" in attacks and (param_settings or api_settings):
        rec_settings = param_settings + api_settings
        ident = {"task": "defenses-recovery", "dataset": dataset, "profile": prof.name, "seed": int(seed),
                 "config": {k: v for k, v in cfg.to_dict().items() if k != "grids"},
                 "inversion": inv_cfg.to_dict()}
        folder = prepare_output(Path(out) if out is not None else results_dir("defend"))
        store = RowStore(folder / f"defenses-{config_key(ident)}.jsonl", ident, recovery_row_id)  # before any work
        part = recovery_under_defenses(dataset, rec_settings, cfg, inv_cfg, prof.name, seed, progress, store=store)
        result.recovery, result.originals, result.images = part["rows"], part["originals"], part["images"]
        result.settings.update(part["settings"])
        result.settings["recovery_results_path"] = part["results_path"]
        result.cost.update(part["cost"])
    if "infer-label" in attacks:
        label_settings = list(param_settings)
        if cfg.label_grid == "strongest":
            label_settings = [(n, s) for n, s in param_settings if s == max(v for m, v in param_settings if m == n)]
        label_settings += api_settings
        if include_label_only and not api_settings:
            label_settings.append(("label-only", 1.0))
        part = labels_under_defenses(dataset, label_settings, cfg, prof.name, seed, progress)
        result.labels = part["rows"]
        result.settings.update(part["settings"])
        result.cost.update(part["cost"])
    result.cost["seconds"] = round(time.perf_counter() - start, 2)
    return result


def _check_strength_early(defense: str, strength: float) -> None:
    """Apply the defense to a tiny model so that a bad strength fails before any training."""
    from ..models import build_model

    tiny = build_model("mlp", (4,), 2, width=1)
    opts = {"finetune": {"data": Dataset("probe", torch.zeros(2, 4), torch.zeros(2, dtype=torch.long), ["a", "b"],
                                         "tabular")},
            "obfuscation": {"step_scale": 1.0}}.get(defense, {})
    D.apply_defense(defense, tiny, tiny, strength, seed=0, **opts)
