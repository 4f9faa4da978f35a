"""Checking a pipeline call's arguments and encoding its prompts and class labels into the UNet's conditioning."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch
from mnist_diffusion.pipelines.pipeline_output import OUTPUT_TYPES


class MnistCallInputsMixin:
    r"""
    The input side of [`MnistDiffusionPipeline`] and the pipelines built on it: [`~MnistCallInputsMixin.check_inputs`]
    validates a call before any compute, [`~MnistCallInputsMixin.resolve_class_labels`] turns names into class ids,
    [`~MnistCallInputsMixin.encode_prompt`] runs the text encoder and
    [`~MnistCallInputsMixin.encode_conditioning`] builds the UNet's keyword arguments for batched guidance (and
    `_replace_prompt_embeds` swaps in the embeddings a step callback returns). It reads the pipeline's `unet`,
    `text_encoder`, `tokenizer`, `scheduler` and `config.id2label`.
    """

    @property
    def _callback_tensor_inputs(self) -> list[str]:
        """The tensors `callback_on_step_end` may ask for: `prompt_embeds` only with a text encoder."""
        return ["latents", "noise_pred"] + (["prompt_embeds"] if self.text_encoder is not None else [])

    def resolve_class_labels(self, class_labels: int | str | Sequence[int | str]) -> list[int]:
        r"""
        Class ids for `class_labels` given as ids or names; names are matched against `id2label`, case-insensitively.

        Example:

        ```py
        >>> pipe.resolve_class_labels(["7", 3, "seven"])  # doctest: +SKIP
        ValueError: Unknown class label 'seven'; expected one of ['0', '1', ..., '9'] or an id in 0..9.
        ```
        """
        if self.num_classes == 0:
            raise ValueError("`class_labels` were given but this pipeline's UNet has no class conditioning.")
        if isinstance(class_labels, (torch.Tensor, np.ndarray)):
            class_labels = class_labels.tolist()
        labels = list(class_labels) if isinstance(class_labels, (list, tuple)) else [class_labels]
        if not labels:
            raise ValueError("`class_labels` is empty; expected at least one label.")
        id2label = self.config.id2label or {}
        by_name = {str(name).lower(): int(i) for i, name in id2label.items()}
        names = list(id2label.values())
        ids = []
        for label in labels:
            if isinstance(label, str):
                if label.lower() not in by_name:
                    raise ValueError(
                        f"Unknown class label {label!r}; expected one of {names} or an id in 0..{self.num_classes - 1}"
                        if names
                        else f"Class label {label!r} is a name, but this pipeline has no `id2label`; pass ids in "
                        f"0..{self.num_classes - 1}."
                    )
                ids.append(by_name[label.lower()])
            elif isinstance(label, (int, np.integer)) and not isinstance(label, bool):
                if not 0 <= label < self.num_classes:
                    raise ValueError(
                        f"Class label {label} is out of range; expected an id in 0..{self.num_classes - 1}."
                    )
                ids.append(int(label))
            else:
                raise ValueError(f"Class label {label!r} has type {type(label).__name__}; expected an int or a name.")
        return ids

    def check_inputs(
        self,
        *,
        prompt: str | list[str] | None,
        class_labels: int | str | Sequence[int | str] | None,
        negative_prompt: str | list[str] | None,
        height: int,
        width: int,
        num_inference_steps: int,
        guidance_scale: float,
        guidance_start: float,
        guidance_stop: float,
        num_images_per_prompt: int,
        generator: torch.Generator | list[torch.Generator] | None,
        output_type: str,
        callback_on_step_end_tensor_inputs: list[str] | None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        negative_prompt_attention_mask: torch.Tensor | None = None,
        num_input_images: int | None = None,
        adapter_guidance_stop: float = 0.0,
    ) -> tuple[list[str] | None, list[int] | None, int]:
        r"""
        Validate every argument of a call before any compute (keyword arguments, as the call's own).

        `num_input_images` is the number of input images of an image-conditioned call: they count in the batch (one
        image, prompt or label list of length 1 is repeated to match the others), and such a call may have neither
        a prompt nor class labels.

        Returns:
            `(prompts, class_ids, batch_size)`: the prompts and class ids as lists (or `None`), and the number of
            prompts, labels or input images the call is for (before `num_images_per_prompt`).
        """
        if prompt is None and class_labels is None and prompt_embeds is None and num_input_images is None:
            raise ValueError("Provide a `prompt` (or `prompt_embeds`), `class_labels`, or both; got neither.")
        if prompt is not None and prompt_embeds is not None:
            raise ValueError("Got both `prompt` and `prompt_embeds`; pass only one of them.")
        if negative_prompt is not None and negative_prompt_embeds is not None:
            raise ValueError("Got both `negative_prompt` and `negative_prompt_embeds`; pass only one of them.")
        prompts = None
        if prompt is not None:
            if self.text_encoder is None:
                raise ValueError(f"Got prompt {prompt!r} but this pipeline has no text encoder; use `class_labels`.")
            prompts = (
                [prompt] if isinstance(prompt, str) else list(prompt) if isinstance(prompt, (list, tuple)) else []
            )
            if not prompts or not all(isinstance(p, str) for p in prompts):
                raise ValueError(f"`prompt` must be a string or a non-empty list of strings, got {prompt!r}.")
        num_prompts = len(prompts) if prompts is not None else None
        if prompt_embeds is not None or negative_prompt_embeds is not None:
            num_prompts = self.check_prompt_embeds(
                prompt_embeds, negative_prompt_embeds, prompt_attention_mask, negative_prompt_attention_mask
            )
        labels = self.resolve_class_labels(class_labels) if class_labels is not None else None
        if num_prompts is not None and labels is not None and len(labels) != num_prompts:
            if 1 not in (num_prompts, len(labels)):
                raise ValueError(
                    f"Got {num_prompts} prompts and {len(labels)} class labels; expected the same number (or one "
                    "of either, which is repeated)."
                )
        batch_size = max(num_prompts or 0, len(labels or []))
        if num_input_images is not None:
            if batch_size not in (0, 1, num_input_images) and num_input_images != 1:
                raise ValueError(
                    f"Got {num_input_images} images for {batch_size} prompts or class labels; expected the same "
                    "number (or one of either, which is repeated)."
                )
            batch_size = max(batch_size, num_input_images)
        if negative_prompt is not None:
            if self.text_encoder is None:
                raise ValueError("Got a `negative_prompt` but this pipeline has no text encoder.")
            if not isinstance(negative_prompt, str) and len(negative_prompt) not in (1, batch_size):
                raise ValueError(
                    f"Got {len(negative_prompt)} negative prompts for a batch of {batch_size}; expected 1 or "
                    f"{batch_size}."
                )
        for name, value in (("height", height), ("width", width)):
            if not isinstance(value, int) or value <= 0 or value % self.downsample_factor:
                raise ValueError(
                    f"`{name}` is {value!r}; expected a positive multiple of {self.downsample_factor} for this UNet."
                )
        num_train_timesteps = self.scheduler.config.num_train_timesteps
        if not isinstance(num_inference_steps, int) or not 1 <= num_inference_steps <= num_train_timesteps:
            raise ValueError(
                f"`num_inference_steps` is {num_inference_steps!r}; expected an int in 1..{num_train_timesteps} "
                "(the scheduler's training timesteps)."
            )
        for name, value in (
            ("guidance_scale", guidance_scale),
            ("guidance_start", guidance_start),
            ("guidance_stop", guidance_stop),
            ("adapter_guidance_stop", adapter_guidance_stop),
        ):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"`{name}` is {value!r}; expected a finite number.")
        if guidance_scale < 0:
            raise ValueError(f"`guidance_scale` is {guidance_scale}; expected a value >= 0 (1 disables guidance).")
        if not 0.0 <= guidance_start <= guidance_stop <= 1.0:
            raise ValueError(
                f"`guidance_start` is {guidance_start} and `guidance_stop` is {guidance_stop}; expected "
                "0 <= guidance_start <= guidance_stop <= 1 (fractions of the denoising steps)."
            )
        if not 0.0 <= adapter_guidance_stop <= 1.0:
            raise ValueError(
                f"`adapter_guidance_stop` is {adapter_guidance_stop}; expected a fraction of the noise schedule in "
                "[0, 1] (0: plain guidance with the LoRA adapters in both branches)."
            )
        if not isinstance(num_images_per_prompt, int) or num_images_per_prompt < 1:
            raise ValueError(f"`num_images_per_prompt` is {num_images_per_prompt!r}; expected an int >= 1.")
        total = batch_size * num_images_per_prompt
        generators = generator if isinstance(generator, list) else [generator] if generator is not None else []
        if not all(isinstance(g, torch.Generator) for g in generators):
            raise ValueError(
                f"`generator` is {generator!r}; expected a `torch.Generator` (e.g. "
                "`torch.Generator().manual_seed(0)`), a list of them, or None."
            )
        if isinstance(generator, list) and len(generator) != total:
            raise ValueError(
                f"Got a list of {len(generator)} generators for {total} images "
                f"({batch_size} prompts x {num_images_per_prompt} images per prompt); expected {total}."
            )
        expected_shape = (total, self.unet.config.in_channels, height, width)
        if latents is not None and not isinstance(latents, torch.Tensor):
            raise ValueError(
                f"`latents` is a {type(latents).__name__}; expected a torch.Tensor of shape {expected_shape}."
            )
        if latents is not None and tuple(latents.shape) != expected_shape:
            raise ValueError(f"`latents` have shape {tuple(latents.shape)}; expected {expected_shape}.")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` is {output_type!r}; expected one of {list(OUTPUT_TYPES)}.")
        unknown = [k for k in callback_on_step_end_tensor_inputs or [] if k not in self._callback_tensor_inputs]
        if unknown:
            why = " ('prompt_embeds' needs a text encoder, this pipeline has none)" * ("prompt_embeds" in unknown)
            raise ValueError(
                f"`callback_on_step_end_tensor_inputs` {unknown} are not available{why}; expected a subset of "
                f"`pipe._callback_tensor_inputs` {self._callback_tensor_inputs}."
            )
        return prompts, labels, batch_size

    def check_prompt_embeds(
        self,
        prompt_embeds: torch.Tensor | None,
        negative_prompt_embeds: torch.Tensor | None,
        prompt_attention_mask: torch.Tensor | None,
        negative_prompt_attention_mask: torch.Tensor | None,
    ) -> int | None:
        """Validate precomputed text embeddings and their masks; returns the number of prompts they hold."""
        if self.text_encoder is None:
            raise ValueError("Got `prompt_embeds` but this pipeline has no text encoder (its UNet takes no text).")
        expected_dim = self.unet.config.cross_attention_dim
        num_prompts = None
        for name, embeds, mask in (
            ("prompt_embeds", prompt_embeds, prompt_attention_mask),
            ("negative_prompt_embeds", negative_prompt_embeds, negative_prompt_attention_mask),
        ):
            if embeds is None:
                continue
            if not isinstance(embeds, torch.Tensor) or embeds.ndim != 3 or embeds.shape[-1] != expected_dim:
                shape = tuple(embeds.shape) if isinstance(embeds, torch.Tensor) else type(embeds).__name__
                raise ValueError(f"`{name}` is {shape}; expected a tensor (batch, tokens, {expected_dim}).")
            if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(embeds.shape[:2]):
                shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else mask
                raise ValueError(
                    f"`{name.replace('embeds', 'attention_mask')}` is {shape}; expected a tensor "
                    f"{tuple(embeds.shape[:2])} for `{name}` (as returned by `encode_prompt`)."
                )
        if prompt_embeds is not None:
            num_prompts = prompt_embeds.shape[0]
        if prompt_embeds is not None and negative_prompt_embeds is not None:
            if prompt_embeds.shape != negative_prompt_embeds.shape:
                raise ValueError(
                    f"`negative_prompt_embeds` {tuple(negative_prompt_embeds.shape)} must have the shape of "
                    f"`prompt_embeds` {tuple(prompt_embeds.shape)}."
                )
        return num_prompts

    @property
    def _embedding_dtype(self) -> torch.dtype:
        """The dtype prompt embeddings are returned in: the UNet's, or the text encoder's without a UNet."""
        return (self.unet if self.unet is not None else self.text_encoder).dtype

    def _encode_text(self, texts: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenize and encode `texts`: hidden states `(batch, tokens, dim)` and attention mask `(batch, tokens)`."""
        text_inputs = self.tokenizer(
            texts,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        input_ids = text_inputs.input_ids.to(device)
        attention_mask = text_inputs.attention_mask.to(device)
        hidden_states = self.text_encoder(input_ids, attention_mask=attention_mask)[0]
        return hidden_states.to(dtype=self._embedding_dtype), attention_mask

    def encode_prompt(
        self,
        prompt: str | list[str] | None,
        device: torch.device | None = None,
        num_images_per_prompt: int = 1,
        do_classifier_free_guidance: bool = True,
        negative_prompt: str | list[str] | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        negative_prompt_attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        r"""
        Encode prompts (and the negative prompts of classifier-free guidance) with the text encoder.

        Args:
            prompt (`str` or `list[str]`, *optional*): The prompts; not needed when `prompt_embeds` are given.
            device (`torch.device`, *optional*): Defaults to the pipeline's execution device.
            num_images_per_prompt (`int`, defaults to 1): Each embedding is repeated this many times.
            do_classifier_free_guidance (`bool`, defaults to `True`): Also encode the negative prompts.
            negative_prompt (`str` or `list[str]`, *optional*): Defaults to the empty prompt.
            prompt_embeds, negative_prompt_embeds (`torch.Tensor`, *optional*): `(batch, tokens, dim)` embeddings
                computed earlier (by this method), used instead of encoding text.
            prompt_attention_mask, negative_prompt_attention_mask (`torch.Tensor`, *optional*): `(batch, tokens)`
                masks of the given embeddings.

        Returns:
            `(prompt_embeds, prompt_attention_mask, negative_prompt_embeds, negative_prompt_attention_mask)`, each
            with `batch * num_images_per_prompt` rows; the negative ones are `None` without guidance.

        Example:

        ```py
        >>> embeds, mask, negative_embeds, negative_mask = pipe.encode_prompt("a thick 7")  # doctest: +SKIP
        >>> images = pipe(prompt_embeds=embeds, prompt_attention_mask=mask).images  # doctest: +SKIP
        ```
        """
        device = device or self._execution_device
        if prompt_embeds is None:
            prompts = [prompt] if isinstance(prompt, str) else list(prompt)
            prompt_embeds, prompt_attention_mask = self._encode_text(prompts, device)
        batch_size = prompt_embeds.shape[0]
        prompt_embeds = prompt_embeds.to(device=device, dtype=self._embedding_dtype)
        prompt_attention_mask = prompt_attention_mask.to(device)
        if do_classifier_free_guidance and negative_prompt_embeds is None:
            if negative_prompt is None or isinstance(negative_prompt, str):
                negative_prompt = [negative_prompt or ""] * batch_size
            elif len(negative_prompt) == 1:
                negative_prompt = list(negative_prompt) * batch_size
            negative_prompt_embeds, negative_prompt_attention_mask = self._encode_text(negative_prompt, device)
        if not do_classifier_free_guidance:
            negative_prompt_embeds = negative_prompt_attention_mask = None
        else:
            negative_prompt_embeds = negative_prompt_embeds.to(device=device, dtype=self._embedding_dtype)
            negative_prompt_attention_mask = negative_prompt_attention_mask.to(device)

        def repeat(tensor: torch.Tensor | None) -> torch.Tensor | None:
            return None if tensor is None else tensor.repeat_interleave(num_images_per_prompt, dim=0)

        return (
            repeat(prompt_embeds),
            repeat(prompt_attention_mask),
            repeat(negative_prompt_embeds),
            repeat(negative_prompt_attention_mask),
        )

    def encode_conditioning(
        self,
        prompts: list[str] | None,
        labels: list[int] | None,
        negative_prompt: str | list[str] | None,
        num_images_per_prompt: int,
        device: torch.device,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        negative_prompt_attention_mask: torch.Tensor | None = None,
        batch_size: int | None = None,
    ) -> dict[str, torch.Tensor | None]:
        r"""
        The UNet's conditioning keyword arguments for checked prompts and class ids (one of either is repeated).

        With guidance (`self.do_classifier_free_guidance`) every tensor holds the unconditional half first, then the
        conditional half, for one batched forward. A class-only UNet gets only `class_labels`. `batch_size` (the
        number of prompts or labels by default) sets how often a single prompt or label is repeated.
        """
        num_prompts = prompt_embeds.shape[0] if prompt_embeds is not None else len(prompts or [])
        batch_size = batch_size or max(num_prompts, len(labels or []))
        prompts = prompts * batch_size if prompts is not None and len(prompts) == 1 else prompts
        labels = labels * batch_size if labels is not None and len(labels) == 1 else labels
        if prompt_embeds is not None and prompt_embeds.shape[0] == 1 and batch_size > 1:
            prompt_embeds, prompt_attention_mask = (
                t.repeat_interleave(batch_size, 0) for t in (prompt_embeds, prompt_attention_mask)
            )
            if negative_prompt_embeds is not None:
                negative_prompt_embeds, negative_prompt_attention_mask = (
                    t.repeat_interleave(batch_size, 0)
                    for t in (negative_prompt_embeds, negative_prompt_attention_mask)
                )
        guidance = self.do_classifier_free_guidance
        conditioning = {}
        if self.num_classes:
            ids = labels or [self.null_class_label] * batch_size
            class_labels = torch.tensor(ids, device=device).repeat_interleave(num_images_per_prompt)
            if guidance:
                class_labels = torch.cat([torch.full_like(class_labels, self.null_class_label), class_labels])
            conditioning["class_labels"] = class_labels
        else:
            conditioning["class_labels"] = None
        if self.text_encoder is not None:
            embeds, mask, negative_embeds, negative_mask = self.encode_prompt(
                prompts or [""] * batch_size,
                device,
                num_images_per_prompt,
                guidance,
                negative_prompt,
                prompt_embeds,
                negative_prompt_embeds,
                prompt_attention_mask,
                negative_prompt_attention_mask,
            )
            conditioning["encoder_hidden_states"] = torch.cat([negative_embeds, embeds]) if guidance else embeds
            conditioning["encoder_attention_mask"] = torch.cat([negative_mask, mask]) if guidance else mask
        return conditioning

    @staticmethod
    def _replace_prompt_embeds(
        conditioning: dict, conditional_only: dict, embeds: torch.Tensor, batch_size: int
    ) -> tuple[dict, dict]:
        """The UNet inputs after a callback returned new `prompt_embeds` (guided batch, conditional batch or one)."""
        guided_batch = conditioning["encoder_hidden_states"].shape[0]
        if embeds.shape[0] == guided_batch:
            conditional_only = {**conditional_only, "encoder_hidden_states": embeds.chunk(2)[1]}
            return {**conditioning, "encoder_hidden_states": embeds}, conditional_only
        if embeds.shape[0] not in (batch_size, 1):
            raise ValueError(
                f"`callback_on_step_end` returned `prompt_embeds` with {embeds.shape[0]} rows; expected "
                f"{guided_batch} (both guidance branches), {batch_size} (the conditional branch) or 1."
            )
        embeds = embeds.expand(batch_size, *embeds.shape[1:])
        conditional_only = {**conditional_only, "encoder_hidden_states": embeds}
        if guided_batch == 2 * batch_size:
            unconditional = conditioning["encoder_hidden_states"].chunk(2)[0]
            conditioning = {**conditioning, "encoder_hidden_states": torch.cat([unconditional, embeds])}
        else:
            conditioning = conditional_only
        return conditioning, conditional_only
