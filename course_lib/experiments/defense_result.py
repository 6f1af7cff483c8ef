"""What chapter 6 measures: the defended attacks' success and the utility, as a table and figures."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .. import defenses as D
from ..errors import CourseError
from ..metrics import finite_mean
from ..recipes import Result

#: The name of the undefended baseline in every table.
NO_DEFENSE = "none"


@dataclass
class DefensesResult(Result):
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
        ``{(defense, strength): (S, C, H, W)}`` recovered images.
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

    def _recoveryfinite_mean(self, defense: str, strength: float, key: str):
        return finite_mean([r[key] for r in self.recovery if r["defense"] == defense and
                      math.isclose(r["strength"], strength, rel_tol=1e-9, abs_tol=0)])

    def baseline_psnr(self) -> float | None:
        """Mean recovery PSNR without a defense (dB)."""
        return self._recoveryfinite_mean(NO_DEFENSE, 0.0, "psnr")

    def mean_psnr(self, defense: str, strength: float) -> float | None:
        return self._recoveryfinite_mean(defense, float(strength), "psnr")

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
                row["PSNR (dB)"] = finite_mean([r["psnr"] for r in rec])
                row["SSIM"] = finite_mean([r["ssim"] for r in rec])
                row["LPIPS"] = finite_mean([r["lpips"] for r in rec])
                base = self.baseline_psnr()
                row["PSNR drop (dB)"] = None if base is None or row["PSNR (dB)"] is None else base - row["PSNR (dB)"]
                row["update cosine"] = finite_mean([r["update_cosine"] for r in rec])
                row["accuracy ratio"] = finite_mean([r["accuracy_ratio"] for r in rec])
                binds = [r["clipping_binds"] for r in rec if r.get("clipping_binds") is not None]
                row["clipping binds"] = f"{sum(binds)}/{len(binds)}" if binds else "-"
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
                "psnr_drop_at_strongest": {d: self.psnr_drop(d) for d in self.defenses_with_recovery()}}

    def defenses_with_recovery(self) -> list[str]:
        return [d for d in dict.fromkeys(r["defense"] for r in self.recovery) if d != NO_DEFENSE]

    # ----------------------------------------------------------------- figures
    def plot(self):
        """The privacy-utility plot: every defense on one chart (x: accuracy ratio, y: attack success).

        Left: mean recovery PSNR (higher = more leaked); right (when label inference ran):
        accuracy of the probability probing attack. The undefended unlearned model is the star at
        ratio 1, and every defense's line starts there (strength 0). Each point is labelled with its
        strength.
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
                        x, y = self._recoveryfinite_mean(d, s, "accuracy_ratio"), self._recoveryfinite_mean(d, s, "psnr")
                    else:
                        r = [r for r in self.labels if r["defense"] == d and math.isclose(r["strength"], s)
                             and r["attack"] == "probs"]
                        x, y = (r[0]["accuracy_ratio"], r[0]["accuracy"]) if r else (None, None)
                    if x is not None and y is not None:
                        pts.append((x, y, s))
                if not pts:
                    continue
                if defense != NO_DEFENSE:
                    origin = self._origin(kind)
                    if origin is not None:
                        pts = [(*origin, 0.0)] + pts  # strength 0 is no defense: the curve starts at the star
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

    def _origin(self, kind: str):
        """The undefended point of the plot: (accuracy ratio 1, baseline PSNR or label accuracy)."""
        if kind == "psnr":
            base = self.baseline_psnr()
            return None if base is None else (1.0, base)
        acc = self.label_accuracy(NO_DEFENSE, 0.0, "probs")
        return None if acc is None else (1.0, acc)

    def curve_points(self, defense: str) -> int:
        """Distinct (accuracy ratio, mean PSNR) points of ``defense``'s plotted curve, its origin included."""
        pts = {(round(self._recoveryfinite_mean(d, s, "accuracy_ratio"), 3), round(self._recoveryfinite_mean(d, s, "psnr"), 2))
               for d, s in self.settings_list() if d == defense}
        origin = self._origin("psnr")
        if origin is not None:
            pts.add((round(origin[0], 3), round(origin[1], 2)))
        return len(pts)

    def image_grid(self, sample: int | None = 0):
        """Figs. 11-12: the removed sample and its recovery under growing strength, one row per defense.

        ``sample=None`` draws every removed sample (one block of rows each), with the accuracy ratio
        under each recovery: the static version of :meth:`explorer`, for pages without a kernel.
        """
        import matplotlib.pyplot as plt

        if self.originals is None or not self.images:
            raise CourseError("No recovered images: run the evaluation with attacks including 'recover'.")
        if sample is not None and not 0 <= sample < len(self.originals):
            raise CourseError(f"sample must lie in 0..{len(self.originals) - 1}; got {sample}.")
        from ..viz import to_display

        samples = range(len(self.originals)) if sample is None else [sample]
        defenses = self.defenses_with_recovery()
        per = {d: [s for dd, s in self.settings_list() if dd == d and (dd, s) in self.images] for d in defenses}
        n_cols = 2 + max(len(v) for v in per.values())
        n_rows = len(defenses) * len(samples)
        fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.45 * n_cols + 0.6, (1.9 if sample is None else 1.7) * n_rows + 0.2),
                                 squeeze=False)
        base_key = (NO_DEFENSE, 0.0)
        blocks = [(k, d) for k in samples for d in defenses]
        for i, (k, d) in enumerate(blocks):
            cells = [("original", self.originals[k], None)]
            if base_key in self.images:
                cells.append(("no defense", self.images[base_key][k], self._psnr_of(NO_DEFENSE, 0.0, k)))
            for s in per[d]:
                title = f"{D.get_defense(d).parameter}={s:g}"
                if sample is None:
                    ratio = [r for r in self.recovery if r["defense"] == d and math.isclose(r["strength"], s)]
                    title += f"\nratio {ratio[k]['accuracy_ratio']:.3f}" if k < len(ratio) else ""
                cells.append((title, self.images[(d, s)][k], self._psnr_of(d, s, k)))
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
            axes[i, 0].set_ylabel(d if sample is not None else f"sample {k}\n{d}", fontsize=9)
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

        defenses = self.defenses_with_recovery()
        if not defenses:
            raise CourseError("The explorer needs feature-recovery results (attacks including 'recover').")
        choose = widgets.Dropdown(options=defenses, value=defenses[0], description="defense")
        strengths = lambda d: [s for dd, s in self.settings_list() if dd == d and (dd, s) in self.images]
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
                           self.images.get((NO_DEFENSE, 0.0), self.originals)[k]),
                          (f"{d}, {D.get_defense(d).parameter}={s:g}\n{rows[k]['psnr']:.1f} dB",
                           self.images[(d, s)][k])]
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
