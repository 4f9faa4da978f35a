"""Style control: how well prompts such as "a thin 3" or "a left-slanted 3" are followed, measured on samples."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from ..captions import (
    SLANT_BOUNDS,
    SLANT_SYNONYMS,
    SLANT_WORDS,
    THICKNESS_BOUNDS,
    THICKNESS_WORDS,
    caption_templates,
    measure_style,
)
from .results import AttributeDistribution, StyleControlResult, StyleRequestResult
from .sampling import SamplingSettings, sample_batches

if TYPE_CHECKING:
    from ..pipelines import MnistDiffusionPipeline

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
