"""Style measurements (thickness, slant, size) of small grayscale images, captions built from them, and training
conditioning: captions with classifier-free-guidance dropout, tokenised."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .text_encoding import DIGIT_WORDS

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

CAPTION_MODES = ("label", "label+style")

#: Threshold on intensity in [0, 1] above which a pixel counts as ink.
INK_THRESHOLD = 0.5
#: Stroke width (pixels at 28x28) below which a drawing is "thin" and above which it is "thick" (MNIST train tertiles).
THICKNESS_BOUNDS = (1.75, 2.2)
#: Slant (horizontal shift per unit of height, positive = top leans right) bounds of "upright" (MNIST tertiles).
SLANT_BOUNDS = (-0.02, 0.24)
#: Bounds of "medium" size (square root of the ink bounding-box area over the image side; MNIST tertiles).
SIZE_BOUNDS = (0.57, 0.64)

THICKNESS_WORDS = ("thin", "regular", "thick")
SLANT_WORDS = ("left-slanted", "upright", "right-slanted")
SIZE_WORDS = ("small", "medium", "large")
#: Other ways captions say a slant, so that prompts like "a thick slanted 7" (handwriting leans right) are understood.
SLANT_SYNONYMS = {"right-slanted": ("right-slanted", "slanted"), "upright": ("upright", "straight")}


@dataclass
class StyleMeasurements:
    r"""
    Per-image style statistics computed by [`measure_style`], each a float tensor of shape `(batch,)`.

    Args:
        thickness (`torch.Tensor`): Mean stroke width in pixels, rescaled to a 28x28 image: `2 * ink_area /
            ink_perimeter`, where the perimeter counts ink/background edges between 4-neighbours.
        slant (`torch.Tensor`): `-cov(x, y) / var(y)` of the intensity-weighted pixel coordinates (y grows downwards):
            how far the drawing shifts right per unit of height going up. 0 is upright, > 0 leans right.
        size (`torch.Tensor`): `sqrt(bbox_height * bbox_width) / side` of the ink's bounding box, in [0, 1].
    """

    thickness: torch.Tensor
    slant: torch.Tensor
    size: torch.Tensor

    def classes(self) -> dict[str, torch.Tensor]:
        r"""Bucket ids `(batch,)` per attribute: 0, 1, 2 index `THICKNESS_WORDS`, `SLANT_WORDS` and `SIZE_WORDS`."""
        return {
            "thickness": torch.bucketize(self.thickness, torch.tensor(THICKNESS_BOUNDS)),
            "slant": torch.bucketize(self.slant, torch.tensor(SLANT_BOUNDS)),
            "size": torch.bucketize(self.size, torch.tensor(SIZE_BOUNDS)),
        }

    def words(self) -> list[tuple[str, str, str]]:
        r"""`(thickness, slant, size)` words per image, e.g. `("thick", "right-slanted", "large")`."""
        classes = self.classes()
        return [
            (THICKNESS_WORDS[t], SLANT_WORDS[s], SIZE_WORDS[z])
            for t, s, z in zip(
                classes["thickness"].tolist(), classes["slant"].tolist(), classes["size"].tolist(), strict=True
            )
        ]


def measure_style(images: torch.Tensor) -> StyleMeasurements:
    r"""
    Measure stroke thickness, slant and size of single-channel images, deterministically and in one batched pass.

    Images are `(batch, 1, height, width)` or `(batch, height, width)`, either `uint8` in [0, 255] or floats in
    [0, 1] (what `MnistDiffusionPipeline(..., output_type="pt")` returns), white ink on black. Pixels above
    `INK_THRESHOLD` are ink. See [`StyleMeasurements`] for the formulas; thickness is reported at the 28x28 scale so
    the same thresholds hold at any resolution. An image without ink measures 0 for every attribute.

    Example:

    ```py
    >>> import torch
    >>> from mnist_diffusion.captions import measure_style

    >>> image = torch.zeros(1, 28, 28)
    >>> image[0, 4:24, 12:16] = 1.0  # an upright bar 4 pixels wide
    >>> style = measure_style(image)
    >>> round(style.thickness.item(), 2)
    3.33
    >>> style.words()
    [('thick', 'upright', 'small')]
    ```
    """
    if images.ndim == 4:
        if images.shape[1] != 1:
            raise ValueError(f"Expected single-channel images (batch, 1, H, W), got shape {tuple(images.shape)}.")
        images = images[:, 0]
    if images.ndim != 3:
        raise ValueError(f"Expected images of shape (batch, 1, H, W) or (batch, H, W), got {tuple(images.shape)}.")
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    batch, height, width = x.shape
    ink = (x > INK_THRESHOLD).float()
    area = ink.sum(dim=(1, 2))
    padded = torch.nn.functional.pad(ink, (1, 1, 1, 1))
    perimeter = (padded[:, 1:, :] - padded[:, :-1, :]).abs().sum(dim=(1, 2)) + (
        (padded[:, :, 1:] - padded[:, :, :-1]).abs().sum(dim=(1, 2))
    )
    thickness = 2 * area / perimeter.clamp(min=1) * (28.0 / width)

    ys = torch.arange(height, dtype=torch.float32).view(1, height, 1)
    xs = torch.arange(width, dtype=torch.float32).view(1, 1, width)
    mass = x.sum(dim=(1, 2)).clamp(min=1e-6)
    mean_y = (x * ys).sum(dim=(1, 2)) / mass
    mean_x = (x * xs).sum(dim=(1, 2)) / mass
    dy = ys - mean_y.view(batch, 1, 1)
    dx = xs - mean_x.view(batch, 1, 1)
    var_y = (x * dy * dy).sum(dim=(1, 2)) / mass
    cov_xy = (x * dx * dy).sum(dim=(1, 2)) / mass
    slant = -cov_xy / var_y.clamp(min=1e-6)

    rows, cols = ink.amax(dim=2), ink.amax(dim=1)
    bbox_height = _extent(rows)
    bbox_width = _extent(cols)
    size = (bbox_height * bbox_width).sqrt() / max(height, width)
    has_ink = area > 0
    zero = torch.zeros(batch)
    return StyleMeasurements(
        thickness=torch.where(has_ink, thickness, zero),
        slant=torch.where(has_ink, slant, zero),
        size=torch.where(has_ink, size, zero),
    )


def _extent(occupied: torch.Tensor) -> torch.Tensor:
    """Number of positions from the first to the last non-zero entry of each row of `occupied` (0 when empty)."""
    positions = torch.arange(occupied.shape[1], dtype=torch.float32)
    first = torch.where(occupied > 0, positions, float("inf")).amin(dim=1)
    last = torch.where(occupied > 0, positions, -1.0).amax(dim=1)
    return (last - first + 1).clamp(min=0)


def label_word(label_name: str) -> str:
    r"""The word for a label name: digits become words ("7" -> "seven"); other names are lower-cased ("Sneaker")."""
    name = label_name.strip()
    return DIGIT_WORDS[int(name)] if name.isdigit() and len(name) == 1 else name.lower()


def caption_templates(label_name: str, caption_mode: str) -> list[str]:
    r"""
    The phrasings for a label, with `{thickness}`, `{slant}` and `{size}` placeholders in `label+style` mode.

    Digits get "handwritten" phrasings ("7", "seven", "a handwritten 7"); other classes (Fashion-MNIST) get "a
    sneaker", "a picture of a sneaker". `label+style` mode adds phrasings naming one, two or all three style words
    ("a thick right-slanted seven").

    Example:

    ```py
    >>> from mnist_diffusion.captions import caption_templates

    >>> caption_templates("7", "label")
    ['7', 'seven', 'a handwritten 7', 'a handwritten seven']
    ```
    """
    if caption_mode not in CAPTION_MODES:
        raise ValueError(f"Unknown caption mode {caption_mode!r}; expected one of {list(CAPTION_MODES)}.")
    word = label_word(label_name)
    name = label_name.strip().lower()
    is_digit = word in DIGIT_WORDS
    if is_digit:
        templates = [name, word, f"a handwritten {name}", f"a handwritten {word}"]
        styled = [
            f"a {{thickness}} {{slant}} {word}",
            f"a {{thickness}} {name}",
            f"a {{slant}} {name}",
            f"a {{size}} {{thickness}} handwritten {word}",
            f"a {{size}} {{thickness}} {{slant}} {name}",
        ]
    else:
        templates = [word, f"a {word}", f"a picture of a {word}"]
        styled = [f"a {{thickness}} {word}", f"a {{size}} {word}", f"a {{size}} {{thickness}} {word}"]
    return templates + styled if caption_mode == "label+style" else templates


def build_captions(
    label_names: Sequence[str],
    labels: torch.Tensor,
    caption_mode: str,
    phrasings: torch.Tensor,
    style_words: Sequence[tuple[str, str, str]] | None = None,
) -> list[str]:
    r"""
    One caption per image from its label, the phrasing index `phrasings[i]` (taken modulo the number of phrasings)
    and, in `label+style` mode, its `(thickness, slant, size)` words from [`StyleMeasurements.words`]. The phrasing
    index also picks a synonym of the slant word from `SLANT_SYNONYMS` ("right-slanted" is sometimes "slanted").

    Example:

    ```py
    >>> import torch
    >>> from mnist_diffusion.captions import build_captions

    >>> words = [("thick", "upright", "small")]
    >>> build_captions(["0", "1"], torch.tensor([1]), "label+style", torch.tensor([4]), words)
    ['a thick upright one']
    ```
    """
    if caption_mode == "label+style" and style_words is None:
        raise ValueError("caption_mode 'label+style' needs `style_words` (one (thickness, slant, size) per image).")
    templates = {name: caption_templates(name, caption_mode) for name in dict.fromkeys(label_names)}
    captions = []
    for i, (label, phrasing) in enumerate(zip(labels.tolist(), phrasings.tolist(), strict=True)):
        options = templates[label_names[label]]
        template = options[phrasing % len(options)]
        if caption_mode == "label+style":
            thickness, slant, size = style_words[i]
            synonyms = SLANT_SYNONYMS.get(slant, (slant,))
            slant = synonyms[phrasing // len(options) % len(synonyms)]
            template = template.format(thickness=thickness, slant=slant, size=size)
        captions.append(template)
    return captions


def conditioning_dropout(
    batch_size: int, cond_dropout_prob: float, class_dropout_prob: float
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""
    Which samples of a training batch lose their prompt and which their class label, for classifier-free guidance.

    With probability `p = cond_dropout_prob` each, a sample loses both (the unconditional branch) or its prompt only;
    with probability `q = class_dropout_prob` it loses its class only (so the prompt alone must carry the class).
    Draws `batch_size` numbers from torch's global generator.

    Returns:
        `tuple[torch.Tensor, torch.Tensor]`: boolean masks `(drop_prompt, drop_class)`, each `(batch_size,)`.

    Example:

    ```py
    >>> import torch
    >>> from mnist_diffusion.captions import conditioning_dropout

    >>> drop_prompt, drop_class = conditioning_dropout(10_000, 0.1, 0.3)
    >>> round(drop_prompt.float().mean().item(), 1), round(drop_class.float().mean().item(), 1)
    (0.2, 0.4)
    ```
    """
    if not 0 <= cond_dropout_prob <= 0.5 or not 0 <= class_dropout_prob <= 1 - 2 * cond_dropout_prob:
        raise ValueError(
            f"cond_dropout_prob is {cond_dropout_prob} and class_dropout_prob {class_dropout_prob}; expected "
            "0 <= cond_dropout_prob <= 0.5 and 0 <= class_dropout_prob <= 1 - 2 * cond_dropout_prob."
        )
    u = torch.rand(batch_size)
    p, q = cond_dropout_prob, class_dropout_prob
    drop_prompt = u < 2 * p
    drop_class = (u < p) | ((u >= 2 * p) & (u < 2 * p + q))
    return drop_prompt, drop_class


@dataclass
class TrainingConditioning:
    r"""
    The conditioning of one training batch, ready for the text encoder and the UNet.

    Args:
        prompts (`list[str]`): The caption of each sample, `""` where the prompt was dropped.
        input_ids (`torch.Tensor`): Token ids `(batch, tokenizer.model_max_length)`.
        attention_mask (`torch.Tensor`): 1 for real tokens, 0 for padding, same shape.
        class_labels (`torch.Tensor`): Class ids `(batch,)`, the null class where the label was dropped.
    """

    prompts: list[str]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    class_labels: torch.Tensor


class TrainingCaptioner:
    r"""
    Captions, conditioning dropout and tokenisation of training batches (what `training/train.py` feeds the models).

    Each batch's captions come from `captions` (a dataset's caption column), or are built per step by
    [`build_captions`] from the label, a random phrasing and, in `label+style` mode, the image's style words; then
    [`conditioning_dropout`] replaces prompts by `""` and labels by the null class (`len(label_names)`), and the
    prompts are tokenised to the tokenizer's full length.

    Args:
        tokenizer (`CLIPTokenizer`): Tokenises the prompts.
        label_names (`Sequence[str]`): Name of each class id.
        caption_mode (`str`, defaults to `"label+style"`): One of `CAPTION_MODES`, for built captions.
        captions (`Sequence[str]`, *optional*): One caption per dataset row; used instead of built captions.
        style_words (`Sequence[tuple[str, str, str]]`, *optional*): `(thickness, slant, size)` words per dataset row
            ([`StyleMeasurements.words`]); needed in `label+style` mode without `captions`.
        cond_dropout_prob (`float`, defaults to 0.1): Probability of dropping both, and of dropping the prompt only.
        class_dropout_prob (`float`, defaults to 0.3): Probability of dropping the class label only.

    Example:

    ```py
    >>> import torch
    >>> from mnist_diffusion import build_caption_tokenizer
    >>> from mnist_diffusion.captions import TrainingCaptioner

    >>> captioner = TrainingCaptioner(build_caption_tokenizer(), ["0", "1"], caption_mode="label")
    >>> conditioning = captioner(labels=torch.tensor([0, 1]), indices=torch.tensor([5, 8]))
    >>> conditioning.input_ids.shape, conditioning.class_labels.shape
    (torch.Size([2, 16]), torch.Size([2]))
    ```
    """

    def __init__(
        self,
        tokenizer: CLIPTokenizer,
        label_names: Sequence[str],
        caption_mode: str = "label+style",
        captions: Sequence[str] | None = None,
        style_words: Sequence[tuple[str, str, str]] | None = None,
        cond_dropout_prob: float = 0.1,
        class_dropout_prob: float = 0.3,
    ):
        if caption_mode not in CAPTION_MODES:
            raise ValueError(f"Unknown caption mode {caption_mode!r}; expected one of {list(CAPTION_MODES)}.")
        if captions is None and caption_mode == "label+style" and style_words is None:
            raise ValueError("caption_mode 'label+style' needs `style_words` (one (thickness, slant, size) per row).")
        self.tokenizer = tokenizer
        self.label_names = list(label_names)
        self.caption_mode = caption_mode
        self.captions = captions
        self.style_words = style_words if caption_mode == "label+style" else None
        self.cond_dropout_prob = cond_dropout_prob
        self.class_dropout_prob = class_dropout_prob
        self.null_class = len(self.label_names)

    def captions_for(self, labels: torch.Tensor, indices: torch.Tensor) -> list[str]:
        r"""The caption of each sample of a batch: dataset rows `indices` with class ids `labels`."""
        rows = indices.cpu().tolist()
        if self.captions is not None:
            return [self.captions[i] for i in rows]
        phrasings = torch.randint(0, 1 << 16, (len(rows),))
        words = [self.style_words[i] for i in rows] if self.style_words is not None else None
        return build_captions(self.label_names, labels.cpu(), self.caption_mode, phrasings, words)

    def __call__(self, labels: torch.Tensor, indices: torch.Tensor) -> TrainingConditioning:
        r"""Captions, dropout and tokens of a batch; tensors on the device of `labels`."""
        prompts = self.captions_for(labels, indices)
        drop_prompt, drop_class = conditioning_dropout(len(prompts), self.cond_dropout_prob, self.class_dropout_prob)
        prompts = ["" if drop else prompt for prompt, drop in zip(prompts, drop_prompt.tolist(), strict=True)]
        class_labels = torch.where(drop_class.to(labels.device), torch.full_like(labels, self.null_class), labels)
        max_length = self.tokenizer.model_max_length
        tokens = self.tokenizer(
            prompts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt"
        )
        return TrainingConditioning(
            prompts=prompts,
            input_ids=tokens.input_ids.to(labels.device),
            attention_mask=tokens.attention_mask.to(labels.device),
            class_labels=class_labels,
        )
