"""Chapter 1's demonstration: what changes when one sample is unlearned, exactly and approximately.

The model developer trains M0 -> M (:func:`course_lib.train.prepare_pipeline`), then unlearns one
sample of Du in the two ways of the inversion paper (Appendix A). We look at what the two
attackers of the threat model could see:

* the server (white-box): the weights of M and M_u, so the per-layer difference theta - theta_u;
* a user (black-box): the output probabilities of M and M_u on inputs of their choice, so the
  change in the output on the removed sample compared with the change on other samples.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..errors import CourseError
from ..recipes import Result, recipe
from ..train import Pipeline, predict_proba, prepare_pipeline
from ..unlearn.paper import unlearn_from_pipeline

UNLEARNING_METHODS = ("approximate", "exact")


def layer_differences(original: nn.Module, unlearned: nn.Module) -> pd.DataFrame:
    """Per-parameter-tensor L2 norm of theta - theta_u, and of theta, for two same-shaped models.

    Returns a DataFrame with one row per parameter tensor: ``layer``, ``numel``, ``diff_norm``,
    ``weight_norm`` and ``relative`` (= diff_norm / weight_norm). Used in chapter 1.
    """
    rows = []
    for (name, p), q in zip(original.named_parameters(), unlearned.parameters()):
        d = (p.detach().double() - q.detach().double()).norm().item()
        w = p.detach().double().norm().item()
        rows.append({"layer": name, "numel": p.numel(), "diff_norm": d, "weight_norm": w,
                     "relative": d / w if w > 0 else float("nan")})
    return pd.DataFrame(rows)


def output_change(original: nn.Module, unlearned: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    """How the outputs move from M to M_u on samples ``x`` ``(N, ...)`` with labels ``y`` ``(N,)``.

    Returns arrays of length N: ``l1`` = ||p_M(x) - p_Mu(x)||_1 (total change of the probability
    vector) and ``true_class_drop`` = p_M(x)[y] - p_Mu(x)[y] (confidence lost on the true class;
    positive means M_u is less sure). Used in chapter 1.
    """
    p, q = predict_proba(original, x), predict_proba(unlearned, x)
    idx = torch.arange(len(y))
    return {"l1": (p - q).abs().sum(1).double().numpy(),
            "true_class_drop": (p[idx, y] - q[idx, y]).double().numpy()}


def per_sample_gradient_cosines(model: nn.Module, directions: list[list[torch.Tensor]], data,
                                batch_size: int = 64) -> np.ndarray:
    """cos(g_i, d_k) for every sample i of ``data`` and direction k, g_i = dL(f(x_i), y_i)/dtheta at ``model``.

    ``directions`` is a list of K directions, each one tensor per parameter (e.g. theta_u - theta).
    Per-sample gradients are computed with ``torch.func`` (``vmap`` over ``grad``) in eval mode.
    Returns an array ``(N, K)``.
    Used in chapter 1 to ask: whose gradient does the weight change point along?
    """
    from torch.func import functional_call, grad, vmap

    model.eval()
    device = next(model.parameters()).device
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    flat_dirs = torch.stack([torch.cat([d.reshape(-1).to(device).float() for d in direction])
                             for direction in directions])  # (K, P)

    def loss_one(p, x, y):
        out = functional_call(model, (p, buffers), (x.unsqueeze(0),))
        return torch.nn.functional.cross_entropy(out, y.unsqueeze(0))

    per_sample = vmap(grad(loss_one), in_dims=(None, 0, 0))
    cosines = []
    for start in range(0, len(data), batch_size):
        xb = data.x[start:start + batch_size].to(device)
        yb = data.y[start:start + batch_size].to(device)
        g = per_sample(params, xb, yb)
        flat = torch.cat([g[k].reshape(len(xb), -1) for k in params], dim=1)
        cos = (flat @ flat_dirs.T) / (flat.norm(dim=1, keepdim=True) * flat_dirs.norm(dim=1).unsqueeze(0) + 1e-30)
        cosines.append(cos.cpu())
    return torch.cat(cosines).double().numpy()


@dataclass
class ThreatModelResult(Result):
    """Result of :func:`run_threat_model` (JSON-serialisable through :meth:`to_dict`)."""

    pipeline_summary: dict
    removed_index: int
    removed_label: int
    layers: dict = field(default_factory=dict)       # method -> per-layer DataFrame
    outputs: dict = field(default_factory=dict)      # method -> {removed: {...}, others: {...}}
    removed_image: torch.Tensor | None = None

    def table(self) -> pd.DataFrame:
        """One row per unlearning method: size of the weight change and of the output change."""
        rows = []
        for method in self.layers:
            lay, out = self.layers[method], self.outputs[method]
            rows.append({
                "unlearning": method,
                "||theta - theta_u||": float(np.sqrt((lay["diff_norm"] ** 2).sum())),
                "largest layer change": lay.loc[lay["diff_norm"].idxmax(), "layer"],
                "output L1 change, removed sample": out["removed"]["l1"],
                "output L1 change, other samples (median)": out["others"]["l1_median"],
                "removed sample's rank among Du (1 = changed most)": out["removed"]["rank_l1"],
                "true-class confidence drop, removed sample": out["removed"]["true_class_drop"],
                "cos(theta_u - theta, gradient), removed sample": out["removed"]["gradient_cosine"],
                "cos(theta_u - theta, gradient), best other sample": out["others"]["gradient_cosine_max"],
                "removed sample's rank by gradient cosine (1 = best)": out["removed"]["rank_cosine"],
            })
        return pd.DataFrame(rows).set_index("unlearning")

    def plot(self):
        """Left: per-layer ||theta - theta_u|| (log scale) for both methods. Right: the removed image."""
        import matplotlib.pyplot as plt

        fig, (ax, ax_img) = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [5, 1]})
        width = 0.4
        for k, method in enumerate(self.layers):
            lay = self.layers[method]
            ax.bar(np.arange(len(lay)) + (k - 0.5) * width, lay["diff_norm"], width=width, label=method)
        names = list(next(iter(self.layers.values()))["layer"])
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=75, fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("||theta - theta_u|| per tensor")
        ax.legend()
        ax.set_title("What the server sees: the weight change, layer by layer")
        if self.removed_image is not None:
            from ..viz import to_display

            ax_img.imshow(to_display(self.removed_image), cmap="gray", vmin=0, vmax=1)
            ax_img.set_title(f"removed sample\n(label {self.removed_label})", fontsize=9)
        ax_img.axis("off")
        fig.tight_layout()
        return fig

    def to_dict(self) -> dict:
        return {"pipeline": self.pipeline_summary, "removed_index": self.removed_index,
                "removed_label": self.removed_label,
                "layers": {m: df.to_dict(orient="records") for m, df in self.layers.items()},
                "outputs": self.outputs}


@recipe("threat-model", chapter="1", command="course-lib threat-model")
def run_threat_model(dataset: str = "mnist-5k", model: str | None = None, *, profile=None, seed: int = 0,
                     removed_index: int = 0, setup: Pipeline | None = None,
                     progress: bool = True) -> ThreatModelResult:
    """Train (or load) M0 -> M, unlearn sample ``removed_index`` of Du both ways, measure the change.

    For each method it records the per-layer weight difference (:func:`layer_differences`) and
    the output change on the removed sample against every other sample of Du
    (:func:`output_change`), including the removed sample's rank (1 = the sample whose output
    changed most), and how well the weight change theta_u - theta aligns with each sample's
    gradient at M0 (:func:`per_sample_gradient_cosines`), with the removed sample's rank.
    Used in chapter 1.
    """
    pipe = setup or prepare_pipeline(dataset, model, profile=profile, seed=seed, progress=progress)
    if not 0 <= removed_index < len(pipe.private):
        raise CourseError(f"removed_index must lie in [0, {len(pipe.private) - 1}] (the size of Du); "
                          f"got {removed_index}.")
    result = ThreatModelResult(pipe.summary(), removed_index, int(pipe.private.y[removed_index]),
                               removed_image=pipe.private.x[removed_index])
    unlearned_models = {m: unlearn_from_pipeline(pipe, [removed_index], m) for m in UNLEARNING_METHODS}
    directions = [[q.detach() - p.detach() for p, q in zip(pipe.deployed.parameters(), mu.parameters())]
                  for mu in unlearned_models.values()]
    all_cos = per_sample_gradient_cosines(pipe.pretrained, directions, pipe.private)
    for k, (method, unlearned) in enumerate(unlearned_models.items()):
        result.layers[method] = layer_differences(pipe.deployed, unlearned)
        change = output_change(pipe.deployed, unlearned, pipe.private.x, pipe.private.y)
        l1 = change["l1"]
        others = np.delete(l1, removed_index)
        cos = all_cos[:, k]
        result.outputs[method] = {
            "removed": {"l1": float(l1[removed_index]),
                        "true_class_drop": float(change["true_class_drop"][removed_index]),
                        "rank_l1": int((l1 > l1[removed_index]).sum() + 1),
                        "gradient_cosine": float(cos[removed_index]),
                        "rank_cosine": int((cos > cos[removed_index]).sum() + 1)},
            "others": {"l1_median": float(np.median(others)), "l1_max": float(others.max()),
                       "gradient_cosine_max": float(np.delete(cos, removed_index).max()),
                       "gradient_cosine_median": float(np.median(np.delete(cos, removed_index))),
                       "true_class_drop_median": float(np.median(np.delete(change["true_class_drop"],
                                                                           removed_index)))},
            "n_private": len(pipe.private),
        }
    return result
