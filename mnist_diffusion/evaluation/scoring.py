"""`evaluate`: sample a pipeline class by class and score accuracy, classifier FID, precision/recall, CLIP, style."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch

from ..classifier import MnistClassifier
from ..metrics import conditional_accuracy, frechet_distance, precision_recall
from .classifiers import class_names_and_classifier
from .conditioning import resolve_conditioning
from .results import EvaluationResult
from .sampling import SamplingSettings, class_prompt, sample_batches
from .styles import measure_style_control

if TYPE_CHECKING:
    from ..clip_model import ClipScorer
    from ..pipelines import MnistDiffusionPipeline


@dataclass
class ReferenceFeatures:
    r"""
    Real reference images embedded once by the scoring classifier, for classifier FID, its floor and precision/recall
    (training evaluates many times against the same images).

    Args:
        features (`torch.Tensor`): The classifier's features of the reference images `(num_images, feature_dim)`.
        accuracy (`float`, *optional*): The classifier's accuracy on them, when their labels were given.

    Example:

    ```py
    >>> from mnist_diffusion.evaluation import ReferenceFeatures, default_classifier, evaluate

    >>> classifier = default_classifier(None)
    >>> reference = ReferenceFeatures.embed(classifier, test.images, test.labels)  # doctest: +SKIP
    >>> evaluate(pipe, 100, classifier=classifier, reference=reference).classifier_fid  # doctest: +SKIP
    ```
    """

    features: torch.Tensor
    accuracy: float | None = None

    @classmethod
    def embed(
        cls, classifier: MnistClassifier, images: torch.Tensor, labels: torch.Tensor | None = None
    ) -> ReferenceFeatures:
        r"""Embed `images` (`uint8` or floats in [0, 1]) with `classifier`; with `labels`, also its accuracy."""
        images = _unit_range(images, "reference_images")
        predicted, features = classifier.predict(images)
        accuracy = None
        if labels is not None:
            if len(labels) != len(images):
                raise ValueError(
                    f"Got {len(labels)} reference labels for {len(images)} reference images; "
                    "expected one label per image."
                )
            accuracy = (predicted == labels.cpu()).float().mean().item()
        return cls(features=features, accuracy=accuracy)


def score_samples(
    images: torch.Tensor,
    labels: torch.Tensor,
    class_names: Sequence[str],
    classifier: MnistClassifier,
    *,
    reference_images: torch.Tensor | None = None,
    reference_labels: torch.Tensor | None = None,
    reference: ReferenceFeatures | None = None,
    clip_scorer: ClipScorer | None = None,
    prompts: Sequence[str] | None = None,
    seed: int = 0,
) -> EvaluationResult:
    r"""
    Score images drawn for the class ids `labels` (the sample-quality part of [`evaluate`]).

    Args:
        images (`torch.Tensor`): `(num_samples, channels, height, width)`, floats in [0, 1] or `uint8`.
        labels (`torch.Tensor`): The class id each image was asked to show.
        class_names (`Sequence[str]`): Name of each class id.
        classifier ([`MnistClassifier`]): Scores conditional accuracy and embeds images for classifier FID.
        reference_images (`torch.Tensor`, *optional*): Real images (same layout) for classifier FID, its floor and
            precision/recall.
        reference_labels (`torch.Tensor`, *optional*): Their class ids, for the classifier's reference accuracy.
        reference ([`ReferenceFeatures`], *optional*): The reference images already embedded by `classifier`, instead
            of `reference_images`.
        clip_scorer ([`~mnist_diffusion.clip_model.ClipScorer`], *optional*): Scores images against `prompts`.
        prompts (`Sequence[str]`, *optional*): One prompt per image for the CLIP score (default: the class prompts).
        seed (`int`, defaults to 0): Seed of the random reference subset for the floor and precision/recall.

    Example:

    ```py
    >>> from mnist_diffusion.evaluation import default_classifier, score_samples

    >>> result = score_samples(test_images, test_labels, [str(i) for i in range(10)], default_classifier(None),
    ...                        reference_images=test_images)  # doctest: +SKIP
    >>> result.classifier_fid
    0.0
    ```
    """
    images = _unit_range(images, "images")
    if len(labels) != len(images):
        raise ValueError(f"Got {len(labels)} labels for {len(images)} images; expected one label per image.")
    if prompts is not None and len(prompts) != len(images):
        raise ValueError(f"Got {len(prompts)} prompts for {len(images)} images; expected one prompt per image.")
    names = list(class_names)
    predicted, features = classifier.predict(images)
    accuracy = conditional_accuracy(predicted, labels.cpu())
    result = EvaluationResult(
        class_names=names,
        num_samples=len(images),
        accuracy=accuracy.overall,
        accuracy_per_class={names[c]: value for c, value in accuracy.per_class.items()},
        images=images,
        labels=labels.cpu(),
        prompts=list(prompts) if prompts is not None else [class_prompt(names[c]) for c in labels.tolist()],
    )
    if reference is not None and reference_images is not None:
        raise ValueError("Got both `reference` and `reference_images`; expected one of them.")
    if reference_images is not None:
        reference = ReferenceFeatures.embed(classifier, reference_images, reference_labels)
    if reference is None:
        result.notes.append("No reference images: classifier FID and precision/recall were not measured.")
    else:
        reference_features = reference.features
        result.reference_accuracy = reference.accuracy
        result.classifier_fid = frechet_distance(features, reference_features)
        order = torch.randperm(len(reference_features), generator=torch.Generator().manual_seed(seed))
        subset = order[: len(images)]
        if len(reference_features) >= len(images) + 2:
            rest = reference_features[order[len(images) :]]
            result.classifier_fid_floor = frechet_distance(reference_features[subset], rest)
        else:
            result.notes.append(
                f"The reference set ({len(reference_features)} images) is too small for a classifier FID floor at "
                f"{len(images)} samples; expected at least {len(images) + 2}."
            )
        result.precision, result.recall = precision_recall(reference_features[subset], features)
    if clip_scorer is None:
        result.notes.append("No CLIP scorer: the CLIP score was not measured.")
    else:
        result.clip_scores = clip_scorer.score(images, result.prompts).cpu()
        result.clip_score = result.clip_scores.mean().item()
        result.clip_score_per_class = {
            names[c]: result.clip_scores[result.labels == c].mean().item() for c in accuracy.per_class
        }
    return result


def evaluate(
    pipe: MnistDiffusionPipeline,
    num_samples: int = 1000,
    *,
    classifier: MnistClassifier | None = None,
    clip_scorer: ClipScorer | None = None,
    reference_images: torch.Tensor | None = None,
    reference_labels: torch.Tensor | None = None,
    reference: ReferenceFeatures | None = None,
    conditioning: str = "auto",
    guidance_scale: float = 3.0,
    guidance_start: float = 0.0,
    guidance_stop: float = 1.0,
    num_inference_steps: int = 50,
    seed: int = 0,
    batch_size: int = 100,
    style_samples_per_request: int = 100,
) -> EvaluationResult:
    r"""
    Generate `num_samples` images spread evenly over the pipeline's classes and score them.

    Scores: conditional accuracy (overall and per class) by `classifier`; classifier FID against `reference_images`
    with its floor (real against real at the same sample size), precision and recall in the classifier's feature
    space; the mean CLIP score of each sample with its class prompt ("a handwritten 7") when a `clip_scorer` is
    given; and, for pipelines with a text encoder, style-control agreement of prompts such as "a thin 3" or "a
    left-slanted 3" (see [`measure_style_control`]). Results are deterministic for a given `seed`.

    Args:
        pipe ([`MnistDiffusionPipeline`]): The pipeline to evaluate.
        num_samples (`int`, defaults to 1000): Samples to score, a multiple of the number of classes (100 per digit
            for 1000).
        classifier ([`~mnist_diffusion.classifier.MnistClassifier`], *optional*): Defaults to the shipped MNIST
            classifier, or the Fashion-MNIST one when the pipeline's classes are Fashion-MNIST items.
        clip_scorer ([`~mnist_diffusion.clip_model.ClipScorer`], *optional*): Scores samples against their prompts.
        reference_images (`torch.Tensor`, *optional*): Real images `(N, channels, height, width)`, `uint8` or floats
            in [0, 1], typically the test split, for classifier FID and precision/recall.
        reference_labels (`torch.Tensor`, *optional*): Their class ids, for the classifier's accuracy on real images.
        reference ([`ReferenceFeatures`], *optional*): The reference images already embedded by `classifier`
            (training's evaluation reuses them), instead of `reference_images`.
        conditioning (`str`, defaults to `"auto"`): "label" (class labels), "prompt" (class prompts such as "a
            handwritten 7"), "label+prompt" (both), or "auto": both when the pipeline has both, else what it has.
        guidance_scale (`float`, defaults to 3.0): Classifier-free guidance weight.
        guidance_start (`float`, defaults to 0.0): Fraction of the steps after which guidance starts (see the
            pipeline's `guidance_start`).
        guidance_stop (`float`, defaults to 1.0): Fraction of the steps after which guidance stops.
        num_inference_steps (`int`, defaults to 50): Denoising steps with the pipeline's scheduler.
        seed (`int`, defaults to 0): Sample `i` starts from the noise of seed `seed + i`.
        batch_size (`int`, defaults to 100): Images per pipeline call.
        style_samples_per_request (`int`, defaults to 100): Samples per style request; 0 skips style control.

    Returns:
        [`EvaluationResult`]: the scores, with `to_dict()` and `to_markdown()`, and the samples.

    Example:

    ```py
    >>> from mnist_diffusion import MnistDiffusionPipeline
    >>> from mnist_diffusion.data import load_split, prepare_training_data
    >>> from mnist_diffusion.evaluation import evaluate

    >>> pipe = MnistDiffusionPipeline.from_pretrained("path/to/pipeline")
    >>> test = prepare_training_data(load_split("ylecun/mnist", split="test"))
    >>> result = evaluate(pipe, 1000, reference_images=test.images, reference_labels=test.labels)
    >>> print(result.to_markdown())
    | Metric | Value |
    ...
    ```
    """
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples is {num_samples!r}; expected a positive integer.")
    if style_samples_per_request < 0:
        raise ValueError(f"style_samples_per_request is {style_samples_per_request}; expected a value >= 0.")
    conditioning = resolve_conditioning(pipe, conditioning)
    class_names, classifier = class_names_and_classifier(pipe, classifier)
    num_classes = len(class_names)
    if num_samples % num_classes:
        raise ValueError(
            f"num_samples is {num_samples}; expected a multiple of the {num_classes} classes (e.g. "
            f"{max(num_classes, num_samples // num_classes * num_classes)}) so that every class gets as many samples."
        )
    labels = torch.arange(num_samples) % num_classes
    prompts = [class_prompt(class_names[c]) for c in labels.tolist()]
    sampling = SamplingSettings(guidance_scale, num_inference_steps, seed, batch_size, guidance_start, guidance_stop)
    settings = {"conditioning": conditioning, "scheduler": type(pipe.scheduler).__name__}
    settings.update((name, value) for name, value in asdict(sampling).items() if name != "batch_size")
    batches = sample_batches(pipe, labels, prompts, sampling, conditioning=conditioning)
    images = torch.cat([output.images.cpu() for _, output in batches])
    result = score_samples(
        images,
        labels,
        class_names,
        classifier,
        reference_images=reference_images,
        reference_labels=reference_labels,
        reference=reference,
        clip_scorer=clip_scorer,
        prompts=prompts,
        seed=seed,
    )
    result.settings = settings
    if pipe.text_encoder is None:
        result.notes.append("Style control was not measured: the pipeline has no text encoder to ask for a style.")
    elif style_samples_per_request == 0:
        result.notes.append("Style control was not measured: style_samples_per_request is 0.")
    else:
        result.style_control = measure_style_control(
            pipe,
            class_names,
            images[:style_samples_per_request],
            sampling,
            samples_per_request=style_samples_per_request,
            conditioning=conditioning,
        )
    return result


def _unit_range(images: torch.Tensor, name: str) -> torch.Tensor:
    """`uint8` images as floats in [0, 1]; float images checked to be in [0, 1]."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"`{name}` is {shape}; expected a tensor (batch, channels, height, width).")
    if images.dtype == torch.uint8:
        return images.float() / 255
    images = images.float().cpu()
    if len(images) and (images.min() < 0 or images.max() > 1):
        raise ValueError(f"`{name}` have values in [{images.min():.3g}, {images.max():.3g}]; expected [0, 1].")
    return images
