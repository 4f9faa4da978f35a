"""`evaluate`: sample a pipeline class by class and score accuracy, classifier FID, precision/recall, CLIP, style."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from .captions import (
    SLANT_BOUNDS,
    SLANT_SYNONYMS,
    SLANT_WORDS,
    THICKNESS_BOUNDS,
    THICKNESS_WORDS,
    caption_templates,
    measure_style,
)
from .classifier import MnistClassifier
from .metrics import conditional_accuracy, frechet_distance, precision_recall
from .pipelines import MnistDiffusionPipeline, MnistDiffusionPipelineOutput
from .pretrained import FASHION_MNIST_CLASSIFIER, MNIST_CLASSIFIER

if TYPE_CHECKING:
    from .clip_model import ClipScorer

#: How samples are conditioned: "auto" uses class labels and prompts when the pipeline has both, else what it has.
CONDITIONINGS = ("auto", "label", "prompt", "label+prompt")
#: The shipped classifiers [`default_classifier`] chooses from, by the class names they were trained on.
SHIPPED_CLASSIFIERS = (MNIST_CLASSIFIER, FASHION_MNIST_CLASSIFIER)
#: Measured style attributes that prompts can ask for: (bucket bounds, bucket words) as in `mnist_diffusion.captions`.
STYLE_ATTRIBUTES = {"thickness": (THICKNESS_BOUNDS, THICKNESS_WORDS), "slant": (SLANT_BOUNDS, SLANT_WORDS)}
#: The style requests of the style-control evaluation: (attribute, word in the prompt). "slanted" means right-slanted.
STYLE_REQUESTS = (
    ("thickness", "thin"),
    ("thickness", "thick"),
    ("slant", "left-slanted"),
    ("slant", "right-slanted"),
    ("slant", "slanted"),
)
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


def class_prompt(label_name: str) -> str:
    r"""
    The prompt that asks for a class: its first "a ..." phrasing ("a handwritten 7", "a sneaker").

    Example:

    ```py
    >>> from mnist_diffusion.evaluation import class_prompt

    >>> class_prompt("7"), class_prompt("Sneaker")
    ('a handwritten 7', 'a sneaker')
    ```
    """
    return next(t for t in caption_templates(label_name, "label") if t.startswith("a "))


def style_prompt(label_name: str, attribute: str, word: str) -> str | None:
    r"""
    The caption phrasing that names only `attribute` for a class, filled with `word` ("a thin 3"); `None` when the
    captions of that class never name the attribute (Fashion-MNIST items have no slant).

    Example:

    ```py
    >>> from mnist_diffusion.evaluation import style_prompt

    >>> style_prompt("3", "slant", "left-slanted"), style_prompt("Bag", "slant", "slanted")
    ('a left-slanted 3', None)
    ```
    """
    for template in caption_templates(label_name, "label+style"):
        if re.findall(r"{(\w+)}", template) == [attribute]:
            return template.format(**{attribute: word})
    return None


def style_agreement(values: torch.Tensor, attribute: str, word: str) -> tuple[float, float]:
    r"""
    Strict and contrast agreement of measured `values` of `attribute` with a request for `word`.

    Strict: the value falls in the requested tertile bucket (`THICKNESS_BOUNDS`/`SLANT_BOUNDS` of
    `mnist_diffusion.captions`). Contrast: the value lies on the requested side of the middle of the middle band
    ("regular" thickness, "upright" slant). Requests are for an outer band; asking for the middle one raises.

    Example:

    ```py
    >>> import torch
    >>> from mnist_diffusion.evaluation import style_agreement

    >>> style_agreement(torch.tensor([1.5, 1.9, 2.5]), "thickness", "thin")  # strict: 1.5; contrast: 1.5 and 1.9
    (0.333..., 0.666...)
    ```
    """
    if attribute not in STYLE_ATTRIBUTES:
        raise ValueError(f"Unknown style attribute {attribute!r}; expected one of {list(STYLE_ATTRIBUTES)}.")
    bounds, words = STYLE_ATTRIBUTES[attribute]
    target = _target_word(attribute, word)
    bucket = words.index(target)
    if bucket == 1:
        raise ValueError(f"{word!r} asks for the middle {attribute} band; expected one of {[words[0], words[2]]}.")
    strict = (torch.bucketize(values, torch.tensor(bounds)) == bucket).float().mean().item()
    middle = sum(bounds) / 2
    contrast = ((values < middle) if bucket == 0 else (values > middle)).float().mean().item()
    return strict, contrast


def _target_word(attribute: str, word: str) -> str:
    words = STYLE_ATTRIBUTES[attribute][1]
    synonyms = {synonym: canonical for canonical, group in SLANT_SYNONYMS.items() for synonym in group}
    target = synonyms.get(word, word) if attribute == "slant" else word
    if target not in words:
        raise ValueError(f"Unknown {attribute} word {word!r}; expected one of {list(words)} or a synonym.")
    return target


def default_classifier(class_names: Sequence[str] | None) -> MnistClassifier:
    r"""
    The shipped classifier trained on `class_names` (MNIST digits or Fashion-MNIST items); MNIST when `None`.

    Example:

    ```py
    >>> from mnist_diffusion.evaluation import default_classifier

    >>> default_classifier(["T - shirt / top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
    ...                     "Bag", "Ankle boot"]).config.num_classes
    10
    ```
    """
    if class_names is None:
        return MnistClassifier.from_pretrained(MNIST_CLASSIFIER)
    wanted = [name.lower() for name in class_names]
    for path in SHIPPED_CLASSIFIERS:
        id2label = json.loads((path / "config.json").read_text())["id2label"]
        if [id2label[str(i)].lower() for i in range(len(id2label))] == wanted:
            return MnistClassifier.from_pretrained(path)
    raise ValueError(
        f"No shipped classifier knows the classes {list(class_names)}; expected MNIST digits or Fashion-MNIST "
        "items, or pass a classifier trained on these classes (training/train_classifier.py)."
    )


def resolve_conditioning(pipe: MnistDiffusionPipeline, conditioning: str) -> str:
    r"""
    The conditioning to sample with: "auto" becomes "label+prompt" when the pipeline has class labels and a text
    encoder, otherwise the one it has; an explicit choice the pipeline cannot follow raises `ValueError`.
    """
    if conditioning not in CONDITIONINGS:
        raise ValueError(f"Unknown conditioning {conditioning!r}; expected one of {list(CONDITIONINGS)}.")
    has_labels, has_text = pipe.num_classes > 0, pipe.text_encoder is not None
    if conditioning == "auto":
        return "label+prompt" if has_labels and has_text else "label" if has_labels else "prompt"
    if "label" in conditioning and not has_labels:
        raise ValueError(f"Conditioning {conditioning!r} needs class labels but this pipeline's UNet has no classes.")
    if "prompt" in conditioning and not has_text:
        raise ValueError(f"Conditioning {conditioning!r} needs prompts but this pipeline has no text encoder.")
    return conditioning


def class_names_and_classifier(
    pipe: MnistDiffusionPipeline, classifier: MnistClassifier | None
) -> tuple[list[str], MnistClassifier]:
    r"""
    The pipeline's class names (`id2label`; the classifier's for a text-only pipeline) and the classifier scoring
    them (the shipped one for those names by default), checked against each other and the pipeline's images.
    """
    id2label = pipe.config.id2label
    names = [id2label[str(i)] for i in range(len(id2label))] if id2label else None
    if names is None and pipe.num_classes:
        names = [str(i) for i in range(pipe.num_classes)]
    classifier = default_classifier(names) if classifier is None else classifier
    if names is None:
        classifier_labels = classifier.config.id2label or {}
        names = [classifier_labels.get(str(i), str(i)) for i in range(classifier.config.num_classes)]
    if classifier.config.num_classes != len(names):
        raise ValueError(
            f"The classifier has {classifier.config.num_classes} classes but the pipeline has {len(names)} "
            f"({names}); expected a classifier trained on the pipeline's classes."
        )
    image_shape = (pipe.unet.config.in_channels, pipe.unet.config.sample_size)
    classifier_shape = (classifier.config.in_channels, classifier.config.sample_size)
    if image_shape != classifier_shape:
        raise ValueError(
            f"The pipeline makes {image_shape[1]}px images with {image_shape[0]} channel(s) but the classifier takes "
            f"{classifier_shape[1]}px with {classifier_shape[0]}; expected a classifier for the pipeline's images."
        )
    return names, classifier.to(pipe.device)


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


@dataclass(frozen=True)
class SamplingSettings:
    r"""
    How [`sample_batches`] calls the pipeline: guidance (scale and the fraction of steps it covers), steps, the first
    seed and the images per call.

    Example:

    ```py
    >>> from mnist_diffusion.evaluation import SamplingSettings

    >>> SamplingSettings(guidance_scale=2.0, num_inference_steps=20).guidance_stop
    1.0
    ```
    """

    guidance_scale: float = 3.0
    num_inference_steps: int = 50
    seed: int = 0
    batch_size: int = 100
    guidance_start: float = 0.0
    guidance_stop: float = 1.0


def sample_batches(
    pipe: MnistDiffusionPipeline,
    labels: torch.Tensor,
    prompts: Sequence[str],
    settings: SamplingSettings,
    *,
    conditioning: str,
    return_trajectory: bool = False,
    desc: str = "sampling",
) -> Iterator[tuple[slice, MnistDiffusionPipelineOutput]]:
    r"""
    Generate one sample per entry of `labels`/`prompts` (used as `conditioning` says), `settings.batch_size` at a
    time, with a tqdm progress bar, yielding `(positions, output)` per batch with `output_type="pt"` images in [0, 1].

    Sample `i` starts from the noise of `torch.Generator().manual_seed(settings.seed + i)`, so it does not depend on
    the batch size, and requests with the same positions share their noise (paired comparisons). The pipeline's own
    progress bar is silenced meanwhile.
    """
    batch_size, seed = settings.batch_size, settings.seed
    if batch_size < 1:
        raise ValueError(f"batch_size is {batch_size}; expected a positive integer.")
    previous_config = getattr(pipe, "_progress_bar_config", {}).copy()
    pipe.set_progress_bar_config(disable=True)
    try:
        with tqdm(total=len(labels), desc=desc, unit="image") as progress:
            for start in range(0, len(labels), batch_size):
                positions = slice(start, min(start + batch_size, len(labels)))
                output = pipe(
                    prompt=list(prompts[positions]) if "prompt" in conditioning else None,
                    class_labels=labels[positions].tolist() if "label" in conditioning else None,
                    num_inference_steps=settings.num_inference_steps,
                    guidance_scale=settings.guidance_scale,
                    guidance_start=settings.guidance_start,
                    guidance_stop=settings.guidance_stop,
                    generator=[torch.Generator().manual_seed(seed + i) for i in range(start, positions.stop)],
                    output_type="pt",
                    return_trajectory=return_trajectory,
                )
                yield positions, output
                progress.update(positions.stop - start)
    finally:
        pipe._progress_bar_config = previous_config


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


def measure_style_control(
    pipe: MnistDiffusionPipeline,
    class_names: Sequence[str],
    baseline_images: torch.Tensor,
    settings: SamplingSettings,
    *,
    samples_per_request: int,
    conditioning: str,
) -> StyleControlResult:
    r"""
    Generate `samples_per_request` samples for each request of `STYLE_REQUESTS` that the classes' captions can
    express ("a thin 3", "a left-slanted 3", ...), cycling through the classes, measure them with
    [`~mnist_diffusion.captions.measure_style`] and compare them with `baseline_images` (unstyled samples whose
    sample `i` was drawn for class `i % num_classes` from the same noise).
    """
    num_classes = len(class_names)
    labels = torch.arange(samples_per_request) % num_classes
    baseline_style = measure_style(baseline_images)
    baseline = {name: AttributeDistribution.of(getattr(baseline_style, name)) for name in STYLE_ATTRIBUTES}
    requests = []
    for attribute, word in STYLE_REQUESTS:
        prompts = [style_prompt(class_names[c], attribute, word) for c in labels.tolist()]
        if None in prompts:
            continue
        images = torch.cat(
            [
                output.images.cpu()
                for _, output in sample_batches(
                    pipe,
                    labels,
                    prompts,
                    settings,
                    conditioning="label+prompt" if "label" in conditioning else "prompt",
                    desc=f"style {word!r}",
                )
            ]
        )
        values = getattr(measure_style(images), attribute)
        strict, contrast = style_agreement(values, attribute, word)
        baseline_strict, baseline_contrast = style_agreement(baseline[attribute].values, attribute, word)
        requests.append(
            StyleRequestResult(
                request=word,
                example_prompt=prompts[0],
                attribute=attribute,
                target=_target_word(attribute, word),
                num_samples=len(values),
                strict_agreement=strict,
                contrast_agreement=contrast,
                baseline_strict_agreement=baseline_strict,
                baseline_contrast_agreement=baseline_contrast,
                distribution=AttributeDistribution.of(values),
            )
        )
    return StyleControlResult(requests=requests, baseline=baseline)


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
