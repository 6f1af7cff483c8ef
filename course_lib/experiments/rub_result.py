"""The classification RUB benchmark's result: Table 1's analogue, Proposition 4's verdicts, RUB's pattern.

:class:`RubResult` summarises the rows of :func:`course_lib.experiments.rub_classification.run_rub`
(one per method, seed and UMA radius eps) as mean +- std over seeds, beside RUB's CIFAR-10 rows
(:data:`PAPER_CIFAR10`). Chapter 5 displays it; ``course-lib rub`` prints it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Sequence

import numpy as np

from ..recipes import Result

#: RUB's six classification methods (its Table 1); the others (GA, a learner's own) are extras.
RUB_METHODS = ("retrain", "FT", "RL", "IU", "l1-sparse", "SalUn")

#: RUB's Table 1 rows for CIFAR-10 (ResNet-50, class 0 forgotten), copied from the paper for comparison:
#: method -> (TA, UA, MIA, UA@8/255, MIA@8/255, UA@16/255, MIA@16/255); TA and UA in %.
PAPER_CIFAR10 = {
    "Original": (94.13, 100, 0.9796, None, None, None, None),
    "retrain": (94.14, 0, 0, 0, 0, 0, 0),
    "FT": (91.82, 20.55, 0.088, 99.96, 0.995, 99.98, 0.995),
    "RL": (92.19, 0, 0, 5.82, 0.024, 26.64, 0.135),
    "IU": (88.06, 8.76, 0.058, 99.12, 0.965, 99.87, 0.983),
    "l1-sparse": (90.00, 0, 0, 98.30, 0.871, 99.90, 0.978),
    "SalUn": (92.70, 0, 0, 7.13, 0.036, 26.87, 0.148),
}


def eps_label(eps: float) -> str:
    """``8/255``-style label for multiples of 1/255, else the number."""
    frac = Fraction(eps).limit_denominator(255)
    if abs(float(frac) - eps) < 1e-9 and 255 % frac.denominator == 0:
        return "0" if eps == 0 else f"{frac.numerator * (255 // frac.denominator)}/255"
    return f"{eps:g}"


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation of ``values``, skipping ``None`` and NaN (NaN, NaN if none is left)."""
    arr = np.asarray([v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))], float)
    if arr.size == 0:
        return float("nan"), float("nan")
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


@dataclass
class RubResult(Result):
    """Rows of a RUB run and their summaries (chapter 5, ``course-lib rub``).

    ``rows``: one dict per (method, seed, eps) with ``ta``, ``ra`` (retain accuracy), ``ua`` (0..1), ``mia`` (list over MIA
    seeds, share judged members), ``mia_svc`` (list, SalUn's MIA-efficacy), ``verdict``
    (Proposition 4), ``attack`` (cost) and ``unlearn_seconds``.
    """

    rows: list[dict]
    methods: list[str]
    eps: list[float]
    config: dict
    results_path: str
    computed_rows: int = 0
    seconds: float = 0.0

    @staticmethod
    def _robust(rows: list[dict]):
        vs = [r["verdict"] for r in rows if r.get("verdict", {}).get("metric") == "tv_distance"]
        return all(v["robust"] for v in vs) if vs and len(vs) == len(rows) else None

    @staticmethod
    def _mapped(rows: list[dict]):
        vs = [r["verdict"]["mapped_back_share"] for r in rows
              if r.get("verdict", {}).get("metric") == "tv_distance"]
        return mean_std(vs)[0] if vs else float("nan")

    def _select(self, method: str, eps: float) -> list[dict]:
        return [r for r in self.rows if r["method"] == method and abs(r["eps"] - eps) < 1e-9]

    def summary(self) -> list[dict]:
        """Numeric table: one record per method with mean / std of every column."""
        out = []
        for method in ["original"] + [m for m in self.methods if m != "original"]:
            rec = {"method": method if method != "original" else "Original",
                   "rub_method": method in RUB_METHODS or method == "original"}
            for e in (self.eps if method != "original" else [0.0]):
                rows = self._select(method, e)
                if not rows:
                    continue
                tag = eps_label(e)
                ta = mean_std([r["ta"] * 100 for r in rows])
                ua = mean_std([r["ua"] * 100 for r in rows])
                mia = mean_std([v for r in rows for v in r["mia"]])
                svc = mean_std([v for r in rows for v in r["mia_svc"]])
                if e == 0:
                    ra = mean_std([r["ra"] * 100 for r in rows if r.get("ra") is not None])
                    rec.update(ta_mean=ta[0], ta_std=ta[1], ra_mean=ra[0], ra_std=ra[1])
                rec.update({f"ua_mean@{tag}": ua[0], f"ua_std@{tag}": ua[1], f"mia_mean@{tag}": mia[0],
                            f"mia_std@{tag}": mia[1], f"mia_svc_mean@{tag}": svc[0], f"mia_svc_std@{tag}": svc[1],
                            f"robust@{tag}": self._robust(rows) if method != "original" else None,
                            f"mapped_back@{tag}": self._mapped(rows) if method != "original" else None,
                            f"n@{tag}": len(rows)})
                if e > 0:
                    rec[f"attack_seconds@{tag}"] = mean_std([r["attack"]["seconds"] for r in rows])[0]
            if method != "original":
                rows0 = [r for r in self.rows if r["method"] == method]
                if rows0:
                    rec["unlearn_seconds"] = mean_std([r["unlearn_seconds"] for r in rows0])[0]
            out.append(rec)
        return out

    def table(self):
        """Table 1's analogue as a pandas DataFrame of ``mean ± std`` strings (TA, UA in %, MIA 0..1)."""
        import pandas as pd

        def fmt(m, s, digits):
            if m is None or (isinstance(m, float) and math.isnan(m)):
                return "-"
            return f"{m:.{digits}f} ± {s:.{digits}f}"

        records = []
        for rec in self.summary():
            name = rec["method"] if rec["rub_method"] else f"{rec['method']} (extra)"
            row = {"method": name, "TA": fmt(rec.get("ta_mean"), rec.get("ta_std"), 2),
                   "RA": fmt(rec.get("ra_mean"), rec.get("ra_std"), 2)}
            for e in self.eps:
                tag = eps_label(e)
                head = "no attack" if e == 0 else f"ε={tag}"
                row[f"UA ({head})"] = fmt(rec.get(f"ua_mean@{tag}"), rec.get(f"ua_std@{tag}"), 2)
                row[f"MIA ({head})"] = fmt(rec.get(f"mia_mean@{tag}"), rec.get(f"mia_std@{tag}"), 3)
            e0 = eps_label(0.0)
            row["MIA-efficacy SVC (no attack)"] = fmt(rec.get(f"mia_svc_mean@{e0}"), rec.get(f"mia_svc_std@{e0}"), 3)
            records.append(row)
        return pd.DataFrame(records).set_index("method")

    def verdicts(self):
        """Proposition 4 per method and eps: robust (every seed) and the share of samples mapped back."""
        import pandas as pd

        recs = []
        for m in self.methods:
            for e in self.eps:
                rows = self._select(m, e)
                if rows:
                    tv = [r for r in rows if r.get("verdict", {}).get("metric") == "tv_distance"]
                    recs.append({"method": m, "eps": eps_label(e),
                                 "forgets (eq. 1)": all(r["verdict"]["forgets"] for r in tv) if tv else None,
                                 "keeps utility (eq. 1)": all(r["verdict"]["keeps_utility"] for r in tv) if tv else None,
                                 "mapped back (share)": round(self._mapped(rows), 3),
                                 "robust (Prop. 4)": self._robust(rows)})
        return pd.DataFrame(recs)

    def rub_pattern(self, eps: float | None = None) -> dict:
        """Whether the run shows RUB's pattern at ``eps`` (default the largest), on RUB's own methods.

        The pattern: retrain's UA stays <= 5 % under attack while at least two of RUB's other
        methods (:data:`RUB_METHODS`, not the extras such as GA) regain >= 30 UA points.
        ``ua_gain_points`` has every method's gain; ``methods_regaining_30_points`` and
        ``pattern`` count RUB's methods only; ``extras_regaining_30_points`` lists the others.
        """
        eps = max(self.eps) if eps is None else eps
        tag, t0 = eps_label(eps), eps_label(0.0)
        summ = {r["method"]: r for r in self.summary()}
        gains = {m: summ[m].get(f"ua_mean@{tag}", float("nan")) - summ[m].get(f"ua_mean@{t0}", float("nan"))
                 for m in self.methods if m in summ and m != "retrain"}
        retrain_ua = summ.get("retrain", {}).get(f"ua_mean@{tag}", float("nan"))
        regain = sorted(m for m, g in gains.items() if g >= 30 and m in RUB_METHODS)
        extras = sorted(m for m, g in gains.items() if g >= 30 and m not in RUB_METHODS)
        return {"eps": eps, "retrain_ua_under_attack": retrain_ua, "ua_gain_points": gains,
                "methods_regaining_30_points": regain, "extras_regaining_30_points": extras,
                "pattern": bool(retrain_ua <= 5 and len(regain) >= 2)}

    def smallest_pattern_eps(self) -> float | None:
        """The smallest radius of the run at which :meth:`rub_pattern` holds (``None``: at none)."""
        hits = [e for e in self.eps if e > 0 and self.rub_pattern(e)["pattern"]]
        return min(hits) if hits else None

    def plot(self):
        """UA (%) and MIA against eps per method (mean with std error bars); retrain dashed."""
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        summ = {r["method"]: r for r in self.summary()}
        xs = [e * 255 for e in self.eps]
        for m in self.methods:
            rec = summ.get(m)
            if not rec:
                continue
            style = dict(color="black", ls="--", lw=2) if m == "retrain" else dict(marker="o")
            for ax, key, scale in ((axes[0], "ua", 1.0), (axes[1], "mia", 1.0)):
                ys = [rec.get(f"{key}_mean@{eps_label(e)}", float("nan")) * scale for e in self.eps]
                err = [rec.get(f"{key}_std@{eps_label(e)}", 0.0) * scale for e in self.eps]
                ax.errorbar(xs, ys, yerr=err, label=m, capsize=3, **style)
        orig = summ.get("Original", {})
        if orig:
            axes[0].axhline(orig.get("ua_mean@0", float("nan")), color="grey", lw=1, ls=":", label="original")
            axes[1].axhline(orig.get("mia_mean@0", float("nan")), color="grey", lw=1, ls=":", label="original")
        axes[0].set_ylabel("UA: accuracy on the forget set (%)")
        axes[1].set_ylabel("MIA: forget samples judged members")
        for ax in axes:
            ax.set_xlabel("UMA radius ε (×1/255)")
            ax.set_xticks(xs)
            ax.grid(alpha=0.3)
        axes[1].legend(fontsize=8, loc="best")
        fig.suptitle(f"RUB on {self.config.get('dataset')}: forgetting before and after the Unlearning Mapping Attack")
        fig.tight_layout()
        return fig

    def to_dict(self) -> dict:
        return {"config": self.config, "results_path": self.results_path, "methods": self.methods,
                "eps": self.eps, "computed_rows": self.computed_rows, "seconds": round(self.seconds, 2),
                "summary": self.summary(), "pattern": self.rub_pattern(),
                "smallest_pattern_eps": self.smallest_pattern_eps(), "rows": self.rows}
