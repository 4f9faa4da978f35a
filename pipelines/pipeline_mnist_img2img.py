"""`MnistImg2ImgPipeline`: turn a rough drawing or a damaged digit into a clean one (SDEdit, image-to-image)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.utils.torch_utils import randn_tensor

from mnist_diffusion.image_input import ImageInput, prepare_image

from .pipeline_mnist_diffusion import MnistDiffusionPipeline, MnistDiffusionPipelineOutput

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> from mnist_diffusion import MnistDiffusionPipeline, MnistImg2ImgPipeline

        >>> pipe = MnistDiffusionPipeline.from_pretrained("path/or/repo-id")
        >>> img2img = MnistImg2ImgPipeline.from_pipe(pipe)  # same weights, no copy
        >>> image = img2img("a thick 7", image="drawing.png", strength=0.6).images[0]
        ```
"""


class MnistImg2ImgPipeline(MnistDiffusionPipeline):
    r"""
    Image-to-image generation (SDEdit, Meng et al. 2022) with the components of a [`MnistDiffusionPipeline`].

    The input image is noised to `strength` of the noise schedule with the scheduler's `add_noise`, then denoised
    with the prompt and/or class labels, as diffusers' `StableDiffusionImg2ImgPipeline`: low strength keeps the
    input's strokes, `strength=1.0` ignores the input (text-to-image from the same noise). Inputs as users have them
    are accepted (see [`mnist_diffusion.image_input.prepare_image`]): PIL, numpy or torch, any size, RGB or gray,
    dark ink on paper (detected, or `invert=True`) or MNIST's white on black. Outputs are in the model's convention
    (white on black).

    Build it from a loaded pipeline with [`~MnistImg2ImgPipeline.from_pipe`] to share its weights, or load it with
    `from_pretrained` from any saved `MnistDiffusionPipeline`.
    """

    def get_timesteps(self, num_inference_steps: int, strength: float) -> torch.Tensor:
        """The last `strength` of the scheduler's timesteps (at least one step), as diffusers' img2img pipelines."""
        init_steps = min(max(int(num_inference_steps * strength), 1), num_inference_steps)
        t_start = num_inference_steps - init_steps
        timesteps = self.scheduler.timesteps[t_start * self.scheduler.order :]
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(t_start * self.scheduler.order)
        return timesteps

    def prepare_image_latents(
        self,
        image: torch.Tensor,
        timestep: torch.Tensor,
        strength: float,
        generator: torch.Generator | list[torch.Generator] | None,
    ) -> torch.Tensor:
        """`image` noised to `timestep` with the scheduler's `add_noise`; at `strength=1.0`, the noise alone."""
        if strength >= 1.0:  # exactly text-to-image's starting noise
            return self.prepare_latents(tuple(image.shape), image.dtype, image.device, generator)
        noise = randn_tensor(tuple(image.shape), generator=generator, device=image.device, dtype=image.dtype)
        return self.scheduler.add_noise(image, noise, timestep.repeat(image.shape[0]))

    def check_image_inputs(
        self,
        image: ImageInput,
        strength: float,
        invert: bool | None,
        batch_size: int,
        num_images_per_prompt: int,
        generator: torch.Generator | list[torch.Generator] | None,
    ) -> tuple[torch.Tensor, int]:
        """
        The input images in the model's convention and the batch size they make with `batch_size` prompts/labels.
        """
        if image is None:
            raise ValueError("`image` is required: a PIL image, numpy array, torch tensor or file path.")
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 < strength <= 1.0:
            raise ValueError(f"`strength` is {strength!r}; expected a number in (0, 1] (1.0 ignores the image).")
        if invert is not None and not isinstance(invert, bool):
            raise ValueError(f"`invert` is {invert!r}; expected True, False or None (detect from the border).")
        size = self.sample_size
        images = prepare_image(image, size, size, invert=invert, argument="image")
        if batch_size not in (0, 1, images.shape[0]) and images.shape[0] != 1:
            raise ValueError(
                f"Got {images.shape[0]} images for {batch_size} prompts or class labels; expected the same number "
                "(or one of either, which is repeated)."
            )
        batch_size = max(batch_size, images.shape[0])
        total = batch_size * num_images_per_prompt
        if isinstance(generator, list) and len(generator) != total:
            raise ValueError(f"Got a list of {len(generator)} generators for {total} images; expected {total}.")
        images = images.expand(batch_size, *images.shape[1:]) if images.shape[0] == 1 else images
        images = images.to(device=self._execution_device, dtype=self.unet.dtype)
        return images.repeat_interleave(num_images_per_prompt, dim=0), batch_size

    def prepare_call(
        self,
        prompt: str | list[str] | None,
        image: ImageInput,
        strength: float,
        invert: bool | None,
        class_labels: int | str | Sequence[int | str] | None,
        negative_prompt: str | list[str] | None,
        num_inference_steps: int,
        guidance_scale: float,
        guidance_start: float,
        guidance_stop: float,
        num_images_per_prompt: int,
        generator: torch.Generator | list[torch.Generator] | None,
        prompt_embeds: torch.Tensor | None,
        negative_prompt_embeds: torch.Tensor | None,
        prompt_attention_mask: torch.Tensor | None,
        negative_prompt_attention_mask: torch.Tensor | None,
        output_type: str,
        callback_on_step_end: Callable | PipelineCallback | None,
        callback_on_step_end_tensor_inputs: list[str] | None,
    ) -> tuple[torch.Tensor, dict, torch.Tensor, list[str]]:
        r"""
        Steps 1-3 of every image-conditioned call: check the inputs, encode the conditioning, set the timesteps.

        Returns:
            `(images, conditioning, timesteps, callback_on_step_end_tensor_inputs)`: the input images
            `(batch, 1, size, size)` in [-1, 1], one per output image; the UNet's conditioning; the timesteps of
            the last `strength` of the schedule.
        """
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs
        callback_on_step_end_tensor_inputs = callback_on_step_end_tensor_inputs or ["latents"]
        size = self.sample_size

        # 1. Check inputs
        prompts, labels = self.check_inputs(
            prompt,
            class_labels,
            negative_prompt,
            size,
            size,
            num_inference_steps,
            guidance_scale,
            guidance_start,
            guidance_stop,
            num_images_per_prompt,
            None,
            None,
            output_type,
            callback_on_step_end_tensor_inputs,
            prompt_embeds,
            negative_prompt_embeds,
            prompt_attention_mask,
            negative_prompt_attention_mask,
            allow_unconditional=True,
        )
        num_prompts = prompt_embeds.shape[0] if prompt_embeds is not None else len(prompts or [])
        images, batch_size = self.check_image_inputs(
            image, strength, invert, max(num_prompts, len(labels or [])), num_images_per_prompt, generator
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
            prompt_embeds,
            negative_prompt_embeds,
            prompt_attention_mask,
            negative_prompt_attention_mask,
            batch_size=batch_size,
        )

        # 3. Set the timesteps: the last `strength` of the schedule
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.get_timesteps(num_inference_steps, strength)
        return images, conditioning, timesteps, callback_on_step_end_tensor_inputs

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        image: ImageInput = None,
        strength: float = 0.6,
        class_labels: int | str | Sequence[int | str] | None = None,
        negative_prompt: str | list[str] | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 3.0,
        guidance_start: float = 0.0,
        guidance_stop: float = 1.0,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        invert: bool | None = None,
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
        Redraw `image` towards the prompt and/or class labels.

        Args:
            prompt (`str` or `list[str]`, *optional*): What the result should be, e.g. "a thick 7".
            image (PIL image, `np.ndarray`, `torch.Tensor`, file path, or a list of them): The starting image(s);
                any size (resized to `unet.config.sample_size`), gray or RGB(A). numpy: channels last, `uint8` or
                floats in [0, 1]; torch: channels first, in [0, 1] or [-1, 1]. One image is used for every prompt.
            strength (`float`, defaults to 0.6): In (0, 1]: how far into the noise schedule the image is pushed
                before denoising; the last `int(strength * num_inference_steps)` steps run (at least one).
                Near 0 returns (almost) the input, 1.0 ignores it.
            class_labels (`int`, `str` or a list of them, *optional*): Class ids or names (see
                [`MnistDiffusionPipeline.__call__`]). Without prompt and labels the image is denoised unconditionally.
            negative_prompt, num_inference_steps, guidance_scale, guidance_start, guidance_stop,
            num_images_per_prompt, generator, prompt_embeds, negative_prompt_embeds, prompt_attention_mask,
            negative_prompt_attention_mask, output_type, return_dict, callback_on_step_end,
            callback_on_step_end_tensor_inputs, return_trajectory, cross_attention_kwargs: As in
                [`MnistDiffusionPipeline.__call__`].
            invert (`bool`, *optional*): `True` for dark ink on light paper, `False` for white on black; detected
                per image from its border when not given.

        Returns:
            [`MnistDiffusionPipelineOutput`] or `tuple`, as [`MnistDiffusionPipeline.__call__`]; the trajectory starts
            at the noised input.
        """
        # 1.-3. Check inputs, encode the prompts and labels, set the timesteps
        images, conditioning, timesteps, tensor_inputs = self.prepare_call(
            prompt,
            image,
            strength,
            invert,
            class_labels,
            negative_prompt,
            num_inference_steps,
            guidance_scale,
            guidance_start,
            guidance_stop,
            num_images_per_prompt,
            generator,
            prompt_embeds,
            negative_prompt_embeds,
            prompt_attention_mask,
            negative_prompt_attention_mask,
            output_type,
            callback_on_step_end,
            callback_on_step_end_tensor_inputs,
        )

        # 4. Noise the input image to the first timestep
        latents = self.prepare_image_latents(images, timesteps[:1], strength, generator)

        # 5. Denoising loop
        latents, trajectory = self.denoise(
            latents,
            timesteps,
            conditioning,
            generator,
            guidance_start,
            guidance_stop,
            callback_on_step_end,
            tensor_inputs,
            return_trajectory,
            cross_attention_kwargs=cross_attention_kwargs,
        )

        # 6. Post-process
        return self.postprocess(latents, output_type, return_dict, trajectory)
