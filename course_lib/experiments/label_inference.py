"""Chapter 4's recipes: label inference by probing the unlearned model (Sections 5.2, 6.2, App. C).

The setting of Section 5.2: the developer fine-tunes M0 on a sub-training set X_u of Du with about
``subset_per_class`` (= 50) samples per class, giving the deployed model M, then unlearns a share
``p_u`` of one class (or of several classes) with exact or approximate unlearning
(:mod:`course_lib.unlearn.paper`). A user builds probes on M through the black-box API and probes
M_u (:mod:`course_lib.attacks.probes`), or attacks a label-only API
(:mod:`course_lib.attacks.label_only`).

Public API
----------
``LabelInferenceConfig.for_profile(profile, **overrides)``   sizes of the experiment
``prepare_probing(...)`` -> :class:`~course_lib.experiments.probing_setup.ProbingSetup` (the setting)
``run_label_inference(dataset, *, profile, seed, ...)`` -> :class:`LabelInferenceResult`
    Table 3 (every class in turn, 10 and 5 probes per class), Figs. 4/9 (confidence changes),
    Fig. 10 (3 and 5 classes, top-K), the label-only attack, queries spent.
``run_label_attack(dataset, *, unlearning, forget_classes | all_classes, ...)`` -> :class:`LabelAttackResult`
    One attack (what ``course-lib infer-label`` runs).

Every result has ``.to_dict()`` (JSON), ``.table()`` (pandas) and ``.plot()`` (matplotlib).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
from tqdm.auto import tqdm

from ..attacks.label_only import (LabelOnlyConfig, probe_unlearned_labels)
from ..attacks.probes import PROBE_METHODS, ProbeConfig
from ..attacks.unlearned_label import GROUPINGS, probe_unlearned
from ..budgets import Budget
from ..cache import config_key, library_key
from ..config import get_profile, results_dir
from ..errors import CourseError, check_choice
from ..recipes import Result, recipe
from ..results import RowStore, prepare_output

from .probing_setup import UNLEARNING_METHODS, ProbingSetup, prepare_probing

API_OUTPUTS = ("probs", "labels")
#: Table 3's probe presets: the paper's (ZOO, grouping by prediction) and the course's (calibrated NES).
PRESETS = ("paper", "course")


# --------------------------------------------------------------------------- configuration

@dataclass(frozen=True)
class LabelInferenceConfig(Budget):
    """Sizes of chapter 4's experiment.

    Attributes
    ----------
    subset_per_class:
        Samples per class of the sub-training set X_u that M is fine-tuned on (paper: about 50).
    probes_per_class:
        m, probes per class (paper: 10).
    fewer_probes:
        The smaller probe budget of Table 3's lower half (paper: 5), the first probes of each class.
    forget_shares:
        Shares p_u of the unlearned class that are removed (paper: 0.1, 0.5, 1.0).
    multi_classes:
        Class sets unlearned at once for Fig. 10 (paper: classes 0-2 and 0-4).
    probe_method:
        ``"nes"`` (query-efficient, an addition and the recipe's default) or ``"zoo"`` (the paper's ZOO).
    grouping:
        Which probes eq. (9) averages for class t: ``"target"`` (built for t, the course's default)
        or ``"predicted"`` (predicted as t by the original model, the paper's).
    label_only:
        Also run the label-only attack on every unlearned model.
    zoo_demo_queries:
        Query budget of chapter 4's single-probe comparison of ZOO and NES.
    presets:
        The probe presets Table 3 is computed with, on the same unlearned models: ``"course"``
        (``probe_method`` and ``grouping`` above, with the probe configuration passed to the recipe:
        calibrated NES probes by default) and ``"paper"`` (ZOO probes without calibration,
        :meth:`ProbeConfig.paper`, grouped by the original model's prediction, eq. 9).
    zoo_max_queries, zoo_probes_per_class:
        The query budget of one ZOO probe under the ``"paper"`` preset, and how many ZOO probes per
        class it builds (the paper: 10; its fewer-probes rows use the first ``fewer_probes`` of
        them when that is smaller). The paper states no query budget. ZOO pays two queries per pixel
        coordinate per step, so on a CPU the profile's budget is what keeps chapter 4 within its
        time; the result reports how many probes reached the confidence target within it.
    """

    subset_per_class: int = 50
    probes_per_class: int = 10
    fewer_probes: int = 5
    forget_shares: tuple = (0.1, 0.5, 1.0)
    multi_classes: tuple = ((0, 1, 2), (0, 1, 2, 3, 4))
    probe_method: str = "nes"
    grouping: str = "target"
    label_only: bool = True
    zoo_demo_queries: int = 40_000
    presets: tuple = ("course",)
    zoo_max_queries: int = 20_000
    zoo_probes_per_class: int = 10

    budget_name: ClassVar[str] = "label-inference"
    PROFILES: ClassVar[dict] = {
        "quick": dict(probes_per_class=4, fewer_probes=2, forget_shares=(0.5, 1.0), zoo_demo_queries=3_000),
        # the paper's ZOO preset only under full: ZOO's ~2 x 10^6 queries take over an hour on a 2-core CPU
        "standard": dict(probes_per_class=10, fewer_probes=5, forget_shares=(0.1, 0.5, 1.0)),
        "full": dict(probes_per_class=10, fewer_probes=5, forget_shares=(0.1, 0.5, 1.0), zoo_demo_queries=200_000,
                     presets=("paper", "course")),
    }

    def check(self) -> None:
        for name in ("subset_per_class", "probes_per_class", "fewer_probes"):
            if getattr(self, name) < 1:
                raise CourseError(f"{name} must be at least 1; got {getattr(self, name)}.")
        if self.fewer_probes > self.probes_per_class:
            raise CourseError(f"fewer_probes ({self.fewer_probes}) cannot exceed probes_per_class "
                              f"({self.probes_per_class}).")
        for f in self.forget_shares:
            if not 0 < f <= 1:
                raise CourseError(f"Every forget share p_u must lie in (0, 1]; got {f}.")
        check_choice(self.probe_method, ("nes", "zoo"), "probe method")
        check_choice(self.grouping, GROUPINGS, "probe grouping")
        if not self.presets or len(set(self.presets)) != len(self.presets):
            raise CourseError(f"presets must name each of 'paper' and 'course' at most once; got {self.presets}.")
        for preset in self.presets:
            check_choice(preset, PRESETS, "probe preset")
        if self.zoo_max_queries < 1 or self.zoo_probes_per_class < 1:
            raise CourseError("zoo_max_queries and zoo_probes_per_class must be at least 1; got "
                              f"{self.zoo_max_queries} and {self.zoo_probes_per_class}.")

    def probe_plan(self, profile, probe_config: ProbeConfig | None = None) -> dict:
        """Per preset: ``(probe method, probe configuration, grouping, probes per class)`` (see ``presets``)."""
        plan = {}
        for preset in self.presets:
            if preset == "paper":
                plan[preset] = ("zoo", ProbeConfig.paper(profile, max_queries=self.zoo_max_queries), "predicted",
                                self.zoo_probes_per_class)
            else:
                plan[preset] = (self.probe_method, probe_config or ProbeConfig.for_profile(profile), self.grouping,
                                self.probes_per_class)
        return plan

    @classmethod
    def paper(cls, profile=None, **overrides) -> "LabelInferenceConfig":
        """The paper's experiment (Sections 3.2.2, 5.2): ZOO probes, eq. (9) over the probes the
        original model predicts as each class. Sizes from ``profile``; ``overrides`` on top."""
        return cls.for_profile(profile, **{"probe_method": "zoo", "grouping": "predicted", "presets": ("paper",),
                                           **overrides})


# --------------------------------------------------------------------------- the full experiment

@dataclass
class LabelInferenceResult(Result):
    """Chapter 4's results (Table 3, Figs. 4/9/10, label-only attack, cost).

    ``rows``: one dict per (api, preset, probes per class, unlearning, p_u) with ``inferred`` (the
    inferred class for each unlearned class id 0..K-1), ``accuracy`` and, for the probability API,
    ``preset`` and ``probe_method``. ``betas``: for the same keys, the beta vector (confidence drop,
    or flip share for the label-only API) of each unlearned class, ``K x K`` nested lists.
    ``multi``: Fig. 10 rows (preset, classes, top-K inferred, accuracy, beta). ``probes``: the
    construction cost of the first preset's probes; ``probe_sets``: of every preset's;
    ``boundary``: of the label-only probes. ``seconds``: wall-clock of the whole recipe (of the run
    that computed it, when it was read back). ``results_path``: the file it is stored in;
    ``computed``: ``False`` when it was read from there instead of computed.
    """

    dataset: str
    profile: str
    seed: int
    config: dict
    setup: dict
    probes: dict
    boundary: dict | None
    rows: list
    betas: dict
    multi: list
    seconds: float
    probe_sets: dict = field(default_factory=dict)
    results_path: str = ""
    computed: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

    def accuracy(self, unlearning: str, forget_share: float, *, api: str = "probs", probes_per_class: int | None = None,
                 preset: str | None = None) -> float:
        """Accuracy of one row of the table (default: the preset's full probe budget, the first preset)."""
        preset = preset or self.config["presets"][0]
        m = probes_per_class or max((r["probes_per_class"] for r in self.rows
                                     if r["api"] == "probs" and r["preset"] == preset), default=None)
        for r in self.rows:
            if (r["api"], r["unlearning"], r["forget_share"]) == (api, unlearning, float(forget_share)) and \
                    (api == "labels" or (r["probes_per_class"] == m and r["preset"] == preset)):
                return r["accuracy"]
        raise CourseError(f"No row for api={api}, preset={preset}, unlearning={unlearning}, p_u={forget_share}, m={m}.")

    def table(self):
        """Table 3's analogue: inferred class for every unlearned class id, and the accuracy."""
        import pandas as pd

        out = []
        for r in self.rows:
            row = {"API": r["api"], "preset": r.get("preset") or "-",
                   "probes": r.get("probe_method") or "boundary",
                   "probes/class": r["probes_per_class"] if r["api"] == "probs" else "-",
                   "unlearning": r["unlearning"], "p_u": r["forget_share"]}
            row.update({str(c): v for c, v in enumerate(r["inferred"])})
            row["acc."] = r["accuracy"]
            out.append(row)
        return pd.DataFrame(out)

    def multi_table(self):
        """Fig. 10's numbers: the top-K inferred classes when K classes are unlearned at once."""
        import pandas as pd

        return pd.DataFrame([{"preset": r["preset"], "unlearning": r["unlearning"], "unlearned": r["classes"],
                              "top-K": r["inferred"], "accuracy": r["accuracy"]} for r in self.multi])

    def plot(self, forgotten: int = 0):
        """Figs. 4/9 (beta per class when class ``forgotten`` is unlearned, per p_u) and Fig. 10."""
        import matplotlib.pyplot as plt

        forget_shares = self.config["forget_shares"]
        preset = self.config["presets"][0]
        m = max(r["probes_per_class"] for r in self.rows if r["api"] == "probs" and r["preset"] == preset)
        n_top = len(forget_shares)
        n_bottom = max(1, len(self.multi) // 2)
        fig, axes = plt.subplots(2, max(n_top, n_bottom), figsize=(4.2 * max(n_top, n_bottom), 6.2), squeeze=False)
        width = 0.4
        n_classes = len(next(iter(self.betas.values()))[0]) if self.betas else 0
        for j, frac in enumerate(forget_shares):
            ax = axes[0, j]
            for s, (method, color) in enumerate((("exact", "tab:blue"), ("approximate", "tab:orange"))):
                key = _key("probs", m, method, frac, preset)
                if key in self.betas:
                    beta = np.asarray(self.betas[key][forgotten])
                    ax.bar(np.arange(len(beta)) + (s - 0.5) * width, beta, width, color=color, label=method)
            ax.axhline(0, color="black", linewidth=0.8)
            ax.set_title(f"class {forgotten} unlearned, p_u = {frac}")
            ax.set_xlabel("probe class")
            ax.set_xticks(range(n_classes))
            if j == 0:
                ax.set_ylabel("confidence drop beta (eq. 10)")
                ax.legend(fontsize=8)
        for j in range(n_top, axes.shape[1]):
            axes[0, j].axis("off")
        sets = sorted({tuple(r["classes"]) for r in self.multi})
        for j, classes in enumerate(sets):
            ax = axes[1, j]
            for s, (method, color) in enumerate((("exact", "tab:blue"), ("approximate", "tab:orange"))):
                for r in self.multi:
                    if tuple(r["classes"]) == classes and r["unlearning"] == method and r["preset"] == preset:
                        beta = np.asarray(r["beta"])
                        ax.bar(np.arange(len(beta)) + (s - 0.5) * width, beta, width, color=color, label=method)
            ax.axhline(0, color="black", linewidth=0.8)
            ax.set_title(f"classes {list(classes)} unlearned (top-{len(classes)})")
            ax.set_xlabel("probe class")
            if j == 0:
                ax.set_ylabel("confidence drop beta")
        for j in range(len(sets), axes.shape[1]):
            axes[1, j].axis("off")
        fig.tight_layout()
        return fig


def _key(api: str, m: int, method: str, forget_share: float, preset: str = "") -> str:
    return f"{api}/{preset + '/' if preset else ''}m={m}/{method}/p_u={float(forget_share)}"


@recipe("label-inference", chapter="4", command="course-lib label-inference")
def run_label_inference(dataset: str = "mnist-5k", *, profile: str | None = None, seed: int = 0,
                        config: LabelInferenceConfig | None = None, probe_config: ProbeConfig | None = None,
                        label_only_config: LabelOnlyConfig | None = None, use_cache: bool = True,
                        setup: ProbingSetup | None = None, out=None, resume: bool = True,
                        progress: bool = True) -> LabelInferenceResult:
    """Chapter 4's experiment: Table 3, Figs. 4/9/10 and the label-only attack, with costs.

    For every unlearning method and share p_u, each class in turn is (partly) unlearned from M
    and inferred from the probes of every preset of ``config.presets`` (the paper's ZOO probes
    grouped by prediction, the course's calibrated NES probes; the full budget and the first
    ``fewer_probes`` of each class);
    the same unlearned models are attacked through a label-only API. Then the class sets of
    ``multi_classes`` are unlearned at once (p_u = 1) and inferred with top-K. Pass ``setup`` (from
    :func:`prepare_probing` with the same dataset, profile and seed) to reuse its models.

    The result is stored in ``out`` (default ``results_dir("label-inference")``:
    ``$COURSE_RESULTS_DIR/label-inference``, else ``results/label-inference``), in a file whose key
    hashes the models, every size of the run and the library's source (:func:`~course_lib.cache.library_key`).
    A run with the same key reads it back (``result.computed`` is ``False``) unless ``resume=False``.

    Used by chapter 4.
    """
    start = time.perf_counter()
    prof = get_profile(profile)
    cfg = config or LabelInferenceConfig.for_profile(prof.name)
    check_choice(cfg.probe_method, PROBE_METHODS, "probe method")
    if not 1 <= cfg.fewer_probes <= cfg.probes_per_class:
        raise CourseError("fewer_probes must lie between 1 and probes_per_class.")
    if setup is None or setup.subset_per_class != cfg.subset_per_class or setup.seed != seed:
        setup = prepare_probing(dataset, profile=prof.name, seed=seed, subset_per_class=cfg.subset_per_class,
                                progress=progress)
    k_classes = setup.num_classes
    plan = cfg.probe_plan(prof.name, probe_config)
    label_only_config = (label_only_config or LabelOnlyConfig.for_profile(prof.name)) if cfg.label_only else None
    identity = setup.cache_config("label-inference", {
        "config": cfg.to_dict(), "label_only": label_only_config.to_dict() if label_only_config else None,
        "probes": {preset: [m, pcfg.to_dict(), g, n] for preset, (m, pcfg, g, n) in plan.items()},
        "library": library_key()})
    out_dir = prepare_output(Path(out) if out is not None else results_dir("label-inference"))
    store = RowStore(out_dir / f"label-inference-{config_key(identity)}.jsonl", identity, lambda row: ("result",))
    if resume and store.rows:
        return LabelInferenceResult(**store.rows[0], results_path=str(store.path), computed=False)
    probes, groupings, sets = {}, {}, {}
    for preset, (method, pcfg, grouping, per_class) in plan.items():
        probes[preset] = setup.probes(per_class, method, pcfg, use_cache=use_cache, progress=progress)
        groupings[preset] = grouping
        sets[preset] = {per_class: probes[preset]}
        if cfg.fewer_probes < per_class:
            sets[preset][cfg.fewer_probes] = probes[preset].per_class(cfg.fewer_probes)
    boundary = setup.boundary_probes(label_only_config, progress=progress) if cfg.label_only else None
    original = setup.api(name="original")
    rows, betas, multi = [], {}, []
    probing_queries = {preset: 0 for preset in plan} | {"labels": 0}

    total = len(UNLEARNING_METHODS) * len(cfg.forget_shares) * k_classes + len(UNLEARNING_METHODS) * len(cfg.multi_classes)
    bar = tqdm(total=total, desc="unlearn + probe", disable=not progress, leave=False)
    for method in UNLEARNING_METHODS:
        for frac in cfg.forget_shares:
            keys = [(preset, m) for preset in plan for m in sets[preset]]
            inferred = {k: [] for k in keys}
            beta_rows = {k: [] for k in keys}
            lo_inferred, lo_beta = [], []
            for c in range(k_classes):
                unlearned_model = setup.unlearn([c], frac, method)
                unlearned = setup.api(unlearned_model, name="unlearned")
                for preset, m in keys:  # every preset probes the same unlearned model
                    res = probe_unlearned(original, unlearned, sets[preset][m], grouping=groupings[preset])
                    inferred[(preset, m)].append(res.inferred[0])
                    beta_rows[(preset, m)].append([float(b) for b in res.beta])
                    probing_queries[preset] += sum(res.queries.values())
                if boundary is not None:
                    res = probe_unlearned_labels(None, setup.api(unlearned_model, "labels", "unlearned"), boundary)
                    lo_inferred.append(res.inferred[0])
                    lo_beta.append([float(b) for b in res.flip_share])
                    probing_queries["labels"] += sum(res.queries.values())
                bar.update(1)
            for preset, m in keys:
                acc = float(np.mean([i == c for c, i in enumerate(inferred[(preset, m)])]))
                rows.append({"api": "probs", "preset": preset, "probe_method": plan[preset][0], "probes_per_class": m,
                             "unlearning": method, "forget_share": float(frac), "inferred": inferred[(preset, m)],
                             "accuracy": acc})
                betas[_key("probs", m, method, frac, preset)] = beta_rows[(preset, m)]
            if boundary is not None:
                acc = float(np.mean([i == c for c, i in enumerate(lo_inferred)]))
                rows.append({"api": "labels", "preset": None, "probe_method": None, "probes_per_class": None,
                             "unlearning": method, "forget_share": float(frac), "inferred": lo_inferred,
                             "accuracy": acc})
                betas[_key("labels", 0, method, frac)] = lo_beta
        for classes in cfg.multi_classes:
            classes = [int(c) for c in classes if int(c) < k_classes]
            unlearned = setup.api(setup.unlearn(classes, 1.0, method), name="unlearned")
            for preset in plan:
                res = probe_unlearned(original, unlearned, probes[preset], k=len(classes), grouping=groupings[preset])
                probing_queries[preset] += sum(res.queries.values())
                hits = len(set(res.inferred) & set(classes))
                multi.append({"preset": preset, "unlearning": method, "classes": classes, "inferred": res.inferred,
                              "accuracy": hits / len(classes), "beta": [float(b) for b in res.beta]})
            bar.update(1)
    bar.close()
    summaries = {}
    for preset, ps in probes.items():
        summaries[preset] = {**ps.summary(), "preset": preset, "grouping": groupings[preset],
                             "calibrated": plan[preset][1].calibration_band > 0,
                             "max_queries": plan[preset][1].max_queries,
                             "from_cache": bool(getattr(ps, "from_cache", False)),
                             "probing_queries": probing_queries[preset]}
    boundary_summary = None
    if boundary is not None:
        boundary_summary = boundary.summary()
        boundary_summary["probing_queries"] = probing_queries["labels"]
    result = LabelInferenceResult(dataset=dataset, profile=prof.name, seed=seed, config=cfg.to_dict(),
                                  setup=setup.metrics, probes=summaries[cfg.presets[0]], boundary=boundary_summary,
                                  rows=rows, betas=betas, multi=multi, seconds=round(time.perf_counter() - start, 2),
                                  probe_sets=summaries, results_path=str(store.path))
    stored = result.to_dict()
    for name in ("results_path", "computed"):
        stored.pop(name)
    store.drop(lambda row: True)   # resume=False: this run's result replaces the stored one
    store.append(stored)
    return result
