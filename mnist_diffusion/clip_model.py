"""A small CLIP for 28x28 grayscale images and captions (MNIST-CLIP) and `ClipScorer`, which computes CLIP scores."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor, CLIPTokenizer

from .pretrained import MNIST_CLIP

#: Mean and standard deviation of the image normalisation: [0, 1] intensities are mapped to [-1, 1].
IMAGE_MEAN, IMAGE_STD = 0.5, 0.5


def build_clip_config(
    tokenizer: CLIPTokenizer,
    image_size: int = 28,
    num_channels: int = 1,
    patch_size: int = 7,
    vision_hidden_size: int = 128,
    vision_layers: int = 4,
    text_hidden_size: int = 64,
    text_layers: int = 2,
    projection_dim: int = 64,
) -> CLIPConfig:
    r"""
    A small [`~transformers.CLIPConfig`]: a ViT over `patch_size` patches of `image_size` images and a text tower
    sized for `tokenizer` (vocabulary, special tokens and caption length).

    The text tower has the shape of [`mnist_diffusion.text_encoding.build_text_encoder`]'s encoder, so a trained
    MNIST-CLIP folder also serves as a diffusion text encoder (`training/train.py --text_encoder_name_or_path`).
    Attention heads are 16 wide and the MLPs 2x the hidden size.

    Args:
        tokenizer ([`~transformers.CLIPTokenizer`]): The caption tokenizer, e.g. from `build_caption_tokenizer()`.
        image_size (`int`, defaults to 28): Image height and width, a multiple of `patch_size`.
        num_channels (`int`, defaults to 1): Image channels.
        patch_size (`int`, defaults to 7): ViT patch side (4x4 patches at 28x28).
        vision_hidden_size (`int`, defaults to 128): Width of the vision transformer.
        vision_layers (`int`, defaults to 4): Depth of the vision transformer.
        text_hidden_size (`int`, defaults to 64): Width of the text transformer (the diffusion UNet's
            `cross_attention_dim` when used as its text encoder).
        text_layers (`int`, defaults to 2): Depth of the text transformer.
        projection_dim (`int`, defaults to 64): Size of the shared image-text embedding.

    Example:

    ```py
    >>> from mnist_diffusion.clip_model import build_clip_config
    >>> from mnist_diffusion.text_encoding import build_caption_tokenizer

    >>> config = build_clip_config(build_caption_tokenizer())
    >>> config.vision_config.image_size, config.text_config.max_position_embeddings
    (28, 16)
    ```
    """
    if image_size % patch_size:
        raise ValueError(f"image_size is {image_size}; expected a multiple of patch_size {patch_size}.")
    for name, width in (("vision_hidden_size", vision_hidden_size), ("text_hidden_size", text_hidden_size)):
        if width % 16:
            raise ValueError(f"{name} is {width}; expected a multiple of 16 (the attention head width).")
    return CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": text_hidden_size,
            "intermediate_size": 2 * text_hidden_size,
            "num_hidden_layers": text_layers,
            "num_attention_heads": text_hidden_size // 16,
            "max_position_embeddings": tokenizer.model_max_length,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "image_size": image_size,
            "patch_size": patch_size,
            "num_channels": num_channels,
            "hidden_size": vision_hidden_size,
            "intermediate_size": 2 * vision_hidden_size,
            "num_hidden_layers": vision_layers,
            "num_attention_heads": vision_hidden_size // 16,
        },
        projection_dim=projection_dim,
    )


def build_clip_model(tokenizer: CLIPTokenizer, **kwargs) -> CLIPModel:
    r"""
    A randomly initialised [`~transformers.CLIPModel`] from [`build_clip_config`] (`kwargs` are its size arguments).

    Example:

    ```py
    >>> from mnist_diffusion.clip_model import build_clip_model
    >>> from mnist_diffusion.text_encoding import build_caption_tokenizer

    >>> model = build_clip_model(build_caption_tokenizer(), vision_layers=2)
    >>> model.config.vision_config.num_hidden_layers
    2
    ```
    """
    return CLIPModel(build_clip_config(tokenizer, **kwargs))


def build_clip_processor(tokenizer: CLIPTokenizer, image_size: int = 28, num_channels: int = 1) -> CLIPProcessor:
    r"""
    A [`~transformers.CLIPProcessor`] for `image_size` images with `num_channels` channels and `tokenizer`'s captions.

    Images are neither resized nor cropped; intensities in [0, 1] are normalised to [-1, 1]. It round-trips with
    `save_pretrained`/`from_pretrained` (the tokenizer is saved with it).

    Example:

    ```py
    >>> import torch
    >>> from mnist_diffusion.clip_model import build_clip_processor
    >>> from mnist_diffusion.text_encoding import build_caption_tokenizer

    >>> processor = build_clip_processor(build_caption_tokenizer())
    >>> processor.image_processor(list(torch.ones(2, 1, 28, 28)), return_tensors="pt").pixel_values.amax().item()
    1.0
    ```
    """
    image_processor = CLIPImageProcessorPil(
        do_resize=False,
        do_center_crop=False,
        do_rescale=False,
        do_convert_rgb=False,
        size={"height": image_size, "width": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_mean=[IMAGE_MEAN] * num_channels,
        image_std=[IMAGE_STD] * num_channels,
    )
    return CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


class ClipScorer:
    r"""
    Scores images against texts with a [`~transformers.CLIPModel`]: CLIP score, cosine similarities, zero-shot labels.

    Images are `(batch, channels, height, width)` floats in [0, 1] (what `MnistDiffusionPipeline(...,
    output_type="pt")` returns). Grayscale images given to a 3-channel CLIP are repeated to RGB, then the processor
    resizes and normalises them as the model expects. Everything runs without gradients, in eval mode, in batches.

    Args:
        model ([`~transformers.CLIPModel`]): The CLIP model; put in eval mode.
        processor ([`~transformers.CLIPProcessor`]): Its image processor and tokenizer.
        batch_size (`int`, defaults to 256): Images or texts per forward pass.

    Example:

    ```py
    >>> import torch
    >>> from mnist_diffusion.clip_model import ClipScorer

    >>> scorer = ClipScorer.from_pretrained()  # the MNIST-CLIP shipped in the package
    >>> images = torch.rand(2, 1, 28, 28)
    >>> scorer.score(images, ["a handwritten 7", "a thick 3"]).shape
    torch.Size([2])
    ```
    """

    def __init__(self, model: CLIPModel, processor: CLIPProcessor, batch_size: int = 256):
        if batch_size < 1:
            raise ValueError(f"batch_size is {batch_size}; expected a positive integer.")
        self.model = model.eval()
        self.processor = processor
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike | None = None, device: str | torch.device | None = None
    ) -> ClipScorer:
        r"""
        Load a CLIP model and processor from a folder or Hub id (`None`: the MNIST-CLIP shipped in the package).

        Example:

        ```py
        >>> scorer = ClipScorer.from_pretrained("openai/clip-vit-base-patch32", device="cuda")  # doctest: +SKIP
        ```
        """
        name_or_path = MNIST_CLIP if name_or_path is None else name_or_path
        try:
            model = CLIPModel.from_pretrained(name_or_path)
            processor = CLIPProcessor.from_pretrained(name_or_path)
        except (OSError, ValueError) as error:
            raise OSError(
                f"Could not load a CLIP model and processor from {str(name_or_path)!r}; expected a folder written "
                f"by `save_pretrained` or a Hub id of a CLIP model ({str(error).splitlines()[0]})."
            ) from error
        return cls(model.to(device) if device is not None else model, processor)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        r"""Save the model (safetensors) and the processor (image processor and tokenizer) to the folder `path`."""
        self.model.save_pretrained(path)
        self.processor.save_pretrained(path)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        r"""Check images in [0, 1] and turn them into the model's normalised `pixel_values` (on the CPU)."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"Images are {shape}; expected a float tensor (batch, channels, height, width).")
        channels = self.model.config.vision_config.num_channels
        if images.shape[1] != channels and not (images.shape[1] == 1 and channels == 3):
            rgb = " (or 1, repeated to RGB)" if channels == 3 else ""
            raise ValueError(f"Images have {images.shape[1]} channels; expected {channels}{rgb} for this CLIP.")
        if len(images) and (images.min() < 0 or images.max() > 1):
            raise ValueError(
                f"Images have values in [{images.min().item():.3g}, {images.max().item():.3g}]; expected [0, 1]."
            )
        images = images.detach().float().cpu().expand(-1, channels, -1, -1)
        return self.processor.image_processor(list(images), return_tensors="pt", do_rescale=False).pixel_values

    @torch.no_grad()
    def image_embeds(self, images: torch.Tensor) -> torch.Tensor:
        r"""L2-normalised image embeddings `(batch, projection_dim)` of images in [0, 1]."""
        embeds = [
            self.model.get_image_features(pixel_values=self.preprocess(batch).to(self.device)).pooler_output
            for batch in images.split(self.batch_size)
        ]
        return torch.nn.functional.normalize(torch.cat(embeds).float(), dim=-1).cpu()

    @torch.no_grad()
    def text_embeds(self, texts: Sequence[str]) -> torch.Tensor:
        r"""L2-normalised text embeddings `(len(texts), projection_dim)`; texts are truncated to the model's length."""
        if isinstance(texts, str) or not all(isinstance(text, str) for text in texts):
            raise ValueError(f"Texts are {texts!r}; expected a list of strings.")
        texts = list(texts)
        max_length = self.model.config.text_config.max_position_embeddings
        embeds = []
        for start in range(0, len(texts), self.batch_size):
            tokens = self.processor.tokenizer(
                texts[start : start + self.batch_size],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            ).to(self.device)
            embeds.append(self.model.get_text_features(**tokens).pooler_output)
        return torch.nn.functional.normalize(torch.cat(embeds).float(), dim=-1).cpu()

    def image_text_similarity(self, images: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        r"""
        Cosine similarities `(num_images, num_texts)` between every image and every text (e.g. for zero-shot use).

        Example:

        ```py
        >>> similarity = scorer.image_text_similarity(images, ["a handwritten 1", "a handwritten 7"])  # doctest: +SKIP
        >>> similarity.argmax(dim=1)  # doctest: +SKIP
        tensor([1, 1])
        ```
        """
        return self.image_embeds(images) @ self.text_embeds(texts).T

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        r"""
        The CLIP score of each image with its prompt, `100 * max(cos(image, prompt), 0)`, shaped `(batch,)`.

        This is torchmetrics' `CLIPScore` per image (it reports the mean over images): 0 for unrelated pairs, higher
        for better matches.

        Example:

        ```py
        >>> scorer.score(images, ["a handwritten 7"] * len(images)).mean()  # doctest: +SKIP
        tensor(31.2)
        ```
        """
        if isinstance(prompts, str) or len(prompts) != len(images):
            count = "a string" if isinstance(prompts, str) else f"{len(prompts)} prompts"
            raise ValueError(f"Got {count} for {len(images)} images; expected one prompt per image (a list).")
        cosine = (self.image_embeds(images) * self.text_embeds(prompts)).sum(dim=-1)
        return 100 * cosine.clamp(min=0)

    def classify(self, images: torch.Tensor, class_prompts: Sequence[Sequence[str]]) -> torch.Tensor:
        r"""
        Zero-shot class ids `(batch,)`: the class whose prompts (an ensemble, averaged in embedding space) are most
        similar to each image.

        Example:

        ```py
        >>> from mnist_diffusion.captions import caption_templates

        >>> prompts = [caption_templates(str(digit), "label") for digit in range(10)]  # "7", "a handwritten seven"...
        >>> scorer.classify(images, prompts)  # doctest: +SKIP
        tensor([7, 3])
        ```
        """
        if not class_prompts or any(isinstance(p, str) or not p for p in class_prompts):
            raise ValueError(f"class_prompts is {class_prompts!r}; expected a non-empty list of lists of prompts.")
        class_embeds = torch.stack([self.text_embeds(prompts).mean(dim=0) for prompts in class_prompts])
        return (self.image_embeds(images) @ torch.nn.functional.normalize(class_embeds, dim=-1).T).argmax(dim=1)
