"""Chapter 4's setting (Section 5.2 of the inversion paper): M0, the sub-training set X_u and M.

The developer fine-tunes M0 on a sub-training set X_u of Du with about ``subset_per_class``
(= 50) samples per class, giving the deployed model M, then unlearns a share ``p_u`` of one class
(or of several classes) with exact or approximate unlearning (:mod:`course_lib.unlearn.paper`).
The attacker's side only ever receives :class:`~course_lib.attacks.blackbox.BlackBoxAPI` objects
made by :meth:`ProbingSetup.api`.

``prepare_probing(dataset, *, profile, seed, subset_per_class)`` -> :class:`ProbingSetup`
``setup.probes(probes_per_class, method, config)``             probes (cached on disk by configuration)
``setup.unlearn(classes, forget_share, method)``               M_u
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import torch
from torch import nn

from ..attacks.blackbox import BlackBoxAPI
from ..attacks.label_only import BoundaryProbes, LabelOnlyConfig, build_boundary_probes
from ..attacks.probes import PROBE_METHODS, ProbeConfig, ProbeSet, build_probes
from ..cache import cache_lock, config_key, ensure_writable, read_verified, save_tensors
from ..config import cache_dir
from ..data import Dataset, per_class_subset
from ..errors import CacheCorruptError, CourseError, check_choice, check_range
from ..train import Pipeline, accuracy, prepare_pipeline
from ..unlearn.paper import unlearn_from_pipeline

UNLEARNING_METHODS = ("approximate", "exact")


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

    def forget_indices(self, classes, forget_share: float) -> torch.Tensor:
        """Indices into X_u of a random share ``forget_share`` of each class in ``classes`` (at least 1 each)."""
        check_range(float(forget_share), 0.0, 1.0, "The forget share p_u", low_open=True)
        gen = torch.Generator().manual_seed(self.seed + 7919)
        chosen = []
        for c in classes:
            if not 0 <= int(c) < self.num_classes:
                raise CourseError(f"Class {c} does not exist: this dataset has classes 0..{self.num_classes - 1}.")
            idx = torch.nonzero(self.subset.y == int(c)).flatten()
            n = max(1, int(round(forget_share * len(idx))))
            chosen.append(idx[torch.randperm(len(idx), generator=gen)[:n]])
        return torch.cat(chosen).sort().values

    def unlearn(self, classes, forget_share: float, method: str) -> nn.Module:
        """M_u: remove ``forget_share`` of each class in ``classes`` from M with ``method`` (Appendix A)."""
        check_choice(method, UNLEARNING_METHODS, "unlearning method")
        idx = self.forget_indices(classes, forget_share)
        return unlearn_from_pipeline(self.pipeline, idx, method, train_set=self.subset, deployed=self.deployed)

    def cache_config(self, kind: str, settings: dict) -> dict:
        """What identifies this setup (its models, X_u, the seed) plus ``settings``: the configuration
        that keys what is built on it (cached probes, the stored label-inference result)."""
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
        key_cfg = self.cache_config("probes", settings)
        key = config_key(key_cfg)
        path = cache_dir() / f"probes-{key}.safetensors"
        build = partial(build_probes, self.api(), num_classes=self.num_classes, input_shape=self.input_shape,
                        probes_per_class=probes_per_class, method=method, config=cfg, seed=seed, progress=progress)
        if not use_cache:
            return build()
        if not path.exists():
            ensure_writable(path.parent)
        with cache_lock(path):  # a process building the same probes now finishes first
            if path.exists():
                found = _load_probes(path, key)
                if found is not None:
                    return found
            ensure_writable(path.parent)
            probes = build()
            _save_probes(probes, path, key_cfg, key)
        return probes

    def boundary_probes(self, config: LabelOnlyConfig | None = None, *, progress: bool = True) -> BoundaryProbes:
        """Label-only boundary probes built on M through its label API (cheap; not cached)."""
        cfg = config or LabelOnlyConfig.for_profile(self.pipeline.profile.name)
        return build_boundary_probes(self.api(output="labels"), num_classes=self.num_classes,
                                     input_shape=self.input_shape, config=cfg, seed=self.seed, progress=progress)


def _save_probes(probes: ProbeSet, path, config: dict, key: str) -> None:
    tensors = {"x": probes.x, "target": probes.target, "probs": probes.probs,
               "reached": probes.reached.to(torch.uint8), "queries": probes.queries,
               "iterations": probes.iterations}
    meta = {"config": config, "method": probes.method, "seconds": probes.seconds,
            "num_classes": probes.num_classes, "probe_config": probes.config}
    save_tensors(tensors, path, meta, key=key)


def _load_probes(path, key: str) -> ProbeSet | None:
    """The cached probe set, or ``None`` when it belongs to another configuration (then rebuilt)."""
    found = read_verified(path, key)
    if found is None:
        return None
    t, meta = found
    try:
        probes = ProbeSet(x=t["x"], target=t["target"], probs=t["probs"], reached=t["reached"].bool(),
                          queries=t["queries"], iterations=t["iterations"], method=meta["method"],
                          seconds=float(meta["seconds"]), num_classes=int(meta["num_classes"]),
                          config=meta.get("probe_config", {}))
    except (KeyError, TypeError, ValueError) as exc:
        raise CacheCorruptError(f"The cached probe set {path} lacks {exc}. Delete it and its .json and run "
                                "again.") from exc
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
