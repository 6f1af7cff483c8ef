"""One label-inference attack (``course-lib infer-label``, chapter 4): unlearn classes, probe, infer.

``run_label_attack(dataset, *, unlearning, forget_classes | all_classes, ...)`` -> :class:`LabelAttackResult`
unlearns the given classes (or each class in turn) from chapter 4's deployed model and infers them
through a probability or a label-only black-box API. Chapter 4's whole experiment (Table 3) is
:func:`course_lib.experiments.label_inference.run_label_inference`.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
from tqdm.auto import tqdm

from ..attacks.label_only import LabelOnlyConfig, probe_unlearned_labels
from ..attacks.probes import PROBE_METHODS, ProbeConfig
from ..attacks.unlearned_label import probe_unlearned
from ..config import get_profile
from ..data import load as data_load
from ..errors import CourseError, check_choice, check_range
from ..recipes import Result, recipe
from .label_inference import API_OUTPUTS, LabelInferenceConfig
from .probing_setup import UNLEARNING_METHODS, prepare_probing


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
