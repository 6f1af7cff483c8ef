"""The papers' classifiers, for any input shape, channel count and number of classes.

The models are registered in :data:`course_lib.models.MODELS` (see that package for the list).
Batch normalisation: the attacks and the fine-tuning of the pipeline use these models in eval
mode (running statistics), so a sample's gradient does not depend on its batch-mates.
"""
from __future__ import annotations

import torch
from torch import nn



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


class GeipingConvNet(nn.Module):
    """The ConvNet of Geiping et al.'s "inverting gradients" code (2020), which the inversion paper's attack uses.

    Eight 3x3 conv-BN-ReLU layers of widths w, 2w, 2w, 4w, 4w, 4w | 4w, 4w with a 3x3 max-pooling
    after the sixth and the eighth, then one linear layer on the ``(4w, 3, 3)`` map a 32x32 or 28x28
    image leaves (the pooling rounds up, so 8x8 digits leave a 1x1 map). Geiping et al. use
    ``width=64``. Input ``(N, C, H, W)``, output logits ``(N, num_classes)``.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 64, input_hw: tuple[int, int] = (32, 32)):
        super().__init__()
        w = width
        widths = [w, 2 * w, 2 * w, 4 * w, 4 * w, 4 * w, 4 * w, 4 * w]
        layers: list[nn.Module] = []
        c_in = in_channels
        for i, c_out in enumerate(widths):
            layers.append(_conv_bn(c_in, c_out))
            c_in = c_out
            if i in (5, 7):
                layers.append(nn.MaxPool2d(3, ceil_mode=True))
        self.features = nn.Sequential(*layers)
        h, wd = input_hw
        for _ in range(2):
            h, wd = -(-h // 3), -(-wd // 3)
        self.classifier = nn.Linear(4 * w * h * wd, num_classes)

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


