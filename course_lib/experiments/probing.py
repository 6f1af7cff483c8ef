"""Chapter 4's recipes: label inference by probing the unlearned model (Sections 5.2, 6.2, App. C).

The setting of Section 5.2: the developer fine-tunes M0 on a sub-training set X_u of Du with about
``subset_per_class`` (= 50) samples per class, giving the deployed model M, then unlearns a share
``p_u`` of one class (or of several classes) with exact or approximate unlearning
(:mod:`course_lib.unlearn.paper`). A user builds probes on M through the black-box API and probes
M_u (:mod:`course_lib.attacks.probing`), or attacks a label-only API
(:mod:`course_lib.attacks.label_only`).

Public API
----------
``LabelInferenceConfig.for_profile(profile, **overrides)``   sizes of the experiment
``prepare_probing(dataset, *, profile, seed, subset_per_class)`` -> :class:`ProbingSetup`
``setup.probes(probes_per_class, method, config)``             probes (cached on disk by configuration)
``setup.unlearn(classes, fraction, method)``                   M_u
``run_label_inference(dataset, *, profile, seed, ...)`` -> :class:`LabelInferenceResult`
    Table 3 (every class in turn, 10 and 5 probes per class), Figs. 4/9 (confidence changes),
    Fig. 10 (3 and 5 classes, top-K), the label-only attack, queries spent.
``run_infer_label(dataset, *, unlearning, forget_classes | all_classes, ...)`` -> :class:`InferLabelResult`
    One attack (what ``course-lib infer-label`` runs).

Every result has ``.to_dict()`` (JSON), ``.table()`` (pandas) and ``.plot()`` (matplotlib).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..attacks.blackbox import BlackBoxAPI
from ..attacks.label_only import (BoundaryProbes, LabelOnlyConfig, build_boundary_probes,
                                  probe_unlearned_labels)
from ..attacks.probing import PROBE_METHODS, ProbeConfig, ProbeSet, build_probes, probe_unlearned
from ..budgets import Budget
from ..cache import config_key, save_tensors
from ..config import cache_dir, get_profile
from ..data import Dataset, per_class_subset
from ..data import load as data_load
from ..errors import CacheCorruptError, CourseError, check_choice, check_range
from ..train import Pipeline, accuracy, prepare_pipeline
from ..unlearn.paper import unlearn_from_pipeline

UNLEARNING_METHODS = ("approximate", "exact")
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
    fractions:
        Shares p_u of the unlearned class that are removed (paper: 0.1, 0.5, 1.0).
    multi_classes:
        Class sets unlearned at once for Fig. 10 (paper: classes 0-2 and 0-4).
    probe_method:
        ``"nes"`` (query-efficient, default of the recipe) or ``"zoo"`` (the paper's ZOO).
    label_only:
        Also run the label-only attack on every unlearned model.
    """

    subset_per_class: int = 50
    probes_per_class: int = 10
    fewer_probes: int = 5
    fractions: tuple = (0.1, 0.5, 1.0)
    multi_classes: tuple = ((0, 1, 2), (0, 1, 2, 3, 4))
    probe_method: str = "nes"
    label_only: bool = True

    budget_name: ClassVar[str] = "label-inference"
    PROFILES: ClassVar[dict] = {
        "quick": dict(probes_per_class=4, fewer_probes=2, fractions=(0.5, 1.0)),
        "standard": dict(probes_per_class=10, fewer_probes=5, fractions=(0.1, 0.5, 1.0)),
        "full": dict(probes_per_class=10, fewer_probes=5, fractions=(0.1, 0.5, 1.0)),
    }

    def check(self) -> None:
        for name in ("subset_per_class", "probes_per_class", "fewer_probes"):
            if getattr(self, name) < 1:
                raise CourseError(f"{name} must be at least 1; got {getattr(self, name)}.")
        if self.fewer_probes > self.probes_per_class:
            raise CourseError(f"fewer_probes ({self.fewer_probes}) cannot exceed probes_per_class "
                              f"({self.probes_per_class}).")
        for f in self.fractions:
            if not 0 < f <= 1:
                raise CourseError(f"Every forget share p_u must lie in (0, 1]; got {f}.")
        check_choice(self.probe_method, ("nes", "zoo"), "probe method")


# --------------------------------------------------------------------------- the developer's side

@dataclass
class ProbingSetup:
    """The developer's models for chapter 4: M0, the subset X_u and M = M0 fine-tuned on X_u.

    The attacker's side only ever receives :class:`BlackBoxAPI` objects made by :meth:`api`.
    """

    pipeline: Pipeline
    subset: Dataset
    deployed: nn.Module
    subset_per_class: int
    seed: int
    metrics: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return self.subset.num_classes

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.subset.input_shape

    def api(self, model: nn.Module | None = None, output: str = "probs", name: str = "original") -> BlackBoxAPI:
        """A black-box API around ``model`` (default: the deployed model M)."""
        return BlackBoxAPI(self.deployed if model is None else model, output, name=name,
                           input_shape=self.input_shape)

    def forget_indices(self, classes, fraction: float) -> torch.Tensor:
        """Indices into X_u of a random share ``fraction`` of each class in ``classes`` (at least 1 each)."""
        check_range(float(fraction), 0.0, 1.0, "The unlearned fraction p_u", low_open=True)
        gen = torch.Generator().manual_seed(self.seed + 7919)
        chosen = []
        for c in classes:
            if not 0 <= int(c) < self.num_classes:
                raise CourseError(f"Class {c} does not exist: this dataset has classes 0..{self.num_classes - 1}.")
            idx = torch.nonzero(self.subset.y == int(c)).flatten()
            n = max(1, int(round(fraction * len(idx))))
            chosen.append(idx[torch.randperm(len(idx), generator=gen)[:n]])
        return torch.cat(chosen).sort().values

    def unlearn(self, classes, fraction: float, method: str) -> nn.Module:
        """M_u: remove ``fraction`` of each class in ``classes`` from M with ``method`` (Appendix A)."""
        check_choice(method, UNLEARNING_METHODS, "unlearning method")
        idx = self.forget_indices(classes, fraction)
        return unlearn_from_pipeline(self.pipeline, idx, method, train_set=self.subset, deployed=self.deployed)

    def _cache_config(self, kind: str, settings: dict) -> dict:
        p = self.pipeline
        return {"kind": kind, "deployed_from": str(p.cache_paths.get("pretrained", "")), "dataset": p.dataset,
                "model": p.model_name, "profile_width": p.profile.width, "finetune_epochs": p.finetune_epochs,
                "finetune_lr": p.profile.finetune_lr, "finetune_batch_size": p.profile.finetune_batch_size,
                "subset_per_class": self.subset_per_class, "seed": self.seed, **settings}

    def probes(self, probes_per_class: int, method: str = "nes", config: ProbeConfig | None = None, *,
               probe_seed: int | None = None, use_cache: bool = True, progress: bool = True) -> ProbeSet:
        """Probes built on M through its probability API, cached under ``data/cache`` by configuration.

        A cached probe set reports the queries and seconds its construction originally cost.
        """
        check_choice(method, PROBE_METHODS, "probe method")
        cfg = (config or ProbeConfig.for_profile(self.pipeline.profile.name)).validated()
        seed = self.seed if probe_seed is None else probe_seed
        settings = {"method": method, "probes_per_class": probes_per_class, "probe_seed": seed,
                    "probe_config": cfg.to_dict()}
        key_cfg = self._cache_config("probes", settings)
        path = cache_dir() / f"probes-{config_key(key_cfg)}.safetensors"
        if use_cache and path.exists():
            return _load_probes(path)
        probes = build_probes(self.api(), num_classes=self.num_classes, input_shape=self.input_shape,
                              probes_per_class=probes_per_class, method=method, config=cfg, seed=seed,
                              progress=progress)
        if use_cache:
            _save_probes(probes, path, key_cfg)
        return probes

    def boundary_probes(self, config: LabelOnlyConfig | None = None, *, progress: bool = True) -> BoundaryProbes:
        """Label-only boundary probes built on M through its label API (cheap; not cached)."""
        cfg = config or LabelOnlyConfig.for_profile(self.pipeline.profile.name)
        return build_boundary_probes(self.api(output="labels"), num_classes=self.num_classes,
                                     input_shape=self.input_shape, config=cfg, seed=self.seed, progress=progress)


def _save_probes(probes: ProbeSet, path, config: dict) -> None:
    tensors = {"x": probes.x, "target": probes.target, "probs": probes.probs,
               "reached": probes.reached.to(torch.uint8), "queries": probes.queries,
               "iterations": probes.iterations}
    meta = {"config": config, "method": probes.method, "seconds": probes.seconds,
            "num_classes": probes.num_classes, "probe_config": probes.config}
    save_tensors(tensors, path, meta)


def _load_probes(path) -> ProbeSet:
    from safetensors.torch import load_file

    try:
        t = load_file(str(path))
        meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    except Exception as exc:
        raise CacheCorruptError(f"The cached probe set {path} (or its .json) cannot be read ({exc}). "
                                "Delete both files and run again.") from exc
    probes = ProbeSet(x=t["x"], target=t["target"], probs=t["probs"], reached=t["reached"].bool(),
                      queries=t["queries"], iterations=t["iterations"], method=meta["method"],
                      seconds=float(meta["seconds"]), num_classes=int(meta["num_classes"]),
                      config=meta.get("probe_config", {}))
    probes.from_cache = True
    return probes


def prepare_probing(dataset: str = "mnist-5k", *, profile: str | None = None, seed: int = 0,
                    subset_per_class: int = 50, progress: bool = True) -> ProbingSetup:
    """Train (or load) M0, pick X_u (``subset_per_class`` per class of Du) and fine-tune M on it.

    Section 5.2: "we fine-tune the pre-trained model on a sub-training dataset X_u of D_u ... with
    around 50 samples per class". Uses the pipeline's fine-tuning schedule (lr, batch 128, epochs).

    Used by chapter 4.
    """
    if subset_per_class < 1:
        raise CourseError(f"subset_per_class must be at least 1; got {subset_per_class}.")
    pipe = prepare_pipeline(dataset, profile=profile, seed=seed, progress=progress)
    if pipe.public.kind != "image":
        raise CourseError(f"Chapter 4's probing attack works on image datasets; {dataset!r} is tabular.")
    subset = per_class_subset(pipe.private, subset_per_class, seed=seed)
    deployed = pipe.finetune_from_pretrained(subset)
    metrics = {"pretrained_test_accuracy": pipe.metrics.get("pretrained_test_accuracy"),
               "deployed_test_accuracy": accuracy(deployed, pipe.test),
               "subset_size": len(subset), "subset_class_counts": subset.class_counts()}
    return ProbingSetup(pipe, subset, deployed, subset_per_class, seed, metrics)


# --------------------------------------------------------------------------- the full experiment

@dataclass
class LabelInferenceResult:
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

    def accuracy(self, unlearning: str, fraction: float, *, api: str = "probs", probes_per_class: int | None = None) -> float:
        """Accuracy of one row of the table (default: the full probe budget)."""
        m = probes_per_class or self.config["probes_per_class"]
        for r in self.rows:
            if (r["api"], r["unlearning"], r["fraction"]) == (api, unlearning, float(fraction)) and \
                    (api == "labels" or r["probes_per_class"] == m):
                return r["accuracy"]
        raise CourseError(f"No row for api={api}, unlearning={unlearning}, p_u={fraction}, m={m}.")

    def table(self):
        """Table 3's analogue: inferred class for every unlearned class id, and the accuracy."""
        import pandas as pd

        out = []
        for r in self.rows:
            row = {"API": r["api"], "probes/class": r["probes_per_class"] if r["api"] == "probs" else "-",
                   "unlearning": r["unlearning"], "p_u": r["fraction"]}
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

        fractions = self.config["fractions"]
        m = self.config["probes_per_class"]
        n_top = len(fractions)
        n_bottom = max(1, len(self.multi) // 2)
        fig, axes = plt.subplots(2, max(n_top, n_bottom), figsize=(4.2 * max(n_top, n_bottom), 6.2), squeeze=False)
        width = 0.4
        n_classes = len(next(iter(self.betas.values()))[0]) if self.betas else 0
        for j, frac in enumerate(fractions):
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


def _key(api: str, m: int, method: str, fraction: float) -> str:
    return f"{api}/m={m}/{method}/p_u={float(fraction)}"


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

    total = len(UNLEARNING_METHODS) * len(cfg.fractions) * k_classes + len(UNLEARNING_METHODS) * len(cfg.multi_classes)
    bar = tqdm(total=total, desc="unlearn + probe", disable=not progress, leave=False)
    for method in UNLEARNING_METHODS:
        for frac in cfg.fractions:
            inferred = {m: [] for m in probe_sets}
            beta_rows = {m: [] for m in probe_sets}
            lo_inferred, lo_beta = [], []
            for c in range(k_classes):
                unlearned_model = setup.unlearn([c], frac, method)
                unlearned = setup.api(unlearned_model, name="unlearned")
                for m, ps in probe_sets.items():
                    res = probe_unlearned(original, unlearned, ps)
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
                rows.append({"api": "probs", "probes_per_class": m, "unlearning": method, "fraction": float(frac),
                             "inferred": inferred[m], "accuracy": acc})
                betas[_key("probs", m, method, frac)] = beta_rows[m]
            if boundary is not None:
                acc = float(np.mean([i == c for c, i in enumerate(lo_inferred)]))
                rows.append({"api": "labels", "probes_per_class": None, "unlearning": method,
                             "fraction": float(frac), "inferred": lo_inferred, "accuracy": acc})
                betas[_key("labels", 0, method, frac)] = lo_beta
        for classes in cfg.multi_classes:
            classes = [int(c) for c in classes if int(c) < k_classes]
            unlearned_model = setup.unlearn(classes, 1.0, method)
            res = probe_unlearned(original, setup.api(unlearned_model, name="unlearned"), probes, k=len(classes))
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
class InferLabelResult:
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
    fraction: float
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


def run_infer_label(dataset: str = "mnist-5k", *, unlearning: str = "approximate", forget_classes=None,
                    all_classes: bool = False, fraction: float = 1.0, probes_per_class: int | None = None,
                    probe_method: str = "nes", api: str = "probs", profile: str | None = None, seed: int = 0,
                    probe_config: ProbeConfig | None = None, label_only_config: LabelOnlyConfig | None = None,
                    use_cache: bool = True, progress: bool = True) -> InferLabelResult:
    """Unlearn ``forget_classes`` (top-K when several) or, with ``all_classes``, each class in turn,
    and infer the unlearned class(es) through a ``api`` (``"probs"`` or ``"labels"``) black-box API.

    Used by ``course-lib infer-label`` and chapter 4.
    """
    start = time.perf_counter()
    check_choice(unlearning, UNLEARNING_METHODS, "unlearning method")
    check_choice(api, API_OUTPUTS, "API output")
    check_choice(probe_method, PROBE_METHODS, "probe method")
    check_range(float(fraction), 0.0, 1.0, "--fraction (the unlearned share p_u)", low_open=True)
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
        model_u = setup.unlearn(classes, fraction, unlearning)
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
    return InferLabelResult(dataset=dataset, profile=prof.name, seed=seed, unlearning=unlearning,
                            fraction=float(fraction), api=api, probe_method=probe_method if api == "probs" else None,
                            probes_per_class=m if api == "probs" else None, cases=cases, accuracy=acc,
                            queries=queries, seconds=round(time.perf_counter() - start, 2))
