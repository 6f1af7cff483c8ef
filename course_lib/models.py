"""The papers' architectures, for any input shape, channel count and number of classes.

``convnet``
    The 7-layer ConvNet of the inversion paper (Section 4.1): six 3x3 convolutions with batch
    normalisation and ReLU in three blocks (widths w, 2w | 2w, 4w | 4w, 4w; 2x2 max-pooling after
    the first two blocks, adaptive average pooling to 2x2 after the last) and one linear layer.
    The default image model of chapters 1, 4, 5 and 6.
``convnet-spatial``
    The same convolutions with 2x2 *average* pooling, and a classifier that reads the final
    spatial feature map (adaptively pooled to at most 8x8: 7x7 for MNIST, 8x8 for CIFAR, 2x2 for
    the 8x8 digits), as in Geiping et al.'s (2020) ConvNet. The default image model of the
    feature-recovery attack (chapter 3, ``course-lib recover``, chapter 6's recovery evaluation). The paper does not spell its ConvNet out, and the
    two choices decide the attack: ``convnet`` is nearly translation invariant, so the inversion
    on MNIST settles on superposed, shifted "ghost" copies of the digit (median 8.6 dB PSNR over
    8 removed digits at ``quick``), whereas ``convnet-spatial`` gives the digit back in place
    (median 21 dB).
``resnet18``
    ResNet-18 with a small-image stem (3x3 stride-1 first convolution, no max-pool), as used for
    STL-10 in the inversion paper and for RUB's classification benchmark.
``mlp``
    The 5-layer ReLU MLP used for German Credit: four hidden layers of width ``4*width``.

Batch normalisation: the attacks and the fine-tuning of the pipeline use these models in eval
mode (running statistics), so a sample's gradient does not depend on its batch-mates.
"""
from __future__ import annotations

import torch
from torch import nn

from .errors import CourseError

MODEL_NAMES = ("convnet", "convnet-spatial", "resnet18", "mlp")


def _conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=False))


class ConvNet(nn.Module):
    """7-layer ConvNet: 6 conv-BN-ReLU layers and a linear classifier.

    Input ``(N, C, H, W)`` with any ``H, W >= 4``; output logits ``(N, num_classes)``.
    ``pooling`` is ``"avg"`` or ``"max"`` (the two 2x2 poolings); the classifier reads the
    ``(4 * width, head_grid, head_grid)`` map left by an adaptive average pooling.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 32, pooling: str = "max",
                 head_grid: int = 2):
        super().__init__()
        w = width
        pool = nn.AvgPool2d if pooling == "avg" else nn.MaxPool2d
        self.features = nn.Sequential(
            _conv_bn(in_channels, w), _conv_bn(w, 2 * w), pool(2),
            _conv_bn(2 * w, 2 * w), _conv_bn(2 * w, 4 * w), pool(2),
            _conv_bn(4 * w, 4 * w), _conv_bn(4 * w, 4 * w), nn.AdaptiveAvgPool2d(head_grid),
        )
        self.classifier = nn.Linear(4 * w * head_grid * head_grid, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class MLP(nn.Module):
    """5-layer ReLU MLP: input ``(N, D)`` -> logits ``(N, num_classes)``."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 128):
        super().__init__()
        layers: list[nn.Module] = []
        sizes = [in_features] + [hidden] * 4
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers.append(nn.Linear(hidden, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.flatten(x, 1))


def resnet18_small(in_channels: int, num_classes: int) -> nn.Module:
    """torchvision's ResNet-18 with a 3x3 stride-1 stem and no max-pool (for small images)."""
    from torchvision.models import resnet18

    net = resnet18(weights=None, num_classes=num_classes)
    net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


def default_head_grid(input_shape: tuple[int, ...]) -> int:
    """The ConvNet's classifier grid: the feature map after two 2x2 poolings, at most 8x8."""
    return max(1, min(int(input_shape[-2]) // 4, int(input_shape[-1]) // 4, 8))


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, width: int = 32) -> nn.Module:
    """Build one of :data:`MODEL_NAMES` for inputs of ``input_shape`` (``(C, H, W)`` or ``(D,)``).

    ``width`` scales the ConvNets' channels and the MLP's hidden size (``4 * width``); ResNet-18
    has its standard widths.
    """
    if name not in MODEL_NAMES:
        raise CourseError(f"Unknown model {name!r}. Choose one of: {', '.join(MODEL_NAMES)}.")
    if num_classes < 2:
        raise CourseError(f"A classifier needs at least 2 classes; got {num_classes}.")
    if name == "mlp":
        in_features = 1
        for s in input_shape:
            in_features *= int(s)
        return MLP(in_features, num_classes, hidden=4 * width)
    if len(input_shape) != 3:
        raise CourseError(
            f"The {name} model needs images of shape (C, H, W); this dataset has samples of shape "
            f"{tuple(input_shape)}. Use --model mlp for tabular data.")
    c, h, w = input_shape
    if min(h, w) < 4:
        raise CourseError(f"Images of {h}x{w} pixels are too small for {name} (need at least 4x4).")
    if name == "convnet":
        return ConvNet(c, num_classes, width=width, pooling="max", head_grid=2)
    if name == "convnet-spatial":
        return ConvNet(c, num_classes, width=width, pooling="avg", head_grid=default_head_grid(input_shape))
    return resnet18_small(c, num_classes)


def default_model_for(data_kind: str, attack: str = "any") -> str:
    """``mlp`` for tabular data; for images ``convnet``, or ``convnet-spatial`` for ``attack="recovery"``."""
    if data_kind == "tabular":
        return "mlp"
    return "convnet-spatial" if attack == "recovery" else "convnet"


def classifier_head(model: nn.Module) -> nn.Linear:
    """The model's last ``nn.Linear`` module: the classifier head of every model built here.

    Used by GA (which ascends on it alone) and by the inversion attack's feature stage.
    """
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise CourseError("This model has no nn.Linear layer, so it has no classifier head.")
    return linears[-1]


def parameter_vector(model: nn.Module) -> torch.Tensor:
    """All trainable parameters flattened into one vector (a copy, detached)."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
