"""`MnistDiffusionPipeline`: text- and class-conditioned image generation with classifier-free guidance."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from diffusers.image_processor import VaeImageProcessor
from diffusers.pipelines.pipeline_utils import DiffusionPipeline, ImagePipelineOutput
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from mnist_diffusion.schedulers.scheduling_mnist_ddpm import predict_original_sample

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> from mnist_diffusion import MnistDiffusionPipeline

        >>> pipe = MnistDiffusionPipeline.from_pretrained("path/or/repo-id")
        >>> images = pipe("a thick slanted seven", num_images_per_prompt=4, guidance_scale=3.0).images
        >>> images = pipe(class_labels=["7", 3], num_inference_steps=50).images
        ```
"""

OUTPUT_TYPES = ("pil", "np", "pt")


@dataclass
class DenoisingTrajectory(BaseOutput):
    r"""
    What the sampler saw at each denoising step, for visualisation.

    Args:
        timesteps (`torch.Tensor`): `(num_steps,)` the scheduler's timesteps, in sampling order.
        latents (`torch.Tensor`): `(num_steps + 1, batch, channels, height, width)`; entry 0 is the initial noise,
            entry `i + 1` the sample after step `i` (x_t going towards x_0).
        pred_original_samples (`torch.Tensor`): `(num_steps, batch, channels, height, width)` the clean image
            predicted at step `i` (after classifier-free guidance), in [-1, 1] up to model error.
    """

    timesteps: torch.Tensor
    latents: torch.Tensor
    pred_original_samples: torch.Tensor


@dataclass
class MnistDiffusionPipelineOutput(ImagePipelineOutput):
    r"""
    Output of [`MnistDiffusionPipeline`].

    Args:
        images (`list[PIL.Image.Image]`, `np.ndarray` or `torch.Tensor`): The generated images.
        trajectory ([`DenoisingTrajectory`], *optional*): The denoising trajectory, when `return_trajectory=True`.
    """

    trajectory: DenoisingTrajectory | None = None


class MnistDiffusionPipeline(DiffusionPipeline):
    r"""
    Pipeline for text- and/or class-conditioned generation of small images (MNIST digits, Fashion-MNIST).

    Components:
        unet ([`MnistUNet2DConditionModel`] or [`~diffusers.UNet2DConditionModel`]): Predicts the noise (or `v`).
        scheduler ([`SchedulerMixin`]): [`MnistDDPMScheduler`] by default; any DDPM-family scheduler built with
            `from_config(pipe.scheduler.config)` (DDIM, DPM-Solver++, ...) can replace it.
        text_encoder ([`~transformers.CLIPTextModel`], *optional*): Encodes prompts for cross-attention.
        tokenizer ([`~transformers.CLIPTokenizer`], *optional*): Tokenizes prompts.
        id2label (`dict[str, str]`, *optional*): Class id (as a string, like JSON keys; ints are accepted) to name
            ("7", "Sneaker"), so `class_labels` can be given by name. Saved in `model_index.json`.
    """

    model_cpu_offload_seq = "text_encoder->unet"
    _optional_components = ["text_encoder", "tokenizer"]
    _callback_tensor_inputs = ["latents", "noise_pred"]

    def __init__(
        self,
        unet: torch.nn.Module | None,
        scheduler: SchedulerMixin,
        text_encoder: torch.nn.Module | None = None,
        tokenizer: Any | None = None,
        id2label: dict[str, str] | None = None,
    ):
        super().__init__()
        if (text_encoder is None) != (tokenizer is None):
            raise ValueError("Pass both `text_encoder` and `tokenizer`, or neither (a class-only model).")
        # `unet=None` (e.g. `from_pretrained(path, unet=None)`) keeps only what encodes prompts.
        cross_attention_dim = unet.config.get("cross_attention_dim") if unet is not None else None
        if unet is not None and text_encoder is not None and cross_attention_dim != text_encoder.config.hidden_size:
            raise ValueError(
                f"The text encoder's hidden size ({text_encoder.config.hidden_size}) does not match the UNet's "
                f"`cross_attention_dim` ({cross_attention_dim})."
            )
        if id2label is not None:
            id2label = {str(int(k)): str(v) for k, v in sorted(id2label.items(), key=lambda item: int(item[0]))}
            num_classes = (unet.config.num_class_embeds or 1) - 1 if unet is not None else len(id2label)
            if [int(k) for k in id2label] != list(range(num_classes)):
                raise ValueError(
                    f"`id2label` must name classes 0..{num_classes - 1} (the UNet has {num_classes} classes plus "
                    f"the null class), got ids {list(id2label)}."
                )
        self.register_modules(unet=unet, scheduler=scheduler, text_encoder=text_encoder, tokenizer=tokenizer)
        self.register_to_config(id2label=id2label)
        self.image_processor = VaeImageProcessor(vae_scale_factor=1, do_resize=False, do_normalize=True)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> MnistDiffusionPipeline:
        r"""
        Load a pipeline from a folder written by `save_pretrained` or from a Hub repo id, with this package's classes.

        Repos pushed with [`~MnistDiffusionPipeline.push_to_hub`] also carry the pipeline's code for users without
        this package (diffusers' community-components layout); diffusers' loader would run that uploaded copy (and
        only with `trust_remote_code=True`), so such repos are built component by component with the installed
        classes instead. Local `save_pretrained` folders load exactly as with `DiffusionPipeline.from_pretrained`.
        See [`mnist_diffusion.hub.load_pipeline`] for the accepted arguments.

        Example:

        ```py
        >>> pipe = MnistDiffusionPipeline.from_pretrained("user/mnist-diffusion")  # doctest: +SKIP
        >>> pipe = MnistDiffusionPipeline.from_pretrained("outputs/mnist-text")  # doctest: +SKIP
        ```
        """
        from mnist_diffusion.hub import load_pipeline

        return load_pipeline(cls, pretrained_model_name_or_path, super().from_pretrained, **kwargs)

    def push_to_hub(self, repo_id: str, **kwargs) -> CommitInfo:
        r"""
        Upload this pipeline, its model card, sample grid and community code to the Hub repo `repo_id` in one commit.

        Arguments (`token`, `private`, `revision`, `create_pr`, `variant`, `safe_serialization`, `subfolder`,
        `delete_missing`, ...) are those of [`mnist_diffusion.hub.push_pipeline_to_hub`]; returns its
        [`~huggingface_hub.CommitInfo`].

        Example:

        ```py
        >>> pipe.push_to_hub("user/mnist-diffusion", private=True, variant="fp16")  # doctest: +SKIP
        ```
        """
        from mnist_diffusion.hub import push_pipeline_to_hub

        return push_pipeline_to_hub(self, repo_id, **kwargs)

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        safe_serialization: bool = True,
        variant: str | None = None,
        max_shard_size: int | str | None = None,
        push_to_hub: bool = False,
        **kwargs,
    ) -> CommitInfo | None:
        r"""
        Save the pipeline to `save_directory` (diffusers' `save_pretrained`), then push it if asked.

        With `push_to_hub=True`, the pipeline goes to the Hub through [`~MnistDiffusionPipeline.push_to_hub`]
        (community code, model card and samples, one commit), to `repo_id` (default: the folder's name), with the
        folder's `training_args.json` and `eval_results.json` on the card; the other `kwargs` (`token`, `private`,
        `create_pr`, `commit_message`, `subfolder`, ...) are those of [`mnist_diffusion.hub.push_pipeline_to_hub`],
        and `variant` (`"fp16"` or `"bf16"`) also uploads half-precision weights. Returns the commit when pushing.

        Example:

        ```py
        >>> pipe.save_pretrained("mnist-text", push_to_hub=True, repo_id="user/mnist-text")  # doctest: +SKIP
        ```
        """
        if push_to_hub:  # refuse what cannot be pushed before writing anything
            from mnist_diffusion.hub import VARIANT_DTYPES, resolve_token

            if variant is not None and variant not in VARIANT_DTYPES:
                raise ValueError(f"Unknown variant {variant!r} to push; expected one of {sorted(VARIANT_DTYPES)}.")
            kwargs["token"] = resolve_token(kwargs.get("token"))
        super().save_pretrained(
            save_directory, safe_serialization=safe_serialization, variant=variant, max_shard_size=max_shard_size
        )
        if not push_to_hub:
            return None
        from mnist_diffusion.hub import EVAL_RESULTS_FILE, TRAINING_ARGS_FILE, push_pipeline_to_hub
        from mnist_diffusion.model_card import read_json_file

        repo_id = kwargs.pop("repo_id", os.path.basename(os.path.normpath(save_directory)))
        for key, file in (("training_args", TRAINING_ARGS_FILE), ("eval_results", EVAL_RESULTS_FILE)):
            if key not in kwargs:
                kwargs[key] = read_json_file(os.path.join(save_directory, file))
        return push_pipeline_to_hub(self, repo_id, variant=variant, safe_serialization=safe_serialization, **kwargs)

    @property
    def num_classes(self) -> int:
        """Number of real classes the UNet knows (0 for a model without class conditioning)."""
        num_class_embeds = self.unet.config.num_class_embeds
        return num_class_embeds - 1 if num_class_embeds else 0

    @property
    def null_class_label(self) -> int | None:
        """The class id used for "no class": unconditional branch of guidance, or prompts without a label."""
        return self.num_classes if self.num_classes else None

    @property
    def downsample_factor(self) -> int:
        """Image height and width must be multiples of this (the UNet halves the resolution between levels)."""
        return 2 ** (len(self.unet.config.block_out_channels) - 1)

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
        latents: torch.Tensor | None,
        output_type: str,
        callback_on_step_end_tensor_inputs: list[str] | None,
    ) -> tuple[list[str] | None, list[int] | None]:
        """Validate every argument before any compute; returns the prompts and class ids as lists."""
        if prompt is None and class_labels is None:
            raise ValueError("Provide a `prompt`, `class_labels`, or both; got neither.")
        prompts = None
        if prompt is not None:
            if self.text_encoder is None:
                raise ValueError(f"Got prompt {prompt!r} but this pipeline has no text encoder; use `class_labels`.")
            prompts = [prompt] if isinstance(prompt, str) else list(prompt)
            if not prompts or not all(isinstance(p, str) for p in prompts):
                raise ValueError(f"`prompt` must be a string or a non-empty list of strings, got {prompt!r}.")
        labels = self.resolve_class_labels(class_labels) if class_labels is not None else None
        if (
            prompts is not None
            and labels is not None
            and len(prompts) != len(labels)
            and 1
            not in (
                len(prompts),
                len(labels),
            )
        ):
            raise ValueError(
                f"Got {len(prompts)} prompts and {len(labels)} class labels; expected the same number (or one of "
                "either, which is repeated)."
            )
        batch_size = max(len(prompts or []), len(labels or []))
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
        if guidance_scale < 0:
            raise ValueError(f"`guidance_scale` is {guidance_scale}; expected a value >= 0 (1 disables guidance).")
        if not 0.0 <= guidance_start <= guidance_stop <= 1.0:
            raise ValueError(
                f"`guidance_start` is {guidance_start} and `guidance_stop` is {guidance_stop}; expected "
                "0 <= guidance_start <= guidance_stop <= 1 (fractions of the denoising steps)."
            )
        if not isinstance(num_images_per_prompt, int) or num_images_per_prompt < 1:
            raise ValueError(f"`num_images_per_prompt` is {num_images_per_prompt!r}; expected an int >= 1.")
        total = batch_size * num_images_per_prompt
        if isinstance(generator, list) and len(generator) != total:
            raise ValueError(
                f"Got a list of {len(generator)} generators for {total} images "
                f"({batch_size} prompts x {num_images_per_prompt} images per prompt); expected {total}."
            )
        expected_shape = (total, self.unet.config.in_channels, height, width)
        if latents is not None and tuple(latents.shape) != expected_shape:
            raise ValueError(f"`latents` have shape {tuple(latents.shape)}; expected {expected_shape}.")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` is {output_type!r}; expected one of {list(OUTPUT_TYPES)}.")
        unknown = [k for k in callback_on_step_end_tensor_inputs or [] if k not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(
                f"`callback_on_step_end_tensor_inputs` {unknown} are not available; expected a subset of "
                f"{self._callback_tensor_inputs}."
            )
        return prompts, labels

    def encode_prompt(
        self, prompt: list[str], device: torch.device, num_images_per_prompt: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r"""
        Encode prompts with the text encoder.

        Returns:
            `(hidden_states, attention_mask)`: `(batch * num_images_per_prompt, tokens, dim)` and `(..., tokens)`.
        """
        text_inputs = self.tokenizer(
            prompt,
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        input_ids = text_inputs.input_ids.to(device)
        attention_mask = text_inputs.attention_mask.to(device)
        hidden_states = self.text_encoder(input_ids, attention_mask=attention_mask)[0]
        hidden_states = hidden_states.to(dtype=self.unet.dtype)
        return (
            hidden_states.repeat_interleave(num_images_per_prompt, dim=0),
            attention_mask.repeat_interleave(num_images_per_prompt, dim=0),
        )

    def prepare_latents(
        self,
        shape: tuple[int, ...],
        dtype: torch.dtype,
        device: torch.device,
        generator: torch.Generator | list[torch.Generator] | None,
        latents: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Initial noise (or the given `latents`), scaled by the scheduler's `init_noise_sigma`."""
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        else:
            latents = latents.to(device=device, dtype=dtype)
            if not torch.isfinite(latents).all():
                raise ValueError("`latents` hold NaN or infinite values; expected finite initial noise.")
        return latents * self.scheduler.init_noise_sigma

    def prepare_extra_step_kwargs(self, generator: torch.Generator | list[torch.Generator] | None) -> dict:
        """Pass `generator` to the scheduler's `step` only if it accepts one."""
        accepts_generator = "generator" in inspect.signature(self.scheduler.step).parameters
        return {"generator": generator} if accepts_generator else {}

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        class_labels: int | str | Sequence[int | str] | None = None,
        negative_prompt: str | list[str] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 3.0,
        guidance_start: float = 0.0,
        guidance_stop: float = 1.0,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[[DiffusionPipeline, int, int, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        return_trajectory: bool = False,
    ) -> MnistDiffusionPipelineOutput | tuple:
        r"""
        Generate images from prompts and/or class labels.

        Args:
            prompt (`str` or `list[str]`, *optional*): What to draw, e.g. "a thick slanted seven".
            class_labels (`int`, `str` or a list of them, *optional*): Class ids or names from `id2label` ("7",
                "Sneaker"). With both `prompt` and `class_labels`, the model is conditioned on both; a single prompt
                or label is repeated to match a list of the other.
            negative_prompt (`str` or `list[str]`, *optional*): Replaces the empty prompt in the unconditional branch
                of classifier-free guidance.
            height (`int`, *optional*): Defaults to `unet.config.sample_size`; must be a multiple of
                `pipe.downsample_factor`.
            width (`int`, *optional*): As `height`.
            num_inference_steps (`int`, defaults to 50): Denoising steps, between 1 and the training timesteps.
            guidance_scale (`float`, defaults to 3.0): Classifier-free guidance weight `w` in
                `uncond + w * (cond - uncond)`; guidance runs (as one batched forward) only when `w > 1`.
            guidance_start (`float`, defaults to 0.0): Fraction of the denoising steps after which guidance starts.
            guidance_stop (`float`, defaults to 1.0): Fraction of the denoising steps after which guidance stops.
                Guidance runs on steps `int(guidance_start * n) <= i < int(guidance_stop * n)` of `n`, as with
                diffusers' `ClassifierFreeGuidance(start=..., stop=...)`; the other steps run the conditional branch
                alone, at half the cost.
            num_images_per_prompt (`int`, defaults to 1): Images per prompt or label.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*): One generator, or one per image
                (then each image is the same as when generated alone with its generator).
            latents (`torch.Tensor`, *optional*): Initial noise `(batch, channels, height, width)`.
            output_type (`str`, defaults to `"pil"`): `"pil"` (PIL images), `"np"` (`(batch, height, width,
                channels)` floats in [0, 1]) or `"pt"` (`(batch, channels, height, width)` floats in [0, 1]).
            return_dict (`bool`, defaults to `True`): Return a [`MnistDiffusionPipelineOutput`] instead of a tuple.
            callback_on_step_end (`Callable`, *optional*): Called as `callback_on_step_end(pipe, step, timestep,
                callback_kwargs)` after each step; may return a dict replacing any of the tensors it was given.
            callback_on_step_end_tensor_inputs (`list[str]`, *optional*): Tensors put in `callback_kwargs`, from
                `pipe._callback_tensor_inputs` (`"latents"`, `"noise_pred"`). Defaults to `["latents"]`.
            return_trajectory (`bool`, defaults to `False`): Also return the [`DenoisingTrajectory`] (x_t and
                predicted x_0 at every step).

        Returns:
            [`MnistDiffusionPipelineOutput`] or `tuple`: with `return_dict=False`, `(images,)`, or
            `(images, trajectory)` when `return_trajectory=True`.
        """
        height = self.unet.config.sample_size if height is None else height
        width = self.unet.config.sample_size if width is None else width
        callback_on_step_end_tensor_inputs = callback_on_step_end_tensor_inputs or ["latents"]

        # 1. Check inputs
        prompts, labels = self.check_inputs(
            prompt,
            class_labels,
            negative_prompt,
            height,
            width,
            num_inference_steps,
            guidance_scale,
            guidance_start,
            guidance_stop,
            num_images_per_prompt,
            generator,
            latents,
            output_type,
            callback_on_step_end_tensor_inputs,
        )
        batch_size = max(len(prompts or []), len(labels or []))
        prompts = prompts * batch_size if prompts is not None and len(prompts) == 1 else prompts
        labels = labels * batch_size if labels is not None and len(labels) == 1 else labels
        device = self._execution_device
        do_classifier_free_guidance = guidance_scale > 1.0

        # 2. Encode the prompts and the class labels (unconditional first, for batched guidance)
        encoder_hidden_states = encoder_attention_mask = None
        if self.text_encoder is not None:
            encoder_hidden_states, encoder_attention_mask = self.encode_prompt(
                prompts or [""] * batch_size, device, num_images_per_prompt
            )
            if do_classifier_free_guidance:
                if negative_prompt is None or isinstance(negative_prompt, str):
                    negative_prompt = [negative_prompt or ""] * batch_size
                elif len(negative_prompt) == 1:
                    negative_prompt = list(negative_prompt) * batch_size
                uncond_states, uncond_mask = self.encode_prompt(negative_prompt, device, num_images_per_prompt)
                encoder_hidden_states = torch.cat([uncond_states, encoder_hidden_states])
                encoder_attention_mask = torch.cat([uncond_mask, encoder_attention_mask])
        unet_class_labels = None
        if self.num_classes:
            ids = labels or [self.null_class_label] * batch_size
            unet_class_labels = torch.tensor(ids, device=device).repeat_interleave(num_images_per_prompt)
            if do_classifier_free_guidance:
                unet_class_labels = torch.cat(
                    [torch.full_like(unet_class_labels, self.null_class_label), unet_class_labels]
                )

        # 3. Set the timesteps
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps

        # 4. Prepare the initial noise
        shape = (batch_size * num_images_per_prompt, self.unet.config.in_channels, height, width)
        latents = self.prepare_latents(shape, self.unet.dtype, device, generator, latents)
        extra_step_kwargs = self.prepare_extra_step_kwargs(generator)
        trajectory_latents, trajectory_originals = [latents], []

        # 5. Denoising loop (a class-only UNet, e.g. diffusers' UNet2DModel, takes no text arguments at all);
        # unguided steps run only the conditional half of the batch
        self._num_timesteps = len(timesteps)
        guided_steps = range(0)
        if do_classifier_free_guidance:
            guided_steps = range(int(guidance_start * len(timesteps)), int(guidance_stop * len(timesteps)))
        conditioning = {"class_labels": unet_class_labels}
        if encoder_hidden_states is not None:
            conditioning["encoder_hidden_states"] = encoder_hidden_states
            conditioning["encoder_attention_mask"] = encoder_attention_mask
        conditional_only = conditioning
        if do_classifier_free_guidance:
            conditional_only = {k: v.chunk(2)[1] if v is not None else None for k, v in conditioning.items()}
        with self.progress_bar(total=len(timesteps)) as progress_bar:
            for i, t in enumerate(timesteps):
                guided = i in guided_steps
                model_input = torch.cat([latents] * 2) if guided else latents
                model_input = self.scheduler.scale_model_input(model_input, t)
                inputs = conditioning if guided else conditional_only
                noise_pred = self.unet(model_input, t, return_dict=False, **inputs)[0]
                if guided:
                    noise_pred_uncond, noise_pred_cond = noise_pred.chunk(2)
                    noise_pred = noise_pred_uncond + guidance_scale * (noise_pred_cond - noise_pred_uncond)
                if return_trajectory:
                    trajectory_originals.append(predict_original_sample(self.scheduler, latents, noise_pred, t))
                latents = self.scheduler.step(noise_pred, t, latents, **extra_step_kwargs, return_dict=False)[0]
                if return_trajectory:
                    trajectory_latents.append(latents)

                if callback_on_step_end is not None:
                    tensors = {"latents": latents, "noise_pred": noise_pred}
                    callback_kwargs = {k: tensors[k] for k in callback_on_step_end_tensor_inputs}
                    callback_outputs = callback_on_step_end(self, i, t, callback_kwargs)
                    latents = callback_outputs.pop("latents", latents)
                progress_bar.update()

        # 6. Post-process
        images = self.image_processor.postprocess(latents, output_type=output_type)
        if output_type == "pil" and self.unet.config.in_channels == 1:
            images = [image.convert("L") if image.mode != "L" else image for image in images]
        self.maybe_free_model_hooks()

        trajectory = None
        if return_trajectory:
            trajectory = DenoisingTrajectory(
                timesteps=timesteps.cpu(),
                latents=torch.stack(trajectory_latents).cpu(),
                pred_original_samples=torch.stack(trajectory_originals).cpu(),
            )
        if not return_dict:
            return (images, trajectory) if return_trajectory else (images,)
        return MnistDiffusionPipelineOutput(images=images, trajectory=trajectory)
