"""`MnistDiffusionPipeline`: text- and class-conditioned image generation with classifier-free guidance."""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.image_processor import VaeImageProcessor
from diffusers.models.embeddings import get_timestep_embedding
from diffusers.pipelines.pipeline_utils import DiffusionPipeline, ImagePipelineOutput
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from mnist_diffusion.pipelines.lora import MnistLoraLoaderMixin

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

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


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


class MnistDiffusionPipeline(DiffusionPipeline, MnistLoraLoaderMixin):
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
    _callback_tensor_inputs = ["latents", "noise_pred", "prompt_embeds"]
    # state of the running call, read by callbacks through the properties of the same names
    _guidance_scale = 1.0
    _num_timesteps = 0
    _interrupt = False

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
        Save the pipeline to `save_directory` (diffusers' `save_pretrained`), then push it if asked. A component's
        `_name_or_path` that names a local folder (not a Hub repo id) is not written, so this machine's paths stay
        out of saved and pushed configs.

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
        from mnist_diffusion.models.saved_config import without_local_paths

        with without_local_paths(self, *self.components.values()):  # no local folder names in the saved configs
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

    @classmethod
    def from_pipe(cls, pipeline: MnistDiffusionPipeline, **kwargs) -> MnistDiffusionPipeline:
        r"""
        This pipeline class over the same components as `pipeline` (the same module objects, so no second copy of
        the weights), as diffusers' `DiffusionPipeline.from_pipe`; `kwargs` replace components (`scheduler=...`) or
        `id2label`. Works between [`MnistDiffusionPipeline`], [`MnistImg2ImgPipeline`] and [`MnistInpaintPipeline`].

        Example:

        ```py
        >>> img2img = MnistImg2ImgPipeline.from_pipe(pipe)  # doctest: +SKIP
        >>> img2img.unet is pipe.unet
        True
        ```
        """
        components = {**pipeline.components, "id2label": pipeline.config.id2label}
        unknown = sorted(set(kwargs) - set(components))
        if unknown:
            raise ValueError(f"from_pipe got unknown arguments {unknown}; expected any of {sorted(components)}.")
        new = cls(**{**components, **kwargs})
        new.set_progress_bar_config(**getattr(pipeline, "_progress_bar_config", {}))
        return new

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
    def sample_size(self) -> int:
        """The UNet's image size, the default `height` and `width`; a pipeline loaded with `unet=None` has none."""
        if self.unet is None:
            raise ValueError(
                "This pipeline was loaded with `unet=None` (text encoding only: `encode_prompt`); load it with its "
                "UNet to generate images."
            )
        return self.unet.config.sample_size

    @property
    def downsample_factor(self) -> int:
        """Image height and width must be multiples of this: the UNet's own `downsample_factor` (with `patch_size`)."""
        if hasattr(self.unet, "downsample_factor"):
            return self.unet.downsample_factor
        # diffusers' stock UNets halve the resolution between levels and have no patches
        return 2 ** (len(self.unet.config.block_out_channels) - 1)

    @property
    def guidance_embedded(self) -> bool:
        """Whether the UNet takes the guidance scale as an embedding (a few-step student): no unconditional pass."""
        return self.unet.config.get("time_cond_proj_dim") is not None

    @staticmethod
    def get_guidance_scale_embedding(guidance_scale: torch.Tensor, embedding_dim: int) -> torch.Tensor:
        r"""
        The `timestep_cond` of a guidance-embedded UNet for each of `guidance_scale` (shape `(batch,)`): a sinusoidal
        embedding of `1000 * (guidance_scale - 1)`, as diffusers' latent consistency pipelines compute it; float32,
        `(batch, embedding_dim)`. Distillation (`training/distill.py`) and sampling share it.

        Example:

        ```py
        >>> import torch
        >>> from mnist_diffusion import MnistDiffusionPipeline

        >>> MnistDiffusionPipeline.get_guidance_scale_embedding(torch.tensor([1.0, 1.4]), 32).shape
        torch.Size([2, 32])
        ```
        """
        return get_timestep_embedding(
            1000 * (guidance_scale.float() - 1), embedding_dim, flip_sin_to_cos=False, downscale_freq_shift=1
        )

    @property
    def guidance_scale(self) -> float:
        """The classifier-free guidance weight of the running call; a callback may change `_guidance_scale`."""
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        """Whether the running call guides (`guidance_scale > 1`); a callback that sets it to 0 stops guidance. A
        guidance-embedded (distilled) UNet gets the scale as `timestep_cond` instead: no unconditional pass."""
        return self._guidance_scale > 1.0 and not self.guidance_embedded

    @property
    def num_timesteps(self) -> int:
        """Number of denoising steps (model evaluations of the loop) of the running or last call."""
        return self._num_timesteps

    @property
    def interrupt(self) -> bool:
        """Set `pipe._interrupt = True` (e.g. from a callback) to skip the remaining denoising steps."""
        return self._interrupt

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
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        negative_prompt_attention_mask: torch.Tensor | None = None,
        allow_unconditional: bool = False,
    ) -> tuple[list[str] | None, list[int] | None]:
        """
        Validate every argument before any compute; returns the prompts and class ids as lists.

        `allow_unconditional` lets the image-conditioned pipelines run with neither a prompt nor class labels.
        """
        if prompt is None and class_labels is None and prompt_embeds is None and not allow_unconditional:
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
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"`{name}` is {value!r}; expected a finite number.")
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
            raise ValueError(
                f"`callback_on_step_end_tensor_inputs` {unknown} are not available; expected a subset of "
                f"{self._callback_tensor_inputs}."
            )
        if "prompt_embeds" in (callback_on_step_end_tensor_inputs or []) and self.text_encoder is None:
            raise ValueError(
                "`callback_on_step_end_tensor_inputs` asks for 'prompt_embeds' but this pipeline has no text encoder."
            )
        return prompts, labels

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

    def denoise(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        conditioning: dict[str, torch.Tensor | None],
        generator: torch.Generator | list[torch.Generator] | None = None,
        guidance_start: float = 0.0,
        guidance_stop: float = 1.0,
        callback_on_step_end: Callable[[DiffusionPipeline, int, int, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        return_trajectory: bool = False,
        before_step: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        after_step: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        cross_attention_kwargs: dict[str, Any] | None = None,
    ) -> tuple[torch.Tensor, DenoisingTrajectory | None]:
        r"""
        The denoising loop shared by the text-to-image, image-to-image and inpainting pipelines.

        Runs one model evaluation per entry of `timesteps` (batched classifier-free guidance on the steps of the
        guidance interval while `self.do_classifier_free_guidance`), then the scheduler's `step`, then
        `callback_on_step_end`; `self.interrupt` skips the remaining steps. `before_step(i, t, latents)` and
        `after_step(i, t, latents)` may replace the latents around each step (inpainting re-noises for resampling
        before a step and puts back the known pixels after it). `cross_attention_kwargs` go to the UNet as they are.

        Returns:
            The final latents and, with `return_trajectory`, the [`DenoisingTrajectory`].
        """
        callback_on_step_end_tensor_inputs = callback_on_step_end_tensor_inputs or ["latents"]
        extra_step_kwargs = self.prepare_extra_step_kwargs(generator)
        trajectory_latents, trajectory_originals = [latents], []
        self._num_timesteps = len(timesteps)
        # a class-only UNet, e.g. diffusers' UNet2DModel, takes no text arguments at all
        conditioning = {k: v for k, v in conditioning.items() if v is not None or k == "class_labels"}
        has_unconditional = self.do_classifier_free_guidance
        conditional_only = conditioning
        if has_unconditional:
            conditional_only = {k: v.chunk(2)[1] if v is not None else None for k, v in conditioning.items()}
        unet_kwargs = {"cross_attention_kwargs": cross_attention_kwargs} if cross_attention_kwargs else {}
        # unguided steps (outside the guidance interval, or after a callback turned guidance off) run only the
        # conditional half of the batch
        guided_steps = range(int(guidance_start * len(timesteps)), int(guidance_stop * len(timesteps)))
        with self.progress_bar(total=len(timesteps)) as progress_bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    continue
                if before_step is not None:
                    latents = before_step(i, t, latents)
                guided = has_unconditional and self.do_classifier_free_guidance and i in guided_steps
                model_input = torch.cat([latents] * 2) if guided else latents
                model_input = self.scheduler.scale_model_input(model_input, t)
                inputs = conditioning if guided else conditional_only
                noise_pred = self.unet(model_input, t, return_dict=False, **inputs, **unet_kwargs)[0]
                if guided:
                    noise_pred_uncond, noise_pred_cond = noise_pred.chunk(2)
                    noise_pred = noise_pred_uncond + self.guidance_scale * (noise_pred_cond - noise_pred_uncond)
                if return_trajectory:
                    trajectory_originals.append(predict_original_sample(self.scheduler, latents, noise_pred, t))
                latents = self.scheduler.step(noise_pred, t, latents, **extra_step_kwargs, return_dict=False)[0]
                if after_step is not None:
                    latents = after_step(i, t, latents)
                if return_trajectory:
                    trajectory_latents.append(latents)

                if callback_on_step_end is not None:
                    tensors = {
                        "latents": latents,
                        "noise_pred": noise_pred,
                        "prompt_embeds": conditioning.get("encoder_hidden_states"),
                    }
                    callback_kwargs = {k: tensors[k] for k in callback_on_step_end_tensor_inputs}
                    callback_outputs = callback_on_step_end(self, i, t, callback_kwargs)
                    if not isinstance(callback_outputs, dict):
                        raise ValueError(
                            f"`callback_on_step_end` returned {type(callback_outputs).__name__}; expected the dict "
                            "of tensors it was given (or a dict replacing some of them)."
                        )
                    latents = callback_outputs.pop("latents", latents)
                    embeds = callback_outputs.pop("prompt_embeds", tensors["prompt_embeds"])
                    if embeds is not tensors["prompt_embeds"]:
                        conditioning, conditional_only = self._replace_prompt_embeds(
                            conditioning, conditional_only, embeds, latents.shape[0]
                        )
                progress_bar.update()

        trajectory = None
        if return_trajectory:
            trajectory = DenoisingTrajectory(
                timesteps=torch.as_tensor(timesteps).cpu(),
                latents=torch.stack(trajectory_latents).cpu(),
                pred_original_samples=torch.stack(trajectory_originals).cpu()
                if trajectory_originals
                else torch.empty(0, *latents.shape),
            )
        return latents, trajectory

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

    def postprocess(
        self,
        latents: torch.Tensor,
        output_type: str,
        return_dict: bool,
        trajectory: DenoisingTrajectory | None,
    ) -> MnistDiffusionPipelineOutput | tuple:
        """Images from the final latents in `output_type` ("latent": the latents unchanged), as output or tuple."""
        if output_type == "latent":
            images = latents
        else:
            images = self.image_processor.postprocess(latents, output_type=output_type)
            if output_type == "pil" and self.unet.config.in_channels == 1:
                images = [image.convert("L") if image.mode != "L" else image for image in images]
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images, trajectory) if trajectory is not None else (images,)
        return MnistDiffusionPipelineOutput(images=images, trajectory=trajectory)

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
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        prompt_attention_mask: torch.Tensor | None = None,
        negative_prompt_attention_mask: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[[DiffusionPipeline, int, int, dict], dict] | PipelineCallback | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        return_trajectory: bool = False,
        cross_attention_kwargs: dict[str, Any] | None = None,
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
                `uncond + w * (cond - uncond)`; guidance runs (as one batched forward) only when `w > 1`. A callback
                may change `pipe._guidance_scale` during the call (e.g. diffusers' `SDCFGCutoffCallback`).
            guidance_start (`float`, defaults to 0.0): Fraction of the denoising steps after which guidance starts.
            guidance_stop (`float`, defaults to 1.0): Fraction of the denoising steps after which guidance stops.
                Guidance runs on steps `int(guidance_start * n) <= i < int(guidance_stop * n)` of `n`, as with
                diffusers' `ClassifierFreeGuidance(start=..., stop=...)`; the other steps run the conditional branch
                alone, at half the cost.
            num_images_per_prompt (`int`, defaults to 1): Images per prompt or label.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*): One generator, or one per image
                (then each image is the same as when generated alone with its generator).
            latents (`torch.Tensor`, *optional*): Initial noise `(batch, channels, height, width)`.
            prompt_embeds (`torch.Tensor`, *optional*): Text embeddings from [`~MnistDiffusionPipeline.encode_prompt`]
                instead of `prompt`; needs `prompt_attention_mask`.
            negative_prompt_embeds (`torch.Tensor`, *optional*): Instead of `negative_prompt`; needs
                `negative_prompt_attention_mask`.
            prompt_attention_mask, negative_prompt_attention_mask (`torch.Tensor`, *optional*): The masks of the
                embeddings above, as `encode_prompt` returns them.
            output_type (`str`, defaults to `"pil"`): `"pil"` (PIL images), `"np"` (`(batch, height, width,
                channels)` floats in [0, 1]), `"pt"` (`(batch, channels, height, width)` floats in [0, 1]) or
                `"latent"` (the final latents, unprocessed: images in [-1, 1] for this pixel-space model).
            return_dict (`bool`, defaults to `True`): Return a [`MnistDiffusionPipelineOutput`] instead of a tuple.
            callback_on_step_end (`Callable` or `PipelineCallback`, *optional*): Called as
                `callback_on_step_end(pipe, step, timestep, callback_kwargs)` after each step; returns the dict,
                replacing any of the tensors it was given. It may set `pipe._guidance_scale` or `pipe._interrupt`.
            callback_on_step_end_tensor_inputs (`list[str]`, *optional*): Tensors put in `callback_kwargs`, from
                `pipe._callback_tensor_inputs` (`"latents"`, `"noise_pred"`, `"prompt_embeds"`: both guidance
                branches, unconditional first). Defaults to `["latents"]`, or the callback's own `tensor_inputs`.
            return_trajectory (`bool`, defaults to `False`): Also return the [`DenoisingTrajectory`] (x_t and
                predicted x_0 at every step).
            cross_attention_kwargs (`dict`, *optional*): Passed to the UNet; `{"scale": s}` weights the loaded LoRA
                adapters (see [`~MnistLoraLoaderMixin.load_lora_weights`]) by `s` in this call.

        Returns:
            [`MnistDiffusionPipelineOutput`] or `tuple`: with `return_dict=False`, `(images,)`, or
            `(images, trajectory)` when `return_trajectory=True`.
        """
        height = self.sample_size if height is None else height
        width = self.sample_size if width is None else width
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
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
            prompt_embeds,
            negative_prompt_embeds,
            prompt_attention_mask,
            negative_prompt_attention_mask,
        )
        self._guidance_scale = guidance_scale
        self._interrupt = False
        device = self._execution_device

        # 2. Encode the prompts and the class labels (unconditional first, for batched guidance)
        conditioning = self.encode_conditioning(
            prompts,
            labels,
            negative_prompt,
            num_images_per_prompt,
            device,
            prompt_embeds,
            negative_prompt_embeds,
            prompt_attention_mask,
            negative_prompt_attention_mask,
        )
        batch_size = conditioning_batch_size(conditioning, self.do_classifier_free_guidance)

        # 3. Set the timesteps
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps

        # 4. Prepare the initial noise
        shape = (batch_size, self.unet.config.in_channels, height, width)
        latents = self.prepare_latents(shape, self.unet.dtype, device, generator, latents)

        if self.guidance_embedded:  # a distilled UNet: the guidance scale as an embedding, no unconditional pass
            scales = torch.full((batch_size,), float(self._guidance_scale), device=device)
            embedding = self.get_guidance_scale_embedding(scales, self.unet.config.time_cond_proj_dim)
            conditioning["timestep_cond"] = embedding.to(self.unet.dtype)

        # 5. Denoising loop
        latents, trajectory = self.denoise(
            latents,
            timesteps,
            conditioning,
            generator,
            guidance_start,
            guidance_stop,
            callback_on_step_end,
            callback_on_step_end_tensor_inputs,
            return_trajectory,
            cross_attention_kwargs=cross_attention_kwargs,
        )

        # 6. Post-process
        return self.postprocess(latents, output_type, return_dict, trajectory)


def conditioning_batch_size(conditioning: dict[str, torch.Tensor | None], guided: bool) -> int:
    """Number of images a conditioning dict of [`~MnistDiffusionPipeline.encode_conditioning`] is for."""
    tensor = next(v for v in conditioning.values() if v is not None)
    return tensor.shape[0] // 2 if guided else tensor.shape[0]
