"""The results of `evaluate`: sample-quality scores, style-control agreement, and their JSON and markdown forms."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field

import torch

#: The quantiles of [`AttributeDistribution`].
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


@dataclass
class AttributeDistribution:
    r"""
    Summary of one measured style attribute over a set of samples.

    Args:
        mean (`float`): Mean value.
        quantiles (`dict[str, float]`): The 10%, 25%, 50%, 75% and 90% quantiles, keyed "q10" ... "q90".
        values (`torch.Tensor`): Every measured value `(num_samples,)`, for histograms; not part of `to_dict`.
    """

    mean: float
    quantiles: dict[str, float]
    values: torch.Tensor = field(repr=False)

    @classmethod
    def of(cls, values: torch.Tensor) -> AttributeDistribution:
        """The distribution of `values` (a 1-d float tensor)."""
        quantiles = torch.quantile(values.float(), torch.tensor(QUANTILES)).tolist()
        return cls(
            mean=values.float().mean().item(),
            quantiles={f"q{round(q * 100)}": value for q, value in zip(QUANTILES, quantiles, strict=True)},
            values=values,
        )

    def to_dict(self) -> dict:
        return {"mean": self.mean, "quantiles": self.quantiles}


@dataclass
class StyleRequestResult:
    r"""
    How well samples follow one style request, such as "a thin {class}", against unstyled samples of the same classes.

    Args:
        request (`str`): The style word of the prompts, e.g. "thin" or "slanted".
        example_prompt (`str`): The prompt for the first class, e.g. "a thin 0".
        attribute (`str`): The measured attribute, "thickness" or "slant".
        target (`str`): The bucket word the request asks for ("slanted" asks for "right-slanted").
        num_samples (`int`): Number of samples generated for the request.
        strict_agreement (`float`): Fraction whose measured tertile bucket is the requested one.
        contrast_agreement (`float`): Fraction whose measured value lies on the requested side of the middle of the
            "regular" (thickness) or "upright" (slant) band.
        baseline_strict_agreement (`float`): Strict agreement of the unstyled samples, for comparison.
        baseline_contrast_agreement (`float`): Contrast agreement of the unstyled samples, for comparison.
        distribution ([`AttributeDistribution`]): The measured attribute over the request's samples.
    """

    request: str
    example_prompt: str
    attribute: str
    target: str
    num_samples: int
    strict_agreement: float
    contrast_agreement: float
    baseline_strict_agreement: float
    baseline_contrast_agreement: float
    distribution: AttributeDistribution

    def to_dict(self) -> dict:
        return {**{k: v for k, v in self.__dict__.items() if k != "distribution"}, **self.distribution.to_dict()}


@dataclass
class StyleControlResult:
    r"""
    Style-control agreement of a text-conditioned pipeline.

    Args:
        requests (`list[StyleRequestResult]`): One entry per style request.
        baseline (`dict[str, AttributeDistribution]`): Each attribute measured on the unstyled samples.
    """

    requests: list[StyleRequestResult]
    baseline: dict[str, AttributeDistribution]

    def to_dict(self) -> dict:
        return {
            "requests": [request.to_dict() for request in self.requests],
            "baseline": {name: distribution.to_dict() for name, distribution in self.baseline.items()},
        }


@dataclass
class EvaluationResult:
    r"""
    Scores of generated samples. Classifier FID and precision/recall are measured in the scoring classifier's
    feature space ("classifier FID", not the Inception FID of natural images).

    Args:
        class_names (`list[str]`): Name of each class id.
        num_samples (`int`): Number of scored samples, spread evenly over the classes.
        accuracy (`float`): Conditional accuracy: fraction of samples classified as the class they were asked for.
        accuracy_per_class (`dict[str, float]`): The same per class name.
        reference_accuracy (`float`, *optional*): The classifier's accuracy on the real reference images (the
            ceiling of `accuracy`), when their labels are given.
        classifier_fid (`float`, *optional*): Fréchet distance between the samples' and the whole reference set's
            classifier features.
        classifier_fid_floor (`float`, *optional*): The same for `num_samples` real reference images against the
            rest of the reference set: what a perfect generator would score. `None` when the reference set holds
            fewer than `num_samples + 2` images.
        precision (`float`, *optional*): Improved precision of the samples against `num_samples` real reference
            images (all of them when fewer), in classifier feature space.
        recall (`float`, *optional*): Improved recall, likewise.
        clip_score (`float`, *optional*): Mean CLIP score of the samples with their class prompts.
        clip_score_per_class (`dict[str, float]`, *optional*): The same per class name.
        style_control ([`StyleControlResult`], *optional*): Style-control agreement (pipelines with a text encoder).
        settings (`dict`): How the samples were made: conditioning, guidance scale, steps, scheduler, seed.
        notes (`list[str]`): What was skipped and why.
        images (`torch.Tensor`): The samples `(num_samples, channels, height, width)` in [0, 1]; not in `to_dict`.
        labels (`torch.Tensor`): The requested class id of each sample; not in `to_dict`.
        prompts (`list[str]`): The class prompt of each sample ("a handwritten 7"); not in `to_dict`.
        clip_scores (`torch.Tensor`, *optional*): CLIP score of each sample, for best/worst grids; not in `to_dict`.

    Example:

    ```py
    >>> from mnist_diffusion.evaluation import evaluate

    >>> result = evaluate(pipe, 1000, reference_images=test.images)  # doctest: +SKIP
    >>> result.accuracy_per_class["7"], result.classifier_fid, result.classifier_fid_floor  # doctest: +SKIP
    (0.98, 12.3, 1.9)
    >>> worst = result.images[result.clip_scores.argsort()[:16]]  # doctest: +SKIP
    ```
    """

    class_names: list[str]
    num_samples: int
    accuracy: float
    accuracy_per_class: dict[str, float]
    reference_accuracy: float | None = None
    classifier_fid: float | None = None
    classifier_fid_floor: float | None = None
    precision: float | None = None
    recall: float | None = None
    clip_score: float | None = None
    clip_score_per_class: dict[str, float] | None = None
    style_control: StyleControlResult | None = None
    settings: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    images: torch.Tensor | None = field(default=None, repr=False)
    labels: torch.Tensor | None = field(default=None, repr=False)
    prompts: list[str] | None = field(default=None, repr=False)
    clip_scores: torch.Tensor | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        r"""The scores as JSON-serialisable values (samples and per-sample scores left out)."""
        skipped = ("images", "labels", "prompts", "clip_scores", "style_control")
        result = {k: v for k, v in self.__dict__.items() if k not in skipped}
        result["style_control"] = self.style_control.to_dict() if self.style_control else None
        return json.loads(json.dumps(result))

    def to_markdown(self) -> str:
        r"""Markdown tables: summary, per class, and style control when measured."""

        def number(value: float | None, percent: bool = False) -> str:
            if value is None:
                return "n/a"
            return f"{value:.1%}" if percent else f"{value:.2f}"

        lines = [
            "| Metric | Value |",
            "| --- | --- |",
            f"| Samples | {self.num_samples} |",
            f"| Conditional accuracy | {number(self.accuracy, True)} |",
            f"| Classifier accuracy on real reference images | {number(self.reference_accuracy, True)} |",
            f"| Classifier FID (vs. reference set) | {number(self.classifier_fid)} |",
            f"| Classifier FID floor (real vs. real, same size) | {number(self.classifier_fid_floor)} |",
            f"| Precision (classifier features) | {number(self.precision, True)} |",
            f"| Recall (classifier features) | {number(self.recall, True)} |",
            f"| CLIP score | {number(self.clip_score)} |",
        ]
        lines += ["", "| Class | Accuracy | CLIP score |", "| --- | --- | --- |"]
        for name in self.class_names:
            clip = (self.clip_score_per_class or {}).get(name)
            lines.append(f"| {name} | {number(self.accuracy_per_class[name], True)} | {number(clip)} |")
        if self.style_control is not None:
            lines += [
                "",
                "Style control. Strict agreement: the measured tertile bucket is the requested one. Contrast "
                'agreement: the measured value is on the requested side of the middle of the "regular"/"upright" '
                "band. In brackets: the same rate for the unstyled samples.",
                "",
                "| Request | Example prompt | Attribute | Samples | Strict agreement | Contrast agreement | Mean "
                "| Median |",
                "| --- | --- | --- | --- | --- | --- | --- | --- |",
            ]
            for r in self.style_control.requests:
                lines.append(
                    f"| {r.request} | {r.example_prompt} | {r.attribute} | {r.num_samples} | "
                    f"{number(r.strict_agreement, True)} "
                    f"({number(r.baseline_strict_agreement, True)}) | {number(r.contrast_agreement, True)} "
                    f"({number(r.baseline_contrast_agreement, True)}) | {number(r.distribution.mean)} | "
                    f"{number(r.distribution.quantiles['q50'])} |"
                )
        if self.settings:
            lines += ["", "Settings: " + ", ".join(f"{k}={v}" for k, v in self.settings.items()) + "."]
        lines += [f"\nNote: {note}" for note in self.notes]
        return "\n".join(lines) + "\n"


def mean_and_range(values: list[float], mean_format: str, scale: float = 1.0, unit: str = "") -> str:
    """
    The mean of a score over several seeds, and its range when there is more than one.

    Examples:

    ```py
    >>> mean_and_range([0.992, 0.997], ".2f", 100, "%")
    '99.45% (99.2-99.7)'
    ```
    """
    scaled = [scale * value for value in values]
    text = f"{statistics.fmean(scaled):{mean_format}}{unit}"
    return text if len(values) == 1 else f"{text} ({min(scaled):.1f}-{max(scaled):.1f})"
