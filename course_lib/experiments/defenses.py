"""Chapter 6's recipes: the defenses of Section 7 against both attacks, and the privacy-utility trade-off.

For every defense of :mod:`course_lib.defenses` and every strength of its grid, the model developer
post-processes the unlearned model M_u into a defended model M_d, releases it, and the two attackers
of the inversion paper try again:

* **feature recovery** (the server, white-box, chapter 3): approximate unlearning of a single
  sample (the setting of Section 7, "which in general leaks more information"), repeated for
  ``samples`` randomly chosen removed samples; the server inverts ``theta_d - theta`` and we score
  the recovery with PSNR, SSIM and LPIPS (when the VGG weights are on disk) against the removed
  sample;
* **label inference** (a user, black-box, chapter 4): every class in turn is unlearned (share
  ``label_fraction``), the defense is applied, and the probing attack (eqs. 9-11) and the
  label-only attack infer the unlearned class; accuracy over the classes.

The **utility** of a setting is the validation-accuracy ratio of Section 7: the accuracy of M_d
over the accuracy of the undefended M_u on the test split, averaged over the removed samples.

Public API
----------
``DefenseConfig.for_profile(profile, **overrides)``       sizes and grids per profile
``evaluate_defenses(dataset, *, profile, seed, attacks, defenses, ...)`` -> :class:`DefenseEvaluation`
    Table 4's analogue (``.table()``), the privacy-utility plot (``.plot()``), the recovered images
    under growing strength (``.image_grid()``, Figs. 11-12), the label-inference table
    (``.label_table()``) and the ipywidgets explorer (``.explorer()``).
``run_defend(defense, strength, *, attack, samples, profile, seed)`` -> :class:`DefenseEvaluation`
    One setting against no defense (what ``course-lib defend`` runs).

Used by chapter 6 ("Defending the unlearning pipeline") and ``course-lib defend``.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import defenses as D
from ..attacks.inversion import InversionConfig
from ..budgets import Budget
from ..config import get_profile
from ..data import Dataset, sample_indices
from ..errors import CourseError, check_choice
from ..train import prepare_pipeline
from ..unlearn.paper import approximate_unlearning, exact_unlearning

ATTACKS = ("recover", "infer-label")
NO_DEFENSE = "none"


def _mean(values):
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(statistics.fmean(vals)) if vals else None


# --------------------------------------------------------------------------- configuration

@dataclass(frozen=True)
class DefenseConfig(Budget):
    """Sizes of chapter 6's evaluation. A profile changes sizes and grids, never the algorithms.

    Attributes
    ----------
    samples:
        Removed samples (one at a time) averaged per setting of the recovery attack (paper: 100).
    grids:
        ``((defense, (strength, ...)), ...)``: the strengths evaluated. ``standard`` and ``full``
        use the paper's grids (Table 4); ``quick`` only the strongest of each (CI budget).
    restarts, iterations:
        The inversion budget of the sweep (``None``: :meth:`InversionConfig.for_profile`).
    unlearning:
        ``"approximate"`` (Section 7's setting) or ``"exact"``.
    finetune_samples, finetune_epochs, finetune_batch_size:
        The fine-tuning defense's additional data (drawn from the public split D0) and schedule.
    clip_norm:
        C of parameter obfuscation (paper: 1.2).
    label_fraction:
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
    grids: tuple = tuple((name, D.DEFENSES[name].paper_strengths) for name in D.PARAMETER_DEFENSES)
    restarts: int | None = None
    iterations: int | None = None
    unlearning: str = "approximate"
    finetune_samples: int = 100
    finetune_epochs: int = 5
    finetune_batch_size: int = 25
    clip_norm: float = D.DEFAULT_CLIP_NORM
    label_fraction: float = 1.0
    label_classes: int | None = None
    label_grid: str = "all"
    probes_per_class: int = 10
    label_only_attack: bool = True
    validation_size: int | None = None
    label_seed: int = 0

    budget_name: ClassVar[str] = "defenses"
    PROFILES: ClassVar[dict] = {
        "quick": dict(samples=1, grids=tuple((n, (D.DEFENSES[n].paper_strengths[-1],)) for n in D.PARAMETER_DEFENSES),
                      probes_per_class=4, label_classes=3, validation_size=500),
        "standard": dict(samples=3, probes_per_class=10, label_grid="strongest"),
        "full": dict(samples=100, probes_per_class=10),
    }

    def check(self) -> None:
        if self.samples < 1:
            raise CourseError(f"samples must be at least 1; got {self.samples}.")
        if self.finetune_samples < 1:
            raise CourseError(f"finetune_samples must be at least 1; got {self.finetune_samples}.")
        check_choice(self.unlearning, ("approximate", "exact"), "unlearning method")
        for name, strengths in self.grids:
            D.get_defense(name)
            if len(strengths) == 0:
                raise CourseError(f"The grid of {name!r} is empty; give at least one strength.")
        check_choice(self.label_grid, ("all", "strongest"), "label grid")
        if self.label_classes is not None and self.label_classes < 1:
            raise CourseError(f"label_classes must be at least 1; got {self.label_classes}.")
        if self.validation_size is not None and self.validation_size < 1:
            raise CourseError(f"validation_size must be at least 1; got {self.validation_size}.")
        if not 0 < self.label_fraction <= 1:
            raise CourseError(f"label_fraction must lie in (0, 1]; got {self.label_fraction}.")

    def grid(self) -> dict[str, tuple[float, ...]]:
        return {name: tuple(float(s) for s in strengths) for name, strengths in self.grids}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["grids"] = {name: list(s) for name, s in self.grids}
        return d


# --------------------------------------------------------------------------- the result

@dataclass
class DefenseEvaluation:
    """Every measurement of chapter 6.

    Attributes
    ----------
    recovery:
        One dict per (defense, strength, removed sample): ``defense``, ``strength``, ``sample``
        (row in Du), ``label``, ``psnr``, ``ssim``, ``lpips``, ``rmse``, ``accuracy_ratio``,
        ``update_cosine`` (cosine between the released difference theta_d - theta and the true
        unlearning update theta_u - theta: what is left of the signal the attack reads),
        ``attack_cosine`` and ``seconds``. ``defense == "none"`` rows are the undefended baseline.
    labels:
        One dict per (defense, strength, attack): ``defense``, ``strength``, ``attack``
        (``"probs"``: the probability probing attack; ``"labels"``: the label-only attack),
        ``inferred`` (inferred class for each unlearned class 0..K-1), ``accuracy``,
        ``informative`` (classes whose scores were not all zero) and ``accuracy_ratio``.
    originals:
        The removed samples ``(S, C, H, W)``.
    images:
        ``{"defense|strength": (S, C, H, W)}`` recovered images.
    settings, cost:
        What ran (dataset, profile, seed, config, inversion budget, LPIPS availability) and what it
        cost (seconds, inversions, queries).
    """

    recovery: list = field(default_factory=list)
    labels: list = field(default_factory=list)
    originals: torch.Tensor | None = None
    images: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    cost: dict = field(default_factory=dict)

    # ----------------------------------------------------------------- numbers
    def settings_list(self) -> list[tuple[str, float]]:
        """(defense, strength) in evaluation order, the baseline first."""
        seen = []
        for r in self.recovery + self.labels:
            key = (r["defense"], float(r["strength"]))
            if key not in seen:
                seen.append(key)
        return seen

    def _recovery_mean(self, defense: str, strength: float, key: str):
        return _mean([r[key] for r in self.recovery if r["defense"] == defense and
                      math.isclose(r["strength"], strength, rel_tol=1e-9, abs_tol=0)])

    def baseline_psnr(self) -> float | None:
        """Mean recovery PSNR without a defense (dB)."""
        return self._recovery_mean(NO_DEFENSE, 0.0, "psnr")

    def mean_psnr(self, defense: str, strength: float) -> float | None:
        return self._recovery_mean(defense, float(strength), "psnr")

    def psnr_drop(self, defense: str, strength: float | None = None) -> float | None:
        """Mean PSNR without defense minus with it (dB); default: the defense's strongest setting."""
        if strength is None:
            strength = self.strongest(defense)
        base, val = self.baseline_psnr(), self.mean_psnr(defense, strength)
        return None if base is None or val is None else base - val

    def strongest(self, defense: str) -> float:
        strengths = [s for d, s in self.settings_list() if d == defense]
        if not strengths:
            raise CourseError(f"The evaluation has no setting of defense {defense!r}.")
        return max(strengths)

    def label_accuracy(self, defense: str, strength: float, attack: str = "probs") -> float | None:
        for r in self.labels:
            if r["defense"] == defense and math.isclose(r["strength"], float(strength)) and r["attack"] == attack:
                return r["accuracy"]
        return None

    def table(self):
        """Table 4's analogue: one row per setting with the attacks' success and the utility.

        Columns: defense, parameter, value, mean PSNR / SSIM / LPIPS of recovery, the PSNR drop
        against no defense, the mean cosine left between the released difference and the true
        update, the averaged accuracy ratio, and (when run) label-inference accuracy of the
        probability attack and of the label-only attack.
        """
        import pandas as pd

        rows = []
        for defense, strength in self.settings_list():
            param = "-" if defense == NO_DEFENSE else D.get_defense(defense).parameter
            row = {"defense": defense, "parameter": param, "value": strength}
            rec = [r for r in self.recovery if r["defense"] == defense and math.isclose(r["strength"], strength)]
            if rec:
                row["PSNR (dB)"] = _mean([r["psnr"] for r in rec])
                row["SSIM"] = _mean([r["ssim"] for r in rec])
                row["LPIPS"] = _mean([r["lpips"] for r in rec])
                base = self.baseline_psnr()
                row["PSNR drop (dB)"] = None if base is None or row["PSNR (dB)"] is None else base - row["PSNR (dB)"]
                row["update cosine"] = _mean([r["update_cosine"] for r in rec])
                row["accuracy ratio"] = _mean([r["accuracy_ratio"] for r in rec])
            lab = [r for r in self.labels if r["defense"] == defense and math.isclose(r["strength"], strength)]
            for r in lab:
                name = "label acc. (probs attack)" if r["attack"] == "probs" else "label acc. (label-only attack)"
                row[name] = r["accuracy"]
                if "accuracy ratio" not in row:
                    row["accuracy ratio"] = r["accuracy_ratio"]
            rows.append(row)
        df = pd.DataFrame(rows)
        if "LPIPS" in df and df["LPIPS"].isna().all():
            df = df.drop(columns=["LPIPS"])
        return df

    def label_table(self):
        """Label inference per setting and attack: the inferred class for every unlearned class id."""
        import pandas as pd

        out = []
        for r in self.labels:
            row = {"defense": r["defense"], "value": r["strength"], "attack": r["attack"]}
            row.update({str(c): v for c, v in enumerate(r["inferred"])})
            row.update({"accuracy": r["accuracy"], "informative classes": r["informative"],
                        "accuracy ratio": r["accuracy_ratio"]})
            out.append(row)
        return pd.DataFrame(out)

    def to_dict(self) -> dict:
        """JSON-serialisable: settings, cost, the per-sample and per-setting rows, the summary table."""
        table = self.table()
        summary = table.astype(object).where(table.notna(), None).to_dict(orient="records") if len(table) else []
        return {"settings": self.settings, "cost": self.cost, "summary": summary,
                "recovery": self.recovery, "labels": self.labels,
                "psnr_drop_at_strongest": {d: self.psnr_drop(d) for d in self._defenses_with_recovery()}}

    def _defenses_with_recovery(self) -> list[str]:
        return [d for d in dict.fromkeys(r["defense"] for r in self.recovery) if d != NO_DEFENSE]

    # ----------------------------------------------------------------- figures
    def plot(self):
        """The privacy-utility plot: every defense on one chart (x: accuracy ratio, y: attack success).

        Left: mean recovery PSNR (higher = more leaked); right (when label inference ran):
        accuracy of the probability probing attack. The undefended unlearned model is the star at
        ratio 1. Each point is labelled with its strength.
        """
        import matplotlib.pyplot as plt

        panels = []
        if self.recovery:
            panels.append(("psnr", "mean recovery PSNR (dB)", "feature recovery (server)"))
        if self.labels:
            panels.append(("label", "label-inference accuracy", "label inference (user, probability API)"))
        if not panels:
            raise CourseError("Nothing to plot: the evaluation has no results.")
        fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.3), squeeze=False)
        colors = {"obfuscation": "tab:blue", "pruning": "tab:orange", "finetune": "tab:green",
                  "label-only": "tab:purple"}
        for ax, (kind, ylabel, title) in zip(axes[0], panels):
            for defense in dict.fromkeys(d for d, _ in self.settings_list()):
                pts = []
                for d, s in self.settings_list():
                    if d != defense:
                        continue
                    if kind == "psnr":
                        x, y = self._recovery_mean(d, s, "accuracy_ratio"), self._recovery_mean(d, s, "psnr")
                    else:
                        r = [r for r in self.labels if r["defense"] == d and math.isclose(r["strength"], s)
                             and r["attack"] == "probs"]
                        x, y = (r[0]["accuracy_ratio"], r[0]["accuracy"]) if r else (None, None)
                    if x is not None and y is not None:
                        pts.append((x, y, s))
                if not pts:
                    continue
                if defense == NO_DEFENSE:
                    ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker="*", s=220, color="black",
                               zorder=5, label="no defense")
                    continue
                xs, ys = [p[0] for p in pts], [p[1] for p in pts]
                ax.plot(xs, ys, marker="o", color=colors.get(defense), label=f"{defense} "
                        f"({D.get_defense(defense).parameter})")
                for x, y, s in pts:
                    ax.annotate(f"{s:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7,
                                color=colors.get(defense))
            ax.set_xlabel("validation-accuracy ratio (defended / undefended)")
            ax.set_ylabel(ylabel)
            ax.set_title(title, fontsize=10)
            ax.grid(alpha=0.3)
            if kind == "label":
                k = self.settings.get("num_classes", 10)
                ax.axhline(1.0 / k, color="gray", linestyle="--", linewidth=1, label="chance")
            ax.legend(fontsize=8)
        fig.suptitle("Privacy-utility trade-off: better defenses sit low and to the right", fontsize=11)
        fig.tight_layout()
        return fig

    def image_grid(self, sample: int = 0):
        """Figs. 11-12: the removed sample and its recovery under growing strength, one row per defense."""
        import matplotlib.pyplot as plt

        if self.originals is None or not self.images:
            raise CourseError("No recovered images: run the evaluation with attacks including 'recover'.")
        if not 0 <= sample < len(self.originals):
            raise CourseError(f"sample must lie in 0..{len(self.originals) - 1}; got {sample}.")
        from ..viz import to_display

        defenses = self._defenses_with_recovery()
        per = {d: [s for dd, s in self.settings_list() if dd == d and f"{dd}|{s!r}" in self.images] for d in defenses}
        n_cols = 2 + max(len(v) for v in per.values())
        fig, axes = plt.subplots(len(defenses), n_cols, figsize=(1.45 * n_cols + 0.6, 1.7 * len(defenses) + 0.2),
                                 squeeze=False)
        base_key = f"{NO_DEFENSE}|{0.0!r}"
        for i, d in enumerate(defenses):
            cells = [("original", self.originals[sample], None)]
            if base_key in self.images:
                cells.append(("no defense", self.images[base_key][sample], self._psnr_of(NO_DEFENSE, 0.0, sample)))
            for s in per[d]:
                cells.append((f"{D.get_defense(d).parameter}={s:g}", self.images[f"{d}|{s!r}"][sample],
                              self._psnr_of(d, s, sample)))
            for j in range(n_cols):
                ax = axes[i, j]
                ax.set_xticks([])
                ax.set_yticks([])
                if j >= len(cells):
                    ax.axis("off")
                    continue
                title, img, ps = cells[j]
                ax.imshow(to_display(img), cmap="gray", vmin=0, vmax=1)
                ax.set_title(title + ("" if ps is None else f"\n{ps:.1f} dB"), fontsize=7)
            axes[i, 0].set_ylabel(d, fontsize=9)
        fig.tight_layout()
        return fig

    def _psnr_of(self, defense: str, strength: float, sample: int):
        rows = [r for r in self.recovery if r["defense"] == defense and math.isclose(r["strength"], strength)]
        return rows[sample]["psnr"] if sample < len(rows) else None

    def explorer(self, sample: int = 0):
        """An ipywidgets explorer over the precomputed grid: pick a defense, slide its strength.

        Shows the removed sample, its recovery from the released model, the PSNR and the accuracy
        ratio. Everything comes from this result (no computation), so it responds at once on a CPU.
        Returns the widget (display it, or let the notebook show it as the cell's value).
        """
        import ipywidgets as widgets
        import matplotlib.pyplot as plt

        from ..viz import to_display

        defenses = self._defenses_with_recovery()
        if not defenses:
            raise CourseError("The explorer needs feature-recovery results (attacks including 'recover').")
        choose = widgets.Dropdown(options=defenses, value=defenses[0], description="defense")
        strengths = lambda d: [s for dd, s in self.settings_list() if dd == d and f"{dd}|{s!r}" in self.images]
        slider = widgets.SelectionSlider(options=[(f"{s:g}", s) for s in strengths(defenses[0])],
                                         description=D.get_defense(defenses[0]).parameter,
                                         continuous_update=True)
        picker = widgets.IntSlider(value=sample, min=0, max=len(self.originals) - 1, description="sample")
        out = widgets.Output()

        def draw(*_):
            d, s, k = choose.value, slider.value, picker.value
            rows = [r for r in self.recovery if r["defense"] == d and math.isclose(r["strength"], s)]
            base = [r for r in self.recovery if r["defense"] == NO_DEFENSE]
            with out:
                out.clear_output(wait=True)
                fig, axes = plt.subplots(1, 3, figsize=(6.0, 2.3))
                panels = [("removed sample", self.originals[k]),
                          (f"no defense\n{base[k]['psnr']:.1f} dB" if k < len(base) else "no defense",
                           self.images.get(f"{NO_DEFENSE}|{0.0!r}", self.originals)[k]),
                          (f"{d}, {D.get_defense(d).parameter}={s:g}\n{rows[k]['psnr']:.1f} dB",
                           self.images[f"{d}|{s!r}"][k])]
                for ax, (title, img) in zip(axes, panels):
                    ax.imshow(to_display(img), cmap="gray", vmin=0, vmax=1)
                    ax.set_title(title, fontsize=8)
                    ax.axis("off")
                fig.tight_layout()
                plt.show()
                print(f"accuracy ratio (defended / undefended): {rows[k]['accuracy_ratio']:.3f}   "
                      f"cosine left between released and true update: {rows[k]['update_cosine']:.3g}")

        def on_defense(change):
            opts = strengths(change["new"])
            slider.unobserve(draw, names="value")
            slider.options = [(f"{s:g}", s) for s in opts]
            slider.value = opts[0]
            slider.description = D.get_defense(change["new"]).parameter
            slider.observe(draw, names="value")
            draw()

        choose.observe(on_defense, names="value")
        slider.observe(draw, names="value")
        picker.observe(draw, names="value")
        draw()
        box = widgets.VBox([widgets.HBox([choose, slider, picker]), out])
        return box


# --------------------------------------------------------------------------- feature recovery under defenses

def _cast(data: Dataset, dtype: torch.dtype) -> Dataset:
    return Dataset(data.name, data.x.to(dtype), data.y, list(data.classes), data.kind, list(data.feature_names))


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1).double().cpu() for t in tensors])


def _update_cosine(original, unlearned, defended) -> float:
    """cos(theta_d - theta, theta_u - theta): how much of the true update the released model still shows."""
    true = _flat(D.unlearning_update(original, unlearned))
    seen = _flat(D.unlearning_update(original, defended))
    denom = float(true.norm() * seen.norm())
    return float(true @ seen) / denom if denom > 0 else 0.0


def _ratio(released, base_accuracy: float, validation: Dataset) -> float:
    """:func:`course_lib.defenses.accuracy_ratio` with the undefended accuracy computed once."""
    if not base_accuracy > 0:
        raise CourseError("The undefended unlearned model has zero validation accuracy; the ratio is undefined.")
    return D.validation_accuracy(released, validation) / base_accuracy


def _validation(test: Dataset, cfg: DefenseConfig, seed: int) -> Dataset:
    if cfg.validation_size is None or cfg.validation_size >= len(test):
        return test
    return test.subset(sample_indices(test, cfg.validation_size, seed=seed + 777).sort().values)


def _finetune_data(pipe, cfg: DefenseConfig, seed: int) -> Dataset:
    """The fine-tuning defense's additional samples: ``finetune_samples`` of the public split D0."""
    n = min(cfg.finetune_samples, len(pipe.public))
    return pipe.public.subset(sample_indices(pipe.public, n, seed=seed + 4242))


def _defense_options(name: str, cfg: DefenseConfig, ft_data: Dataset) -> dict:
    if name == "finetune":
        return {"data": ft_data, "epochs": cfg.finetune_epochs, "batch_size": cfg.finetune_batch_size}
    if name == "obfuscation":
        return {"clip_norm": cfg.clip_norm}
    return {}


def _recovery_part(result: DefenseEvaluation, dataset: str, settings: list[tuple[str, float]], cfg: DefenseConfig,
                   inv_cfg: InversionConfig, profile: str, seed: int, progress: bool) -> None:
    from ..experiments.recovery import attack_unlearned_model, make_unlearning_case, recovery_model_for

    # chapter 3's attack model (convnet-spatial for images), so the undefended attack really recovers
    pipe = prepare_pipeline(dataset, recovery_model_for(dataset), profile=profile, seed=0, progress=progress)
    if pipe.public.kind != "image":
        raise CourseError(f"Chapter 6's feature-recovery evaluation needs images; {dataset!r} is tabular.")
    # the developer's M (float64, as chapter 3: float32 rounds part of the tiny update away) and M0
    case = make_unlearning_case(dataset, unlearning=cfg.unlearning, num_unlearn=1, profile=profile, seed=seed,
                                pipeline=pipe, precision="float64")
    original, m0 = case.original, case.pretrained
    train = _cast(case.train_set, torch.float64)
    prof = pipe.profile
    if cfg.samples >= len(train):
        raise CourseError(f"samples must be below the training-set size {len(train)}; got {cfg.samples}.")
    chosen = sample_indices(train, cfg.samples, seed=seed + 1000).tolist()
    ft_data = _finetune_data(pipe, cfg, seed)
    validation = _validation(pipe.test, cfg, seed)
    all_settings = [(NO_DEFENSE, 0.0)] + settings
    originals, images = [], {f"{d}|{s!r}": [] for d, s in all_settings}
    bar = tqdm(total=len(chosen) * len(all_settings), desc="defend + recover", disable=not progress, leave=False)
    inversions, seconds_inv = 0, 0.0
    for i, idx in enumerate(chosen):
        forget = train.subset([idx])
        if cfg.unlearning == "approximate":
            unlearned = approximate_unlearning(m0, original, forget, lr=prof.finetune_lr,
                                               epochs=case.settings["epochs"], batch_size=prof.finetune_batch_size)
        else:
            unlearned = exact_unlearning(m0, train.without([idx]), epochs=case.settings["epochs"],
                                         lr=prof.finetune_lr, batch_size=prof.finetune_batch_size, seed=pipe.seed)
        originals.append(forget.x[0].float())
        base_acc = D.validation_accuracy(unlearned, validation)
        for defense, strength in all_settings:
            if defense == NO_DEFENSE:
                released = unlearned
            else:
                released = D.apply_defense(defense, original, unlearned, strength, seed=seed + i,
                                           **_defense_options(defense, cfg, ft_data))
            rec = attack_unlearned_model(original, released, forget, label_mode="known", config=inv_cfg,
                                         seed=seed + i)
            inversions += 1
            seconds_inv += float(rec.cost.get("seconds", 0.0))
            row = rec.samples[0]
            result.recovery.append({
                "defense": defense, "strength": float(strength), "sample": int(idx), "label": int(forget.y[0]),
                "psnr": row["psnr"], "ssim": row["ssim"], "lpips": row["lpips"], "rmse": row["rmse"],
                "accuracy_ratio": 1.0 if defense == NO_DEFENSE else _ratio(released, base_acc, validation),
                "update_cosine": 1.0 if defense == NO_DEFENSE else _update_cosine(original, unlearned, released),
                "attack_cosine": rec.summary.get("attack_cosine"), "seconds": float(rec.cost.get("seconds", 0.0))})
            images[f"{defense}|{float(strength)!r}"].append(rec.recovered[0].float())
            if rec.lpips_reason:
                result.settings["lpips_reason"] = rec.lpips_reason
            bar.update(1)
    bar.close()
    result.originals = torch.stack(originals)
    from ..metrics import baseline_mean_image_psnr

    result.settings["mean_image_psnr"] = _mean(baseline_mean_image_psnr(train.x.float(), result.originals))
    result.images = {k: torch.stack(v) for k, v in images.items() if v}
    result.cost.update({"inversions": inversions, "inversion_seconds": round(seconds_inv, 2),
                        "inversion_budget": {"restarts": inv_cfg.restarts, "iterations": inv_cfg.iterations}})
    result.settings.update({"removed_samples": [int(i) for i in chosen], "unlearning": cfg.unlearning,
                            "precision": "float64", "deployed_test_accuracy": pipe.metrics.get("deployed_test_accuracy")})


# --------------------------------------------------------------------------- label inference under defenses

def _one_hot_scores(label_o: torch.Tensor, label_u: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
    """beta (eq. 10) that the probability attack computes when all it gets is labels (as one-hot vectors)."""
    from ..attacks.probing import confidence_drop

    delta = confidence_drop(F.one_hot(label_o, k).double(), F.one_hot(label_u, k).double(), target, k)
    return torch.diagonal(delta).clone()


class _RecordedAPI:
    """The original model's answers, recorded once per probe set.

    In the threat model the user queries M *before* unlearning and M_u after: M is no longer served
    once it has been replaced, so the attacker keeps M's answers. Recording them also saves the
    repeated queries of M that every defended setting would otherwise cost.
    """

    def __init__(self, api):
        self.api = api
        self.answers = {}

    def for_probes(self, x: torch.Tensor):
        from ..attacks.blackbox import BlackBoxAPI

        key = id(x)
        if key not in self.answers:
            self.answers[key] = (x, self.api.query(x))
        recorded = self.answers[key][1]
        outer = self

        class Replay(BlackBoxAPI):
            def __init__(self):  # no model: it replays what the original API answered
                self.output, self.name, self.queries, self._input_shape = outer.api.output, "original", 0, None

            def query(self, q):
                if q is not x:
                    raise CourseError("The recorded original answers cover only the probes they were recorded for.")
                return recorded.clone()

        return Replay()


def _label_part(result: DefenseEvaluation, dataset: str, settings: list[tuple[str, float]], cfg: DefenseConfig,
                profile: str, seed: int, progress: bool) -> None:
    from ..attacks.label_only import probe_unlearned_labels
    from ..attacks.probing import probe_unlearned, top_k_classes
    from ..experiments.probing import LabelInferenceConfig, prepare_probing

    lcfg = LabelInferenceConfig.for_profile(profile)
    setup = prepare_probing(dataset, profile=profile, seed=cfg.label_seed, subset_per_class=lcfg.subset_per_class,
                            progress=progress)
    k = setup.num_classes
    probes = setup.probes(cfg.probes_per_class, lcfg.probe_method, progress=progress)
    boundary = setup.boundary_probes(progress=progress) if cfg.label_only_attack else None
    ft_data = _finetune_data(setup.pipeline, cfg, seed)
    validation = _validation(setup.pipeline.test, cfg, seed)
    all_settings = [(NO_DEFENSE, 0.0)] + settings
    original_probs = _RecordedAPI(setup.api(name="original"))
    original_labels = _RecordedAPI(setup.api(output="labels", name="original"))
    found = {(d, s, a): [] for d, s in all_settings for a in ("probs", "labels")}
    informative = {key: 0 for key in found}
    ratios = {(d, s): [] for d, s in all_settings}
    queries = {"probs": 0, "labels": 0}
    classes = list(range(k if cfg.label_classes is None else min(k, cfg.label_classes)))
    bar = tqdm(total=len(classes) * len(all_settings), desc="defend + infer label", disable=not progress, leave=False)
    for c in classes:
        unlearned = setup.unlearn([c], cfg.label_fraction, cfg.unlearning)
        base_acc = D.validation_accuracy(unlearned, validation)
        for defense, strength in all_settings:
            if defense == NO_DEFENSE:
                released, api_kind = unlearned, "probs"
            else:
                released = D.apply_defense(defense, setup.deployed, unlearned, strength, seed=seed + c,
                                           **_defense_options(defense, cfg, ft_data))
                api_kind = D.get_defense(defense).api
            ratios[(defense, strength)].append(
                1.0 if defense == NO_DEFENSE else _ratio(released, base_acc, validation))
            # the probability attack (chapter 4, eqs. 9-11)
            if api_kind == "probs":
                res = probe_unlearned(original_probs.for_probes(probes.x), setup.api(released, name="released"), probes)
                beta, inferred = res.beta, res.inferred[0]
                queries["probs"] += sum(res.queries.values())
            else:  # label-only answers: the same equations see one-hot vectors
                api_u = setup.api(released, output="labels", name="released")
                lab_o = original_labels.for_probes(probes.x).query(probes.x)
                lab_u = api_u.query(probes.x)
                queries["probs"] += len(probes.x)
                beta = _one_hot_scores(lab_o, lab_u, probes.target, k)
                inferred = top_k_classes(beta, 1)[0]
            found[(defense, strength, "probs")].append(int(inferred))
            informative[(defense, strength, "probs")] += int(bool((beta != 0).any()))
            # the label-only attack (chapter 4, beyond the paper): works whatever the API answers
            if boundary is not None:
                res = probe_unlearned_labels(original_labels.for_probes(boundary.x),
                                             setup.api(released, output="labels", name="released"), boundary)
                found[(defense, strength, "labels")].append(int(res.inferred[0]))
                informative[(defense, strength, "labels")] += int(bool((res.flip_share != 0).any()))
                queries["labels"] += sum(res.queries.values())
            bar.update(1)
    bar.close()
    for defense, strength in all_settings:
        for attack in ("probs", "labels"):
            inferred = found[(defense, strength, attack)]
            if not inferred:
                continue
            result.labels.append({"defense": defense, "strength": float(strength), "attack": attack,
                                  "inferred": inferred,
                                  "accuracy": float(np.mean([i == c for c, i in enumerate(inferred)])),
                                  "informative": informative[(defense, strength, attack)],
                                  "accuracy_ratio": _mean(ratios[(defense, strength)])})
    queries["original_recorded"] = original_probs.api.queries + original_labels.api.queries
    result.cost.update({"probe_construction_queries": int(probes.queries.sum()),
                        "probes_from_cache": bool(getattr(probes, "from_cache", False)),
                        "probing_queries": queries,
                        "boundary_probes": None if boundary is None else boundary.summary()})
    result.settings.update({"num_classes": k, "label_fraction": cfg.label_fraction,
                            "label_classes": classes, "validation_size": len(validation), "label_seed": cfg.label_seed,
                            "probes_per_class": cfg.probes_per_class, "probe_method": lcfg.probe_method,
                            "subset_per_class": lcfg.subset_per_class})


# --------------------------------------------------------------------------- recipes

def evaluate_defenses(dataset: str = "mnist-5k", *, profile: str | None = None, seed: int = 0,
                      attacks=ATTACKS, defenses=None, config: DefenseConfig | None = None,
                      inversion_config: InversionConfig | None = None, include_label_only: bool = True,
                      progress: bool = True) -> DefenseEvaluation:
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
        Names of parameter defenses to evaluate (default: those in ``config.grids``).
    config:
        :class:`DefenseConfig` (default: the profile's).
    inversion_config:
        The inversion's settings (default: the profile's :class:`InversionConfig`, with
        ``config.restarts`` / ``config.iterations`` when set).
    include_label_only:
        Add the label-only API to the label-inference part.

    Returns
    -------
    :class:`DefenseEvaluation`. Chapter 6 calls this; ``course-lib defend`` calls :func:`run_defend`.
    """
    start = time.perf_counter()
    prof = get_profile(profile)
    cfg = (config or DefenseConfig.for_profile(prof.name)).validated()
    attacks = tuple(attacks)
    for a in attacks:
        check_choice(a, ATTACKS, "attack")
    grid = cfg.grid()
    if defenses is not None:
        for name in defenses:
            D.get_defense(name)
        grid = {name: grid.get(name, D.get_defense(name).paper_strengths) for name in defenses}
    param_settings = [(name, float(s)) for name, strengths in grid.items() if D.get_defense(name).api == "probs"
                      for s in strengths]
    inv_cfg = inversion_config or InversionConfig.for_profile(prof.name, restarts=cfg.restarts,
                                                              iterations=cfg.iterations, progress=False)
    result = DefenseEvaluation(settings={"dataset": dataset, "profile": prof.name, "seed": seed,
                                         "attacks": list(attacks), "config": cfg.to_dict(),
                                         "inversion": inv_cfg.to_dict()})
    if "recover" in attacks and param_settings + [s for s in grid.items() if s[0] == "label-only"]:
        rec_settings = param_settings + [("label-only", 1.0)] if "label-only" in grid else param_settings
        _recovery_part(result, dataset, rec_settings, cfg, inv_cfg, prof.name, seed, progress)
    if "infer-label" in attacks:
        label_settings = list(param_settings)
        if cfg.label_grid == "strongest":
            label_settings = [(n, s) for n, s in param_settings if s == max(v for m, v in param_settings if m == n)]
        if include_label_only or "label-only" in grid:
            label_settings.append(("label-only", 1.0))
        _label_part(result, dataset, label_settings, cfg, prof.name, seed, progress)
    result.cost["seconds"] = round(time.perf_counter() - start, 2)
    return result


def run_defend(defense: str, strength: float, *, attack: str = "recover", samples: int | None = None,
               dataset: str = "mnist-5k", profile: str | None = None, seed: int = 0,
               progress: bool = True) -> DefenseEvaluation:
    """One defense at one strength against one attack, next to no defense (``course-lib defend``).

    The strength is checked before any work starts (a bad value raises :class:`CourseError`).
    """
    spec = D.get_defense(defense)
    check_choice(attack, ATTACKS, "attack")
    _check_strength_early(defense, strength)
    if samples is not None and samples < 1:
        raise CourseError(f"--samples must be at least 1; got {samples}.")
    prof = get_profile(profile)
    cfg = DefenseConfig.for_profile(prof.name, samples=samples, grids=((defense, (float(strength),)),))
    return evaluate_defenses(dataset, profile=prof.name, seed=seed, attacks=(attack,), defenses=[defense],
                             config=cfg, include_label_only=spec.api == "labels", progress=progress)


def _check_strength_early(defense: str, strength: float) -> None:
    """Apply the defense to a tiny model so that a bad strength fails before any training."""
    from ..models import build_model

    tiny = build_model("mlp", (4,), 2, width=1)
    opts = {"data": Dataset("probe", torch.zeros(2, 4), torch.zeros(2, dtype=torch.long), ["a", "b"], "tabular")} \
        if defense == "finetune" else {}
    D.apply_defense(defense, tiny, tiny, strength, seed=0, **opts)


__all__ = ["DefenseConfig", "DefenseEvaluation", "evaluate_defenses", "run_defend", "ATTACKS", "NO_DEFENSE"]
