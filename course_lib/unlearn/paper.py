"""The two unlearning methods of the inversion paper (Appendix A), as the model developer runs them.

Both start from the pipeline of :mod:`course_lib.train`: M0 pre-trained on D0, and the deployed
model M = M0 fine-tuned on the training set Du (``train_set``) for ``epochs`` epochs of plain SGD
(learning rate ``lr``, batch size ``batch_size``).

Sign convention (used by every attack in the course)
----------------------------------------------------
Gradient descent *subtracts* a sample's gradient g = dL(f(x), y)/dtheta, so a model that saw the
sample sits at roughly ``-eta * g`` from one that did not. Hence the weight difference of eq. (2),
``theta - theta_u``, points along **minus** the removed samples' gradient, for both methods:

* approximate: theta_u = theta + (eta m / b) * sum_i g_i(M0)  =>  theta - theta_u = -(eta m / b) sum_i g_i;
* exact: theta includes the descent steps on the removed samples and theta_u does not
  =>  theta - theta_u ~= -eta * (their gradients along the training path).

:func:`course_lib.attacks.gradient_estimation.estimate_gradient` therefore returns
``-(theta - theta_u) = theta_u - theta`` as the estimate of +g, which the inversion attack matches.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..cache import clone_model
from ..data import Dataset
from ..errors import CourseError
from ..train import finetune


def summed_gradient(model: nn.Module, forget: Dataset) -> list[torch.Tensor]:
    """sum_i dL(f(x_i), y_i)/dtheta over the samples of ``forget``, at ``model`` in eval mode.

    Returns one tensor per parameter (same shapes as ``model.parameters()``).
    """
    if len(forget) == 0:
        raise CourseError("The forget set is empty: choose at least one sample to unlearn.")
    model.eval()
    device = next(model.parameters()).device
    params = [p for p in model.parameters()]
    loss = F.cross_entropy(model(forget.x.to(device)), forget.y.to(device), reduction="sum")
    return [g.detach() for g in torch.autograd.grad(loss, params)]


def approximate_unlearning(pretrained: nn.Module, deployed: nn.Module, forget: Dataset, *, lr: float = 1e-3,
                           epochs: int = 1, batch_size: int = 128) -> nn.Module:
    """Single-gradient unlearning, eqs. (12)-(13) of the inversion paper (Appendix A).

    M_u = M + (eta * m / b) * sum_{(x, y) in forget} dL(f_M0(x), y)/dM0

    Parameters
    ----------
    pretrained:
        M0, at which the removed samples' gradients are taken.
    deployed:
        M, the model to unlearn from (not modified).
    forget:
        The removed samples (any number; their gradients are summed, as each one contributed
        ``eta/b * g`` per epoch of fine-tuning).
    lr, epochs, batch_size:
        eta, m and b of the fine-tuning that produced M.

    Returns
    -------
    A new model M_u. ``theta(M) - theta(M_u) = -(eta m / b) * sum_i g_i``: minus the gradient.
    """
    if lr <= 0 or epochs <= 0 or batch_size <= 0:
        raise CourseError("lr, epochs and batch_size of approximate unlearning must be positive.")
    grads = summed_gradient(pretrained, forget)
    return add_scaled_gradient(deployed, grads, lr * epochs / batch_size)


def add_scaled_gradient(deployed: nn.Module, grads: list[torch.Tensor], scale: float, *,
                        only: set[str] | None = None) -> nn.Module:
    """A copy of ``deployed`` with ``scale * grads`` added to its parameters (eq. 13's update).

    ``grads`` holds one tensor per parameter, in ``deployed.parameters()`` order (as
    :func:`summed_gradient` returns them). ``only``: names (``named_parameters``) of the parameters
    to update; the others keep M's values (``None``: all). Chapter 4's anatomy of the update uses it
    to apply the classifier-head part and the feature part of the same update separately.
    """
    unlearned = clone_model(deployed)
    names = [n for n, _ in unlearned.named_parameters()]
    if only is not None and not set(only) <= set(names):
        raise CourseError(f"Unknown parameter names {sorted(set(only) - set(names))}; the model has {names}.")
    with torch.no_grad():
        for name, p, g in zip(names, unlearned.parameters(), grads):
            if only is None or name in only:
                p.add_(g.to(p.device), alpha=scale)
    unlearned.eval()
    return unlearned


def exact_unlearning(pretrained: nn.Module, retain: Dataset, *, epochs: int = 1, lr: float = 1e-3,
                     batch_size: int = 128, momentum: float = 0.0, seed: int = 0,
                     progress: bool = False) -> nn.Module:
    """Exact unlearning by retraining (Appendix A): fine-tune M0 on Du without the removed samples.

    ``retain`` is Du minus the forget set; use the *same* schedule (``epochs``, ``lr``,
    ``batch_size``, ``momentum``, ``seed``) that produced M, so the only difference between M and
    M_u is the removed samples (plus the batch composition that their absence shifts).
    """
    if len(retain) == 0:
        # Fine-tuning on nothing leaves M0 unchanged: the unlearned model is M0 itself.
        model = clone_model(pretrained)
        model.eval()
        return model
    return finetune(clone_model(pretrained), retain, epochs=epochs, lr=lr, batch_size=batch_size,
                    momentum=momentum, seed=seed, progress=progress, desc="exact unlearning (retrain)")


def effective_batch_size(train_size: int, batch_size: int) -> int:
    """The b of eq. (13) for a training set of ``train_size`` samples fine-tuned in batches of ``batch_size``.

    Eq. (13) scales the summed gradient by eta m / b because each sample entered one mini-batch of
    b samples per epoch, whose *mean* loss was descended. A training set smaller than the batch
    size (the paper's N = 4, 8, 16 with b = 128) is one batch of N samples, so each sample's step
    was eta / N: b is then N. Returns ``min(train_size, batch_size)``.
    """
    if train_size < 1 or batch_size < 1:
        raise CourseError(f"train_size and batch_size must be at least 1; got {train_size} and {batch_size}.")
    return min(int(train_size), int(batch_size))


def approximate_step(pipeline, train_size: int | None = None) -> float:
    """eta * m / b of eq. (13) for ``pipeline``'s fine-tuning schedule (lr, epochs, batch size).

    ``train_size``: the size of the set M was fine-tuned on (default: the private split Du); below
    the batch size, b is that size (:func:`effective_batch_size`).
    """
    prof = pipeline.profile
    n = len(pipeline.private) if train_size is None else int(train_size)
    return prof.finetune_lr * pipeline.finetune_epochs / effective_batch_size(n, prof.finetune_batch_size)


def unlearn_from_pipeline(pipeline, forget_indices, method: str, *, train_set: Dataset | None = None,
                          deployed: nn.Module | None = None) -> nn.Module:
    """Unlearn rows ``forget_indices`` of ``train_set`` (default: the pipeline's Du) from M.

    ``method`` is ``"approximate"`` or ``"exact"``. When ``train_set`` is not Du, pass the model
    fine-tuned on it as ``deployed`` (needed by ``approximate``). The schedule is the pipeline's.
    """
    train_set = pipeline.private if train_set is None else train_set
    deployed = pipeline.deployed if deployed is None else deployed
    prof = pipeline.profile
    idx = torch.as_tensor(forget_indices, dtype=torch.long).reshape(-1)
    if len(idx) == 0:
        raise CourseError("Choose at least one sample to unlearn.")
    if int(idx.max()) >= len(train_set) or int(idx.min()) < 0:
        raise CourseError(f"Sample index out of range: the training set has {len(train_set)} samples.")
    if method == "approximate":
        grads = summed_gradient(pipeline.pretrained, train_set.subset(idx))
        return add_scaled_gradient(deployed, grads, approximate_step(pipeline))
    if method == "exact":
        return exact_unlearning(pipeline.pretrained, train_set.without(idx), epochs=pipeline.finetune_epochs,
                                lr=prof.finetune_lr, batch_size=prof.finetune_batch_size, seed=pipeline.seed)
    raise CourseError(f"Unknown unlearning method {method!r}. Choose 'approximate' or 'exact'.")
