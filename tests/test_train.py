"""The training pipeline: accuracy, caching, and the paper's unlearning methods."""
import pytest
import torch

from course_lib import cache, train
from course_lib.errors import CacheCorruptError
from course_lib.models import parameter_vector
from course_lib.train import prepare_pipeline
from course_lib.unlearn.paper import summed_gradient, unlearn_from_pipeline


@pytest.fixture(scope="module")
def pipeline():
    return prepare_pipeline("mnist-5k", "convnet", profile="quick", seed=0, progress=False)


def test_quick_convnet_reaches_90_percent(pipeline):
    assert pipeline.metrics["pretrained_test_accuracy"] >= 0.90
    assert pipeline.metrics["deployed_test_accuracy"] >= 0.90
    assert len(pipeline.public) == 3200 and len(pipeline.private) == 800


def test_cache_hit_returns_identical_weights_without_training(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    first = prepare_pipeline("digits", "mlp", profile="quick", seed=1, progress=False)
    assert not first.metrics["pretrained_from_cache"]

    def no_training(*args, **kwargs):
        raise AssertionError("a cache hit must not train")

    monkeypatch.setattr(train, "train_model", no_training)
    second = prepare_pipeline("digits", "mlp", profile="quick", seed=1, progress=False)
    assert second.metrics["pretrained_from_cache"] and second.metrics["deployed_from_cache"]
    assert cache.state_equal(first.pretrained, second.pretrained)
    assert cache.state_equal(first.deployed, second.deployed)
    assert first.cache_paths["pretrained"].exists() and first.cache_paths["pretrained"].with_suffix(".json").exists()


def test_corrupt_cache_file_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    pipe = prepare_pipeline("digits", "mlp", profile="quick", seed=2, progress=False)
    pipe.cache_paths["deployed"].write_bytes(b"not a safetensors file")
    with pytest.raises(CacheCorruptError, match="Delete both files"):
        prepare_pipeline("digits", "mlp", profile="quick", seed=2, progress=False)


def test_approximate_unlearning_follows_eq_12_13(pipeline):
    forget = [5, 17]
    mu = unlearn_from_pipeline(pipeline, forget, "approximate")
    diff = parameter_vector(mu).double() - parameter_vector(pipeline.deployed).double()
    grads = summed_gradient(pipeline.pretrained, pipeline.private.subset(forget))
    expected = torch.cat([g.reshape(-1) for g in grads]).double() * (1e-3 * 1 / 128)
    cos = torch.nn.functional.cosine_similarity
    # theta_u - theta points along +gradient. The weights are float32, so where the step is below a few
    # ulps of the weight the stored difference is mostly rounding: there the direction is checked only
    # loosely; where the step exceeds 10 ulps (a few % of the coordinates) it must match closely.
    assert cos(diff, expected, dim=0) > 0.95
    theta = parameter_vector(pipeline.deployed).double()
    resolved = expected.abs() > 10 * torch.finfo(torch.float32).eps * theta.abs()
    assert resolved.double().mean() > 0.01
    assert cos(diff[resolved], expected[resolved], dim=0) > 0.999


def test_exact_unlearning_retrains_without_the_sample(pipeline, monkeypatch):
    mu = unlearn_from_pipeline(pipeline, [0], "exact")
    # the same schedule reproduces M: bit for bit at one thread count, and up to the float summation
    # order against M, which may have been trained (and cached) while the thread count was another
    monkeypatch.setenv("COURSE_THREADS", "1")
    retrained_on_all = pipeline.finetune_from_pretrained(pipeline.private)
    again = pipeline.finetune_from_pretrained(pipeline.private)
    assert cache.state_equal(retrained_on_all, again)
    assert torch.allclose(parameter_vector(retrained_on_all), parameter_vector(pipeline.deployed), rtol=1e-4, atol=1e-6)
    assert not torch.equal(parameter_vector(mu), parameter_vector(pipeline.deployed))
