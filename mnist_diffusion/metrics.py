"""Sample-quality metrics in a classifier's feature space: conditional accuracy, classifier FID, precision/recall."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ConditionalAccuracy:
    r"""
    How often samples show the class they were asked for.

    Args:
        overall (`float`): Fraction of samples whose predicted class equals the requested one.
        per_class (`dict[int, float]`): The same fraction for each requested class.
        counts (`dict[int, int]`): Number of samples requested per class.
    """

    overall: float
    per_class: dict[int, float]
    counts: dict[int, int]


def conditional_accuracy(predicted: torch.Tensor, requested: torch.Tensor) -> ConditionalAccuracy:
    r"""
    Conditional accuracy of generated samples, overall and per requested class.

    Example:

    ```py
    >>> import torch
    >>> from mnist_diffusion.metrics import conditional_accuracy

    >>> conditional_accuracy(torch.tensor([7, 7, 1, 2]), torch.tensor([7, 7, 1, 1])).per_class
    {1: 0.5, 7: 1.0}
    ```
    """
    if predicted.shape != requested.shape or predicted.ndim != 1 or len(predicted) == 0:
        raise ValueError(
            f"predicted {tuple(predicted.shape)} and requested {tuple(requested.shape)} must be equal, non-empty 1-d."
        )
    correct = predicted == requested
    classes = sorted(requested.unique().tolist())
    return ConditionalAccuracy(
        overall=correct.float().mean().item(),
        per_class={c: correct[requested == c].float().mean().item() for c in classes},
        counts={c: int((requested == c).sum()) for c in classes},
    )


def _mean_and_covariance(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"Features have shape {tuple(features.shape)}; expected (num_samples >= 2, dim).")
    features = features.double()
    return features.mean(dim=0), torch.cov(features.T)


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    r"""
    Fréchet distance between Gaussians fitted to two feature sets (the FID formula, in any feature space).

    `||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2)`, computed in float64 with symmetric
    eigendecompositions. With a classifier's features this is what the project calls "classifier FID".

    Example:

    ```py
    >>> import torch
    >>> from mnist_diffusion.metrics import frechet_distance

    >>> a = torch.randn(2000, 8)
    >>> round(frechet_distance(a, a), 6)
    0.0
    ```
    """
    if features_a.shape[1:] != features_b.shape[1:]:
        raise ValueError(f"Feature sizes differ: {tuple(features_a.shape)} vs {tuple(features_b.shape)}.")
    mean_a, cov_a = _mean_and_covariance(features_a)
    mean_b, cov_b = _mean_and_covariance(features_b)
    eigenvalues, eigenvectors = torch.linalg.eigh(cov_a)
    sqrt_a = eigenvectors @ torch.diag(eigenvalues.clamp(min=0).sqrt()) @ eigenvectors.T
    middle = sqrt_a @ cov_b @ sqrt_a
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    distance = (mean_a - mean_b).pow(2).sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * trace_sqrt
    return max(distance.item(), 0.0)


def precision_recall(real_features: torch.Tensor, fake_features: torch.Tensor, k: int = 3) -> tuple[float, float]:
    r"""
    Improved precision and recall (Kynkäänniemi et al., 2019) of generated samples against real ones.

    Each set's manifold is the union of balls around its points reaching their `k`-th nearest neighbour. Precision is
    the fraction of generated samples inside the real manifold (are samples realistic?); recall the fraction of real
    samples inside the generated manifold (is the variety covered?).

    Example:

    ```py
    >>> import torch
    >>> from mnist_diffusion.metrics import precision_recall

    >>> real = torch.randn(500, 4)
    >>> precision_recall(real, real.clone())
    (1.0, 1.0)
    ```
    """
    if min(len(real_features), len(fake_features)) <= k:
        raise ValueError(
            f"Need more than k={k} samples in each set, got {len(real_features)} real and {len(fake_features)} fake."
        )

    def radii(features: torch.Tensor) -> torch.Tensor:
        distances = torch.cdist(features, features)
        return distances.kthvalue(k + 1, dim=1).values  # the 0-th neighbour is the point itself

    def coverage(points: torch.Tensor, centres: torch.Tensor, centre_radii: torch.Tensor) -> float:
        return (torch.cdist(points, centres) <= centre_radii[None]).any(dim=1).float().mean().item()

    real, fake = real_features.double(), fake_features.double()
    return coverage(fake, real, radii(real)), coverage(real, fake, radii(fake))
