"""Chapter 2's lab: when does the weight difference carry the removed sample's gradient?

For each setting of the developer's fine-tuning (training-set size N relative to the batch size
b = 128, epochs, momentum) the lab builds M and M_u with :func:`make_unlearning_case`, then
measures the cosine between the removed sample's true gradient at M0 and

* ``difference``: eq. (2)'s estimate theta_u - theta (what the paper's server sees), and
* ``reference``: the estimate of an attacker who also knows theta_0 and N
  (:func:`~course_lib.attacks.gradient_estimation.estimate_gradient_reference`),

and, for the settings listed in ``recover_sizes``, the PSNR of the recovered sample.

Approximate unlearning gives cosine ~1 in every setting (it *is* a gradient step); exact
unlearning leaks only while the removed sample's step is not drowned by the other samples' steps:
one full batch (N <= b), one epoch, no momentum.
"""
from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import ClassVar

from ..attacks.gradient_estimation import (estimate_gradient, estimate_gradient_reference, gradient_cosine,
                                           true_gradient)
from ..attacks.inversion import InversionConfig
from ..budgets import Budget
from ..errors import CourseError
from ..recipes import Result, recipe
from ..train import prepare_pipeline
from .recovery import attack_unlearned_model, make_unlearning_case


@dataclass(frozen=True)
class GradientLabConfig(Budget):
    """Budget of :func:`run_gradient_lab` (per profile; the measurements are the same).

    ``train_sizes`` are swept at 1 epoch without momentum; ``epochs`` and ``momentums`` at
    ``sweep_train_size``; each point averages ``samples_per_point`` removed samples; recovery
    (PSNR) runs for the sizes in ``recover_sizes`` with ``restarts`` x ``iterations``.
    Chapter 2 also reads ``precision_samples`` (removed samples of its precision section) and
    ``exact_check_sizes`` (training sets of its exact-unlearning check; ``0`` means all of Du).
    """

    train_sizes: tuple[int, ...] = (4, 8, 32, 128, 512)
    epochs: tuple[int, ...] = (1, 2, 3)
    momentums: tuple[float, ...] = (0.0, 0.9)
    sweep_train_size: int = 8
    samples_per_point: int = 2
    recover_sizes: tuple[int, ...] = (8, 512)
    restarts: int = 8
    iterations: int = 200
    precision_samples: int = 8
    exact_check_sizes: tuple[int, ...] = (8, 0)

    budget_name: ClassVar[str] = "gradient-lab"
    PROFILES: ClassVar[dict] = {
        "quick": {"train_sizes": (4, 64), "epochs": (1, 3), "momentums": (0.0, 0.9),
                  "samples_per_point": 1, "recover_sizes": (4, 64), "restarts": 4, "iterations": 100,
                  "precision_samples": 3, "exact_check_sizes": (8, 64)},
        "standard": {"train_sizes": (4, 8, 16, 64, 128, 256, 800), "samples_per_point": 4,
                     "recover_sizes": (8, 128, 800), "restarts": 16, "iterations": 400},
        "full": {"train_sizes": (2, 4, 8, 16, 64, 128, 256, 800), "samples_per_point": 8,
                 "recover_sizes": (4, 8, 16, 128, 800), "restarts": 64, "iterations": 2000,
                 "precision_samples": 16},
    }

    def check(self) -> None:
        for name in ("sweep_train_size", "samples_per_point", "restarts", "iterations"):
            if getattr(self, name) < 1:
                raise CourseError(f"{name} must be at least 1; got {getattr(self, name)}.")
        if any(int(n) < 1 for n in self.train_sizes + self.recover_sizes + self.epochs):
            raise CourseError("Every training-set size and epoch count must be at least 1.")


@dataclass
class GradientLabResult(Result):
    """Rows: one per (sweep, setting, method) with mean cosines and, where run, PSNR."""

    rows: list[dict]
    config: dict
    settings: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"rows": self.rows, "config": self.config, "settings": self.settings}

    def table(self):
        import pandas as pd

        return pd.DataFrame(self.rows)

    def plot(self):
        """Cosine vs training-set size / epochs / momentum, and PSNR where measured."""
        import matplotlib.pyplot as plt

        df = self.table()
        fig, axes = plt.subplots(1, 4, figsize=(15, 3.4))
        for ax, sweep, xkey in zip(axes[:3], ("train_size", "epochs", "momentum"),
                                   ("train_size", "epochs", "momentum")):
            part = df[df.sweep == sweep]
            for method, est, style in (("exact", "cos_difference", "o-"), ("exact", "cos_reference", "s--"),
                                       ("approximate", "cos_difference", "^:")):
                sub = part[part.method == method]
                if len(sub):
                    ax.plot(sub[xkey], sub[est], style, label=f"{method}, {est.split('_')[1]}")
            ax.set_xlabel(xkey.replace("_", " "))
            ax.set_ylabel("cosine with true gradient")
            ax.set_ylim(-0.3, 1.05)
            if sweep == "train_size":
                ax.set_xscale("log", base=2)
                ax.axvline(128, color="gray", lw=0.8, ls=":")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7)
        rec = df[(df.sweep == "train_size") & df.psnr.notna()]
        for method in ("exact", "approximate"):
            sub = rec[rec.method == method]
            if len(sub):
                axes[3].plot(sub.train_size, sub.psnr, "o-", label=method)
        if len(rec):
            axes[3].plot(rec.train_size, rec.baseline_psnr, "k:", label="mean image")
        axes[3].set_xscale("log", base=2)
        axes[3].set_xlabel("train size")
        axes[3].set_ylabel("PSNR of recovery (dB)")
        axes[3].legend(fontsize=7)
        fig.tight_layout()
        return fig


@recipe("gradient-lab", chapter="2", command="course-lib gradient-lab")
def run_gradient_lab(dataset: str = "mnist-5k", model: str | None = None, *, profile: str | None = None,
                     seed: int = 0, config: GradientLabConfig | None = None, precision: str = "auto",
                     progress: bool = True) -> GradientLabResult:
    """Sweep N, epochs and momentum; measure how well theta - theta_u estimates the gradient (chapter 2)."""
    from tqdm.auto import tqdm

    cfg = config or GradientLabConfig.for_profile(profile)
    pipe = prepare_pipeline(dataset, model, profile=profile, progress=progress)
    points = [("train_size", n, 1, 0.0) for n in cfg.train_sizes]
    points += [("epochs", cfg.sweep_train_size, e, 0.0) for e in cfg.epochs]
    points += [("momentum", cfg.sweep_train_size, max(cfg.epochs), m) for m in cfg.momentums]
    inv = InversionConfig.for_profile(pipe.profile.name, restarts=cfg.restarts, iterations=cfg.iterations,
                                      progress=False)
    rows = []
    measured: dict = {}  # (n, epochs, momentum, method, seed) -> (cos_difference, cos_reference, case)
    for sweep, n, epochs, momentum in tqdm(points, desc="gradient lab", disable=not progress):
        if n > len(pipe.private):
            continue
        for method in ("exact", "approximate"):
            if method == "approximate" and sweep == "momentum":
                continue  # eq. 13 has no momentum term
            cd, cr, ps, base = [], [], [], []
            for s in range(cfg.samples_per_point):
                key = (n, epochs, momentum, method, seed + s)
                if key not in measured:  # the sweeps share their centre point
                    case = make_unlearning_case(setup=pipe, unlearning=method, train_size=n, epochs=epochs,
                                                momentum=momentum, seed=seed + s, precision=precision)
                    true = true_gradient(case.pretrained, case.forget)
                    ref = None
                    if method == "exact":
                        ref = gradient_cosine(estimate_gradient_reference(
                            case.original, case.unlearned, case.pretrained, train_size=n), true)
                    measured[key] = (gradient_cosine(estimate_gradient(case.original, case.unlearned), true), ref, case)
                c_diff, c_ref, case = measured[key]
                cd.append(c_diff)
                if c_ref is not None:
                    cr.append(c_ref)
                if sweep == "train_size" and n in cfg.recover_sizes and s == 0:
                    res = attack_unlearned_model(case.original, case.unlearned, case.forget, config=inv, seed=seed)
                    ps.append(res.samples[0]["psnr"])
                    from ..metrics import baseline_mean_image_psnr
                    base.append(statistics.fmean(baseline_mean_image_psnr(case.train_set.x, case.forget.x)))
            rows.append({"sweep": sweep, "train_size": n, "epochs": epochs, "momentum": momentum, "method": method,
                         "cos_difference": statistics.fmean(cd),
                         "cos_reference": statistics.fmean(cr) if cr else None,
                         "psnr": ps[0] if ps else None, "baseline_psnr": base[0] if base else None})
    settings = {"dataset": pipe.dataset, "model": pipe.model_name, "profile": pipe.profile.name, "seed": seed,
                "precision": precision, "batch_size": pipe.profile.finetune_batch_size}
    return GradientLabResult(rows, {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
                             settings)


__all__ = ["GradientLabConfig", "GradientLabResult", "run_gradient_lab"]
