"""The functions behind the demo's tabs: check the inputs (a `gr.Error` naming the problem), run, shape the outputs."""

from __future__ import annotations

import logging
import math
import queue
import re
import shutil
import time
import uuid
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from ..captions import SLANT_WORDS, THICKNESS_WORDS, label_word
from ..image_grid import image_grid
from ..loading import parse_class_label
from ..schedulers import predict_original_sample
from ..visualization import style_prompts, to_images
from .batching import GenerationRequest, SamplingControl, SamplingWorker
from .drawing import INK_THRESHOLD, sketch_to_digit
from .models import DEFAULT_GUIDANCE, DEFAULT_STEPS, FEW_STEP, MAX_FEW_STEPS, DemoModels
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
#: Seconds between a waiting handler's progress updates; Gradio can close a handler (its client left or cancelled)
#: only when it yields, and closing it cancels its sampling job.
POLL_SECONDS = 0.25
#: What the Draw tab's modes do, shown under the mode choice.
DRAW_MODE_HELP = {
    "Image-to-image": "**Image-to-image** redraws your whole sketch as digits; *Strength* sets how much is redrawn "
    "(low keeps your strokes' shape, 1 draws anew).",
    "Complete it (inpainting)": "**Inpainting** keeps your strokes exactly (every pixel with ink, as the model sees "
    "it) and repaints everything else, the black paper, into a digit around them. The mask (shown with the results, "
    "mask.png in the downloads): black = kept, white = repainted.",
}
#: The Strength slider's label in each mode.
STRENGTH_LABELS = {
    "Image-to-image": "Strength (how much of the sketch to redraw)",
    "Complete it (inpainting)": "Strength (image-to-image only: inpainting keeps the strokes, repaints the rest)",
}

logger = logging.getLogger(__name__)


def refusal(message: str) -> gr.Error:
    """A `gr.Error` for a refused input or request: its message in the page, one line in the server's log."""
    logger.warning("Refused a request: %s", message)
    return gr.Error(message, print_exception=False)


def named_classes(prompt: str | None, class_names: Sequence[str]) -> list[int]:
    r"""
    The class ids a prompt names: a class name as a phrase of the prompt (case-insensitive; "T-shirt/top" is named by
    "t-shirt" or "top"), or a digit's word ("seven" names "7").

    Example:

    ```py
    >>> from mnist_diffusion.demo.handlers import named_classes

    >>> digits = [str(i) for i in range(10)]
    >>> named_classes("a thick upright 5", digits), named_classes("seven or 1", digits)
    ([5], [1, 7])
    >>> named_classes("a banana riding a bicycle", digits)
    []
    ```
    """
    words = " " + " ".join(re.findall(r"[a-z0-9]+", (prompt or "").lower())) + " "
    named = []
    for class_id, name in enumerate(class_names):
        phrases = [*str(name).split("/"), label_word(str(name))]
        if any(f" {' '.join(re.findall(r'[a-z0-9]+', phrase.lower()))} " in words for phrase in phrases):
            named.append(class_id)
    return named


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
        raise refusal(f"{name} is {value!r}; expected a whole number from {low} to {high}.")
    if not low <= value <= high:
        raise refusal(f"{name} is {int(value)}; the demo allows {low} to {high}.")
    return int(value)


def bounded_number(value: Any, name: str, low: float, high: float) -> float:
    """`value` as a float in `[low, high]`, or a `gr.Error` naming the setting and its limits."""
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise refusal(f"{name} is {value!r}; expected a number from {low:g} to {high:g}.")
    if not low <= value <= high:
        raise refusal(f"{name} is {value:g}; the demo allows {low:g} to {high:g}.")
    return float(value)


def new_download_folder(download_dir: Path) -> Path:
    """A fresh folder for one request's downloads under `download_dir`; folders older than `DOWNLOAD_LIFETIME` go."""
    now = time.time()
    for old in download_dir.glob("*"):
        if old.is_dir() and now - old.stat().st_mtime > DOWNLOAD_LIFETIME:
            shutil.rmtree(old, ignore_errors=True)
    folder = download_dir / uuid.uuid4().hex
    folder.mkdir(parents=True)
    return folder


class DemoHandlers:
    r"""
    What each tab does, on the shared [`DemoModels`]; all sampling goes through one [`SamplingWorker`].

    Every method checks its inputs first and raises `gr.Error` with the reason, which Gradio shows in the page (and
    the server logs in one line); the server keeps serving. The sampling handlers are generators: they report progress
    while they wait, and when Gradio closes one (its client left or cancelled), its job on the worker is cancelled.

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
                raise refusal("This model has no classes; type a prompt instead.")
            try:
                class_label = self.models.pipe.resolve_class_labels(parse_class_label(str(class_choice)))[0]
            except ValueError as error:
                raise refusal(str(error)) from None
        if required and prompt is None and class_label is None:
            raise refusal("Type a prompt or pick a class (or both): there is nothing to draw yet.")
        if prompt is not None and not self.models.has_text_encoder:
            raise refusal("This model has no text encoder; pick a class instead of typing a prompt.")
        return prompt, class_label

    def sampling_settings(
        self, scheduler: str, steps: Any, guidance: Any, seed: Any, samplers: dict | None = None
    ) -> tuple[str, int, float, int]:
        """Checked scheduler (one of `samplers`, by default the release's schedulers), steps, guidance and seed."""
        samplers = self.models.pipes if samplers is None else samplers
        if scheduler not in samplers:
            raise refusal(f"Unknown scheduler {scheduler!r}; expected one of {list(samplers)}.")
        steps = whole_number(steps, "Steps", 1, MAX_STEPS)
        if scheduler == FEW_STEP and steps > MAX_FEW_STEPS:
            raise refusal(
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
    def default_settings(scheduler: str) -> tuple[int, float]:
        """A sampler's `DEFAULT_STEPS` and `DEFAULT_GUIDANCE`: what a tab switches to when `scheduler` is picked."""
        scheduler = scheduler if scheduler in DEFAULT_STEPS else "DPM-Solver++"
        return DEFAULT_STEPS[scheduler], DEFAULT_GUIDANCE[scheduler]

    def conditioning_note(self, prompt: str | None, class_label: int | None) -> str | None:
        """
        What the page says about a prompt that names no class (and no class picked: the model draws any), or one that
        names other classes than the class picked (the image may follow either); None when they agree.
        """
        if prompt is None:
            return None
        names = self.models.class_names
        named = named_classes(prompt, names)
        if not named and class_label is None:
            return (
                f"The prompt names no digit or class ({', '.join(names)}), so the model draws whichever it likes: "
                'name one ("a thick 7") or pick a class.'
            )
        if named and class_label is not None and class_label not in named:
            said = " or ".join(names[i] for i in named)
            return (
                f"The prompt names {said} but the class is {names[class_label]}: they disagree, so the images may "
                f"follow either or neither. Pick the class {said}, or (none), to draw what the prompt says."
            )
        return None

    @staticmethod
    def page_error(error: Exception) -> gr.Error:
        """The message shown in the page for an error of the sampler: a `ValueError`'s reason; else its kind only."""
        if isinstance(error, gr.Error):
            return error
        if isinstance(error, ValueError):
            return refusal(str(error))
        logger.error("Sampling failed", exc_info=error)
        return gr.Error(
            f"Sampling failed ({type(error).__name__}); the server log has the details.", print_exception=False
        )

    def wait(
        self, future: Future, control: SamplingControl, status: Callable[[str], tuple]
    ) -> Generator[tuple, None, Any]:
        """
        Wait for a job of the worker (`yield from` it in a handler), yielding `status(message)` about its progress
        every `POLL_SECONDS`, so that Gradio can close the handler when its client leaves or cancels: closing it
        cancels the job (a queued one never runs, a running one stops after its current step). Returns its result.
        """
        try:
            while True:
                try:
                    return future.result(timeout=POLL_SECONDS)
                except TimeoutError:
                    waiting = f"Waiting for the sampler ({self.worker.pending} jobs queued)…"
                    yield status(f"Sampling: {control.steps} denoising steps done…" if control.steps else waiting)
        finally:
            if not future.done():
                control.cancel()
                future.cancel()

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
    ) -> Iterator[tuple]:
        """
        Generate `count` images: an enlarged grid for the page, the PNG downloads, a summary and the code (progress
        in the summary while it samples).
        """
        prompt, class_label = self.conditioning(prompt, class_choice)
        samplers = self.models.samplers
        scheduler, steps, guidance, seed = self.sampling_settings(scheduler, steps, guidance, seed, samplers)
        count = whole_number(count, "Number of images", 1, MAX_IMAGES)
        note = self.conditioning_note(prompt, class_label)
        if note:
            gr.Warning(note)
        request = GenerationRequest(prompt, class_label, scheduler, steps, guidance, seed, count)
        control = SamplingControl()
        try:
            future = self.worker.submit_generation(request, control)
            generation = yield from self.wait(
                future, control, lambda message: (gr.skip(), gr.skip(), message, gr.skip())
            )
        except Exception as error:
            raise self.page_error(error) from None
        images = generation.images
        grid = square_grid(images)
        files = self.save_downloads(grid, images)
        summary = self.reading_summary(generation.labels, class_label)
        code = generate_snippet(prompt, class_label, scheduler, steps, guidance, seed, count, self.models.model)
        yield enlarge(grid, max(1, 448 // grid.width)), files, f"{note}  \n{summary}" if note else summary, code

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
        """Write the grid, each image and `extra` as PNGs into a [`new_download_folder`]."""
        folder = new_download_folder(self.download_dir)
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
        note = self.conditioning_note(prompt, class_label)
        if note:
            gr.Warning(note)
        pipe = self.models.pipes[scheduler]
        steps_done: queue.Queue = queue.Queue()
        control = SamplingControl()

        def run() -> None:
            generator = torch.Generator().manual_seed(seed)
            size, channels = pipe.unet.config.sample_size, pipe.unet.config.in_channels
            noise = randn_tensor((1, channels, size, size), generator=generator, dtype=pipe.unet.dtype)
            sample = {"x_t": noise * pipe.scheduler.init_noise_sigma}

            def on_step_end(pipeline, step: int, timestep: torch.Tensor, tensors: dict) -> dict:
                original = predict_original_sample(pipeline.scheduler, sample["x_t"], tensors["noise_pred"], timestep)
                steps_done.put((step, int(timestep), sample["x_t"], original, self.models.read(original)))
                sample["x_t"] = tensors["latents"]
                return control(pipeline, step, timestep, tensors)

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
            control.check(f"Watching {scheduler} sample {steps} steps")

        done = self.worker.submit(run)
        code = watch_snippet(prompt, class_label, scheduler, steps, guidance, seed, self.models.model)
        frames, rows = [], []
        try:
            while True:
                try:
                    step, timestep, x_t, original, (label, confidence) = steps_done.get(timeout=POLL_SECONDS)
                except queue.Empty:
                    if not (done.done() and steps_done.empty()):
                        if not rows:  # still queued: say so, and let Gradio close this handler if its client leaves
                            waiting = f"Waiting for the sampler ({self.worker.pending} jobs queued)…"
                            yield gr.skip(), gr.skip(), waiting, gr.skip(), gr.skip(), gr.skip(), gr.skip()
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
        finally:
            if not done.done():
                control.cancel()
                done.cancel()
        steps = len(rows)  # the scheduler's steps: `num_inference_steps` for the demo's schedulers
        final = rows[-1][2]
        stable = len(rows)
        while stable > 1 and rows[stable - 2][2] == final:
            stable -= 1
        summary = (
            f"{frames[-1][2]}  \nThe predicted x_0 reads as **{final}** from step {stable} of {steps} on "
            f"(t={rows[stable - 1][1]}): drag the slider to scrub through the trajectory."
        )
        if note:
            summary = f"{note}  \n{summary}"
        slider = gr.Slider(minimum=1, maximum=steps, value=steps, step=1, interactive=True)
        yield frames[-1][0], frames[-1][1], summary, rows, slider, frames, code

    @staticmethod
    def scrub(frames: list | None, step: Any) -> tuple:
        """The recorded x_t, predicted x_0 and reading at `step` (1-based) of the last run."""
        if not frames:
            raise refusal("Run the sampler first (Start): there is no trajectory to scrub through yet.")
        step = whole_number(step, "Step", 1, len(frames))
        return frames[step - 1]

    # The forward process

    def forward(
        self, source: str, drawing: Any, percent: Any, seed: Any
    ) -> tuple[Image.Image, Image.Image, Image.Image | None, str, str]:
        """
        The chosen digit, the same digit noised to `percent` of the forward process with its timestep, and the model's
        predicted x_0 from the noisy digit alone (None at 0%), read by the classifier.
        """
        percent = bounded_number(percent, "Noise", 0.0, 100.0)
        seed = whole_number(seed, "Seed", 0, MAX_SEED)
        choices = self.digit_choices
        if source not in choices:
            raise refusal(f"Unknown digit {source!r}; expected one of the listed test digits or {MY_DRAWING!r}.")
        if source == MY_DRAWING:
            digit = sketch_to_digit(drawing)
            if digit is None:
                raise refusal("The drawing is blank: draw a digit on the sketchpad first.")
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
        names = self.models.class_names
        if timestep < 0:  # the classifier knows clean digits
            label, confidence = self.models.read(noisy)
            predicted = None
            info = (
                f"0%: the clean image. The classifier reads it as **{names[int(label)]}** ({confidence.item():.0%})."
            )
        else:  # it does not know noisy ones: read what the model makes of the noisy digit instead
            try:
                original = self.worker.submit(lambda: self.models.predict_clean(noisy, timestep)).result()
            except Exception as error:
                raise self.page_error(error) from None
            label, confidence = self.models.read(original)
            predicted = enlarge(to_images(original)[0])
            snr = scheduler.snr(torch.tensor([timestep])).item()
            info = (
                f"{percent:g}% of the forward process: timestep t={timestep}, signal-to-noise ratio {snr:.3g}. The "
                f"model's guess of the clean digit from x_t alone (predicted x_0, no prompt or class) reads as "
                f"**{names[int(label)]}** ({confidence.item():.0%})."
            )
        code = forward_snippet(index, percent, seed)
        return enlarge(to_images(digit)[0]), enlarge(to_images(noisy)[0]), predicted, info, code

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
    ) -> Iterator[tuple]:
        """
        Turn the sketch into digits: image-to-image at `strength`, or inpainting that keeps the strokes and repaints
        the rest; returns the sketch as the model sees it, the mask (inpainting; else None), the results, downloads,
        a summary and the code (progress in the summary while it samples).
        """
        if mode not in DRAW_MODES:
            raise refusal(f"Unknown mode {mode!r}; expected one of {list(DRAW_MODES)}.")
        prompt, class_label = self.conditioning(prompt, class_choice, required=False)
        note = self.conditioning_note(prompt, class_label)
        if note:
            gr.Warning(note)
        scheduler, steps, guidance, seed = self.sampling_settings(scheduler, steps, guidance, seed)
        strength = bounded_number(strength, "Strength", 0.0, 1.0)
        if strength == 0:
            raise refusal("Strength is 0: the drawing would come back unchanged; pick a strength above 0.")
        count = whole_number(count, "Number of images", 1, MAX_DRAW_IMAGES)
        digit = sketch_to_digit(drawing)
        if digit is None:
            raise refusal("The drawing is blank: draw a digit (or part of one) on the sketchpad first.")
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
        control = SamplingControl()

        def run() -> tuple[list[Image.Image], torch.Tensor]:
            images = pipe(**options, callback_on_step_end=control).images
            control.check(f"Drawing {count} images ({mode}, {scheduler}, {steps} steps)")
            return images, self.models.read_images(images)

        def status(message: str) -> tuple:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), message, gr.skip()

        try:
            images, labels = yield from self.wait(self.worker.submit(run), control, status)
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
        summary = f"{note}  \n{summary}" if note else summary
        shown_mask = enlarge(downloads["mask.png"]) if "mask.png" in downloads else None
        yield enlarge(sketch), shown_mask, enlarge(grid, max(1, 336 // grid.width)), files, summary, code

    @staticmethod
    def draw_mode(mode: str) -> tuple[gr.Slider, str, gr.Image]:
        """
        The Draw tab for `mode`: the Strength slider's label (image-to-image only), the mode's explanation, and the
        mask shown (inpainting only).
        """
        if mode not in DRAW_MODES:
            raise refusal(f"Unknown mode {mode!r}; expected one of {list(DRAW_MODES)}.")
        img2img = DRAW_MODES[mode] == "img2img"
        return (
            gr.Slider(label=STRENGTH_LABELS[mode], interactive=img2img),
            DRAW_MODE_HELP[mode],
            gr.Image(visible=not img2img),
        )
