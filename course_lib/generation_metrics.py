"""Scores of generated images on the course's evaluation classifier C: FD, IS and C's accuracy.

RUB (Section 4.2) scores image-to-image unlearning with the Inception Score (IS; Salimans et al.,
2016) and the Fréchet Inception Distance (FID; Heusel et al., 2017). Inception-v3 weights cannot
be downloaded here, so both are computed on C (:mod:`course_lib.evaluator`), a classifier the
course trains on the real images of the same dataset, and named for what they are:

**FD of the course classifier**
    The Fréchet distance between Gaussians fitted to C's penultimate features of the generated
    images and of the real images, ||mu_g - mu_r||^2 + Tr(S_g + S_r - 2 (S_g S_r)^(1/2)). It is
    computed by torchmetrics' ``FrechetInceptionDistance`` with C's features as its custom
    ``feature`` module (the matrix square root is torchmetrics', never written here). Lower is
    closer to the real images. Its value depends on the feature size and the number of images
    (the estimate is biased upwards for small sets), so compare FDs computed on sets of equal size.
**IS of the course classifier**
    exp(E_x KL(p(y|x) || p(y))) over C's class probabilities, by torchmetrics' ``InceptionScore``
    with C's logits as its ``feature`` module (mean and standard deviation over ``splits``
    splits). Between 1 and the number of classes C was trained on; higher means confident and
    varied predictions.
**C's accuracy**
    The share of generated images that C labels with the class of the image they were made from:
    what a learner reads at a glance ("is it still a 3?").

Used by chapter 7 (the inpainter); written for any chapter that scores generated images.
"""
from __future__ import annotations

import torch
from torch import nn

from .errors import CourseError
from .evaluator import EvaluationClassifier


class _ClassifierFeatures(nn.Module):
    """C's penultimate features ``(N, D)`` (float64) as a torchmetrics ``feature`` module."""

    def __init__(self, evaluator: EvaluationClassifier):
        super().__init__()
        object.__setattr__(self, "evaluator", evaluator)   # not a sub-module: the metric must not move C
        self.num_features = int(evaluator.features(torch.zeros(1, *_input_shape(evaluator))).shape[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.evaluator.features(x)


class _ClassifierLogits(nn.Module):
    """C's class log-probabilities ``(N, K)`` as a torchmetrics ``feature`` module (IS applies a softmax)."""

    def __init__(self, evaluator: EvaluationClassifier):
        super().__init__()
        object.__setattr__(self, "evaluator", evaluator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.evaluator.probs(x).clamp_min(1e-12).log()


def _input_shape(evaluator: EvaluationClassifier) -> tuple[int, int, int]:
    first = next(m for m in evaluator.model.modules() if isinstance(m, nn.Conv2d))
    return (first.in_channels, evaluator.size, evaluator.size)


def _check_images(x: torch.Tensor, evaluator: EvaluationClassifier, what: str) -> None:
    if x.ndim != 4 or tuple(x.shape[1:]) != _input_shape(evaluator):
        raise CourseError(f"{what} must be images of shape (N, {', '.join(map(str, _input_shape(evaluator)))}) for "
                          f"the evaluation classifier of {evaluator.dataset}; got {tuple(x.shape)}.")
    if len(x) < 2:
        raise CourseError(f"{what}: a Fréchet distance needs at least 2 images; got {len(x)}.")


class FrechetReference:
    """The real images' side of the FD, fitted once and compared with any number of generated sets.

    ``FrechetReference(C, real).distance(generated)`` is the FD of the course classifier between
    ``generated`` and ``real`` (both ``(N, C, H, W)`` in [0, 1]).
    """

    def __init__(self, evaluator: EvaluationClassifier, real: torch.Tensor, batch_size: int = 512):
        from torchmetrics.image.fid import FrechetInceptionDistance

        _check_images(real, evaluator, "The real images")
        self.evaluator, self.batch_size, self.n_real = evaluator, batch_size, len(real)
        self._metric = FrechetInceptionDistance(feature=_ClassifierFeatures(evaluator), reset_real_features=False)
        for i in range(0, len(real), batch_size):
            self._metric.update(real[i:i + batch_size].float(), real=True)

    def distance(self, generated: torch.Tensor) -> float:
        """FD between C's features of ``generated`` and of the real images (>= 0, lower = closer)."""
        _check_images(generated, self.evaluator, "The generated images")
        self._metric.reset()   # keeps the real features (reset_real_features=False)
        for i in range(0, len(generated), self.batch_size):
            self._metric.update(generated[i:i + self.batch_size].float(), real=False)
        return max(0.0, float(self._metric.compute()))


def frechet_distance(evaluator: EvaluationClassifier, generated: torch.Tensor, real: torch.Tensor) -> float:
    """FD of the course classifier between ``generated`` and ``real`` images (see the module docstring)."""
    return FrechetReference(evaluator, real).distance(generated)


def inception_score(evaluator: EvaluationClassifier, generated: torch.Tensor, *, splits: int = 10,
                    seed: int = 0) -> tuple[float, float]:
    """IS of the course classifier of ``generated`` ``(N, C, H, W)``: (mean, std) over ``splits`` splits.

    torchmetrics shuffles the images before splitting them; ``seed`` fixes that shuffle.
    """
    from torchmetrics.image.inception import InceptionScore

    if splits < 1 or len(generated) < splits:
        raise CourseError(f"The IS needs at least as many images ({len(generated)}) as splits ({splits}), and splits >= 1.")
    import warnings

    with warnings.catch_warnings():   # "saves all extracted features in buffer": a few hundred rows here
        warnings.simplefilter("ignore", UserWarning)
        metric = InceptionScore(feature=_ClassifierLogits(evaluator), splits=splits)
    metric.update(generated.float())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        mean, std = metric.compute()
    return float(mean), float(std)


def classifier_accuracy(evaluator: EvaluationClassifier, generated: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of ``generated`` images that C labels as ``labels`` ``(N,)`` (0..1)."""
    if len(generated) != len(labels):
        raise CourseError(f"{len(generated)} images but {len(labels)} labels.")
    return float((evaluator.predict(generated) == labels.cpu()).float().mean())


def generation_scores(evaluator: EvaluationClassifier, generated: torch.Tensor, labels: torch.Tensor,
                      reference: FrechetReference, *, splits: int = 10, seed: int = 0) -> dict:
    """``{"is_mean", "is_std", "fd", "accuracy"}`` of ``generated`` against ``reference``'s real images."""
    is_mean, is_std = inception_score(evaluator, generated, splits=splits, seed=seed)
    return {"is_mean": is_mean, "is_std": is_std, "fd": reference.distance(generated),
            "accuracy": classifier_accuracy(evaluator, generated, labels)}
