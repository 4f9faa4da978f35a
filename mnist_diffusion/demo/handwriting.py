"""The demo's "Your handwriting" tab: collect the user's digits, learn their style as a LoRA adapter, draw them."""

from __future__ import annotations

import copy
import dataclasses
import logging
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import gradio as gr
import torch
from PIL import Image

from ..image_grid import image_grid
from ..image_input import load_image_file, prepare_image
from ..loading import scheduler_from_config
from ..lora_hub import write_lora_card
from ..pipelines import MnistDiffusionPipeline
from ..pretrained import DIFFUSION_MODEL
from ..training.lora import LoraRecipe, prior_image_plan, save_lora_adapter, train_lora
from ..visualization import to_images
from .drawing import sketch_to_digit
from .handlers import enlarge, new_download_folder, refusal
from .models import DEFAULT_GUIDANCE, DEFAULT_STEPS, SCHEDULER_NAMES
from .sketchpad import check_drawing_size
from .snippets import handwriting_snippet

#: Most digits one user may collect for a style (the training's time does not grow with them, its memory does).
MAX_EXAMPLES = 50
#: The style-strength slider's range: 0 is the base model, 1 the learned style, above 1 exaggerates it.
MAX_STYLE_SCALE = 1.5
#: The styled digits are drawn with DPM-Solver++ at the demo's default steps and guidance, from this seed.
STYLE_SAMPLER, STYLE_SEED = "DPM-Solver++", 0
#: How the tab names the downloaded adapter's folder and the training images' folder in it.
ADAPTER_NAME, DIGITS_FOLDER = "my-handwriting", "my-digits"
#: The tab's training: `LoraRecipe()` at half its steps, so a drawn set trains within the demo's time budget
#: (docs/benchmarks.md, "Demo: Learn my style").
DEMO_RECIPE = LoraRecipe(max_train_steps=LoraRecipe().max_train_steps // 2)
HELP = """Teach the model **your handwriting**: draw a digit, pick which digit it is, press **Add drawing**; repeat
for a few digits (10-20 drawings, one or two of each digit, work well). Or upload images whose file names start with
the digit they show (`3_a.png`, `7.png`). Then press **Learn my style**: a small LoRA adapter is trained on your
digits (the progress bar shows how far it is; one training runs at a time, and your place in the queue shows on the
result while others train). You get all ten digits in your style, a **Style strength** slider (0 is the base model,
1 your style) and the adapter to download."""

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class LearnedStyle:
    """One session's trained adapter: the pipeline with it (its own UNet copy), and the lock of its LoRA scale."""

    pipe: MnistDiffusionPipeline
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


class HandwritingHandlers:
    r"""
    What the "Your handwriting" tab does: collect drawn or uploaded digits with their labels, train a LoRA adapter on
    them with [`~mnist_diffusion.training.lora.train_lora`] on a fresh copy of the base UNet (the demo's shared
    pipeline is never changed), and draw one digit of each class in the learned style at any LoRA scale.

    Args:
        base ([`MnistDiffusionPipeline`]): The demo's loaded pipeline, with its DDPM training scheduler.
        download_dir (`Path`): Where the zipped adapters are written.
        model (`str`, *optional*): The base model's folder or Hub id, for the adapter's card and the code; the
            bundled release by default.
        recipe ([`~mnist_diffusion.training.lora.LoraRecipe`], *optional*): The training settings; `DEMO_RECIPE`
            by default (docs/benchmarks.md, "Demo: Learn my style", measures its time in the demo).

    Example:

    ```py
    >>> from mnist_diffusion.demo.handwriting import HandwritingHandlers

    >>> tab = HandwritingHandlers(models.pipes["DDPM"], download_dir)  # doctest: +SKIP
    >>> examples, *_ = tab.add_drawing([], drawing, "3")  # doctest: +SKIP
    ```
    """

    def __init__(
        self,
        base: MnistDiffusionPipeline,
        download_dir: Path,
        model: str | None = None,
        recipe: LoraRecipe | None = None,
    ):
        self.base = base
        self.download_dir = Path(download_dir)
        self.model = model
        self.recipe = recipe or DEMO_RECIPE
        self.class_names = base.label_names or [str(i) for i in range(base.num_classes)]

    # Collecting the digits

    def gallery(self, examples: list[tuple[Image.Image, int]]) -> list[tuple[Image.Image, str]]:
        """The collected digits, enlarged, each captioned with its class."""
        return [(enlarge(image, 4), self.class_names[label]) for image, label in examples]

    def collected(self, examples: list[tuple[Image.Image, int]]) -> str:
        """One line saying how many digits of each class are collected."""
        if not examples:
            return "No digits yet."
        counts = {name: 0 for name in self.class_names}
        for _, label in examples:
            counts[self.class_names[label]] += 1
        shown = ", ".join(f"{name}: {count}" for name, count in counts.items() if count)
        return f"{len(examples)} digit(s) collected ({shown})."

    def label(self, name: Any, source: str) -> int:
        """The class id of a class name, or a `gr.Error` saying what `source` lacks."""
        if name not in self.class_names:
            raise refusal(f"{source}: pick which digit it shows (one of {', '.join(self.class_names)}), then add it.")
        return self.class_names.index(name)

    def add(self, examples: list | None, digit: torch.Tensor | None, label: int, blank: str) -> list:
        """`examples` with one more digit (a new list), or a `gr.Error`: `blank` for a blank one, or one too many."""
        examples = list(examples or [])
        if digit is None:
            raise refusal(blank)
        if len(examples) >= MAX_EXAMPLES:
            raise refusal(f"You have {len(examples)} digits; the demo learns from at most {MAX_EXAMPLES}.")
        return examples + [(to_images(digit)[0], label)]

    def add_drawing(self, examples: list | None, drawing: Any, digit_name: Any) -> tuple:
        """Add the sketchpad's drawing as a digit of `digit_name`; returns the examples, gallery and the collection's
        status."""
        label = self.label(digit_name, "The drawing")
        blank = "The drawing is blank: draw one digit, large, with the white brush."
        examples = self.add(examples, sketch_to_digit(drawing), label, blank)
        return examples, self.gallery(examples), self.collected(examples)

    @staticmethod
    def blank_pad() -> Image.Image:
        """The sketchpad's empty black canvas, for the next digit once one is added."""
        return Image.new("RGB", (280, 280))

    def add_uploads(self, examples: list | None, files: list[str] | None) -> tuple:
        """Add uploaded images, each labelled by the start of its file name (`3_a.png` is a 3); returns the
        examples, gallery, an empty upload box and the collection's status."""
        examples = list(examples or [])
        for file in files or []:
            name = Path(file).name
            label = self.label(re.split(r"[_\-. ]", name, maxsplit=1)[0], f"The file {name!r} (name it like 3_a.png)")
            check_drawing_size(file)
            try:
                image = load_image_file(file, argument="upload")
            except ValueError as error:
                raise refusal(str(error)) from None
            examples = self.add(examples, sketch_to_digit(image), label, f"The image {name!r} is blank: no ink found.")
        return examples, self.gallery(examples), None, self.collected(examples)

    def clear(self) -> tuple:
        """No digits: the examples, gallery and status."""
        return [], [], self.collected([])

    def training_data(self, examples: list | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The examples as training images at the model's size in [-1, 1] and their class ids."""
        if not examples or len(examples) < 2:
            count = len(examples or [])
            raise refusal(
                f"You added {count} digit(s); learning a style takes at least 2 (10-20 work well: one or two of "
                "each digit). Draw a digit, pick which it is, press Add drawing."
            )
        size = self.base.unet.config.sample_size
        images = prepare_image([image for image, _ in examples], size, size, invert=False, argument="your digits")
        return images, torch.tensor([label for _, label in examples])

    # Learning the style

    def fresh_pipeline(self) -> MnistDiffusionPipeline:
        """A pipeline on a copy of the base UNet (shared text encoder, frozen during training): the adapter goes on
        the copy, never on the demo's shared model."""
        return MnistDiffusionPipeline.from_pipe(
            self.base,
            unet=copy.deepcopy(self.base.unet),
            scheduler=copy.deepcopy(self.base.scheduler),
        )

    def learn(
        self,
        examples: list | None,
        scale: Any,
        progress: gr.Progress = gr.Progress(),  # noqa: B008 - Gradio's tracker
    ) -> tuple:
        """
        Train an adapter on the collected digits (progress reported to `progress`), then draw every class in the
        style at `scale`; returns the session's [`LearnedStyle`], the grid, the zipped adapter, a summary and the
        code.
        """
        images, labels = self.training_data(examples)
        scale = self.checked_scale(scale)
        recipe = self.recipe
        classes = len(set(labels.tolist()))
        if prior_image_plan(len(self.class_names), labels, recipe):
            progress(0, desc="The base model draws its own digits first (so digits stay digits)…")
        pipe = self.fresh_pipeline()
        start = time.perf_counter()

        def on_step_end(step: int, total: int) -> None:
            progress((step, total), desc="Learning your style", unit="steps")

        try:
            pipe = train_lora(pipe, images, labels, recipe, callback_on_step_end=on_step_end)
        except ValueError as error:
            raise refusal(str(error)) from None
        seconds = time.perf_counter() - start
        progress(1, desc="Drawing every digit in your style")
        style = LearnedStyle(pipe)
        grid = self.render(style, scale)
        download = self.save_adapter(pipe, examples)
        summary = (
            f"Learned from {len(labels)} digits of {classes} class(es) in {seconds:.0f} s "
            f"({recipe.max_train_steps} steps). Move **Style strength**: 0 draws the base model, 1 your style, "
            "more exaggerates it."
        )
        return style, grid, download, summary, self.code(scale)

    def save_adapter(self, pipe: MnistDiffusionPipeline, examples: list) -> str:
        """Zip the adapter (weights, card, samples) with the training images in `my-digits/<class>/`."""
        folder = new_download_folder(self.download_dir)
        staging = folder / "files"
        adapter = staging / ADAPTER_NAME
        save_lora_adapter(pipe, adapter)
        sampler = self.sampler(pipe)
        training_args = dataclasses.asdict(self.recipe)
        write_lora_card(
            adapter,
            self.model or DIFFUSION_MODEL,
            sampler,
            training_args=training_args,
            sample_steps=DEFAULT_STEPS[STYLE_SAMPLER],
        )
        for i, (image, label) in enumerate(examples):
            class_folder = staging / DIGITS_FOLDER / self.class_names[label]
            class_folder.mkdir(parents=True, exist_ok=True)
            image.save(class_folder / f"{i:02d}.png")
        archive = shutil.make_archive(str(folder / ADAPTER_NAME), "zip", root_dir=staging)
        shutil.rmtree(staging)
        return archive

    # Drawing in the style

    def sampler(self, pipe: MnistDiffusionPipeline) -> MnistDiffusionPipeline:
        """`pipe` with the tab's sampler (its own scheduler instance)."""
        scheduler = scheduler_from_config(SCHEDULER_NAMES[STYLE_SAMPLER], pipe.scheduler.config)
        return MnistDiffusionPipeline.from_pipe(pipe, scheduler=scheduler)

    @staticmethod
    def checked_scale(scale: Any) -> float:
        """The style strength as a float in `[0, MAX_STYLE_SCALE]`, or a `gr.Error`."""
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 <= scale <= MAX_STYLE_SCALE:
            raise refusal(f"Style strength is {scale!r}; expected a number from 0 to {MAX_STYLE_SCALE:g}.")
        return float(scale)

    def render(self, style: LearnedStyle, scale: float) -> Image.Image:
        """One digit of each class in `style` at LoRA scale `scale`, from a fixed seed, enlarged in a grid."""
        count = len(self.class_names)
        with style.lock:  # the scale is set on the UNet's layers during the call
            images = self.sampler(style.pipe)(
                class_labels=list(range(count)),
                num_inference_steps=DEFAULT_STEPS[STYLE_SAMPLER],
                guidance_scale=DEFAULT_GUIDANCE[STYLE_SAMPLER],
                generator=torch.Generator().manual_seed(STYLE_SEED),
                cross_attention_kwargs={"scale": scale},
            ).images
        cols = min(count, 5)
        grid = image_grid(images, rows=-(-count // cols), cols=cols)
        return enlarge(grid, max(1, 560 // grid.width))

    def restyle(self, style: LearnedStyle | None, scale: Any) -> tuple:
        """The grid redrawn at another style strength (no retraining), and the code; nothing before training."""
        scale = self.checked_scale(scale)
        if style is None:
            gr.Info("Learn your style first: the slider then sets how strongly the digits follow it.")
            return gr.skip(), gr.skip()
        return self.render(style, scale), self.code(scale)

    def code(self, scale: float = 1.0) -> str:
        """The Python (and command) that trains the same adapter on the downloaded `my-digits` and draws the grid."""
        defaults = LoraRecipe()
        changes = {
            field.name: getattr(self.recipe, field.name)
            for field in dataclasses.fields(LoraRecipe)
            if getattr(self.recipe, field.name) != getattr(defaults, field.name)
        }
        steps, guidance = DEFAULT_STEPS[STYLE_SAMPLER], DEFAULT_GUIDANCE[STYLE_SAMPLER]
        return handwriting_snippet(changes, scale, steps, guidance, STYLE_SEED, len(self.class_names), self.model)
