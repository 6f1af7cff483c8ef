"""Metrics of feature recovery: known values, LPIPS wiring without weights, Hungarian matching."""
import math

import pytest
import torch

from course_lib import metrics
from course_lib.errors import CourseError


def test_psnr_on_images_with_known_mse():
    x = torch.zeros(1, 8, 8)
    # a constant offset of 0.1 gives MSE 0.01 exactly -> 20 dB
    assert metrics.psnr(x, x + 0.1) == pytest.approx(20.0, abs=1e-5)
    # MSE 0.001 -> 30 dB; half the pixels off by sqrt(0.002)
    y = x.clone()
    y[:, :4] = math.sqrt(0.002)
    assert metrics.psnr(x, y) == pytest.approx(30.0, abs=1e-6)
    # batches give one value per pair; identical images give the cap, not infinity
    vals = metrics.psnr(torch.stack([x, x]), torch.stack([x + 0.1, x]))
    assert vals[0] == pytest.approx(20.0) and vals[1] == 100.0


def test_psnr_is_not_inflated_by_normalisation():
    # an image and a noisy copy in [0, 1]: PSNR is 10 log10(1 / MSE), nothing else
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 16, 16, generator=g)
    y = (x + 0.05 * torch.randn(3, 16, 16, generator=g)).clamp(0, 1)
    mse = float(((x - y) ** 2).mean())
    assert metrics.psnr(x, y) == pytest.approx(-10 * math.log10(mse), rel=1e-6)


def test_rmse_matches_appendix_definition_and_tabular_rows():
    x = torch.tensor([0.0, 0.5, 1.0, 0.25])
    y = torch.tensor([0.0, 0.5, 0.0, 0.25])
    assert metrics.rmse(x, y) == pytest.approx(math.sqrt(1.0 / 4))
    err = metrics.per_feature_error(x, y)
    assert err.tolist() == [0.0, 0.0, 1.0, 0.0]
    assert metrics.rmse(torch.stack([x, x]), torch.stack([y, x])) == pytest.approx([0.5, 0.0])


def test_ssim_identical_and_different():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 28, 28, generator=g)
    assert metrics.ssim(x, x) == pytest.approx(1.0)
    assert metrics.ssim(x, torch.rand(1, 28, 28, generator=g)) < 0.2
    assert metrics.ssim(torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8)).__len__() == 2


def test_lpips_reports_missing_weights(monkeypatch, tmp_path):
    monkeypatch.setattr(metrics, "vgg_weights_path", lambda: tmp_path / "absent.pth")
    monkeypatch.setattr(metrics, "_LPIPS_CACHE", {})
    value, reason = metrics.lpips_distance(torch.rand(1, 28, 28), torch.rand(1, 28, 28))
    assert value is None and "VGG-16" in reason
    value, reason = metrics.lpips_distance(torch.rand(5), torch.rand(5))
    assert value is None and "images" in reason


def test_lpips_wiring_with_a_tiny_fake_network(monkeypatch, tmp_path):
    seen = {}

    class FakeLPIPS(torch.nn.Module):
        def forward(self, a, b):
            seen["shape"], seen["range"] = tuple(a.shape), (float(a.min()), float(a.max()))
            return ((a - b) ** 2).mean(dim=(1, 2, 3), keepdim=True)

    weights = tmp_path / "vgg.pth"
    weights.write_bytes(b"x")
    monkeypatch.setattr(metrics, "vgg_weights_path", lambda: weights)
    monkeypatch.setattr(metrics, "_build_lpips", lambda: FakeLPIPS())
    monkeypatch.setattr(metrics, "_LPIPS_CACHE", {})
    x = torch.zeros(2, 1, 8, 8)
    y = torch.ones(2, 1, 8, 8)
    value, reason = metrics.lpips_distance(x, y)
    assert reason is None
    # grey images are repeated to 3 channels, upsampled to 32 px and mapped to [-1, 1]
    assert seen["shape"] == (2, 3, 32, 32) and seen["range"] == (-1.0, -1.0)
    assert value == pytest.approx([4.0, 4.0])
    single, _ = metrics.lpips_distance(x[0], x[0])
    assert single == pytest.approx(0.0)


def test_match_samples_recovers_a_permutation():
    g = torch.Generator().manual_seed(2)
    originals = torch.rand(6, 1, 10, 10, generator=g)
    perm = [3, 0, 5, 1, 4, 2]
    recovered = originals[perm] + 0.01 * torch.randn(6, 1, 10, 10, generator=g)
    order = metrics.match_samples(recovered, originals)
    assert torch.allclose(recovered[order], originals, atol=0.1)
    assert [perm[o] for o in order] == list(range(6))
    with pytest.raises(CourseError):
        metrics.match_samples(recovered[:3], originals)


def test_mean_image_baseline():
    train = torch.stack([torch.zeros(1, 4, 4), torch.full((1, 4, 4), 0.2)])
    vals = metrics.baseline_mean_image_psnr(train, torch.zeros(1, 1, 4, 4))
    assert vals == pytest.approx([20.0])


def test_lpips_refuses_vgg_weights_that_do_not_have_the_published_hash(tmp_path, monkeypatch):
    import torch.hub

    from course_lib import metrics as M

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(M, "_LPIPS_CACHE", {})
    fake = M.vgg_weights_path()
    fake.parent.mkdir(parents=True)
    fake.write_bytes(b"not the VGG-16 weights, and certainly nothing to unpickle")
    value, reason = M.lpips_distance(torch.rand(1, 8, 8), torch.rand(1, 8, 8))
    assert value is None and "published hash" in reason
