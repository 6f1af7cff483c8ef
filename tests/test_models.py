"""Every model builds and runs for every dataset shape it is meant for."""
import pytest
import torch

from course_lib.errors import CourseError
from course_lib.models import build_model

IMAGE_SHAPES = {"mnist-5k": (1, 28, 28), "digits": (1, 8, 8), "cifar10": (3, 32, 32),
                "stl10": (3, 96, 96), "pneumonia": (1, 128, 128)}


@pytest.mark.parametrize("dataset,shape", IMAGE_SHAPES.items())
@pytest.mark.parametrize("name", ["convnet", "resnet18"])
def test_image_models_forward(name, dataset, shape):
    if name == "resnet18" and shape[-1] > 64:
        shape = (shape[0], 64, 64)  # same code path, smaller input keeps the test fast
    model = build_model(name, shape, num_classes=10, width=8).eval()
    out = model(torch.rand(2, *shape))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_mlp_forward_on_tabular_rows():
    model = build_model("mlp", (20,), num_classes=2, width=8)
    assert model(torch.rand(5, 20)).shape == (5, 2)


def test_bad_model_requests_are_clear_errors():
    with pytest.raises(CourseError, match="Unknown model"):
        build_model("vit", (1, 28, 28), 10)
    with pytest.raises(CourseError, match="--model mlp"):
        build_model("convnet", (20,), 2)
    with pytest.raises(CourseError, match="at least 2 classes"):
        build_model("mlp", (20,), 1)
