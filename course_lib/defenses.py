"""Defenses against unlearning inversion (Section 7 and Section 9 of the inversion paper).

The model developer post-processes the unlearned model M_u before it is released, so that the
difference ``theta - theta_u`` that the attacks of chapters 2-4 read no longer carries the removed
sample. Every defense here has the same shape::

    defended = defense(original, unlearned, strength, *, seed=0, ...)

``original`` is the deployed model M (weights ``theta``), ``unlearned`` is M_u (``theta_u``),
``strength`` is the defense's one knob, and the result is a *new* model (the inputs are never
modified). The server or user then attacks the pair (M, defended) exactly as it attacked (M, M_u).

``obfuscation`` (strength = sigma)
    DP-SGD-style parameter obfuscation: clip the unlearning gradient to norm C = 1.2 and add
    Gaussian noise of variance sigma to it (the paper's reading; see :func:`obfuscate`).
``pruning`` (strength = p)
    Magnitude pruning: zero the share p of the smallest-magnitude weights of M_u
    (``torch.nn.utils.prune``).
``finetune`` (strength = lr)
    Fine-tune M_u on a small additional data set (100 samples in the paper) with learning rate lr.
``label-only`` (strength = 1 on, 0 off)
    Section 9: the parameters are left alone and the prediction API answers with the predicted
    label instead of the probability vector. The returned model is an unchanged copy; the
    registry entry says ``api="labels"`` so that experiments wrap it in a label-only black box.

Every defense is registered in :data:`DEFENSES` under its name; :func:`apply_defense` looks one
up by name, and :func:`register_defense` lets a learner add their own (chapter 6, exercise).
Used by chapter 6 ("Defending the unlearning pipeline") and ``course-lib defend``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from .cache import clone_model
from .data import Dataset
from .errors import CourseError, check_choice, check_range
from .registry import Registry
from .train import accuracy, finetune

#: The clipping norm of parameter obfuscation (the paper follows the Opacus tutorial: C = 1.2).
DEFAULT_CLIP_NORM = 1.2


# --------------------------------------------------------------------------- helpers

def _check_pair(original: nn.Module, unlearned: nn.Module) -> None:
    """Raise a CourseError unless the two models have parameters of the same shapes."""
    a = [p.shape for p in original.parameters()]
    b = [p.shape for p in unlearned.parameters()]
    if a != b:
        raise CourseError("The original and the unlearned model must have the same architecture "
                          "(their parameter shapes differ). Pass the deployed model M and its unlearned "
                          "version M_u.")


def _check_strength(strength, low: float, high: float, what: str, *, high_open: bool = False) -> float:
    try:
        value = float(strength)
    except (TypeError, ValueError):
        raise CourseError(f"{what} must be a number; got {strength!r}.") from None
    if math.isnan(value):
        raise CourseError(f"{what} must be a number; got NaN.")
    return check_range(value, low, high, what, high_open=high_open)


def unlearning_update(original: nn.Module, unlearned: nn.Module) -> list[torch.Tensor]:
    """``theta_u - theta``, one tensor per parameter (same shapes as ``model.parameters()``).

    For approximate unlearning this is ``+(eta m / b) * sum_i g_i``, the scaled gradient of the
    removed samples (see the sign convention of :mod:`course_lib.unlearn.paper`).
    """
    _check_pair(original, unlearned)
    return [(pu.detach() - p.detach().to(pu.device)) for p, pu in zip(original.parameters(), unlearned.parameters())]


def clip_update(update: list[torch.Tensor], clip_norm: float, *, scope: str = "global") -> list[torch.Tensor]:
    """Scale ``update`` down so that its L2 norm is at most ``clip_norm`` (DP-SGD clipping).

    ``scope="global"`` (default, Opacus' flat clipping) treats all tensors as one vector:
    ``u * min(1, C / ||u||)``. ``scope="per-tensor"`` clips every tensor to ``C`` on its own.
    Returns new tensors; an update already inside the ball is returned unchanged (copied).
    """
    check_choice(scope, ("global", "per-tensor"), "clipping scope")
    if clip_norm <= 0:
        raise CourseError(f"The clipping norm C must be positive; got {clip_norm}.")
    if scope == "global":
        norm = torch.sqrt(sum((u.double() ** 2).sum() for u in update))
        factor = min(1.0, clip_norm / max(float(norm), 1e-30))
        return [u * factor for u in update]
    out = []
    for u in update:
        n = float(u.double().norm())
        out.append(u * min(1.0, clip_norm / max(n, 1e-30)))
    return out


# --------------------------------------------------------------------------- the defenses

NOISE_READINGS = ("variance", "std")
OBFUSCATION_SPACES = ("gradient", "parameters")


def obfuscate(original: nn.Module, unlearned: nn.Module, strength: float, *, seed: int = 0,
              clip_norm: float = DEFAULT_CLIP_NORM, scope: str = "global", space: str = "gradient",
              step_scale: float | None = None, noise: str = "variance") -> nn.Module:
    """Parameter obfuscation (Section 7), as DP-SGD: clip the unlearning gradient by C and add Gaussian noise.

    The paper: the developer "clips the gradient used for unlearning the samples by C and adds
    random noise following the Gaussian distribution of variance sigma" (C = 1.2, sigma in {0.001,
    0.003, 0.005, 0.007}). With ``space="gradient"`` (the paper's reading, default) the unlearning
    update is turned back into the gradient it applied, ``g = (theta_u - theta) / s`` with the step
    ``s = eta m / b`` of eq. (13) (``step_scale``), and

        theta_d = theta + s * (clip_C(g) + N(0, sigma I))                      (noise variance sigma)

    so the noise and the bound act where the paper puts them, on the gradient, and reach the weights
    scaled by ``s``. For exact unlearning there is no single gradient; ``g`` is then the update's
    equivalent gradient. ``noise="std"`` reads ``sigma`` as the standard deviation instead (the
    other common reading of DP-SGD's sigma). ``space="parameters"`` (the course's earlier reading)
    clips the update ``theta_u - theta`` itself by C and adds the noise to the weights directly; with
    the paper's grid that noise is far larger than the update and leaves nothing to recover.

    Parameters
    ----------
    original, unlearned:
        M (``theta``) and M_u (``theta_u``), same architecture; neither is modified.
    strength:
        sigma >= 0 (0 = clipping only).
    seed:
        Seeds the noise (the same seed gives the same defended model).
    clip_norm:
        C, the L2 bound (default 1.2, the Opacus tutorial's value the paper follows).
    scope:
        ``"global"`` (the whole vector, Opacus' flat clipping) or ``"per-tensor"`` clipping.
    space:
        ``"gradient"`` (needs ``step_scale``) or ``"parameters"``.
    step_scale:
        ``s = eta m / b`` (:func:`course_lib.unlearn.paper.approximate_step`).
    noise:
        ``"variance"`` or ``"std"``: how ``sigma`` is read.

    Returns
    -------
    A new model: M's architecture and buffers (batch-norm statistics) of M_u, obfuscated parameters.
    """
    sigma = _check_strength(strength, 0.0, 1.0, "The obfuscation noise sigma (obfuscation strength)")
    check_choice(space, OBFUSCATION_SPACES, "obfuscation space")
    check_choice(noise, NOISE_READINGS, "noise reading")
    if space == "gradient":
        if step_scale is None or not step_scale > 0:
            raise CourseError("Obfuscation in gradient space needs step_scale = eta m / b > 0 (the unlearning step "
                              "of eq. 13; course_lib.unlearn.paper.approximate_step(pipeline)).")
        scale = float(step_scale)
    else:
        scale = 1.0
    std = math.sqrt(sigma) if noise == "variance" else sigma
    gradient = [u / scale for u in unlearning_update(original, unlearned)]
    clipped = clip_update(gradient, clip_norm, scope=scope)
    defended = clone_model(unlearned)
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for p_d, p0, g in zip(defended.parameters(), original.parameters(), clipped):
            n = torch.randn(p_d.shape, generator=gen, dtype=torch.float64) * std
            step = (g.double().to(n.device) + n) * scale
            p_d.copy_(p0.detach().to(p_d.device) + step.to(p_d.device, p_d.dtype))
    defended.eval()
    return defended


def clipping_binds(original: nn.Module, unlearned: nn.Module, clip_norm: float = DEFAULT_CLIP_NORM, *,
                   step_scale: float | None = None) -> bool:
    """Whether clipping at ``clip_norm`` shortens this unlearning gradient (or update, without ``step_scale``)."""
    scale = float(step_scale) if step_scale else 1.0
    norm = math.sqrt(sum(float((u.double() / scale).pow(2).sum()) for u in unlearning_update(original, unlearned)))
    return norm > clip_norm


def prunable_weights(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """The ``(module, "weight")`` pairs that pruning acts on: every Conv and Linear weight.

    Biases and batch-norm scales are left alone, as in the pruning method the paper cites
    (Zhu & Gupta 2017, ref. [51]), which prunes the weight matrices of conv and fully-connected layers.
    """
    return [(m, "weight") for m in model.modules()
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))]


PRUNING_SPACES = ("parameters", "update")


def prune_model(original: nn.Module, unlearned: nn.Module, strength: float, *, seed: int = 0,
                scope: str = "global", space: str = "parameters") -> nn.Module:
    """Model pruning (Section 7): zero the share ``p`` of the smallest-magnitude weights of M_u.

    ``space="parameters"`` (default) is the paper's defense, described below. ``space="update"``
    is the course's reading (an addition, as gradient pruning in Zhu et al.'s deep-leakage study):
    the share ``p`` of the smallest-magnitude entries of the unlearning update u = theta_u - theta
    (over every parameter) is set to 0 and M_d = theta + pruned u. It acts at the scale of the
    update the attacker reads; the paper's pruning of the weights themselves moves theta_d - theta
    by at least the smallest weight, orders of magnitude more than a one-sample update.

    Uses ``torch.nn.utils.prune.l1_unstructured`` on every conv and linear weight
    (:func:`prunable_weights`), then makes the pruning permanent (``prune.remove``), so the
    result is an ordinary model whose pruned weights are exactly 0.

    Parameters
    ----------
    original:
        M; not used by the defense itself (kept for the shared signature) apart from the
        architecture check.
    unlearned:
        M_u, the model to prune (not modified).
    strength:
        p in [0, 1): the share of weights removed (paper: {0.7, 0.8, 0.9}). 0 = nothing pruned.
    seed:
        Unused (magnitude pruning is deterministic); kept for the shared signature.
    scope:
        ``"global"`` (default: one magnitude threshold over all layers,
        ``prune.global_unstructured``, the paper's "p proportion of the least significant
        parameters in the model") or ``"layer"`` (every layer pruned to the same sparsity p, as
        in Zhu & Gupta's schedule). On the small ConvNet, per-layer pruning costs much more
        accuracy: it strips the first convolution (only 9 weights per filter) as hard as the big ones.

    Returns
    -------
    A new model with ``round(p * n)`` zeros among all ``n`` prunable weights (``"global"``), or
    among each layer's weights (``"layer"``).
    """
    p = _check_strength(strength, 0.0, 1.0, "The pruning share p (pruning strength)", high_open=True)
    check_choice(scope, ("layer", "global"), "pruning scope")
    check_choice(space, PRUNING_SPACES, "pruning space")
    _check_pair(original, unlearned)
    defended = clone_model(unlearned)
    if space == "update":
        update = unlearning_update(original, unlearned)
        flat = torch.cat([u.reshape(-1) for u in update])
        k = int(round(p * flat.numel()))
        keep = torch.ones(flat.numel(), dtype=torch.bool, device=flat.device)
        if k > 0:
            keep[torch.topk(flat.abs(), k, largest=False, sorted=False).indices] = False
        with torch.no_grad():
            offset = 0
            for p_d, p0, u in zip(defended.parameters(), original.parameters(), update):
                mask = keep[offset:offset + u.numel()].view_as(u)
                p_d.copy_(p0.detach().to(p_d.device) + torch.where(mask, u, torch.zeros_like(u)).to(p_d.device))
                offset += u.numel()
        defended.eval()
        return defended
    targets = prunable_weights(defended)
    if not targets:
        raise CourseError("This model has no conv or linear weights to prune.")
    if p > 0:
        orders = [list(module._parameters) for module, _ in targets]
        if scope == "global":
            torch_prune.global_unstructured(targets, pruning_method=torch_prune.L1Unstructured, amount=p)
        else:
            for module, name in targets:
                torch_prune.l1_unstructured(module, name=name, amount=p)
        for (module, name), order in zip(targets, orders):
            torch_prune.remove(module, name)
            # prune.remove re-registers the weight after the bias; restore the original order so that
            # model.parameters() lines up with the undefended model's (the attacks pair them by position)
            module._parameters = type(module._parameters)((k, module._parameters[k]) for k in order)
    _check_pair(unlearned, defended)
    defended.eval()
    return defended


def finetune_model(original: nn.Module, unlearned: nn.Module, strength: float, *, seed: int = 0,
                   data: Dataset | None = None, epochs: int = 5, batch_size: int = 25,
                   progress: bool = False) -> nn.Module:
    """Fine-tuning (Section 7): train M_u further on a small additional data set with learning rate lr.

    The paper fine-tunes on "an additional dataset of 100 samples" without giving the schedule;
    the course uses the pipeline's fine-tuning loop (:func:`course_lib.train.finetune`: plain SGD,
    constant lr, frozen batch-norm statistics) for ``epochs`` epochs of mini-batches of
    ``batch_size``. The experiments draw the 100 samples from the public split D0, which never
    contains the removed samples and is disjoint from the validation (test) split.

    Parameters
    ----------
    original:
        M; only checked for the architecture (shared signature).
    unlearned:
        M_u (not modified).
    strength:
        lr in [0, 1] (paper: {1e-4, 5e-4, 1e-3, 5e-3, 1e-2}); 0 leaves the weights unchanged.
    seed:
        Seeds the mini-batch order.
    data:
        The additional samples (required).
    epochs, batch_size:
        The fine-tuning schedule (default 5 epochs of 4 batches of 25: 20 SGD steps on 100 samples).
        Batch-norm statistics stay frozen, so the conv weights are not scale-normalised and a
        large lr (1e-2) can make these steps diverge: that is a real utility cost, not a bug.
    """
    lr = _check_strength(strength, 0.0, 1.0, "The fine-tuning learning rate lr (fine-tuning strength)")
    _check_pair(original, unlearned)
    if data is None or len(data) == 0:
        raise CourseError("The fine-tuning defense needs additional samples: pass data=<a Dataset> "
                          "(the experiments use 100 samples of the public split D0).")
    if epochs < 1 or batch_size < 1:
        raise CourseError(f"epochs and batch_size of the fine-tuning defense must be >= 1; got {epochs}, {batch_size}.")
    defended = clone_model(unlearned)
    if lr == 0:
        defended.eval()
        return defended
    return finetune(defended, data.astype(next(defended.parameters()).dtype), epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                    progress=progress, desc="fine-tuning defense")


def label_only(original: nn.Module, unlearned: nn.Module, strength: float = 1, *, seed: int = 0) -> nn.Module:
    """Label-only answers (Section 9): the weights are not touched, the API returns labels only.

    The defense lives in the serving API, not in the parameters, which is why it costs no
    utility. This function returns an unchanged copy of M_u; its registry entry carries
    ``api="labels"`` and the experiments wrap both models in a label-only black box
    (:class:`course_lib.attacks.blackbox.BlackBoxAPI` with ``output="labels"``) when ``strength`` is 1.

    ``strength`` is 1 (labels only) or 0 (probabilities, i.e. no defense).
    """
    value = _check_strength(strength, 0.0, 1.0, "The label-only strength (1 = labels only, 0 = off)")
    if value not in (0.0, 1.0):
        raise CourseError(f"The label-only defense is on (1) or off (0); got {strength}.")
    _check_pair(original, unlearned)
    defended = clone_model(unlearned)
    defended.eval()
    return defended


# --------------------------------------------------------------------------- registry

@dataclass(frozen=True)
class Defense:
    """A registered defense.

    Attributes
    ----------
    name:
        Registry and CLI name.
    function:
        ``function(original, unlearned, strength, *, seed, **options) -> defended model``.
    parameter:
        The knob's name as the paper writes it (``"sigma"``, ``"p"``, ``"lr"``).
    paper_strengths:
        The grid of Table 4 (weakest first).
    api:
        ``"probs"`` when the defended model is served with probability vectors, ``"labels"``
        when the defense is the label-only API.
    needs_data:
        True when ``function`` needs ``data=`` (the fine-tuning samples).
    description:
        One line for tables and ``--help``.
    """

    name: str
    function: Callable[..., nn.Module]
    parameter: str
    paper_strengths: tuple[float, ...]
    api: str = "probs"
    needs_data: bool = False
    description: str = ""
    options: dict = field(default_factory=dict)


#: Every defense by name (chapter 6; a learner adds one with :func:`register_defense`).
DEFENSES: Registry[Defense] = Registry("defense", hint="Add your own with course_lib.defenses.register_defense.")


def register_defense(defense: Defense) -> Defense:
    """Add ``defense`` to :data:`DEFENSES` (replacing one of the same name) and return it."""
    return DEFENSES.register(defense.name, defense, description=defense.description)


register_defense(Defense("obfuscation", obfuscate, "sigma", (0.001, 0.003, 0.005, 0.007),
                         description="clip the unlearning gradient to norm C=1.2, add Gaussian noise of variance sigma"))
register_defense(Defense("pruning", prune_model, "p", (0.7, 0.8, 0.9),
                         description="zero the share p of smallest-magnitude conv/linear weights"))
register_defense(Defense("finetune", finetune_model, "lr", (1e-4, 5e-4, 1e-3, 5e-3, 1e-2), needs_data=True,
                         description="fine-tune the unlearned model on 100 additional samples with learning rate lr"))
register_defense(Defense("label-only", label_only, "on", (1.0,), api="labels",
                         description="answer queries with the predicted label only (weights unchanged)"))

#: The defenses that change the parameters (those evaluated against feature recovery).
PARAMETER_DEFENSES = ("obfuscation", "pruning", "finetune")


def get_defense(name: str) -> Defense:
    """The registered :class:`Defense` called ``name`` (CourseError listing the names otherwise)."""
    return DEFENSES.get(name)


def apply_defense(name: str, original: nn.Module, unlearned: nn.Module, strength: float, *, seed: int = 0,
                  **options) -> nn.Module:
    """Look up defense ``name`` and apply it: ``get_defense(name).function(original, unlearned, strength, seed=seed, ...)``."""
    defense = get_defense(name)
    return defense.function(original, unlearned, strength, seed=seed, **{**defense.options, **options})


def validation_accuracy(model: nn.Module, validation: Dataset) -> float:
    """Share of ``validation`` that ``model`` classifies correctly (0..1), in the model's precision."""
    return accuracy(model, validation.astype(next(model.parameters()).dtype))


def accuracy_ratio(defended: nn.Module, unlearned: nn.Module, validation: Dataset) -> float:
    """Utility of a defense (Section 7): ``acc(defended) / acc(unlearned)`` on ``validation``.

    1.0 = no utility lost; the paper's Table 4 reports it averaged over the removed samples.
    It can exceed 1 (fine-tuning may improve the model). Chapter 6.
    """
    base = validation_accuracy(unlearned, validation)
    if not base > 0:
        raise CourseError("The undefended unlearned model has zero validation accuracy; the ratio is undefined.")
    return validation_accuracy(defended, validation) / base


def sparsity(model: nn.Module) -> float:
    """Share of exactly-zero entries among the prunable weights of ``model`` (0..1)."""
    weights = [m.weight.detach() for m, _ in prunable_weights(model)]
    total = sum(w.numel() for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros / max(total, 1)
