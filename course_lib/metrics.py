"""How close is a recovered sample to the real one? (Appendix A of the inversion paper.)

All image metrics take tensors in **[0, 1]**, either one sample ``(C, H, W)`` or a batch
``(N, C, H, W)``, and return one value per pair (a float, or a list for a batch).

``rmse``
    The paper's "MSE", which is really a root mean square error: sqrt(||x - x'||^2 / dim(x)).
    Also the score of tabular rows (``(D,)`` or ``(N, D)``).
``psnr``
    Peak signal-to-noise ratio on [0, 1] images, ``10 log10(1 / MSE)`` in dB (peak = 1). The
    public artifact of the paper normalises images twice before computing it, which inflates the
    figure by about 12 dB; here it is computed once, on the [0, 1] images the learner sees.
``ssim``
    Structural similarity (scikit-image, Gaussian-free 7x7 window, data range 1).
``lpips_distance``
    LPIPS with the VGG-16 backbone through the ``lpips`` package. The backbone's ImageNet weights
    must already be on disk (``lpips`` downloads them through torchvision the first time); when
    they are not, the function returns ``None`` and the reason instead of failing.
``match_samples``
    Hungarian pairing of recovered and true samples (several removed samples are recovered
    jointly and come back in no particular order).
``per_feature_error``
    Absolute error per feature of tabular rows.

Chapters 3 (feature recovery) and 6 (defenses) report these numbers.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from .errors import CourseError

#: File name of torchvision's VGG-16 ImageNet weights, the LPIPS backbone.
VGG16_WEIGHTS = "vgg16-397923af.pth"


def finite_mean(values) -> float | None:
    """Mean of the values that are not ``None`` or NaN (``None`` if there are none)."""
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(vals)) if vals else None


def finite_median(values) -> float | None:
    """Median of the values that are not ``None`` or NaN (``None`` if there are none)."""
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.median(vals)) if vals else None


def _pair(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Flatten a pair to ``(N, dim)`` float64; the flag says whether a single sample was given."""
    x = torch.as_tensor(x).detach().cpu().double()
    y = torch.as_tensor(y).detach().cpu().double()
    if x.shape != y.shape:
        raise CourseError(f"Cannot compare samples of shapes {tuple(x.shape)} and {tuple(y.shape)}.")
    single = x.ndim <= 1 or (x.ndim == 3)
    if x.ndim <= 1:
        x, y = x.reshape(1, -1), y.reshape(1, -1)
    elif x.ndim == 3:
        x, y = x.unsqueeze(0), y.unsqueeze(0)
    return x.reshape(len(x), -1), y.reshape(len(y), -1), single


def _out(values: torch.Tensor | np.ndarray, single: bool):
    values = [float(v) for v in values]
    return values[0] if single else values


def rmse(x: torch.Tensor, x_hat: torch.Tensor):
    """sqrt(||x - x_hat||^2 / dim(x)) per sample (Appendix A, "MSE").

    Accepts ``(D,)``, ``(C, H, W)`` (one sample: returns a float) or ``(N, ...)`` (returns a list).
    """
    a, b, single = _pair(x, x_hat)
    return _out(((a - b) ** 2).mean(dim=1).sqrt(), single)


def _check_images(x: torch.Tensor, x_hat: torch.Tensor, what: str) -> None:
    """Images ``(C, H, W)`` or ``(N, C, H, W)`` with pixels in [0, 1], else a :class:`CourseError`."""
    for t in (x, x_hat):
        t = torch.as_tensor(t)
        if t.ndim not in (3, 4):
            raise CourseError(f"{what} compares images of shape (C, H, W) or batches (N, C, H, W); got shape "
                              f"{tuple(t.shape)}. Add the channel axis (x.unsqueeze(0)) for one grey image; use "
                              "rmse for tabular rows.")
        lo, hi = float(t.min()), float(t.max())
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise CourseError(f"{what} needs pixel values in [0, 1]; got values in [{lo:g}, {hi:g}]"
                              + (" (divide 0-255 images by 255)." if hi > 1.5 else "."))


def psnr(x: torch.Tensor, x_hat: torch.Tensor, *, max_db: float = 100.0):
    """PSNR in dB of images in [0, 1]: ``10 * log10(1 / MSE)`` (peak value 1), per sample.

    ``(C, H, W)`` gives a float, ``(N, C, H, W)`` a list. Identical images give ``max_db`` instead
    of infinity. Both inputs must already be in [0, 1]; other shapes or ranges are a :class:`CourseError`.
    """
    _check_images(x, x_hat, "psnr")
    a, b, single = _pair(x, x_hat)
    mse = ((a - b) ** 2).mean(dim=1)
    vals = [max_db if m <= 10 ** (-max_db / 10) else -10.0 * math.log10(float(m)) for m in mse]
    return vals[0] if single else vals


def ssim(x: torch.Tensor, x_hat: torch.Tensor):
    """Structural similarity (scikit-image) of images in [0, 1]; ``(C, H, W)`` or ``(N, C, H, W)``.

    The window is 7x7, or the largest odd size that fits images smaller than 7 pixels.
    """
    from skimage.metrics import structural_similarity

    _check_images(x, x_hat, "ssim")
    x = torch.as_tensor(x).detach().cpu().double()
    y = torch.as_tensor(x_hat).detach().cpu().double()
    if x.shape != y.shape or x.ndim not in (3, 4):
        raise CourseError(f"ssim needs two images (C, H, W) or batches (N, C, H, W) of the same shape; "
                          f"got {tuple(x.shape)} and {tuple(y.shape)}.")
    single = x.ndim == 3
    if single:
        x, y = x.unsqueeze(0), y.unsqueeze(0)
    side = min(x.shape[-2:])
    win = min(7, side if side % 2 == 1 else side - 1)
    if win < 3:
        raise CourseError(f"Images of {tuple(x.shape[-2:])} pixels are too small for SSIM.")
    vals = []
    for a, b in zip(x.numpy(), y.numpy()):
        vals.append(structural_similarity(a, b, data_range=1.0, channel_axis=0, win_size=win))
    return _out(vals, single)


def per_feature_error(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """|x - x_hat| per feature of tabular rows ``(D,)`` or ``(N, D)`` (same shape back, float64)."""
    a = torch.as_tensor(x).detach().cpu().double()
    b = torch.as_tensor(x_hat).detach().cpu().double()
    if a.shape != b.shape:
        raise CourseError(f"Cannot compare rows of shapes {tuple(a.shape)} and {tuple(b.shape)}.")
    return (a - b).abs()


# --------------------------------------------------------------------------- LPIPS

_LPIPS_CACHE: dict[str, torch.nn.Module] = {}


def vgg_weights_path() -> Path:
    """Where torchvision keeps the VGG-16 weights that LPIPS needs (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG16_WEIGHTS


def lpips_available() -> tuple[bool, str | None]:
    """Whether :func:`lpips_distance` can run now, and if not, why (one sentence)."""
    try:
        import lpips  # noqa: F401
    except ImportError:
        return False, "the 'lpips' package is not installed (pip install lpips)"
    if not vgg_weights_path().exists():
        return False, (f"the VGG-16 backbone weights are not on disk ({vgg_weights_path()}); LPIPS needs "
                       "them once from the internet: run `python -c \"import lpips; lpips.LPIPS(net='vgg')\"` "
                       "on a connected machine")
    return True, None


def _build_lpips() -> torch.nn.Module:
    """The ``lpips`` package's LPIPS network with the VGG-16 backbone, loaded safely from disk.

    The backbone weights are torchvision's ``vgg16-397923af.pth``: their SHA-256 must start with the
    ``397923af`` that the file name records (torchvision's own check), and they are read with
    ``torch.load(weights_only=True)``, which never unpickles code. A file that fails either is a
    :class:`CourseError` naming it. (LPIPS's own small linear layers ship inside the package.)
    """
    import hashlib

    import lpips

    path = vgg_weights_path()
    prefix = VGG16_WEIGHTS.split("-")[1].split(".")[0]
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    if not h.hexdigest().startswith(prefix):
        raise CourseError(f"The VGG-16 weights {path} do not have the published hash (sha256 {prefix}...). Delete "
                          "the file and fetch it again on a connected machine.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CourseError(f"The VGG-16 weights {path} cannot be read safely ({exc}). Delete the file and fetch it "
                          "again on a connected machine.") from exc
    net = lpips.LPIPS(net="vgg", pnet_rand=True, verbose=False)  # the backbone is loaded below, not by lpips
    where = {name: f"{slice_name}.{name}" for slice_name, block in net.net.named_children()
             for name, _ in block.named_children()}
    backbone = {f"{where[k.split('.')[1]]}.{k.split('.', 2)[2]}": v for k, v in state.items()
                if k.startswith("features.") and k.split(".")[1] in where}
    net.net.load_state_dict(backbone)
    return net.eval()


def lpips_distance(x: torch.Tensor, x_hat: torch.Tensor) -> tuple[float | list[float] | None, str | None]:
    """LPIPS (VGG-16 backbone) between images in [0, 1]; lower means perceptually closer.

    Parameters
    ----------
    x, x_hat:
        ``(C, H, W)`` or ``(N, C, H, W)`` in [0, 1]. Grey images are repeated to 3 channels and
        images smaller than 32 pixels are upsampled (bilinear) to 32, so VGG's pooling fits.

    Returns
    -------
    (value, reason)
        ``value`` is a float (one pair) or a list (a batch) and ``reason`` is ``None``; or
        ``value`` is ``None`` and ``reason`` says why LPIPS could not be computed (no backbone
        weights on this offline machine, tabular data, ...).
    """
    x = torch.as_tensor(x).detach().cpu().float()
    y = torch.as_tensor(x_hat).detach().cpu().float()
    if x.shape != y.shape:
        raise CourseError(f"Cannot compare images of shapes {tuple(x.shape)} and {tuple(y.shape)}.")
    if x.ndim not in (3, 4):
        return None, "LPIPS is defined for images only (these samples are not (C, H, W) images)"
    single = x.ndim == 3
    if single:
        x, y = x.unsqueeze(0), y.unsqueeze(0)
    net = _LPIPS_CACHE.get("vgg")
    if net is None:
        ok, reason = lpips_available()
        if not ok:
            return None, reason
        try:
            net = _build_lpips().eval()
        except Exception as exc:  # a download attempt offline, a corrupt file, ...
            return None, f"the LPIPS network could not be built ({type(exc).__name__}: {exc})"
        _LPIPS_CACHE["vgg"] = net
    if x.shape[1] == 1:
        x, y = x.repeat(1, 3, 1, 1), y.repeat(1, 3, 1, 1)
    if min(x.shape[-2:]) < 32:
        size = (max(32, x.shape[-2]), max(32, x.shape[-1]))
        x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
        y = torch.nn.functional.interpolate(y, size=size, mode="bilinear", align_corners=False)
    with torch.no_grad():
        d = net(x * 2 - 1, y * 2 - 1)  # LPIPS expects [-1, 1]
    return _out(d.reshape(-1), single), None


# --------------------------------------------------------------------------- matching

def match_samples(recovered: torch.Tensor, originals: torch.Tensor, metric: str = "mse") -> list[int]:
    """Pair recovered and true samples one-to-one with the Hungarian method.

    Parameters
    ----------
    recovered, originals:
        ``(K, ...)`` each, the same shape.
    metric:
        ``"mse"`` (mean squared pixel difference) or ``"ssim"`` (1 - SSIM, images only).

    Returns
    -------
    ``order``: a list of K indices such that ``recovered[order[i]]`` is paired with ``originals[i]``
    (minimising the summed distance).
    """
    from scipy.optimize import linear_sum_assignment

    a = torch.as_tensor(recovered).detach().cpu().double()
    b = torch.as_tensor(originals).detach().cpu().double()
    if a.shape != b.shape:
        raise CourseError(f"match_samples needs two sets of the same shape; got {tuple(a.shape)} and {tuple(b.shape)}.")
    k = len(a)
    if metric == "mse":
        cost = torch.cdist(b.reshape(k, -1), a.reshape(k, -1)) ** 2 / a[0].numel()
        cost = cost.numpy()
    elif metric == "ssim":
        cost = np.array([[1.0 - ssim(b[i], a[j]) for j in range(k)] for i in range(k)])
    else:
        raise CourseError(f"Unknown matching metric {metric!r}; choose 'mse' or 'ssim'.")
    rows, cols = linear_sum_assignment(cost)
    order = [0] * k
    for r, c in zip(rows, cols):
        order[int(r)] = int(c)
    return order


def baseline_mean_image_psnr(train_images: torch.Tensor, targets: torch.Tensor) -> list[float]:
    """PSNR of the training set's mean image against each target (a "no attack" baseline, dB).

    ``train_images`` ``(N, C, H, W)``, ``targets`` ``(K, C, H, W)``; returns K values.
    """
    mean = torch.as_tensor(train_images).double().mean(dim=0, keepdim=True)
    t = torch.as_tensor(targets).double()
    vals = psnr(t, mean.expand_as(t))
    return vals if isinstance(vals, list) else [vals]


__all__ = ["rmse", "psnr", "ssim", "lpips_distance", "lpips_available", "match_samples",
           "per_feature_error", "baseline_mean_image_psnr", "vgg_weights_path"]
