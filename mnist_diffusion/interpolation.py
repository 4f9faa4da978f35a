"""Morph one digit into another: slerp of the starting noise, lerp of the text or class embeddings between frames."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from diffusers.utils.torch_utils import randn_tensor

from .pipelines import MnistDiffusionPipeline, MnistDiffusionPipelineOutput


def slerp(start: torch.Tensor, end: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    r"""
    Spherical interpolation between two noise tensors, one result per weight in [0, 1] (stacked on a new dim 0).

    Gaussian noise lives near a sphere; slerp keeps the norm of the interpolants where plain lerp would shrink
    them towards the mean (blurry middle frames). Falls back to lerp for (nearly) parallel tensors.

    Example:

    ```py
    >>> import torch
    >>> from mnist_diffusion.interpolation import slerp

    >>> a, b = torch.randn(1, 28, 28), torch.randn(1, 28, 28)
    >>> frames = slerp(a, b, torch.linspace(0, 1, 5))
    >>> frames.shape, torch.allclose(frames[0], a, atol=1e-5), torch.allclose(frames[-1], b, atol=1e-5)
    (torch.Size([5, 1, 28, 28]), True, True)
    ```
    """
    a, b = start.flatten().double(), end.flatten().double()
    cosine = (a @ b / (a.norm() * b.norm())).clamp(-1, 1)
    angle = torch.arccos(cosine)
    w = weights.double().reshape(-1, 1)
    if angle.abs() < 1e-4:
        mixed = (1 - w) * a + w * b
    else:
        mixed = (torch.sin((1 - w) * angle) * a + torch.sin(w * angle) * b) / torch.sin(angle)
    return mixed.to(start.dtype).reshape(len(weights), *start.shape)


@contextlib.contextmanager
def blended_class_embedding(unet: torch.nn.Module, end_label: int, weights: torch.Tensor, null_label: int) -> Iterator:
    r"""
    While active, rows of the UNet's class embedding that are not the null class become
    `(1 - w) * embedding(label) + w * embedding(end_label)`, with row `i` of the conditional batch taking `weights[i]`.

    Used by [`interpolate`] to lerp between class embeddings with the pipeline's own loop (guidance included: the
    unconditional rows keep the null class).
    """
    embedding = getattr(unet, "class_embedding", None)
    if not isinstance(embedding, torch.nn.Embedding):
        raise ValueError("Interpolating class labels needs a UNet with a class embedding (`num_class_embeds`).")

    def blend(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        labels = inputs[0]
        conditional = labels != null_label
        w = weights.to(device=output.device, dtype=output.dtype).reshape(-1, 1)
        if int(conditional.sum()) != len(w):
            raise ValueError(f"Expected {len(w)} conditional rows to blend, got {int(conditional.sum())}.")
        mixed = output.clone()
        mixed[conditional] = (1 - w) * output[conditional] + w * module.weight[end_label].to(output.dtype)
        return mixed

    handle = embedding.register_forward_hook(blend)
    try:
        yield
    finally:
        handle.remove()


def interpolate(
    pipe: MnistDiffusionPipeline,
    prompts: Sequence[str] | None = None,
    class_labels: Sequence[int | str] | None = None,
    seeds: Sequence[int] = (0, 0),
    prompt: str | None = None,
    class_label: int | str | None = None,
    num_frames: int = 8,
    **kwargs,
) -> MnistDiffusionPipelineOutput:
    r"""
    Generate `num_frames` images morphing between two prompts, two class labels and/or two seeds.

    Every frame is an ordinary text-to-image sample whose conditioning and starting noise are interpolated:
    - `prompts=(a, b)`: the text embeddings are lerped (frames between the ends attend to both prompts' tokens);
    - `class_labels=(a, b)`: the UNet's class embeddings are lerped;
    - `seeds=(s, t)` with `s != t`: the starting noise is slerped (with `s == t` every frame starts from the same
      noise, so only the conditioning moves).
    What is not interpolated stays fixed: `prompt` and/or `class_label`.

    Args:
        pipe ([`MnistDiffusionPipeline`]): Any of the package's pipelines (its components are shared).
        prompts (`tuple[str, str]`, *optional*): The first and last prompt.
        class_labels (`tuple`, *optional*): The first and last class (ids or names).
        seeds (`tuple[int, int]`, defaults to `(0, 0)`): Seeds of the first and last starting noise.
        prompt (`str`, *optional*): A fixed prompt, when prompts are not interpolated.
        class_label (`int` or `str`, *optional*): A fixed class, when class labels are not interpolated.
        num_frames (`int`, defaults to 8): Frames, the two ends included.
        kwargs: Passed to the pipeline call (`num_inference_steps`, `guidance_scale`, `output_type`, ...); the
            `generator` (for a stochastic scheduler's step noise) defaults to one seeded with the first seed.

    A deterministic scheduler (DPM-Solver++, DDIM) gives the smoothest morphs: with DDPM every step adds fresh noise,
    different for each frame.

    Example:

    ```py
    >>> from mnist_diffusion import MnistDiffusionPipeline
    >>> from mnist_diffusion.interpolation import interpolate

    >>> pipe = MnistDiffusionPipeline.from_pretrained("path")  # doctest: +SKIP
    >>> frames = interpolate(pipe, prompts=("a 3", "an 8"), num_frames=8).images  # doctest: +SKIP
    >>> frames = interpolate(pipe, class_labels=(1, 7), seeds=(0, 1)).images  # doctest: +SKIP
    ```
    """
    if not isinstance(num_frames, int) or num_frames < 2:
        raise ValueError(f"`num_frames` is {num_frames!r}; expected an int >= 2 (the two ends included).")
    for name, pair in (("prompts", prompts), ("class_labels", class_labels), ("seeds", seeds)):
        if pair is not None and (isinstance(pair, str) or len(pair) != 2):
            raise ValueError(f"`{name}` is {pair!r}; expected a pair (start, end).")
    if prompts is not None and prompt is not None:
        raise ValueError("Pass `prompts` (interpolated) or `prompt` (fixed), not both.")
    if class_labels is not None and class_label is not None:
        raise ValueError("Pass `class_labels` (interpolated) or `class_label` (fixed), not both.")
    if prompts is None and class_labels is None and seeds[0] == seeds[1]:
        raise ValueError("Nothing to interpolate: give `prompts`, `class_labels`, or two different `seeds`.")
    for key in ("prompt_embeds", "prompt_attention_mask", "latents", "class_labels"):
        if key in kwargs:
            raise ValueError(f"`{key}` is set by `interpolate`; it cannot be passed through.")
    text_to_image = MnistDiffusionPipeline.from_pipe(pipe)
    weights = torch.linspace(0, 1, num_frames)
    device = text_to_image._execution_device
    shape = (1, text_to_image.unet.config.in_channels, text_to_image.unet.config.sample_size)
    shape = (*shape, shape[-1])
    noises = [
        randn_tensor(shape, generator=torch.Generator().manual_seed(int(seed)), device=device)[0] for seed in seeds
    ]
    call = {"generator": torch.Generator().manual_seed(int(seeds[0])), **kwargs}
    call["latents"] = slerp(noises[0], noises[1], weights)

    if prompts is not None:
        if text_to_image.text_encoder is None:
            raise ValueError("Interpolating prompts needs a pipeline with a text encoder.")
        embeds, masks, _, _ = text_to_image.encode_prompt(list(prompts), device, do_classifier_free_guidance=False)
        w = weights.to(device=device, dtype=embeds.dtype).reshape(-1, 1, 1)
        call["prompt_embeds"] = (1 - w) * embeds[0] + w * embeds[1]
        # the ends attend to their own tokens (so they are exactly the two prompts' samples), the frames between to
        # the tokens of both
        frame_masks = torch.maximum(masks[0], masks[1]).expand(num_frames, -1).clone()
        frame_masks[0], frame_masks[-1] = masks[0], masks[1]
        call["prompt_attention_mask"] = frame_masks
    elif prompt is not None:
        call["prompt"] = [prompt] * num_frames

    if class_labels is None:
        if class_label is not None:
            call["class_labels"] = [class_label] * num_frames
        return text_to_image(**call)
    start, end = text_to_image.resolve_class_labels(list(class_labels))
    call["class_labels"] = [start] * num_frames
    with blended_class_embedding(text_to_image.unet, end, weights, text_to_image.null_class_label):
        return text_to_image(**call)
