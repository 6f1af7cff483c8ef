"""Models, looked up by name in one registry, for any input shape, channel count and number of classes.

Classifiers (:data:`MODELS`; ``build_model(name, input_shape, num_classes, width)``):

``convnet``
    A 7-layer ConvNet of the course's design, as the inversion paper describes its model ("a
    7-layer convolutional neural network", Section 4.1, without more detail): six 3x3 convolutions
    with batch normalisation and ReLU in three blocks (widths w, 2w | 2w, 4w | 4w, 4w; 2x2
    max-pooling after the first two blocks, adaptive average pooling to 2x2 after the last) and one
    linear layer. The default image model of chapters 1, 4, 5 and 6.
``convnet-spatial``
    The same convolutions with 2x2 *average* pooling, and a classifier that reads the final
    spatial feature map (adaptively pooled to at most 8x8: 7x7 for MNIST, 8x8 for CIFAR, 2x2 for
    the 8x8 digits): a course variant, not Geiping et al.'s ConvNet. The default image model of the
    feature-recovery attack (chapter 3, ``course-lib recover``, chapter 6's recovery evaluation).
    The paper does not spell its ConvNet out, and the two choices decide the attack: ``convnet``
    is nearly translation invariant, so the inversion on MNIST settles on superposed, shifted
    "ghost" copies of the digit, whereas ``convnet-spatial`` gives the digit back in place
    (chapter 3 measures both).
``geiping-convnet``
    The ConvNet of Geiping et al.'s "inverting gradients" code (2020), which the inversion paper's
    feature-recovery attack builds on: eight conv-BN-ReLU layers, 3x3 max-pooling twice, a linear
    head on a 3x3 map, width 64 in their code (``width`` here, as for the others).
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

from ..errors import CourseError
from ..registry import Registry
from .classifiers import MLP, ConvNet, GeipingConvNet, default_head_grid, resnet18_small

#: Classifier builders ``(input_shape, num_classes, width) -> nn.Module``; ``meta["data"]`` is
#: ``"image"`` or ``"any"`` (what inputs the model takes).
MODELS: Registry = Registry("model", hint="Register your own with course_lib.models.MODELS.register(name, builder).")


def _image_shape(name: str, input_shape) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise CourseError(
            f"The {name} model needs images of shape (C, H, W); this dataset has samples of shape "
            f"{tuple(input_shape)}. Use --model mlp for tabular data.")
    c, h, w = (int(v) for v in input_shape)
    if min(h, w) < 4:
        raise CourseError(f"Images of {h}x{w} pixels are too small for {name} (need at least 4x4).")
    return c, h, w


def _convnet(input_shape, num_classes: int, width: int) -> nn.Module:
    c, _, _ = _image_shape("convnet", input_shape)
    return ConvNet(c, num_classes, width=width, pooling="max", head_grid=2)


def _convnet_spatial(input_shape, num_classes: int, width: int) -> nn.Module:
    c, _, _ = _image_shape("convnet-spatial", input_shape)
    return ConvNet(c, num_classes, width=width, pooling="avg", head_grid=default_head_grid(input_shape))


def _geiping_convnet(input_shape, num_classes: int, width: int) -> nn.Module:
    c, h, w = _image_shape("geiping-convnet", input_shape)
    return GeipingConvNet(c, num_classes, width=width, input_hw=(h, w))


def _resnet18(input_shape, num_classes: int, width: int) -> nn.Module:
    c, _, _ = _image_shape("resnet18", input_shape)
    return resnet18_small(c, num_classes)


def _mlp(input_shape, num_classes: int, width: int) -> nn.Module:
    in_features = 1
    for s in input_shape:
        in_features *= int(s)
    return MLP(in_features, num_classes, hidden=4 * width)


MODELS.register("convnet", _convnet, description="the 7-layer ConvNet (max pooling, 2x2 head)", data="image")
MODELS.register("convnet-spatial", _convnet_spatial, description="the ConvNet with average pooling and a spatial head",
                data="image")
MODELS.register("geiping-convnet", _geiping_convnet,
                description="Geiping et al.'s ConvNet (8 convolutions, max pooling, 3x3 head)", data="image")
MODELS.register("resnet18", _resnet18, description="ResNet-18 with a small-image stem", data="image")
MODELS.register("mlp", _mlp, description="5-layer ReLU MLP (tables)", data="any")


def model_names() -> list[str]:
    """Names of every registered classifier."""
    return MODELS.names()


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, width: int = 32) -> nn.Module:
    """Build the registered model ``name`` for inputs of ``input_shape`` (``(C, H, W)`` or ``(D,)``).

    ``width`` scales the ConvNets' channels and the MLP's hidden size (``4 * width``); ResNet-18
    has its standard widths.
    """
    builder = MODELS.get(name)
    if not isinstance(num_classes, int) or num_classes < 2:
        raise CourseError(f"A classifier needs at least 2 classes; got {num_classes}.")
    if not isinstance(width, int) or width < 1:
        raise CourseError(f"width must be a whole number >= 1; got {width!r}.")
    return builder(tuple(input_shape), num_classes, width)


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


def flatten(tensors) -> torch.Tensor:
    """Concatenate per-parameter tensors (a list, or ``model.parameters()``) into one float64 CPU vector."""
    return torch.cat([torch.as_tensor(t).detach().reshape(-1).cpu().double() for t in tensors])


def parameter_vector(model: nn.Module) -> torch.Tensor:
    """All trainable parameters of ``model`` flattened into one float64 CPU vector (a copy)."""
    return flatten(model.parameters())


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
