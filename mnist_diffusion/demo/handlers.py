"""The functions behind the demo's tabs: check the inputs (a `gr.Error` naming the problem), run, shape the outputs."""

from __future__ import annotations

import logging
import math
import queue
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from ..captions import SLANT_WORDS, THICKNESS_WORDS
from ..image_grid import image_grid
from ..loading import parse_class_label
from ..schedulers import predict_original_sample
from ..visualization import style_prompts, to_images
from .batching import GenerationRequest, SamplingWorker
from .drawing import INK_THRESHOLD, sketch_to_digit
from .models import DEFAULT_STEPS, FEW_STEP, MAX_FEW_STEPS, DemoModels
from .snippets import draw_snippet, forward_snippet, generate_snippet, watch_snippet

#: Limits that keep one user from stalling the others.
MAX_IMAGES = 64
MAX_DRAW_IMAGES = 16
MAX_STEPS = 100
#: Most steps of the few-step sampler: distilled for 1 to 4 (its model card); 8 still sample well, more only cost.
MAX_GUIDANCE = 10.0
MAX_SEED = 2**31 - 1
#: The class choice meaning "no class".
NO_CLASS = "(none)"
#: Style presets: thickness and slant words of the training captions.
STYLE_PRESETS = [f"{thickness} {slant}" for thickness in THICKNESS_WORDS for slant in SLANT_WORDS]
#: The Draw tab's modes: display name -> pipeline.
DRAW_MODES = {"Image-to-image": "img2img", "Complete it (inpainting)": "inpaint"}
#: RePaint resampling for the schedulers without step history; DPM-Solver++ runs without it.
RESAMPLING = {"DDPM": 2, "DDIM": 2, "DPM-Solver++": 1}
#: The Forward tab's source meaning "the sketchpad".
MY_DRAWING = "my drawing"
#: Nearest-neighbour upscaling of single images shown in the page.
DISPLAY_SCALE = 8
#: Download folders older than this many seconds are removed.
DOWNLOAD_LIFETIME = 3600

logger = logging.getLogger(__name__)


def enlarge(image: Image.Image, scale: int = DISPLAY_SCALE) -> Image.Image:
    """`image` upscaled `scale` times with nearest-neighbour sampling (crisp pixels in the page)."""
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)


def square_grid(images: list[Image.Image]) -> Image.Image:
    """`images` in a grid as close to square as they fill, row by row."""
    cols = math.ceil(math.sqrt(len(images)))
    return image_grid(images, rows=math.ceil(len(images) / cols), cols=cols)


def whole_number(value: Any, name: str, low: int, high: int) -> int:
    """`value` as an int in `low..high`, or a `gr.Error` naming the setting and its limits."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise gr.Error(f"{name} is {value!r}; expected a whole number from {low} to {high}.")
    if not low <= value <= high:
        raise gr.Error(f"{name} is {int(value)}; the demo allows {low} to {high}.")
    return int(value)


def bounded_number(value: Any, name: str, low: float, high: float) -> float:
    """`value` as a float in `[low, high]`, or a `gr.Error` naming the setting and its limits."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise gr.Error(f"{name} is {value!r}; expected a number from {low:g} to {high:g}.")
    if not low <= value <= high:
        raise gr.Error(f"{name} is {value:g}; the demo allows {low:g} to {high:g}.")
    return float(value)


class DemoHandlers:
    r"""
    What each tab does, on the shared [`DemoModels`]; all sampling goes through one [`SamplingWorker`].

    Every method checks its inputs first and raises `gr.Error` with the reason, which Gradio shows in the page;
    the server keeps serving.

    Args:
        models ([`DemoModels`]): The loaded models.
        worker ([`SamplingWorker`]): Runs the sampling; made with `read_images=models.read_images`, so that the
            classifier reads the generated images on the worker's thread.
        download_dir (`Path`): Where the Generate tab writes its PNG downloads.
    """

    def __init__(self, models: DemoModels, worker: SamplingWorker, download_dir: Path):
        self.models = models
        self.worker = worker
        self.download_dir = Path(download_dir)

    @property
    def class_choices(self) -> list[str]:
        """The class dropdown's choices: no class, then the pipeline's class names."""
        return [NO_CLASS] + list(self.models.class_names) if self.models.pipe.num_classes else [NO_CLASS]

    @property
    def digit_choices(self) -> list[str]:
        """The Forward tab's sources: each shipped test digit, then the sketchpad."""
        labels = self.models.test_labels.tolist()
        return [f"test digit {i} (a {label})" for i, label in enumerate(labels)] + [MY_DRAWING]

    # Input checks

    def conditioning(
        self, prompt: str | None, class_choice: str | None, required: bool = True
    ) -> tuple[str | None, int | None]:
        """The prompt (None when empty) and class id (None for no class); at least one of them when `required`."""
        prompt = (prompt or "").strip() or None
        class_label = None
        if class_choice not in (None, "", NO_CLASS):
            if not self.models.pipe.num_classes:
                raise gr.Error("This model has no classes; type a prompt instead.")
            try:
                class_label = self.models.pipe.resolve_class_labels(parse_class_label(str(class_choice)))[0]
            except ValueError as error:
                raise gr.Error(str(error)) from None
        if required and prompt is None and class_label is None:
            raise gr.Error("Type a prompt or pick a class (or both): there is nothing to draw yet.")
        if prompt is not None and not self.models.has_text_encoder:
            raise gr.Error("This model has no text encoder; pick a class instead of typing a prompt.")
        return prompt, class_label

    def sampling_settings(
        self, scheduler: str, steps: Any, guidance: Any, seed: Any, samplers: dict | None = None
    ) -> tuple[str, int, float, int]:
        """Checked scheduler (one of `samplers`, by default the release's schedulers), steps, guidance and seed."""
        samplers = self.models.pipes if samplers is None else samplers
        if scheduler not in samplers:
            raise gr.Error(f"Unknown scheduler {scheduler!r}; expected one of {list(samplers)}.")
        steps = whole_number(steps, "Steps", 1, MAX_STEPS)
        if scheduler == FEW_STEP and steps > MAX_FEW_STEPS:
            raise gr.Error(
                f"Steps is {steps}; the few-step sampler takes 1 to {MAX_FEW_STEPS} ({DEFAULT_STEPS[FEW_STEP]} "
                "recommended). Pick another scheduler for more steps."
            )
        return (
            scheduler,
            steps,
            bounded_number(guidance, "Guidance", 0.0, MAX_GUIDANCE),
            whole_number(seed, "Seed", 0, MAX_SEED),
        )

    @staticmethod
    def default_steps(scheduler: str) -> int:
        """The steps the Generate tab switches to when `scheduler` is picked (4 for the few-step sampler, else 20)."""
        return DEFAULT_STEPS.get(scheduler, DEFAULT_STEPS["DPM-Solver++"])

    @staticmethod
    def page_error(error: Exception) -> gr.Error:
        """The message shown in the page for an error of the sampler: a `ValueError`'s reason; else its kind only."""
        if isinstance(error, gr.Error):
            return error
        if isinstance(error, ValueError):
            return gr.Error(str(error))
        logger.error("Sampling failed", exc_info=error)
        return gr.Error(f"Sampling failed ({type(error).__name__}); the server log has the details.")

    # Generate

    def apply_preset(self, preset: str | None, class_choice: str | None, prompt: str | None) -> str:
        """The prompt of a style preset for the chosen class (the training captions' wording); else `prompt`."""
        if preset in (None, "", NO_CLASS):
            return prompt or ""
        if class_choice in (None, "", NO_CLASS):
            gr.Warning("Pick a class first: a style preset describes a class in a style.")
            return prompt or ""
        _, class_label = self.conditioning(None, class_choice)
        name = self.models.class_names[class_label]
        try:
            return style_prompts(name)[tuple(preset.split(" ", 1))]
        except (StopIteration, KeyError):  # the captions of this class have no thickness and slant words
            gr.Warning(f"The style presets describe handwriting; the class {name!r} has none.")
            return prompt or ""

    def generate(
        self, prompt: str, class_choice: str, scheduler: str, steps: Any, guidance: Any, seed: Any, count: Any
    ) -> tuple[Image.Image, list[str], str, str]:
        """Generate `count` images: an enlarged grid for the page, the PNG downloads, a summary and the code."""
        prompt, class_label = self.conditioning(prompt, class_choice)
        samplers = self.models.samplers
        scheduler, steps, guidance, seed = self.sampling_settings(scheduler, steps, guidance, seed, samplers)
        count = whole_number(count, "Number of images", 1, MAX_IMAGES)
        request = GenerationRequest(prompt, class_label, scheduler, steps, guidance, seed, count)
        try:
            generation = self.worker.generate(request)
        except Exception as error:
            raise self.page_error(error) from None
        images = generation.images
        grid = square_grid(images)
        files = self.save_downloads(grid, images)
        summary = self.reading_summary(generation.labels, class_label)
        code = generate_snippet(prompt, class_label, scheduler, steps, guidance, seed, count, self.models.model)
        return enlarge(grid, max(1, 448 // grid.width)), files, summary, code

    def reading_summary(self, labels: torch.Tensor, class_label: int | None) -> str:
        """What the shipped classifier read (`labels`, one class id per image), against the requested class if any."""
        names = self.models.class_names
        if class_label is not None:
            hits = int((labels == class_label).sum())
            return f"The classifier reads **{hits} of {len(labels)}** as {names[class_label]}."
        counts = torch.bincount(labels, minlength=len(names))
        readings = ", ".join(f"{names[i]}: {int(n)}" for i, n in enumerate(counts) if n)
        return f"The classifier reads them as {readings}."

    def save_downloads(
        self, grid: Image.Image, images: list[Image.Image], extra: dict[str, Image.Image] | None = None
    ) -> list[str]:
        """Write the grid, each image and `extra` as PNGs into a fresh folder; folders older than an hour go."""
        now = time.time()
        for old in self.download_dir.glob("*"):
            if old.is_dir() and now - old.stat().st_mtime > DOWNLOAD_LIFETIME:
                shutil.rmtree(old, ignore_errors=True)
        folder = self.download_dir / uuid.uuid4().hex
        folder.mkdir(parents=True)
        grid.save(folder / "grid.png")
        paths = [str(folder / "grid.png")]
        named = {f"image_{i:02d}.png": image for i, image in enumerate(images)} | (extra or {})
        for name, image in named.items():
            image.save(folder / name)
            paths.append(str(folder / name))
        return paths

    # Watch it denoise

    def watch(
        self, prompt: str, class_choice: str, scheduler: str, steps: Any, guidance: Any, seed: Any
    ) -> Iterator[tuple]:
        """
        Stream x_t, the predicted x_0 and the classifier's reading of x_0 at every step as the sampler runs; at the
        end, enable the slider over the recorded trajectory.
        """
        prompt, class_label = self.conditioning(prompt, class_choice)
        scheduler, steps, guidance, seed = self.sampling_settings(scheduler, steps, guidance, seed)
        pipe = self.models.pipes[scheduler]
        steps_done: queue.Queue = queue.Queue()

        def run() -> None:
            generator = torch.Generator().manual_seed(seed)
            size, channels = pipe.unet.config.sample_size, pipe.unet.config.in_channels
            noise = randn_tensor((1, channels, size, size), generator=generator, dtype=pipe.unet.dtype)
            sample = {"x_t": noise * pipe.scheduler.init_noise_sigma}

            def on_step_end(pipeline, step: int, timestep: torch.Tensor, tensors: dict) -> dict:
                original = predict_original_sample(pipeline.scheduler, sample["x_t"], tensors["noise_pred"], timestep)
                steps_done.put((step, int(timestep), sample["x_t"], original, self.models.read(original)))
                sample["x_t"] = tensors["latents"]
                return {}

            pipe(
                prompt=prompt,
                class_labels=class_label,
                num_inference_steps=steps,
                guidance_scale=guidance,
                generator=generator,
                latents=noise,
                callback_on_step_end=on_step_end,
                callback_on_step_end_tensor_inputs=["latents", "noise_pred"],
            )

        done = self.worker.submit(run)
        code = watch_snippet(prompt, class_label, scheduler, steps, guidance, seed, self.models.model)
        frames, rows = [], []
        while True:
            try:
                step, timestep, x_t, original, (label, confidence) = steps_done.get(timeout=0.1)
            except queue.Empty:
                if not (done.done() and steps_done.empty()):
                    continue
                if done.exception() is not None:
                    raise self.page_error(done.exception()) from None
                break
            name = self.models.class_names[int(label)]
            reading = (
                f"step {step + 1}/{steps}, t={timestep}: the classifier reads the predicted x_0 as **{name}** "
                f"({confidence.item():.0%})"
            )
            frames.append((enlarge(to_images(x_t)[0]), enlarge(to_images(original)[0]), reading))
            rows.append([step + 1, timestep, name, round(confidence.item(), 3)])
            yield (
                frames[-1][0],
                frames[-1][1],
                reading,
                rows,
                gr.Slider(minimum=1, maximum=steps, value=step + 1, interactive=False),
                frames,
                code,
            )
        steps = len(rows)  # the scheduler's steps: `num_inference_steps` for the demo's schedulers
        final = rows[-1][2]
        stable = len(rows)
        while stable > 1 and rows[stable - 2][2] == final:
            stable -= 1
        summary = (
            f"{frames[-1][2]}  \nThe predicted x_0 reads as **{final}** from step {stable} of {steps} on "
            f"(t={rows[stable - 1][1]}): drag the slider to scrub through the trajectory."
        )
        slider = gr.Slider(minimum=1, maximum=steps, value=steps, step=1, interactive=True)
        yield frames[-1][0], frames[-1][1], summary, rows, slider, frames, code

    @staticmethod
    def scrub(frames: list | None, step: Any) -> tuple:
        """The recorded x_t, predicted x_0 and reading at `step` (1-based) of the last run."""
        if not frames:
            raise gr.Error("Run the sampler first (Start): there is no trajectory to scrub through yet.")
        step = whole_number(step, "Step", 1, len(frames))
        return frames[step - 1]

    # The forward process

    def forward(self, source: str, drawing: Any, percent: Any, seed: Any) -> tuple[Image.Image, Image.Image, str, str]:
        """The chosen digit and the same digit noised to `percent` of the forward process, with its timestep."""
        percent = bounded_number(percent, "Noise", 0.0, 100.0)
        seed = whole_number(seed, "Seed", 0, MAX_SEED)
        choices = self.digit_choices
        if source not in choices:
            raise gr.Error(f"Unknown digit {source!r}; expected one of the listed test digits or {MY_DRAWING!r}.")
        if source == MY_DRAWING:
            digit = sketch_to_digit(drawing)
            if digit is None:
                raise gr.Error("The drawing is blank: draw a digit on the sketchpad first.")
            index = "drawing"
        else:
            index = str(choices.index(source))
            digit = self.models.test_digits[int(index) : int(index) + 1]
        scheduler = self.models.noise_scheduler
        fraction = percent / 100
        noisy = scheduler.forward_trajectory(
            digit, noise_fractions=[fraction], generator=torch.Generator().manual_seed(seed)
        )[0]
        timestep = int(scheduler.timesteps_from_noise_fractions([fraction]).item())
        label, confidence = self.models.read(noisy)
        if timestep < 0:
            where = "0%: the clean image"
        else:
            snr = scheduler.snr(torch.tensor([timestep])).item()
            where = f"{percent:g}% of the forward process: timestep t={timestep}, signal-to-noise ratio {snr:.3g}"
        info = (
            f"{where}. The classifier reads it as **{self.models.class_names[int(label)]}** ({confidence.item():.0%})."
        )
        return enlarge(to_images(digit)[0]), enlarge(to_images(noisy)[0]), info, forward_snippet(index, percent, seed)

    # Draw

    def draw(
        self,
        drawing: Any,
        mode: str,
        prompt: str,
        class_choice: str,
        strength: Any,
        scheduler: str,
        steps: Any,
        guidance: Any,
        seed: Any,
        count: Any,
    ) -> tuple[Image.Image, Image.Image, list[str], str, str]:
        """
        Turn the sketch into digits: image-to-image at `strength`, or inpainting that keeps the strokes and repaints
        the rest; returns the sketch as the model sees it, the results, downloads, a summary and the code.
        """
        if mode not in DRAW_MODES:
            raise gr.Error(f"Unknown mode {mode!r}; expected one of {list(DRAW_MODES)}.")
        prompt, class_label = self.conditioning(prompt, class_choice, required=False)
        scheduler, steps, guidance, seed = self.sampling_settings(scheduler, steps, guidance, seed)
        strength = bounded_number(strength, "Strength", 0.0, 1.0)
        if strength == 0:
            raise gr.Error("Strength is 0: the drawing would come back unchanged; pick a strength above 0.")
        count = whole_number(count, "Number of images", 1, MAX_DRAW_IMAGES)
        digit = sketch_to_digit(drawing)
        if digit is None:
            raise gr.Error("The drawing is blank: draw a digit (or part of one) on the sketchpad first.")
        # The model gets drawing.png, the download, exactly: (28, 28) in [0, 1], white on black
        sketch = to_images(digit)[0]
        image = torch.from_numpy(np.asarray(sketch, dtype=np.float32) / 255).reshape(1, 1, *sketch.size[::-1])
        kind = DRAW_MODES[mode]
        options = {
            "prompt": prompt,
            "class_labels": class_label,
            "image": image,
            "invert": False,
            "num_images_per_prompt": count,
            "num_inference_steps": steps,
            "guidance_scale": guidance,
            "generator": [torch.Generator().manual_seed(seed + i) for i in range(count)],
        }
        downloads = {"drawing.png": sketch}
        if kind == "img2img":
            pipe, options["strength"] = self.models.img2img[scheduler], strength
        else:
            pipe = self.models.inpaint[scheduler]
            mask = (image < INK_THRESHOLD).float()  # white = repaint: everything but the strokes
            options["mask_image"], options["jump_n_sample"] = mask, RESAMPLING[scheduler]
            downloads["mask.png"] = to_images(mask * 2 - 1)[0]

        def run() -> tuple[list[Image.Image], torch.Tensor]:
            images = pipe(**options).images
            return images, self.models.read_images(images)

        try:
            images, labels = self.worker.submit(run).result()
        except Exception as error:
            raise self.page_error(error) from None
        grid = square_grid(images)
        files = self.save_downloads(grid, images, extra=downloads)
        code = draw_snippet(
            kind,
            prompt,
            class_label,
            strength,
            scheduler,
            steps,
            guidance,
            seed,
            count,
            RESAMPLING[scheduler],
            self.models.model,
        )
        summary = self.reading_summary(labels, class_label)
        return enlarge(sketch), enlarge(grid, max(1, 336 // grid.width)), files, summary, code
