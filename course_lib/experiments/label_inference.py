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
from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np
from tqdm.auto import tqdm

from ..attacks.label_only import (LabelOnlyConfig, probe_unlearned_labels)
from ..attacks.probes import PROBE_METHODS, ProbeConfig
from ..attacks.unlearned_label import GROUPINGS, probe_unlearned
from ..budgets import Budget
from ..config import get_profile
from ..data import load as data_load
from ..errors import CourseError, check_choice, check_range
from ..recipes import Result, recipe

from .probing_setup import UNLEARNING_METHODS, ProbingSetup, prepare_probing

API_OUTPUTS = ("probs", "labels")


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

    budget_name: ClassVar[str] = "label-inference"
    PROFILES: ClassVar[dict] = {
        "quick": dict(probes_per_class=4, fewer_probes=2, forget_shares=(0.5, 1.0), zoo_demo_queries=3_000),
        "standard": dict(probes_per_class=10, fewer_probes=5, forget_shares=(0.1, 0.5, 1.0)),
        "full": dict(probes_per_class=10, fewer_probes=5, forget_shares=(0.1, 0.5, 1.0), zoo_demo_queries=200_000),
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

    @classmethod
    def paper(cls, profile=None, **overrides) -> "LabelInferenceConfig":
        """The paper's experiment (Sections 3.2.2, 5.2): ZOO probes, eq. (9) over the probes the
        original model predicts as each class. Sizes from ``profile``; ``overrides`` on top."""
        return cls.for_profile(profile, **{"probe_method": "zoo", "grouping": "predicted", **overrides})


# --------------------------------------------------------------------------- the full experiment

@dataclass
class LabelInferenceResult(Result):
    """Chapter 4's results (Table 3, Figs. 4/9/10, label-only attack, cost).

    ``rows``: one dict per (api, probes per class, unlearning, p_u) with ``inferred`` (the inferred
    class for each unlearned class id 0..K-1) and ``accuracy``. ``betas``: for the same keys, the
    beta vector (confidence drop, or flip share for the label-only API) of each unlearned class,
    ``K x K`` nested lists. ``multi``: Fig. 10 rows (classes, top-K inferred, accuracy, beta).
    ``probes``/``boundary``: construction cost. ``seconds``: wall-clock of the whole recipe.
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

    def to_dict(self) -> dict:
        return asdict(self)

    def accuracy(self, unlearning: str, forget_share: float, *, api: str = "probs", probes_per_class: int | None = None) -> float:
        """Accuracy of one row of the table (default: the full probe budget)."""
        m = probes_per_class or self.config["probes_per_class"]
        for r in self.rows:
            if (r["api"], r["unlearning"], r["forget_share"]) == (api, unlearning, float(forget_share)) and \
                    (api == "labels" or r["probes_per_class"] == m):
                return r["accuracy"]
        raise CourseError(f"No row for api={api}, unlearning={unlearning}, p_u={forget_share}, m={m}.")

    def table(self):
        """Table 3's analogue: inferred class for every unlearned class id, and the accuracy."""
        import pandas as pd

        out = []
        for r in self.rows:
            row = {"API": r["api"], "probes/class": r["probes_per_class"] if r["api"] == "probs" else "-",
                   "unlearning": r["unlearning"], "p_u": r["forget_share"]}
            row.update({str(c): v for c, v in enumerate(r["inferred"])})
            row["acc."] = r["accuracy"]
            out.append(row)
        return pd.DataFrame(out)

    def multi_table(self):
        """Fig. 10's numbers: the top-K inferred classes when K classes are unlearned at once."""
        import pandas as pd

        return pd.DataFrame([{"unlearning": r["unlearning"], "unlearned": r["classes"], "top-K": r["inferred"],
                              "accuracy": r["accuracy"]} for r in self.multi])

    def plot(self, forgotten: int = 0):
        """Figs. 4/9 (beta per class when class ``forgotten`` is unlearned, per p_u) and Fig. 10."""
        import matplotlib.pyplot as plt

        forget_shares = self.config["forget_shares"]
        m = self.config["probes_per_class"]
        n_top = len(forget_shares)
        n_bottom = max(1, len(self.multi) // 2)
        fig, axes = plt.subplots(2, max(n_top, n_bottom), figsize=(4.2 * max(n_top, n_bottom), 6.2), squeeze=False)
        width = 0.4
        n_classes = len(next(iter(self.betas.values()))[0]) if self.betas else 0
        for j, frac in enumerate(forget_shares):
            ax = axes[0, j]
            for s, (method, color) in enumerate((("exact", "tab:blue"), ("approximate", "tab:orange"))):
                key = _key("probs", m, method, frac)
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
                    if tuple(r["classes"]) == classes and r["unlearning"] == method:
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


def _key(api: str, m: int, method: str, forget_share: float) -> str:
    return f"{api}/m={m}/{method}/p_u={float(forget_share)}"


@recipe("label-inference", chapter="4", command="course-lib label-inference")
def run_label_inference(dataset: str = "mnist-5k", *, profile: str | None = None, seed: int = 0,
                        config: LabelInferenceConfig | None = None, probe_config: ProbeConfig | None = None,
                        label_only_config: LabelOnlyConfig | None = None, use_cache: bool = True,
                        setup: ProbingSetup | None = None, progress: bool = True) -> LabelInferenceResult:
    """Chapter 4's experiment: Table 3, Figs. 4/9/10 and the label-only attack, with costs.

    For every unlearning method and share p_u, each class in turn is (partly) unlearned from M
    and inferred from the probes (the full budget and the first ``fewer_probes`` of each class);
    the same unlearned models are attacked through a label-only API. Then the class sets of
    ``multi_classes`` are unlearned at once (p_u = 1) and inferred with top-K. Pass ``setup`` (from
    :func:`prepare_probing` with the same dataset, profile and seed) to reuse its models.

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
    probes = setup.probes(cfg.probes_per_class, cfg.probe_method, probe_config, use_cache=use_cache,
                          progress=progress)
    probe_sets = {cfg.probes_per_class: probes}
    if cfg.fewer_probes != cfg.probes_per_class:
        probe_sets[cfg.fewer_probes] = probes.per_class(cfg.fewer_probes)
    boundary = setup.boundary_probes(label_only_config, progress=progress) if cfg.label_only else None
    original = setup.api(name="original")
    rows, betas, multi = [], {}, []
    probing_queries = {"probs": 0, "labels": 0}

    total = len(UNLEARNING_METHODS) * len(cfg.forget_shares) * k_classes + len(UNLEARNING_METHODS) * len(cfg.multi_classes)
    bar = tqdm(total=total, desc="unlearn + probe", disable=not progress, leave=False)
    for method in UNLEARNING_METHODS:
        for frac in cfg.forget_shares:
            inferred = {m: [] for m in probe_sets}
            beta_rows = {m: [] for m in probe_sets}
            lo_inferred, lo_beta = [], []
            for c in range(k_classes):
                unlearned_model = setup.unlearn([c], frac, method)
                unlearned = setup.api(unlearned_model, name="unlearned")
                for m, ps in probe_sets.items():
                    res = probe_unlearned(original, unlearned, ps, grouping=cfg.grouping)
                    inferred[m].append(res.inferred[0])
                    beta_rows[m].append([float(b) for b in res.beta])
                    probing_queries["probs"] += sum(res.queries.values())
                if boundary is not None:
                    res = probe_unlearned_labels(None, setup.api(unlearned_model, "labels", "unlearned"), boundary)
                    lo_inferred.append(res.inferred[0])
                    lo_beta.append([float(b) for b in res.flip_share])
                    probing_queries["labels"] += sum(res.queries.values())
                bar.update(1)
            for m in probe_sets:
                acc = float(np.mean([i == c for c, i in enumerate(inferred[m])]))
                rows.append({"api": "probs", "probes_per_class": m, "unlearning": method, "forget_share": float(frac),
                             "inferred": inferred[m], "accuracy": acc})
                betas[_key("probs", m, method, frac)] = beta_rows[m]
            if boundary is not None:
                acc = float(np.mean([i == c for c, i in enumerate(lo_inferred)]))
                rows.append({"api": "labels", "probes_per_class": None, "unlearning": method,
                             "forget_share": float(frac), "inferred": lo_inferred, "accuracy": acc})
                betas[_key("labels", 0, method, frac)] = lo_beta
        for classes in cfg.multi_classes:
            classes = [int(c) for c in classes if int(c) < k_classes]
            unlearned_model = setup.unlearn(classes, 1.0, method)
            res = probe_unlearned(original, setup.api(unlearned_model, name="unlearned"), probes, k=len(classes),
                                  grouping=cfg.grouping)
            probing_queries["probs"] += sum(res.queries.values())
            hits = len(set(res.inferred) & set(classes))
            multi.append({"unlearning": method, "classes": classes, "inferred": res.inferred,
                          "accuracy": hits / len(classes), "beta": [float(b) for b in res.beta]})
            bar.update(1)
    bar.close()
    probe_summary = probes.summary()
    probe_summary["from_cache"] = bool(getattr(probes, "from_cache", False))
    probe_summary["probing_queries"] = probing_queries["probs"]
    boundary_summary = None
    if boundary is not None:
        boundary_summary = boundary.summary()
        boundary_summary["probing_queries"] = probing_queries["labels"]
    return LabelInferenceResult(dataset=dataset, profile=prof.name, seed=seed, config=cfg.to_dict(),
                                setup=setup.metrics, probes=probe_summary, boundary=boundary_summary,
                                rows=rows, betas=betas, multi=multi, seconds=round(time.perf_counter() - start, 2))


# --------------------------------------------------------------------------- one attack (the CLI)

@dataclass
class LabelAttackResult(Result):
    """One label-inference attack (``course-lib infer-label``).

    ``cases``: one dict per attacked unlearning (the true classes, the inferred ones and ``delta``,
    the per-class score: confidence drop beta for ``api="probs"``, flip share for ``"labels"``).
    ``accuracy``: share of the true classes found (over all cases). ``queries``: probe
    construction and probing queries.
    """

    dataset: str
    profile: str
    seed: int
    unlearning: str
    forget_share: float
    api: str
    probe_method: str | None
    probes_per_class: int | None
    cases: list
    accuracy: float
    queries: dict
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self):
        import pandas as pd

        return pd.DataFrame([{"unlearned": c["true"], "inferred": c["inferred"], "correct": c["correct"],
                              **{str(i): round(v, 6) for i, v in enumerate(c["delta"])}} for c in self.cases])

    def plot(self):
        import matplotlib.pyplot as plt

        n = len(self.cases)
        cols = min(n, 5)
        rows = -(-n // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
        for ax, case in zip(axes.flat, self.cases):
            vals = np.asarray(case["delta"])
            colors = ["tab:red" if i in case["true"] else "tab:blue" for i in range(len(vals))]
            ax.bar(range(len(vals)), vals, color=colors)
            ax.axhline(0, color="black", linewidth=0.8)
            ax.set_title(f"unlearned {case['true']} -> {case['inferred']}", fontsize=9)
            ax.set_xticks(range(len(vals)))
        for ax in list(axes.flat)[n:]:
            ax.axis("off")
        fig.supylabel("confidence drop" if self.api == "probs" else "flip share")
        fig.tight_layout()
        return fig


@recipe("label-attack", chapter="4", command="course-lib infer-label")
def run_label_attack(dataset: str = "mnist-5k", *, unlearning: str = "approximate", forget_classes=None,
                    all_classes: bool = False, forget_share: float = 1.0, probes_per_class: int | None = None,
                    probe_method: str = "nes", api: str = "probs", profile: str | None = None, seed: int = 0,
                    probe_config: ProbeConfig | None = None, label_only_config: LabelOnlyConfig | None = None,
                    use_cache: bool = True, progress: bool = True) -> LabelAttackResult:
    """Unlearn ``forget_classes`` (top-K when several) or, with ``all_classes``, each class in turn,
    and infer the unlearned class(es) through a ``api`` (``"probs"`` or ``"labels"``) black-box API.

    Used by ``course-lib infer-label`` and chapter 4.
    """
    start = time.perf_counter()
    check_choice(unlearning, UNLEARNING_METHODS, "unlearning method")
    check_choice(api, API_OUTPUTS, "API output")
    check_choice(probe_method, PROBE_METHODS, "probe method")
    check_range(float(forget_share), 0.0, 1.0, "--forget_share (the unlearned share p_u)", low_open=True)
    if all_classes == (forget_classes is not None and len(forget_classes) > 0):
        raise CourseError("Say which class to unlearn: give --forget-class C, --forget-classes C1,C2,... "
                          "or --all-classes (exactly one of them).")
    prof = get_profile(profile)
    cfg = LabelInferenceConfig.for_profile(prof.name)
    m = probes_per_class or cfg.probes_per_class
    if m < 1:
        raise CourseError(f"--probes-per-class must be at least 1; got {m}.")
    if forget_classes is not None:
        if len(set(forget_classes)) != len(forget_classes):
            raise CourseError("The classes to unlearn must be distinct.")
        k = data_load(dataset, "test").num_classes  # cheap: fails early on an unknown class
        bad = [c for c in forget_classes if not 0 <= int(c) < k]
        if bad:
            raise CourseError(f"Class {bad[0]} does not exist: {dataset} has classes 0..{k - 1}.")
        if len(forget_classes) >= k:
            raise CourseError(f"Unlearn fewer than all {k} classes.")
    setup = prepare_probing(dataset, profile=prof.name, seed=seed, subset_per_class=cfg.subset_per_class,
                            progress=progress)
    k = setup.num_classes
    cases_spec = [[c] for c in range(k)] if all_classes else [[int(c) for c in forget_classes]]
    queries = {}
    if api == "probs":
        probes = setup.probes(m, probe_method, probe_config, use_cache=use_cache, progress=progress)
        queries["construction"] = int(probes.queries.sum())
        queries["construction_per_probe"] = float(probes.queries.double().mean())
        queries["probes_reached_target"] = float(probes.reached.float().mean())
        queries["probes_from_cache"] = bool(getattr(probes, "from_cache", False))
        original = setup.api(name="original")
    else:
        boundary = setup.boundary_probes(label_only_config, progress=progress)
        queries["construction"] = int(sum(boundary.queries.values()))
        queries["boundary_probes"] = len(boundary)
        original = setup.api(output="labels", name="original")
    probing = 0
    cases = []
    for classes in tqdm(cases_spec, desc="unlearn + probe", disable=not progress or len(cases_spec) == 1, leave=False):
        model_u = setup.unlearn(classes, forget_share, unlearning)
        if api == "probs":
            res = probe_unlearned(original, setup.api(model_u, name="unlearned"), probes, k=len(classes))
            delta = [float(b) for b in res.beta]
        else:
            res = probe_unlearned_labels(None, setup.api(model_u, "labels", "unlearned"), boundary, k=len(classes))
            delta = [float(b) for b in res.flip_share]
        probing += sum(res.queries.values())
        cases.append({"true": classes, "inferred": res.inferred, "correct": len(set(classes) & set(res.inferred)),
                      "delta": delta})
    queries["probing"] = probing
    queries["total"] = queries["construction"] + probing
    acc = sum(c["correct"] for c in cases) / sum(len(c["true"]) for c in cases)
    return LabelAttackResult(dataset=dataset, profile=prof.name, seed=seed, unlearning=unlearning,
                            forget_share=float(forget_share), api=api, probe_method=probe_method if api == "probs" else None,
                            probes_per_class=m if api == "probs" else None, cases=cases, accuracy=acc,
                            queries=queries, seconds=round(time.perf_counter() - start, 2))
