"""Training loops and the inversion paper's pipeline (Section 4.1).

The model developer

1. pre-trains M0 on the public split D0 (80 % of the training data): SGD with weight decay 5e-4
   and a learning rate decayed linearly to 0 over the epochs (the paper: 0.1 over 120 epochs, the
   ``full`` profile). The paper states neither momentum nor batch size: the course's choices are
   momentum 0.9 and the profile's batch size (``Profile.pretrain_momentum``,
   ``pretrain_batch_size``), and the CPU profiles start at 0.05 for their few epochs;
2. fine-tunes M0 on the private split Du (20 %) to get the deployed model M: plain SGD, batch 128,
   learning rate 1e-3, a few epochs.

Fine-tuning keeps batch-norm statistics frozen (``bn_mode="eval"``), the usual practice when a
pre-trained network serves as a feature extractor; it also makes each sample's contribution to
the update its own gradient at eval mode, which is what the unlearning methods and the white-box
attack of chapter 3 compute.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .threads import adapt as adapt_threads
from . import data as data_mod
from .cache import cached_model, clone_model
from .config import Profile, get_device, get_profile, seed_everything
from .data import Dataset
from .errors import CourseError
from .models import build_model, default_model_for


def set_bn_mode(model: nn.Module, bn_mode: str) -> None:
    """Put ``model`` in train mode, with batch-norm layers in eval mode when ``bn_mode == "eval"``."""
    model.train()
    if bn_mode == "eval":
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def train_model(model: nn.Module, data: Dataset, *, epochs: int, lr: float, batch_size: int,
                momentum: float = 0.9, weight_decay: float = 5e-4, schedule: str = "linear",
                bn_mode: str = "train", seed: int = 0, device: torch.device | None = None,
                sign: float = 1.0, loss_fn=None, penalty=None, after_step=None,
                progress: bool = True, desc: str = "train") -> nn.Module:
    """Train ``model`` in place with SGD on the cross-entropy (times ``sign``); return it in eval mode.

    The one SGD loop of the course: pre-training, fine-tuning, retraining, shadow models and the
    training-based unlearning methods all run it.

    Parameters
    ----------
    data:
        Training samples ``x`` (N, ...) in [0, 1] and labels ``y`` (N,).
    epochs, lr, batch_size, momentum, weight_decay:
        SGD settings. The last batch of an epoch may be smaller.
    schedule:
        ``"linear"`` decays the learning rate linearly from ``lr`` to 0 over all steps
        (the paper's pre-training); ``"constant"`` keeps it.
    bn_mode:
        ``"train"`` updates batch-norm statistics; ``"eval"`` freezes them (fine-tuning).
    seed:
        Seeds the order of the mini-batches (one permutation per epoch).
    sign:
        ``+1`` minimises the loss, ``-1`` maximises it (gradient ascent, chapter 5).
    loss_fn:
        Optional ``loss_fn(logits, labels) -> scalar`` replacing the cross-entropy (``sign`` still applies).
    penalty:
        Optional ``penalty(model, step, total_steps) -> scalar tensor`` added to the loss (l1-sparse).
    after_step:
        Optional ``after_step(model)`` called after every optimiser step (SalUn's hard mask, GA's stop).
    """
    if schedule not in ("linear", "constant"):
        raise CourseError(f"Unknown schedule {schedule!r}; choose 'linear' or 'constant'.")
    if epochs < 0 or lr < 0 or batch_size <= 0:
        raise CourseError(f"epochs and lr must be >= 0 and batch_size > 0; got {epochs}, {lr}, {batch_size}.")
    device = device or next(model.parameters()).device
    model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    n = len(data)
    total = epochs * max(1, -(-n // batch_size))
    gen = torch.Generator().manual_seed(int(seed))
    step = 0
    bar = tqdm(total=total, desc=desc, disable=not progress or total == 0, leave=False)
    try:
        for _ in range(epochs):
            set_bn_mode(model, bn_mode)
            perm = torch.randperm(n, generator=gen)
            for start in range(0, n, batch_size):
                idx = perm[start:start + batch_size]
                xb, yb = data.x[idx].to(device), data.y[idx].to(device)
                adapt_threads()
                logits = model(xb)
                loss = sign * (F.cross_entropy(logits, yb) if loss_fn is None else loss_fn(logits, yb))
                if penalty is not None:
                    loss = loss + penalty(model, step, total)
                if not torch.isfinite(loss):
                    raise CourseError(f"{desc} diverged (the loss became {loss.item()}) at step {step}; "
                                      "lower its learning rate or its number of epochs.")
                if schedule == "linear":
                    for group in opt.param_groups:
                        group["lr"] = lr * (1.0 - step / max(1, total))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if after_step is not None:
                    after_step(model)
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    finally:
        bar.close()
        model.eval()
    return model


def finetune(model: nn.Module, data: Dataset, *, epochs: int, lr: float = 1e-3, batch_size: int = 128,
             momentum: float = 0.0, weight_decay: float = 0.0, seed: int = 0,
             device: torch.device | None = None, progress: bool = True, desc: str = "fine-tune") -> nn.Module:
    """The paper's fine-tuning step (M0 -> M on Du): plain SGD, constant lr, frozen BN statistics.

    Used both to produce the deployed model M and, on Du without the removed samples, by exact
    unlearning (retraining from M0 with the same schedule).
    """
    return train_model(model, data, epochs=epochs, lr=lr, batch_size=batch_size, momentum=momentum,
                       weight_decay=weight_decay, schedule="constant", bn_mode="eval", seed=seed,
                       device=device, progress=progress, desc=desc)


@torch.no_grad()
def predict_proba(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Softmax outputs ``(N, num_classes)`` of ``model`` in eval mode (on the CPU)."""
    model.eval()
    device = next(model.parameters()).device
    out = [F.softmax(model(x[i:i + batch_size].to(device)), dim=1).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.empty(0)


def accuracy(model: nn.Module, data: Dataset, batch_size: int = 512) -> float:
    """Share of ``data`` that ``model`` classifies correctly (0..1)."""
    if len(data) == 0:
        return float("nan")
    pred = predict_proba(model, data.x, batch_size).argmax(1)
    return float((pred == data.y).float().mean())


# --------------------------------------------------------------------------- the pipeline

@dataclass
class Pipeline:
    """Everything the model developer has after Section 4.1's training.

    Attributes
    ----------
    public, private, test:
        D0 (80 % of the training split), Du (20 %), and the test split.
    pretrained:
        M0, trained on D0.
    deployed:
        M, M0 fine-tuned on Du (``finetune_epochs`` epochs, batch 128, lr 1e-3).
    metrics:
        ``pretrained_test_accuracy``, ``deployed_test_accuracy`` and whether each came from cache.
    cache_paths:
        Checkpoint files of M0 and M.
    """

    dataset: str
    model_name: str
    profile: Profile
    seed: int
    public: Dataset
    private: Dataset
    test: Dataset
    pretrained: nn.Module
    deployed: nn.Module
    finetune_epochs: int
    device: torch.device
    metrics: dict = field(default_factory=dict)
    cache_paths: dict = field(default_factory=dict)

    def new_model(self) -> nn.Module:
        """A fresh untrained model of the pipeline's architecture, on its device."""
        return build_model(self.model_name, self.public.input_shape, self.public.num_classes,
                           width=self.profile.width).to(self.device)

    def finetune_from_pretrained(self, data: Dataset, *, epochs: int | None = None, progress: bool = False,
                                 **kwargs) -> nn.Module:
        """Fine-tune a copy of M0 on ``data`` with the pipeline's schedule (used by exact unlearning)."""
        p = self.profile
        model = clone_model(self.pretrained)
        settings = dict(lr=p.finetune_lr, batch_size=p.finetune_batch_size, seed=self.seed)
        settings.update(kwargs)
        return finetune(model, data, epochs=self.finetune_epochs if epochs is None else epochs,
                        progress=progress, **settings)

    def summary(self) -> dict:
        return {
            "dataset": self.dataset, "model": self.model_name, "profile": self.profile.name,
            "seed": self.seed, "public_size": len(self.public), "private_size": len(self.private),
            "test_size": len(self.test), "finetune_epochs": self.finetune_epochs,
            **self.metrics, "cache_paths": {k: str(v) for k, v in self.cache_paths.items()},
        }


def prepare_pipeline(dataset: str = "mnist-5k", model: str | None = None, *, profile: str | Profile | None = None,
                     seed: int = 0, finetune_epochs: int | None = None, device: torch.device | str | None = None,
                     use_cache: bool = True, progress: bool = True) -> Pipeline:
    """Load ``dataset``, split it into D0/Du, and return M0 and M (cached by configuration).

    Parameters
    ----------
    dataset:
        A name accepted by :func:`course_lib.data.load`.
    model:
        ``convnet``, ``resnet18`` or ``mlp``; default ``mlp`` for tables and ``convnet`` for images.
    profile:
        Budget (see :mod:`course_lib.config`).
    seed:
        Seeds the D0/Du split, the initialisation and the batch order.
    finetune_epochs:
        Epochs of fine-tuning on Du (default: the profile's, 1).

    Used by every chapter; chapter 1 walks through it.
    """
    prof = get_profile(profile)
    device = torch.device(device) if isinstance(device, str) else (device or get_device())
    train_split = data_mod.load(dataset, "train")
    test_split = data_mod.load(dataset, "test")
    model_name = model or default_model_for(train_split.kind)
    public, private = data_mod.split_public_private(train_split, seed=seed)
    ft_epochs = prof.finetune_epochs if finetune_epochs is None else int(finetune_epochs)

    def build() -> nn.Module:
        seed_everything(seed)
        return build_model(model_name, train_split.input_shape, train_split.num_classes, width=prof.width).to(device)

    pre_config = {"stage": "pretrain", "dataset": dataset, "model": model_name, "seed": seed,
                  "width": prof.width, "epochs": prof.pretrain_epochs, "lr": prof.pretrain_lr,
                  "batch_size": prof.pretrain_batch_size, "momentum": prof.pretrain_momentum,
                  "weight_decay": prof.pretrain_weight_decay,
                  "schedule": "linear", "n_public": len(public)}

    def pretrain(m: nn.Module) -> dict:
        train_model(m, public, epochs=prof.pretrain_epochs, lr=prof.pretrain_lr,
                    batch_size=prof.pretrain_batch_size, momentum=prof.pretrain_momentum,
                    weight_decay=prof.pretrain_weight_decay, seed=seed, device=device, progress=progress,
                    desc=f"pre-train M0 on D0 ({dataset})")
        return {"test_accuracy": accuracy(m, test_split)}

    m0, m0_metrics, m0_path = cached_model("pretrained", pre_config, build, pretrain, data=(public,), use_cache=use_cache)

    ft_config = {"stage": "finetune", "pretrained": pre_config, "epochs": ft_epochs,
                 "lr": prof.finetune_lr, "batch_size": prof.finetune_batch_size, "momentum": 0.0,
                 "n_private": len(private)}

    def build_from_m0() -> nn.Module:
        return clone_model(m0)

    def do_finetune(m: nn.Module) -> dict:
        finetune(m, private, epochs=ft_epochs, lr=prof.finetune_lr, batch_size=prof.finetune_batch_size,
                 seed=seed, device=device, progress=progress, desc="fine-tune M on Du")
        return {"test_accuracy": accuracy(m, test_split)}

    m, m_metrics, m_path = cached_model("deployed", ft_config, build_from_m0, do_finetune, data=(private,),
                                     use_cache=use_cache)
    m0.eval()
    m.eval()
    metrics = {"pretrained_test_accuracy": m0_metrics["test_accuracy"],
               "deployed_test_accuracy": m_metrics["test_accuracy"],
               "pretrained_from_cache": m0_metrics["from_cache"],
               "deployed_from_cache": m_metrics["from_cache"]}
    return Pipeline(dataset, model_name, prof, seed, public, private, test_split, m0, m, ft_epochs,
                    device, metrics, {"pretrained": m0_path, "deployed": m_path})
