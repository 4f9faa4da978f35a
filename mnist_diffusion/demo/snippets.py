"""The Python call (and CLI command) equivalent to each demo action, shown beside its result to teach the API."""

from __future__ import annotations

import shlex

from .models import FEW_STEP, SCHEDULER_NAMES

_SCHEDULER_CLASSES = {"dpm": "DPMSolverMultistepScheduler", "ddim": "DDIMScheduler", "ddpm": "MnistDDPMScheduler"}


def _load_lines(
    scheduler: str,
    model: str | None,
    classes: tuple[str, ...] = (),
    imports: tuple[str, ...] = (),
    steps: int = 4,
) -> list[str]:
    """Imports (`classes` of mnist_diffusion, other `imports`) and loading of the pipeline with `scheduler` (the
    few-step sampler: the student distilled for `steps`)."""
    ours = {"MnistDiffusionPipeline", *classes}
    lines = ["import torch", *imports]
    if scheduler == FEW_STEP:  # the shipped few-step students, one UNet per step count, with their DDIMScheduler
        return lines + [
            f"from mnist_diffusion import {', '.join(sorted(ours | {'MnistUNet2DConditionModel'}))}",
            "from mnist_diffusion.pretrained import FAST_DIFFUSION_MODEL, fast_unet_subfolder  # shipped offline",
            "",
            "# the student distilled for this many steps; guidance embedded (no unconditional pass)",
            f"subfolder = fast_unet_subfolder({steps})",
            "unet = MnistUNet2DConditionModel.from_pretrained(FAST_DIFFUSION_MODEL, subfolder=subfolder)",
            "pipe = MnistDiffusionPipeline.from_pretrained(FAST_DIFFUSION_MODEL, unet=unet)",
        ]
    cls = _SCHEDULER_CLASSES[SCHEDULER_NAMES[scheduler]]
    if cls == "MnistDDPMScheduler":
        ours.add(cls)
    else:
        lines.append(f"from diffusers import {cls}")
    lines.append(f"from mnist_diffusion import {', '.join(sorted(ours))}")
    if not model:
        lines.append("from mnist_diffusion.pretrained import DIFFUSION_MODEL  # the released model, shipped offline")
    path = repr(model) if model else "DIFFUSION_MODEL"
    lines += ["", f"pipe = MnistDiffusionPipeline.from_pretrained({path})"]
    lines.append(f"pipe.scheduler = {cls}.from_config(pipe.scheduler.config)")
    return lines


def _call(function: str, arguments: list[str]) -> str:
    """`function(...)` with one argument a line, as `ruff format` writes a long call."""
    return "\n".join([f"{function}("] + [f"    {argument}," for argument in arguments] + [")"])


def _conditioning(prompt: str | None, class_label: int | None) -> list[str]:
    return ([f"prompt={prompt!r}"] if prompt else []) + (
        [f"class_labels={class_label}"] if class_label is not None else []
    )


def _cli_options(
    prompt: str | None, class_label: int | None, scheduler: str, steps: int, guidance: float
) -> list[str]:
    words = [prompt] if prompt else []
    if class_label is not None:
        words += ["--class-label", str(class_label)]
    words += ["--fast"] if scheduler == FEW_STEP else ["--scheduler", SCHEDULER_NAMES[scheduler]]
    return words + ["--steps", str(steps), "--guidance-scale", f"{guidance:g}"]


def generate_snippet(
    prompt: str | None,
    class_label: int | None,
    scheduler: str,
    steps: int,
    guidance: float,
    seed: int,
    num_images: int,
    model: str | None = None,
) -> str:
    r"""
    Python that makes exactly the images of the Generate tab (one generator per image, seeded `seed + i`), and the
    `mnist-diffusion generate` command that makes them as one grid (`--fast` for the few-step sampler [`FEW_STEP`]).

    Example:

    ```py
    >>> from mnist_diffusion.demo.snippets import generate_snippet

    >>> print(generate_snippet("a thick 7", 7, "DPM-Solver++", 20, 1.4, 0, 16))  # doctest: +ELLIPSIS
    import torch
    ...
    ```
    """
    call = _call(
        "images = pipe",
        _conditioning(prompt, class_label)
        + [
            f"num_images_per_prompt={num_images}",
            f"num_inference_steps={steps}",
            f"guidance_scale={guidance:g}",
            f"generator=[torch.Generator().manual_seed({seed} + i) for i in range({num_images})]",
        ],
    )
    command = ["mnist-diffusion", "generate"] + _cli_options(prompt, class_label, scheduler, steps, guidance)
    command += ["-n", str(num_images), "--seed", str(seed), "-o", "samples.png"] + (
        ["--model", model] if model else []
    )
    return "\n".join(
        _load_lines(scheduler, model, steps=steps)
        + [
            f"{call}.images",
            "",
            "# The same images as one grid from the command line (image i is drawn with seed + i there too):",
            f"# {shlex.join(command)}",
        ]
    )


def watch_snippet(
    prompt: str | None, class_label: int | None, scheduler: str, steps: int, guidance: float, seed: int, model=None
) -> str:
    r"""
    Python that samples with the denoising trajectory (x_t and predicted x_0 at every step) as the Watch tab does,
    and the `mnist-diffusion visualize denoise` command that draws it.
    """
    call = _call(
        "output = pipe",
        _conditioning(prompt, class_label)
        + [
            f"num_inference_steps={steps}",
            f"guidance_scale={guidance:g}",
            f"generator=torch.Generator().manual_seed({seed})",
            "return_trajectory=True",
        ],
    )
    command = ["mnist-diffusion", "visualize", "denoise"] + _cli_options(
        prompt, class_label, scheduler, steps, guidance
    )
    command += ["--seed", str(seed), "-o", "denoise.png"] + (["--model", model] if model else [])
    return "\n".join(
        _load_lines(scheduler, model, imports=("from mnist_diffusion.visualization import denoising_figure",))
        + [
            call,
            "trajectory = output.trajectory  # .latents: x_t per step, .pred_original_samples: predicted x_0",
            "denoising_figure(trajectory).save('denoise.png')",
            "",
            f"# {shlex.join(command)}",
        ]
    )


def forward_snippet(source: str, percent: float, seed: int) -> str:
    r"""
    Python that noises a digit to `percent` of the forward process with the scheduler, as the Forward tab does, and
    (above 0%) has the model guess the clean digit from the noisy one alone: its predicted x_0, no prompt or class.
    """
    image_line = (
        "images, labels = load_test_digits()  # the demo's shipped test digits, in [-1, 1]\n"
        f"image = images[{source}:{source} + 1]"
        if source.isdigit()
        else "image = ...  # your digit, (1, 1, 28, 28) in [-1, 1], white on black"
    )
    fraction = f"{percent / 100:g}"
    prediction = [
        "",
        "# The model's guess of the clean digit from the noisy one alone (no prompt, no class): predicted x_0",
        "pipe = MnistDiffusionPipeline.from_pretrained(DIFFUSION_MODEL)",
        f"t = scheduler.timesteps_from_noise_fractions([{fraction}])",
        "conditioning = pipe.encode_conditioning(None, None, None, 1, 'cpu', batch_size=1)",
        "with torch.no_grad():",
        "    output = pipe.unet(noisy, t, return_dict=False, **conditioning)[0]",
        "predicted = predict_original_sample(scheduler, noisy, output, t).clamp(-1, 1)",
    ]
    return "\n".join(
        [
            "import torch",
            "from mnist_diffusion import MnistDDPMScheduler, MnistDiffusionPipeline",
            "from mnist_diffusion.demo.test_digits import load_test_digits",
            "from mnist_diffusion.pretrained import DIFFUSION_MODEL",
            "from mnist_diffusion.schedulers import predict_original_sample",
            "",
            "scheduler = MnistDDPMScheduler.from_pretrained(DIFFUSION_MODEL, subfolder='scheduler')",
            image_line,
            f"noisy = scheduler.forward_trajectory(image, noise_fractions=[{fraction}],",
            f"                                     generator=torch.Generator().manual_seed({seed}))[0]",
        ]
        + (prediction if percent > 0 else [])
        + [
            "",
            "# The whole strip, 0% to 100%, from the command line:",
            "# mnist-diffusion visualize forward --dataset ylecun/mnist --index 0 -o forward.png",
        ]
    )


def draw_snippet(
    mode: str,
    prompt: str | None,
    class_label: int | None,
    strength: float,
    scheduler: str,
    steps: int,
    guidance: float,
    seed: int,
    num_images: int,
    jump_n_sample: int,
    model: str | None = None,
) -> str:
    r"""
    Python that redraws the sketch as the Draw tab does, image-to-image (`mode="img2img"`) or inpainting around the
    strokes (`mode="inpaint"`), from the tab's downloads `drawing.png` (the sketch as the model sees it) and
    `mask.png`; and the `mnist-diffusion img2img` / `inpaint` command with the same settings.
    """
    common = _conditioning(prompt, class_label) + [
        "image=Image.open('drawing.png')",
        f"num_images_per_prompt={num_images}",
        f"num_inference_steps={steps}",
        f"guidance_scale={guidance:g}",
        f"generator=[torch.Generator().manual_seed({seed} + i) for i in range({num_images})]",
        "invert=False",
    ]
    options = _cli_options(prompt, class_label, scheduler, steps, guidance)
    options += ["-n", str(num_images), "--seed", str(seed), "--no-invert"] + (["--model", model] if model else [])
    if mode == "img2img":
        classes = ("MnistImg2ImgPipeline",)
        lines = [
            "img2img = MnistImg2ImgPipeline.from_pipe(pipe)  # the same weights, no copy",
            _call("images = img2img", common + [f"strength={strength:g}"]) + ".images",
        ]
        command = ["mnist-diffusion", "img2img", "drawing.png"] + options + ["--strength", f"{strength:g}"]
    else:
        classes = ("MnistInpaintPipeline",)
        lines = [
            "inpaint = MnistInpaintPipeline.from_pipe(pipe)  # the same weights, no copy",
            _call(
                "images = inpaint",
                common + ["mask_image=Image.open('mask.png')", f"jump_n_sample={jump_n_sample}"],
            )
            + ".images",
        ]
        command = ["mnist-diffusion", "inpaint", "drawing.png", "mask.png"] + options
        command += ["--jump-n-sample", str(jump_n_sample)]
    command += ["-o", "result.png"]
    return "\n".join(
        _load_lines(scheduler, model, classes, ("from PIL import Image",))
        + lines
        + ["", "# The same settings from the command line (one generator for the whole grid, so other draws):"]
        + [f"# {shlex.join(command)}"]
    )


def handwriting_snippet(
    recipe_changes: dict,
    scale: float,
    steps: int,
    guidance: float,
    seed: int,
    num_classes: int = 10,
    model: str | None = None,
) -> str:
    r"""
    Python that trains the "Your handwriting" tab's adapter on its download's `my-digits/<class>/*.png` (the digits
    as the model saw them) with `LoraRecipe(**recipe_changes)`, saves it, and draws one digit of each class at LoRA
    scale `scale` as the tab does; and the `training/train_lora.py` command that trains the same way.
    """
    recipe = ", ".join(f"{name}={value!r}" for name, value in recipe_changes.items())
    flags = [f"--{name} {value}" for name, value in recipe_changes.items() if not isinstance(value, (tuple, list))]
    command = ["accelerate launch training/train_lora.py --train_data_dir my-digits --output_dir my-handwriting"]
    command += flags + ([f"--pretrained_model_name_or_path {shlex.quote(model)}"] if model else [])
    path = repr(model) if model else "DIFFUSION_MODEL"
    call = _call(
        "images = pipe",
        [
            f"class_labels=list(range({num_classes}))",
            f"num_inference_steps={steps}",
            f"guidance_scale={guidance:g}",
            f"generator=torch.Generator().manual_seed({seed})",
            f'cross_attention_kwargs={{"scale": {scale:g}}}',
        ],
    )
    return "\n".join(
        [
            "import torch",
            "from diffusers import DPMSolverMultistepScheduler",
            "from mnist_diffusion import MnistDiffusionPipeline",
        ]
        + ([] if model else ["from mnist_diffusion.pretrained import DIFFUSION_MODEL  # the released model"])
        + [
            "from mnist_diffusion.training.lora import LoraRecipe, read_class_folder, save_lora_adapter, train_lora",
            "",
            f"pipe = MnistDiffusionPipeline.from_pretrained({path})",
            "# my-digits/<digit>/*.png: your digits as the model saw them, in the tab's download",
            "images, labels = read_class_folder('my-digits', pipe)",
            f"pipe = train_lora(pipe, images, labels, LoraRecipe({recipe}))",
            "save_lora_adapter(pipe, 'my-handwriting')  # or pipe.load_lora_weights('my-handwriting') later",
            "",
            "# every digit in the style; the LoRA scale is the style strength (0: the base model)",
            "pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)",
            f"{call}.images",
            "",
            "# The same training from the command line:",
            f"# {' '.join(command)}",
        ]
    )
