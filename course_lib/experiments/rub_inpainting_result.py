"""The result of RUB's image-to-image benchmark (chapter 7): Table 2's analogue, the bars, the figures.

:class:`I2IResult` holds the rows written by
:func:`~course_lib.experiments.rub_inpainting.run_rub_i2i` (one per method, seed and attack radius)
and summarises them: :meth:`I2IResult.table` is RUB's Table 2 (IS and FD of the course classifier
for the retain set R and the forget set F, without and under attack), :meth:`I2IResult.readable`
adds what a learner reads at a glance (the classifier's accuracy, the MSE inside the hole),
:meth:`I2IResult.lesson` the encoder distances, and :func:`example_grid` draws the Fig. 2-3
analogue (masked input, original, unlearned, unlearned under attack).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..attacks.uma_i2i import UNBOUNDED, inpainting_mapping_attack
from ..models.inpainter import inpaint
from ..recipes import Result
from .rub_result import eps_label as classification_eps_label
from .rub_result import mean_std as _mean_std

METRICS = ("is_mean", "fd", "accuracy", "hole_mse", "uma_mse_after", "encoding_after")


def eps_label(eps: float) -> str:
    """``0``, ``8/255``-style labels for multiples of 1/255, ``unbounded`` for 1 (the whole pixel range)."""
    return "unbounded" if eps >= UNBOUNDED else classification_eps_label(eps)


def gap_closed(fd_attacked: float, fd_unlearned: float, fd_original: float) -> float:
    """Share of the FD gap between the unlearned and the original model that an attack closes (1 = all of it)."""
    gap = fd_unlearned - fd_original
    return float("nan") if gap <= 0 else (fd_unlearned - fd_attacked) / gap


@dataclass
class I2IResult(Result):
    """Rows of an I2I benchmark run and their summaries (chapter 7, ``course-lib rub --task i2i``).

    ``rows``: one dict per (method, seed, eps) with ``"F"`` and ``"R"`` (each ``is_mean``, ``is_std``,
    ``fd``, ``accuracy``, ``hole_mse``, ``uma_mse_before/after``, ``encoding_before/after``), the
    attack's cost per set (``attack``), ``unlearn_seconds`` and whether the decoder and the
    encoder are bit-identical to the original's. ``models``: the unlearned models of the run when
    it was asked to keep them (never serialised).
    """

    rows: list[dict]
    methods: list[str]
    eps: list[float]
    config: dict
    results_path: str
    computed_rows: int = 0
    seconds: float = 0.0
    models: dict = field(default_factory=dict, repr=False)

    def _select(self, method: str, eps: float) -> list[dict]:
        return [r for r in self.rows if r["method"] == method and abs(r["eps"] - eps) < 1e-9]

    def value(self, method: str, eps: float, split: str, metric: str) -> float:
        """Mean over seeds of ``metric`` (e.g. ``"fd"``) on ``split`` (``"F"``/``"R"``) for ``method`` at ``eps``."""
        return _mean_std([r[split][metric] for r in self._select(method, eps)])[0]

    def summary(self) -> list[dict]:
        """One record per method: mean and std over seeds of every metric, per eps and set."""
        out = []
        for method in ["original"] + [m for m in self.methods if m != "original"]:
            rec: dict = {"method": method}
            for e in (self.eps if method != "original" else [0.0]):
                rows = self._select(method, e)
                if not rows:
                    continue
                tag = eps_label(e)
                for split in ("R", "F"):
                    for metric in METRICS:
                        m, s = _mean_std([r[split][metric] for r in rows])
                        rec[f"{metric}_{split}@{tag}"], rec[f"{metric}_{split}_std@{tag}"] = m, s
                rec[f"attack_seconds@{tag}"] = _mean_std([r["attack"]["F"]["seconds"] + r["attack"]["R"]["seconds"]
                                                          for r in rows])[0]
                rec[f"n@{tag}"] = len(rows)
            if method != "original":
                rows0 = [r for r in self.rows if r["method"] == method]
                if rows0:
                    rec["unlearn_seconds"] = _mean_std([r["unlearn_seconds"] for r in rows0])[0]
                    rec["decoder_unchanged"] = all(r.get("decoder_unchanged") for r in rows0)
            out.append(rec)
        return out

    def _grid(self, metrics: Sequence[tuple[str, str, int]]):
        import pandas as pd

        summ = {r["method"]: r for r in self.summary()}
        cols, data = [], {}
        for label, metric, digits in metrics:
            for e in self.eps:
                for split in ("R", "F"):
                    cols.append((label, "no attack" if e == 0 else eps_label(e), split))
        for method, rec in summ.items():
            data[method] = [rec.get(f"{metric}_{split}@{eps_label(e)}", float("nan"))
                            for label, metric, digits in metrics for e in self.eps for split in ("R", "F")]
        frame = pd.DataFrame.from_dict(data, orient="index", columns=pd.MultiIndex.from_tuples(cols))
        frame.index.name = "method"
        return frame.round({c: d for (label, metric, d) in metrics for c in cols if c[0] == label})

    def table(self):
        """Table 2's analogue: IS and FD of the course classifier, R and F, per attack radius (means over seeds)."""
        return self._grid([("IS (course classifier) ↑", "is_mean", 2), ("FD (course classifier) ↓", "fd", 2)])

    def readable(self):
        """C's accuracy on the inpainted images (%) and the MSE inside the hole, R and F, per radius."""
        frame = self._grid([("C's accuracy (%)", "accuracy", 3), ("MSE in the hole", "hole_mse", 4)])
        acc = [c for c in frame.columns if c[0] == "C's accuracy (%)"]
        frame[acc] = (frame[acc] * 100).round(1)
        return frame

    def lesson(self):
        """Per method and radius: eq. 2's D before/after and the attacked encoding's distance to the original's (F)."""
        import pandas as pd

        recs = []
        for m in self.methods:
            for e in self.eps:
                rows = self._select(m, e)
                if not rows:
                    continue
                recs.append({"method": m, "eps": eps_label(e),
                             "D = MSE to f(T(x)) before": _mean_std([r["F"]["uma_mse_before"] for r in rows])[0],
                             "D after": _mean_std([r["F"]["uma_mse_after"] for r in rows])[0],
                             "encoding distance before": _mean_std([r["F"]["encoding_before"] for r in rows])[0],
                             "encoding distance after": _mean_std([r["F"]["encoding_after"] for r in rows])[0],
                             "decoder unchanged": all(r.get("decoder_unchanged") for r in rows),
                             "attack s (F + R)": _mean_std([r["attack"]["F"]["seconds"] + r["attack"]["R"]["seconds"]
                                                            for r in rows])[0]})
        return pd.DataFrame(recs)

    def bars(self, methods: Sequence[str] = ("I2I", "SalUn")) -> dict:
        """The issue's checks, measured: per method, forgetting before the attack and the attack's recovery.

        ``forgets``: F's FD at least 2x the original's and C's accuracy on F at least 40 points lower,
        ``keeps_retain``: R's FD within 1.5x the original's; ``gap_closed@<eps>``: share of the F-FD gap
        between the unlearned and the original model that the attack closes.
        """
        fd_o_f, fd_o_r = self.value("original", 0.0, "F", "fd"), self.value("original", 0.0, "R", "fd")
        acc_o = self.value("original", 0.0, "F", "accuracy")
        out = {}
        for m in methods:
            if not self._select(m, 0.0):
                continue
            fd_f, fd_r, acc = (self.value(m, 0.0, "F", "fd"), self.value(m, 0.0, "R", "fd"),
                               self.value(m, 0.0, "F", "accuracy"))
            rec = {"fd_F_ratio": fd_f / fd_o_f, "accuracy_drop_points": 100 * (acc_o - acc),
                   "fd_R_ratio": fd_r / fd_o_r}
            rec["forgets"] = bool(rec["fd_F_ratio"] >= 2 and rec["accuracy_drop_points"] >= 40)
            rec["keeps_retain"] = bool(rec["fd_R_ratio"] <= 1.5)
            for e in self.eps:
                if e > 0 and self._select(m, e):
                    rec[f"gap_closed@{eps_label(e)}"] = gap_closed(self.value(m, e, "F", "fd"), fd_f, fd_o_f)
            out[m] = rec
        return out

    def plot(self):
        """FD of F and C's accuracy on F against the radius, per method (original dotted)."""
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
        xs = list(range(len(self.eps)))
        panels = (("F", "fd", "FD of F (course classifier) ↓", 1), ("F", "accuracy", "C's accuracy on F (%)", 100),
                  ("R", "fd", "FD of R (course classifier) ↓", 1))
        for ax, (split, metric, label, scale) in zip(axes, panels):
            for m in self.methods:
                ys = [self.value(m, e, split, metric) * scale for e in self.eps]
                style = dict(color="black", ls="--") if m == "retrain" else {}
                ax.plot(xs, ys, marker="o", label=m, **style)
            ax.axhline(self.value("original", 0.0, split, metric) * scale, color="grey", ls=":", label="original")
            ax.set_xticks(xs)
            ax.set_xticklabels(["none" if e == 0 else eps_label(e) for e in self.eps])
            ax.set_xlabel("attack radius ε")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
        axes[-1].legend(fontsize=8)
        fig.suptitle(f"RUB image-to-image on {self.config.get('dataset')}: forgetting and the mapping attack")
        fig.tight_layout()
        return fig

    def text(self) -> str:
        bars = self.bars()
        lines = [self.table().to_string(), "", self.readable().to_string(), ""]
        for m, rec in bars.items():
            closed = ", ".join(f"{k.split('@')[1]}: {v:.2f}" for k, v in rec.items() if k.startswith("gap_closed"))
            lines.append(f"{m}: F-FD x{rec['fd_F_ratio']:.2f}, C accuracy on F -{rec['accuracy_drop_points']:.1f} points, "
                         f"R-FD x{rec['fd_R_ratio']:.2f}; F-FD gap closed by the attack: {closed or '-'}")
        lines.append(f"rows: {len(self.rows)} ({self.computed_rows} computed now) in {self.results_path}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"config": self.config, "results_path": self.results_path, "methods": self.methods, "eps": self.eps,
                "computed_rows": self.computed_rows, "seconds": round(self.seconds, 2), "summary": self.summary(),
                "bars": self.bars(), "rows": self.rows}


def example_grid(setup, models: dict, *, eps: float = 8 / 255, n: int = 6, split: str = "F"):
    """Fig. 2-3's analogue: masked input, original output, then per model its output and its output under attack.

    ``models`` maps a name to an unlearned inpainter; ``n`` images of ``split`` are shown, taken
    from its classes in turn (the first image of each class, then the second, ...). Returns the figure.
    """
    import torch

    from ..viz import image_rows

    images, masks, _ = setup.eval_set(split)
    by_class = [torch.nonzero(images.y == c).flatten().tolist() for c in sorted(set(images.y.tolist()))]
    picks = [idx[k] for k in range(max(map(len, by_class))) for idx in by_class if k < len(idx)][:n]
    images, x, m = images.subset(picks), images.x[picks], masks[picks]
    shown_mask = x * (1 - m) + 0.5 * m     # the hole drawn grey
    rows, labels = [shown_mask, inpaint(setup.original, x, m)], ["masked input", "original"]
    for name, model in models.items():
        attack = inpainting_mapping_attack(model, setup.original, x, m, eps=eps, steps=setup.config.uma_steps)
        rows += [attack.output_before, attack.output_after]
        labels += [name, f"{name}, attack {eps_label(eps)}"]
    return image_rows(rows, row_labels=labels, titles=[f"class {int(c)}" for c in images.y[:n]])


__all__ = ["I2IResult", "eps_label", "example_grid", "gap_closed"]
