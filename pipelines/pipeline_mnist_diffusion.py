"""`MnistDiffusionPipeline`: text- and class-conditioned image generation with classifier-free guidance."""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.image_processor import VaeImageProcessor
from diffusers.models.embeddings import get_timestep_embedding
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import replace_example_docstring
from diffusers.utils.torch_utils import randn_tensor
from mnist_diffusion.pipelines.call_inputs import MnistCallInputsMixin
from mnist_diffusion.pipelines.lora import MnistLoraLoaderMixin
from mnist_diffusion.pipelines.pipeline_output import DenoisingTrajectory, MnistDiffusionPipelineOutput

from mnist_diffusion.schedulers.scheduling_mnist_ddpm import predict_original_sample

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import torch
        >>> from mnist_diffusion import MnistDiffusionPipeline
        >>> from mnist_diffusion.pretrained import DIFFUSION_MODEL

        >>> pipe = MnistDiffusionPipeline.from_pretrained(DIFFUSION_MODEL)  # the released model, shipped offline
        >>> generator = torch.Generator().manual_seed(0)
        >>> output = pipe("a thick slanted 7", num_images_per_prompt=2, num_inference_steps=20, generator=generator)
        >>> output.images[0].size
        (28, 28)
        >>> digits = pipe(class_labels=["7", 3], guidance_scale=2.0, num_inference_steps=20, output_type="np").images
        >>> digits.shape
        (2, 28, 28, 1)

        ```
"""


class MnistDiffusionPipeline(DiffusionPipeline, MnistCallInputsMixin, MnistLoraLoaderMixin):
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
        if not isinstance(pipeline, MnistDiffusionPipeline):
            raise TypeError(
                f"`pipeline` is a {type(pipeline).__name__}; expected a MnistDiffusionPipeline (or an image-to-image "
                "or inpainting one) whose components to share."
            )
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
    def label_names(self) -> list[str] | None:
        r"""
        The class names of `id2label` in class id order (name `i` is class `i`); None for a pipeline without
        `id2label` (text-only, or classes known only by id).

        Example:

        ```py
        >>> pipe.label_names  # doctest: +SKIP
        ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9']
        >>> pipe.label_names[pipe.resolve_class_labels("7")[0]]  # doctest: +SKIP
        '7'
        ```
        """
        id2label = self.config.id2label
        return [id2label[str(i)] for i in range(len(id2label))] if id2label else None

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

    def get_timesteps(self, num_inference_steps: int, strength: float) -> torch.Tensor:
        """The last `strength` of the scheduler's timesteps (at least one step), as diffusers' img2img pipelines."""
        init_steps = min(max(int(num_inference_steps * strength), 1), num_inference_steps)
        t_start = num_inference_steps - init_steps
        timesteps = self.scheduler.timesteps[t_start * self.scheduler.order :]
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(t_start * self.scheduler.order)
        return timesteps

    def prepare_call(
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
        adapter_guidance_stop: float,
        num_images_per_prompt: int,
        generator: torch.Generator | list[torch.Generator] | None,
        prompt_embeds: torch.Tensor | None,
        negative_prompt_embeds: torch.Tensor | None,
        prompt_attention_mask: torch.Tensor | None,
        negative_prompt_attention_mask: torch.Tensor | None,
        output_type: str,
        callback_on_step_end: Callable | PipelineCallback | MultiPipelineCallbacks | None,
        callback_on_step_end_tensor_inputs: list[str] | None,
        latents: torch.Tensor | None = None,
        num_input_images: int | None = None,
        strength: float | None = None,
    ) -> tuple[dict[str, torch.Tensor | None], torch.Tensor, int, list[str]]:
        r"""
        Steps 1-3 of every call (text-to-image, image-to-image, inpainting): check the inputs, encode the prompts and
        class labels, set the timesteps. The arguments are the call's; an image-conditioned call also gives
        `num_input_images` (see [`~MnistCallInputsMixin.check_inputs`]) and `strength` (only the last `strength` of
        the schedule runs, see [`~MnistDiffusionPipeline.get_timesteps`]).

        Returns:
            `(conditioning, timesteps, batch_size, callback_on_step_end_tensor_inputs)`: the UNet's conditioning
            keyword arguments (with the guidance-scale embedding of a distilled UNet), the timesteps to run, the
            number of prompts, labels or input images (before `num_images_per_prompt`) and the tensors the callback
            gets.
        """
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        callback_on_step_end_tensor_inputs = callback_on_step_end_tensor_inputs or ["latents"]

        # 1. Check inputs
        prompts, labels, batch_size = self.check_inputs(
            prompt=prompt,
            class_labels=class_labels,
            negative_prompt=negative_prompt,
            height=height,
            width=width,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            guidance_start=guidance_start,
            guidance_stop=guidance_stop,
            adapter_guidance_stop=adapter_guidance_stop,
            num_images_per_prompt=num_images_per_prompt,
            generator=generator,
            output_type=output_type,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            latents=latents,
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds,
            prompt_attention_mask=prompt_attention_mask,
            negative_prompt_attention_mask=negative_prompt_attention_mask,
            num_input_images=num_input_images,
        )
        unconditional = prompts is None and labels is None and prompt_embeds is None
        # with neither prompt nor label both guidance branches are the same: guiding would only cost time
        self._guidance_scale = 1.0 if unconditional else guidance_scale
        self._interrupt = False
        device = self._execution_device

        # 2. Encode the prompts and the class labels (unconditional first, for batched guidance)
        conditioning = self.encode_conditioning(
            prompts,
            labels,
            negative_prompt,
            num_images_per_prompt,
            device,
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds,
            prompt_attention_mask=prompt_attention_mask,
            negative_prompt_attention_mask=negative_prompt_attention_mask,
            batch_size=batch_size,
        )
        if self.guidance_embedded:  # a distilled UNet: the guidance scale as an embedding, no unconditional pass
            scales = torch.full((batch_size * num_images_per_prompt,), float(self._guidance_scale), device=device)
            embedding = self.get_guidance_scale_embedding(scales, self.unet.config.time_cond_proj_dim)
            conditioning["timestep_cond"] = embedding.to(self.unet.dtype)

        # 3. Set the timesteps (an image-conditioned call runs the last `strength` of them)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps if strength is None else self.get_timesteps(num_inference_steps, strength)
        return conditioning, timesteps, batch_size, callback_on_step_end_tensor_inputs

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
        adapter_guidance_stop: float = 0.0,
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
        guidance interval while `self.do_classifier_free_guidance`; on the guided steps at noise levels above
        `1 - adapter_guidance_stop` of the schedule, while LoRA adapters act on the UNet, the unconditional branch runs
        as a second forward without them), then the scheduler's `step`, then
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
        # adapter guidance: at high noise the unconditional branch is the base model's, so guidance also steers
        # toward the adapters' shapes (see `__call__`)
        adapter_guided = has_unconditional and adapter_guidance_stop > 0
        lora_layers = self.unfused_lora_layers(cross_attention_kwargs) if adapter_guided else []
        adapter_guidance_from = (1.0 - adapter_guidance_stop) * self.scheduler.config.num_train_timesteps
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
                if guided and lora_layers and float(t) >= adapter_guidance_from:
                    noise_pred = self.predict_without_lora_unconditionally(
                        lora_layers, model_input, t, conditioning, conditional_only, unet_kwargs
                    )
                else:
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
    @replace_example_docstring(EXAMPLE_DOC_STRING)
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
        adapter_guidance_stop: float = 0.6,
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
            adapter_guidance_stop (`float`, defaults to 0.6): While LoRA adapters act on the UNet, the guided steps
                at timesteps `t >= (1 - adapter_guidance_stop) * num_train_timesteps` (where a digit's shape is
                decided) run the unconditional branch without them, so guidance also steers toward their style; 0
                gives plain guidance with the adapters in both branches (docs/lora.md, "Adapter guidance").
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
                `pipe._callback_tensor_inputs`: `"latents"`, `"noise_pred"` and, with a text encoder, `"prompt_embeds"`
                (both guidance branches, unconditional first). Defaults to `["latents"]`, or the callback's own
                `tensor_inputs`.
            return_trajectory (`bool`, defaults to `False`): Also return the [`DenoisingTrajectory`] (x_t and
                predicted x_0 at every step).
            cross_attention_kwargs (`dict`, *optional*): Passed to the UNet; `{"scale": s}` weights the loaded LoRA
                adapters (see [`~MnistLoraLoaderMixin.load_lora_weights`]) by `s` in this call.

        Examples:

        Returns:
            [`MnistDiffusionPipelineOutput`] or `tuple`: with `return_dict=False`, `(images,)`, or
            `(images, trajectory)` when `return_trajectory=True`.
        """
        height = self.sample_size if height is None else height
        width = self.sample_size if width is None else width

        # 1.-3. Check inputs, encode the prompts and the class labels, set the timesteps
        conditioning, timesteps, batch_size, tensor_inputs = self.prepare_call(
            prompt=prompt,
            class_labels=class_labels,
            negative_prompt=negative_prompt,
            height=height,
            width=width,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            guidance_start=guidance_start,
            guidance_stop=guidance_stop,
            adapter_guidance_stop=adapter_guidance_stop,
            num_images_per_prompt=num_images_per_prompt,
            generator=generator,
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds,
            prompt_attention_mask=prompt_attention_mask,
            negative_prompt_attention_mask=negative_prompt_attention_mask,
            output_type=output_type,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            latents=latents,
        )

        # 4. Prepare the initial noise
        shape = (batch_size * num_images_per_prompt, self.unet.config.in_channels, height, width)
        latents = self.prepare_latents(shape, self.unet.dtype, self._execution_device, generator, latents)

        # 5. Denoising loop
        latents, trajectory = self.denoise(
            latents,
            timesteps,
            conditioning,
            generator=generator,
            guidance_start=guidance_start,
            guidance_stop=guidance_stop,
            adapter_guidance_stop=adapter_guidance_stop,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=tensor_inputs,
            return_trajectory=return_trajectory,
            cross_attention_kwargs=cross_attention_kwargs,
        )

        # 6. Post-process
        return self.postprocess(latents, output_type, return_dict, trajectory)
