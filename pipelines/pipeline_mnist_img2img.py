"""`MnistImg2ImgPipeline`: turn a rough drawing or a damaged digit into a clean one (SDEdit, image-to-image)."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from diffusers.callbacks import PipelineCallback
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.utils import replace_example_docstring
from diffusers.utils.torch_utils import randn_tensor

from mnist_diffusion.image_input import ImageInput, prepare_image

from .pipeline_mnist_diffusion import MnistDiffusionPipeline
from .pipeline_output import MnistDiffusionPipelineOutput

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import torch
        >>> from PIL import Image, ImageDraw
        >>> from mnist_diffusion import MnistDiffusionPipeline, MnistImg2ImgPipeline
        >>> from mnist_diffusion.pretrained import DIFFUSION_MODEL

        >>> pipe = MnistDiffusionPipeline.from_pretrained(DIFFUSION_MODEL)  # the released model, shipped offline
        >>> img2img = MnistImg2ImgPipeline.from_pipe(pipe)  # the same weights, no copy
        >>> sketch = Image.new("L", (200, 200), "white")  # a rough 7 in dark ink on paper, any size
        >>> ImageDraw.Draw(sketch).line([(50, 40), (150, 40), (90, 170)], fill="black", width=14)
        >>> generator = torch.Generator().manual_seed(0)
        >>> image = img2img("a thick 7", image=sketch, strength=0.6, num_inference_steps=20, generator=generator)
        >>> image.images[0].size, image.images[0].mode
        ((28, 28), 'L')

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

    def check_image_inputs(self, image: ImageInput, strength: Any, invert: bool | None) -> tuple[torch.Tensor, float]:
        r"""
        The input images in the model's convention, `(num_images, 1, size, size)` in [-1, 1], and `strength` as a
        float; a number type of numpy or a 0-d tensor is accepted as `strength`, like a Python float.
        """
        if image is None:
            raise ValueError("`image` is required: a PIL image, numpy array, torch tensor or file path.")
        if isinstance(strength, (np.ndarray, torch.Tensor)) and strength.ndim == 0:
            strength = strength.item()
        if isinstance(strength, bool) or not isinstance(strength, numbers.Real) or not 0.0 < strength <= 1.0:
            raise ValueError(f"`strength` is {strength!r}; expected a number in (0, 1] (1.0 ignores the image).")
        if invert is not None and not isinstance(invert, bool):
            raise ValueError(f"`invert` is {invert!r}; expected True, False or None (detect from the border).")
        size = self.sample_size
        return prepare_image(image, size, size, invert=invert, argument="image"), float(strength)

    def repeat_for_batch(self, images: torch.Tensor, batch_size: int, num_images_per_prompt: int) -> torch.Tensor:
        """One row of `images` (one or `batch_size` of them) per output image, on the UNet's device and dtype."""
        images = images.expand(batch_size, *images.shape[1:]) if images.shape[0] == 1 else images
        images = images.to(device=self._execution_device, dtype=self.unet.dtype)
        return images.repeat_interleave(num_images_per_prompt, dim=0)

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

    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
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
        Redraw `image` towards the prompt and/or class labels.

        Args:
            prompt (`str` or `list[str]`, *optional*): What the result should be, e.g. "a thick 7".
            image (PIL image, `np.ndarray`, `torch.Tensor`, file path, or a list of them): The starting image(s);
                any size (resized to `unet.config.sample_size`), gray or RGB(A). numpy: channels last, `uint8`,
                `uint16` or floats in [0, 1]; torch: channels first, in [0, 1] or [-1, 1]. One image is used for
                every prompt. At most `MAX_IMAGE_PIXELS` pixels in all (checked before decoding).
            strength (`float`, defaults to 0.6): In (0, 1] (a Python or numpy number, or a 0-d tensor): how far
                into the noise schedule the image is pushed before denoising; the last
                `int(strength * num_inference_steps)` steps run (at least one). Near 0 returns (almost) the input,
                1.0 ignores it.
            class_labels (`int`, `str` or a list of them, *optional*): Class ids or names (see
                [`MnistDiffusionPipeline.__call__`]). Without prompt and labels the image is denoised unconditionally.
            negative_prompt, num_inference_steps, guidance_scale, guidance_start, guidance_stop,
            adapter_guidance_stop, num_images_per_prompt, generator, prompt_embeds, negative_prompt_embeds,
            prompt_attention_mask, negative_prompt_attention_mask, output_type, return_dict, callback_on_step_end,
            callback_on_step_end_tensor_inputs, return_trajectory, cross_attention_kwargs: As in
                [`MnistDiffusionPipeline.__call__`].
            invert (`bool`, *optional*): `True` for dark ink on light paper, `False` for white on black; detected
                per image from its border when not given.

        Examples:

        Returns:
            [`MnistDiffusionPipelineOutput`] or `tuple`, as [`MnistDiffusionPipeline.__call__`]; the trajectory starts
            at the noised input.
        """
        # 1.-3. Check inputs (the images first: their number counts in the batch), encode the prompts and the class
        # labels, set the timesteps (the last `strength` of the schedule)
        images, strength = self.check_image_inputs(image, strength, invert)
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

        # 4. Noise the input images to the first timestep
        images = self.repeat_for_batch(images, batch_size, num_images_per_prompt)
        latents = self.prepare_image_latents(images, timesteps[:1], strength, generator)

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
