"""`MnistInpaintPipeline`: repaint the masked part of a digit, keeping the rest (RePaint with resampling)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from diffusers.callbacks import PipelineCallback
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.schedulers import DDIMScheduler, DDPMScheduler
from diffusers.utils import logging, replace_example_docstring
from diffusers.utils.torch_utils import randn_tensor

from mnist_diffusion.image_input import ImageInput, load_images, prepare_mask
from mnist_diffusion.schedulers.scheduling_mnist_ddpm import renoise

from .pipeline_mnist_img2img import MnistImg2ImgPipeline
from .pipeline_output import MnistDiffusionPipelineOutput

logger = logging.get_logger(__name__)

# Schedulers whose `step` keeps no history, so the loop can go back up the schedule (RePaint's resampling).
RESAMPLING_SCHEDULERS = (DDPMScheduler, DDIMScheduler)  # MnistDDPMScheduler is a DDPMScheduler
#: Most times one stretch of the schedule may be denoised (`jump_n_sample`); RePaint's paper uses 10.
MAX_JUMP_N_SAMPLE = 20

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import numpy as np
        >>> import torch
        >>> from mnist_diffusion import MnistDiffusionPipeline, MnistInpaintPipeline
        >>> from mnist_diffusion.pretrained import DIFFUSION_MODEL

        >>> pipe = MnistDiffusionPipeline.from_pretrained(DIFFUSION_MODEL)  # the released model, shipped offline
        >>> inpaint = MnistInpaintPipeline.from_pipe(pipe)  # the same weights, no copy
        >>> three = pipe(class_labels=3, num_inference_steps=20, generator=torch.Generator().manual_seed(0)).images[0]
        >>> mask = np.zeros((28, 28), dtype=np.uint8)
        >>> mask[:, :14] = 255  # repaint the left half, keep the right half of the 3
        >>> generator = torch.Generator().manual_seed(0)
        >>> eight = inpaint(image=three, mask_image=mask, class_labels=8, num_inference_steps=20, generator=generator)
        >>> kept = np.asarray(eight.images[0], dtype=int)[:, 14:] - np.asarray(three, dtype=int)[:, 14:]
        >>> int(np.abs(kept).max()) <= 1  # the right half is kept (up to rounding)
        True

        ```
"""


def repaint_schedule(num_steps: int, jump_length: int, jump_n_sample: int) -> list[int]:
    r"""
    The order in which RePaint visits `num_steps` denoising steps: indices into the timesteps, with jumps back.

    After every `jump_length` steps the sample is re-noised `jump_length` steps back and denoised again, so each
    stretch of the schedule runs `jump_n_sample` times (the last stretch, ending at the clean image, once).

    Example:

    ```py
    >>> from mnist_diffusion.pipelines.pipeline_mnist_inpaint import repaint_schedule

    >>> repaint_schedule(6, jump_length=2, jump_n_sample=2)
    [0, 1, 0, 1, 2, 3, 2, 3, 4, 5]
    ```
    """
    jumps = {level: jump_n_sample - 1 for level in range(jump_length, num_steps, jump_length)}
    order, level = [], 0
    while level < num_steps:
        order.append(level)
        level += 1
        if jumps.get(level, 0) > 0:
            jumps[level] -= 1
            level -= jump_length
    return order


class MnistInpaintPipeline(MnistImg2ImgPipeline):
    r"""
    Inpainting with the components of a [`MnistDiffusionPipeline`], RePaint-style (Lugmayr et al., 2022).

    After every denoising step the known pixels (black in `mask_image`) are replaced by the original image noised
    to the step's timestep with the scheduler's `add_noise`, so the model only has to invent the masked part (white
    in `mask_image`) and the known pixels come back unchanged. Resampling (`jump_n_sample > 1`) re-noises the sample
    `jump_length` steps back and denoises it again, so the generated part can adapt to the known one; it needs a
    scheduler whose `step` keeps no history (`MnistDDPMScheduler`, `DDPMScheduler`, `DDIMScheduler`). Without
    resampling every scheduler of the text-to-image pipeline works. Images are accepted as in
    [`MnistImg2ImgPipeline`]; results are white on black.
    """

    def check_mask(
        self, image: ImageInput, mask_image: ImageInput, jump_length: int, jump_n_sample: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The images (at their own size) and the binary repaint masks at the model's resolution, checked."""
        if image is None:
            raise ValueError("`image` is required: a PIL image, numpy array, torch tensor or file path.")
        if mask_image is None:
            raise ValueError("`mask_image` is required: white (or 1) where to repaint, black (or 0) where to keep.")
        for name, value in (("jump_length", jump_length), ("jump_n_sample", jump_n_sample)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` is {value!r}; expected an int >= 1.")
        if jump_n_sample > MAX_JUMP_N_SAMPLE:
            raise ValueError(
                f"`jump_n_sample` is {jump_n_sample}; expected at most {MAX_JUMP_N_SAMPLE} (the model runs about "
                "`jump_n_sample` times per step)."
            )
        if jump_n_sample > 1 and not isinstance(self.scheduler, RESAMPLING_SCHEDULERS):
            raise ValueError(
                f"Resampling (`jump_n_sample={jump_n_sample}`) needs a scheduler without step history "
                f"(MnistDDPMScheduler, DDPMScheduler or DDIMScheduler); this pipeline has "
                f"{type(self.scheduler).__name__}. Pass `jump_n_sample=1` or swap the scheduler."
            )
        images = load_images(image, "image")
        masks = load_images(mask_image, "mask_image")
        if masks.shape[-2:] != images.shape[-2:]:
            raise ValueError(
                f"`mask_image` is {masks.shape[-1]}x{masks.shape[-2]} but `image` is "
                f"{images.shape[-1]}x{images.shape[-2]}; expected the same size."
            )
        if masks.shape[0] not in (1, images.shape[0]):
            raise ValueError(f"Got {masks.shape[0]} masks for {images.shape[0]} images; expected 1 or one per image.")
        size = self.sample_size
        masks = prepare_mask(masks, size, size, argument="mask_image")
        empty = [i for i, mask in enumerate(masks) if not mask.any()]
        if empty:
            raise ValueError(
                f"`mask_image` {empty} marks nothing to repaint at {size}x{size} (no pixel above half brightness); "
                "expected white where the image should be repainted."
            )
        if masks.all():
            logger.warning("`mask_image` covers the whole image: this is plain generation, the image is not used.")
        return images, masks

    def make_step_hooks(
        self,
        images: torch.Tensor,
        masks: torch.Tensor,
        base_timesteps: torch.Tensor,
        order: list[int],
        generator: torch.Generator | list[torch.Generator] | None,
    ) -> tuple[Callable, Callable]:
        """`before_step` (re-noise after a jump back) and `after_step` (put back the known pixels) for `denoise`."""

        def level_timestep(level: int) -> int:
            # the timestep the sample is at after `level` steps; -1 once it is clean
            return int(base_timesteps[level]) if level < len(base_timesteps) else -1

        def before_step(i: int, t: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
            if i == 0 or order[i] == order[i - 1] + 1:
                return latents
            return renoise(self.scheduler, latents, level_timestep(order[i - 1] + 1), int(t), generator)

        def after_step(i: int, t: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
            timestep = level_timestep(order[i] + 1)
            known = images
            if timestep >= 0:
                noise = randn_tensor(images.shape, generator=generator, device=images.device, dtype=images.dtype)
                known = self.scheduler.add_noise(images, noise, torch.full((images.shape[0],), timestep))
            return masks * latents + (1 - masks) * known

        return before_step, after_step

    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        image: ImageInput = None,
        mask_image: ImageInput = None,
        class_labels: int | str | Sequence[int | str] | None = None,
        negative_prompt: str | list[str] | None = None,
        num_inference_steps: int = 50,
        strength: float = 1.0,
        jump_length: int = 5,
        jump_n_sample: int = 2,
        guidance_scale: float = 3.0,
        guidance_start: float = 0.0,
        guidance_stop: float = 1.0,
        adapter_guidance_stop: float = 0.6,
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
        Repaint the white part of `mask_image` in `image`, following the prompt and/or class labels.

        Args:
            prompt (`str` or `list[str]`, *optional*): What the completed image should be.
            image: The image(s) to complete, as in [`MnistImg2ImgPipeline.__call__`].
            mask_image: Same size as `image` (any size; resized, then binarised at half brightness): white / 1 =
                repaint, black / 0 = keep. One mask for all images or one per image. A mask that covers everything
                is plain generation (a warning says so); an empty one is refused.
            class_labels (`int`, `str` or a list of them, *optional*): Class ids or names. Without prompt and labels
                the completion is unconditional.
            num_inference_steps (`int`, defaults to 50): Steps of the schedule (resampling repeats some).
            strength (`float`, defaults to 1.0): Start from the image noised to this fraction of the schedule
                instead of pure noise; lower keeps more of the masked region's original content.
            jump_length (`int`, defaults to 5): Steps between resampling jumps, and how far each jump goes back.
            jump_n_sample (`int`, defaults to 2): How often each stretch of `jump_length` steps is denoised; 1 turns
                resampling off (then any scheduler works). The model runs about `jump_n_sample` times per step.
            negative_prompt, guidance_scale, guidance_start, guidance_stop, adapter_guidance_stop,
            num_images_per_prompt, generator, invert, prompt_embeds, negative_prompt_embeds, prompt_attention_mask,
            negative_prompt_attention_mask, output_type, return_dict, callback_on_step_end,
            callback_on_step_end_tensor_inputs, return_trajectory, cross_attention_kwargs:
                As in [`MnistImg2ImgPipeline.__call__`]; the guidance interval and `pipe.num_timesteps` count the
                steps with the resampled ones.

        Examples:

        Returns:
            [`MnistDiffusionPipelineOutput`] or `tuple`, as [`MnistDiffusionPipeline.__call__`]. The known pixels
            equal the input's at the model's resolution (white on black).
        """
        # 1.-3. Check inputs (the images and masks first: their number counts in the batch), encode the prompts and
        # the class labels, set the timesteps (the last `strength` of the schedule)
        images, masks = self.check_mask(image, mask_image, jump_length, jump_n_sample)
        images, strength = self.check_image_inputs(images, strength, invert)
        conditioning, timesteps, batch_size, tensor_inputs = self.prepare_call(
            prompt=prompt,
            class_labels=class_labels,
            negative_prompt=negative_prompt,
            height=self.sample_size,
            width=self.sample_size,
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
            num_input_images=images.shape[0],
            strength=strength,
        )

        # 4. Noise the input images to the first timestep (pure noise at strength 1.0)
        images = self.repeat_for_batch(images, batch_size, num_images_per_prompt)
        masks = self.repeat_for_batch(masks, batch_size, num_images_per_prompt)
        latents = self.prepare_image_latents(images, timesteps[:1], strength, generator)

        # 5. Denoising loop, RePaint's order: known pixels put back after every step, jumps back re-noised
        order = repaint_schedule(len(timesteps), jump_length, jump_n_sample)
        before_step, after_step = self.make_step_hooks(images, masks, timesteps, order, generator)
        latents, trajectory = self.denoise(
            latents,
            timesteps[order],
            conditioning,
            generator=generator,
            guidance_start=guidance_start,
            guidance_stop=guidance_stop,
            adapter_guidance_stop=adapter_guidance_stop,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=tensor_inputs,
            return_trajectory=return_trajectory,
            before_step=before_step,
            after_step=after_step,
            cross_attention_kwargs=cross_attention_kwargs,
        )

        # 6. Post-process
        return self.postprocess(latents, output_type, return_dict, trajectory)
