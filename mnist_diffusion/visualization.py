"""Figures: a digit dissolving into noise, denoising trajectories, style and class grids, training curves."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image, ImageDraw, ImageFont

from .captions import SIZE_WORDS, SLANT_WORDS, THICKNESS_WORDS, caption_templates
from .image_grid import image_grid
from .pipelines import DenoisingTrajectory, MnistDiffusionPipeline
from .schedulers import MnistDDPMScheduler
from .training.run_folder import EVAL_HISTORY_FILE

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Noise fractions of the forward-process figure: 0%, 10%, ..., 100% of the way to pure noise.
NOISE_FRACTIONS = tuple(i / 10 for i in range(11))
#: Scalars plotted by [`plot_training_curves`], in panel order, with their axis titles.
TRAINING_CURVES = {
    "train/loss": "training loss",
    "train/lr": "learning rate",
    "eval/conditional_accuracy": "conditional accuracy",
    "eval/classifier_fid": "classifier FID",
}

WHITE, BLACK = 255, 0


def to_images(samples: torch.Tensor) -> list[Image.Image]:
    r"""
    Images in [-1, 1] `(batch, channels, height, width)` (what the scheduler and the pipeline's trajectory hold) as PIL
    images, grayscale ("L") for one channel; values outside [-1, 1] (noise) are clipped.

    Example:

    ```py
    >>> import torch
    >>> from mnist_diffusion.visualization import to_images

    >>> [image.mode for image in to_images(torch.zeros(2, 1, 28, 28))]
    ['L', 'L']
    ```
    """
    if samples.ndim != 4:
        raise ValueError(f"samples have shape {tuple(samples.shape)}; expected (batch, channels, height, width).")
    processor = VaeImageProcessor
    return processor.numpy_to_pil(processor.pt_to_numpy(processor.denormalize(samples.detach().float().cpu())))


def _font(scale: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=max(10, 3 * scale + 4))


def _wrap(text: str, font: ImageFont.ImageFont, width: int) -> list[str]:
    """Split `text` at newlines, then greedily into lines no wider than `width` (a long single word stays whole)."""
    lines = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if line and font.getlength(candidate) > width:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    return lines


def _text_block(texts: Sequence[str], font: ImageFont.ImageFont, width: int) -> tuple[list[list[str]], int]:
    """The wrapped lines of each text and the height of the tallest one (0 without texts)."""
    wrapped = [_wrap(text, font, width) for text in texts]
    line_height = font.getbbox("Ag")[3] + 2
    return wrapped, max((len(lines) for lines in wrapped), default=0) * line_height


def _draw_lines(draw: ImageDraw.ImageDraw, lines: list[str], box: tuple[int, int, int, int], font) -> None:
    """Draw lines centred horizontally and vertically in `box` (left, top, right, bottom)."""
    line_height = font.getbbox("Ag")[3] + 2
    left, top, right, bottom = box
    y = top + (bottom - top - len(lines) * line_height) // 2
    for line in lines:
        x = left + (right - left - font.getlength(line)) / 2
        draw.text((x, y), line, fill=BLACK, font=font)
        y += line_height


def labeled_grid(
    cells: Sequence[Sequence[Image.Image]],
    row_labels: Sequence[str] | None = None,
    column_labels: Sequence[str] | None = None,
    captions: Sequence[Sequence[str]] | None = None,
    title: str | None = None,
    scale: int = 4,
) -> Image.Image:
    r"""
    Lay out same-size images in rows, upscaled `scale` times with nearest-neighbour (crisp pixels), on a white page
    with optional row labels (left), column labels (top), a caption under each cell and a title.

    Labels and captions may hold several lines (`"\n"`) and are wrapped to the cell width. The image part is
    `cols * (width * scale + gap) + gap` pixels wide (`gap = max(2, scale)`), the labels add margins.

    Example:

    ```py
    >>> from PIL import Image
    >>> from mnist_diffusion.visualization import labeled_grid

    >>> digit = Image.new("L", (28, 28))
    >>> labeled_grid([[digit] * 3] * 2, scale=2).size  # no labels: 3 * (56 + 2) + 2 by 2 * (56 + 2) + 2
    (176, 118)
    >>> figure = labeled_grid([[digit] * 3] * 2, row_labels=["thin", "thick"], column_labels=["a", "b", "c"])
    ```
    """
    num_rows, num_cols = len(cells), len(cells[0]) if cells else 0
    if not num_rows or not num_cols or any(len(row) != num_cols for row in cells):
        raise ValueError(f"cells have row lengths {[len(row) for row in cells]}; expected equal, non-empty rows.")
    if len({image.size for row in cells for image in row}) != 1:
        raise ValueError(f"cells have sizes {sorted({image.size for row in cells for image in row})}; expected one.")
    for name, labels, expected in (("row_labels", row_labels, num_rows), ("column_labels", column_labels, num_cols)):
        if labels is not None and len(labels) != expected:
            raise ValueError(f"Got {len(labels)} {name} for {expected}; expected one each.")
    if captions is not None and [len(row) for row in captions] != [num_cols] * num_rows:
        lengths = [len(row) for row in captions]
        raise ValueError(f"captions have row lengths {lengths}; expected {num_rows} rows of {num_cols}.")
    if scale < 1:
        raise ValueError(f"scale is {scale}; expected an integer >= 1.")

    font, gap = _font(scale), max(2, scale)
    width, height = cells[0][0].size
    cell_width, cell_height = width * scale, height * scale
    caption_lines, caption_height = _text_block([c for row in captions or [] for c in row], font, cell_width)
    column_lines, column_height = _text_block(column_labels or [], font, cell_width)
    row_lines, _ = _text_block(row_labels or [], font, 10**6)
    row_width = max((font.getlength(line) for lines in row_lines for line in lines), default=0)
    left = int(row_width) + 2 * gap if row_labels else 0
    title_lines, title_height = _text_block([title] if title else [], font, left + num_cols * (cell_width + gap))
    top = title_height + column_height + (gap if title or column_labels else 0)

    slot_width, slot_height = cell_width + gap, cell_height + caption_height + gap
    slots = []
    for r, row in enumerate(cells):
        for c, image in enumerate(row):
            slot = Image.new("L", (slot_width, slot_height), WHITE)
            slot.paste(image.convert("L").resize((cell_width, cell_height), Image.Resampling.NEAREST), (gap, gap))
            if captions is not None:
                box = (gap, gap + cell_height, slot_width, slot_height)
                _draw_lines(ImageDraw.Draw(slot), caption_lines[r * num_cols + c], box, font)
            slots.append(slot)
    grid = image_grid(slots, num_rows, num_cols)

    page = Image.new("L", (left + grid.width + gap, top + grid.height + gap), WHITE)
    page.paste(grid, (left, top))
    draw = ImageDraw.Draw(page)
    if title:
        _draw_lines(draw, title_lines[0], (0, 0, page.width, title_height), font)
    for c, lines in enumerate(column_lines):
        x = left + c * slot_width + gap
        _draw_lines(draw, lines, (x, title_height, x + cell_width, title_height + column_height), font)
    for r, lines in enumerate(row_lines):
        y = top + r * slot_height + gap
        _draw_lines(draw, lines, (gap, y, left - gap, y + cell_height), font)
    return page


def forward_process_figure(
    scheduler: MnistDDPMScheduler,
    images: torch.Tensor,
    noise_fractions: Sequence[float] = NOISE_FRACTIONS,
    generator: torch.Generator | None = None,
    scale: int = 4,
) -> Image.Image:
    r"""
    Clean images dissolving into noise: one row per image, one column per fraction of the forward process (0% is the
    clean image, 100% the last training timestep), all with the same noise draw
    ([`MnistDDPMScheduler.forward_trajectory`]). Columns are labelled with the percentage and the timestep.

    Args:
        scheduler ([`MnistDDPMScheduler`]): Its noise schedule defines the forward process.
        images (`torch.Tensor`): Clean images in [-1, 1], `(batch, channels, height, width)`.
        noise_fractions (`Sequence[float]`, defaults to 0, 0.1, ..., 1): Fractions in [0, 1].
        generator (`torch.Generator`, *optional*): Makes the noise reproducible.
        scale (`int`, defaults to 4): Nearest-neighbour upscaling of each image.

    Example:

    ```py
    >>> import torch
    >>> from mnist_diffusion import MnistDDPMScheduler
    >>> from mnist_diffusion.visualization import forward_process_figure

    >>> digit = torch.full((1, 1, 28, 28), -1.0)
    >>> digit[..., 4:24, 12:16] = 1.0  # a white bar on black
    >>> figure = forward_process_figure(MnistDDPMScheduler(), digit, generator=torch.Generator().manual_seed(0))
    >>> figure.save("forward.png")
    ```
    """
    frames = scheduler.forward_trajectory(images, noise_fractions=noise_fractions, generator=generator)
    timesteps = scheduler.timesteps_from_noise_fractions(noise_fractions).tolist()
    frame_images = [to_images(frame) for frame in frames]
    rows = [[frame[b] for frame in frame_images] for b in range(images.shape[0])]
    labels = [f"{p:.0%}\n{'clean' if t < 0 else f't={t}'}" for p, t in zip(noise_fractions, timesteps, strict=True)]
    return labeled_grid(rows, column_labels=labels, title="noise added (share of the forward process)", scale=scale)


def _step_indices(num_steps: int, num_columns: int) -> list[int]:
    """`num_columns` step indices evenly spaced from the first to the last step (all steps when there are fewer)."""
    if num_columns < 1:
        raise ValueError(f"num_columns is {num_columns}; expected at least 1.")
    return torch.linspace(0, num_steps - 1, min(num_columns, num_steps)).round().long().unique().tolist()


def denoising_figure(
    trajectory: DenoisingTrajectory, num_columns: int = 10, sample: int = 0, title: str | None = None, scale: int = 4
) -> Image.Image:
    r"""
    One sample's denoising trajectory at `num_columns` evenly spaced steps: the row "x_t" is what the sampler saw at
    the step, the row "predicted x_0" the clean image it predicted there (after guidance).

    Example:

    ```py
    >>> import torch
    >>> from mnist_diffusion import MnistDiffusionPipeline
    >>> from mnist_diffusion.visualization import denoising_figure

    >>> pipe = MnistDiffusionPipeline.from_pretrained("path/to/pipeline")  # doctest: +SKIP
    >>> output = pipe("a thick slanted 7", return_trajectory=True)  # doctest: +SKIP
    >>> trajectory = output.trajectory  # doctest: +SKIP
    >>> denoising_figure(trajectory, title="a thick slanted 7").save("denoise.png")  # doctest: +SKIP
    ```
    """
    _check_sample(trajectory, sample)
    steps = _step_indices(len(trajectory.timesteps), num_columns)
    latents = to_images(trajectory.latents[steps, sample])
    originals = to_images(trajectory.pred_original_samples[steps, sample])
    labels = [f"step {i + 1}\nt={trajectory.timesteps[i].item()}" for i in steps]
    return labeled_grid(
        [latents, originals], row_labels=["x_t", "predicted x_0"], column_labels=labels, title=title, scale=scale
    )


def denoising_frames(
    trajectory: DenoisingTrajectory, sample: int = 0, title: str | None = None, scale: int = 4
) -> list[Image.Image]:
    r"""
    One animation frame per denoising step: x_t beside the predicted x_0, titled with the step and timestep. Save
    them with [`save_gif`].

    Example:

    ```py
    >>> from mnist_diffusion.visualization import denoising_frames, save_gif

    >>> save_gif(denoising_frames(trajectory, title="a thick slanted 7"), "denoise.gif")  # doctest: +SKIP
    ```
    """
    _check_sample(trajectory, sample)
    num_steps = len(trajectory.timesteps)
    latents = to_images(trajectory.latents[:num_steps, sample])
    originals = to_images(trajectory.pred_original_samples[:, sample])
    frames = []
    for i, (latent, original) in enumerate(zip(latents, originals, strict=True)):
        heading = f"step {i + 1}/{num_steps}, t={trajectory.timesteps[i].item()}"
        frames.append(
            labeled_grid(
                [[latent, original]],
                column_labels=["x_t", "predicted x_0"],
                title=f"{title}\n{heading}" if title else heading,
                scale=scale,
            )
        )
    return frames


def _check_sample(trajectory: DenoisingTrajectory, sample: int) -> None:
    batch = trajectory.latents.shape[1]
    if not 0 <= sample < batch:
        raise ValueError(f"sample is {sample}; expected an index in 0..{batch - 1} of the trajectory's batch.")


def save_gif(frames: Sequence[Image.Image], path: str | Path, duration: int = 120, hold_last: int = 1500) -> Path:
    r"""
    Save frames as a looping GIF: `duration` milliseconds per frame, the last one held `hold_last` milliseconds.

    Example:

    ```py
    >>> from PIL import Image
    >>> from mnist_diffusion.visualization import save_gif

    >>> save_gif([Image.new("L", (8, 8), v) for v in (0, 128, 255)], "fade.gif")
    PosixPath('fade.gif')
    ```
    """
    if not frames:
        raise ValueError("Got no frames; expected at least one.")
    path = Path(path)
    durations = [duration] * (len(frames) - 1) + [hold_last]
    frames[0].save(path, save_all=True, append_images=list(frames[1:]), duration=durations, loop=0)
    return path


def _shared_noise(pipe: MnistDiffusionPipeline, num_images: int, repeats: int, generator) -> torch.Tensor:
    """`num_images` initial noises, repeated for each of `repeats` conditions (so cells differ only by condition)."""
    size = pipe.unet.config.sample_size
    shape = (num_images, pipe.unet.config.in_channels, size, size)
    return randn_tensor(shape, generator=generator, dtype=pipe.unet.dtype).repeat(repeats, 1, 1, 1)


def style_prompts(label_name: str, sizes: bool = False) -> dict[tuple[str, ...], str]:
    r"""
    The prompt for every style of a class, from the training captions' template naming thickness and slant (and
    size, with `sizes=True`): keys are `(thickness, slant)` or `(size, thickness, slant)` words.

    Example:

    ```py
    >>> from mnist_diffusion.visualization import style_prompts

    >>> style_prompts("7")[("thick", "right-slanted")]
    'a thick right-slanted seven'
    ```
    """
    wanted = {"{thickness}", "{slant}"} | ({"{size}"} if sizes else set())
    placeholders = {"{thickness}", "{slant}", "{size}"}
    template = next(
        t for t in caption_templates(label_name, "label+style") if {p for p in placeholders if p in t} == wanted
    )
    size_words = SIZE_WORDS if sizes else (None,)
    return {
        tuple(w for w in (size, thickness, slant) if w): template.format(thickness=thickness, slant=slant, size=size)
        for size in size_words
        for thickness in THICKNESS_WORDS
        for slant in SLANT_WORDS
    }


def style_grid(
    pipe: MnistDiffusionPipeline,
    label: int | str,
    num_images: int = 4,
    sizes: bool = False,
    generator: torch.Generator | None = None,
    scale: int = 4,
    **pipeline_kwargs,
) -> Image.Image:
    r"""
    One class in every style: rows are thicknesses (times sizes, with `sizes=True`), columns slants; each cell holds
    `num_images` samples of its prompt (captioned under it), conditioned on the class too when the model has classes.
    Every cell starts from the same `num_images` noises, so cells differ only by their prompt.

    Args:
        pipe ([`MnistDiffusionPipeline`]): A pipeline with a text encoder.
        label (`int` or `str`): A class id or name ("7").
        num_images (`int`, defaults to 4): Samples per style.
        sizes (`bool`, defaults to `False`): Also vary the size words.
        generator (`torch.Generator`, *optional*): Makes the samples reproducible.
        scale (`int`, defaults to 4): Nearest-neighbour upscaling.
        pipeline_kwargs: Passed to the pipeline, e.g. `num_inference_steps`, `guidance_scale`.

    Example:

    ```py
    >>> import torch
    >>> from mnist_diffusion import MnistDiffusionPipeline
    >>> from mnist_diffusion.visualization import style_grid

    >>> pipe = MnistDiffusionPipeline.from_pretrained("path/to/pipeline")  # doctest: +SKIP
    >>> style_grid(pipe, "7", generator=torch.Generator().manual_seed(0)).save("styles.png")  # doctest: +SKIP
    ```
    """
    if pipe.text_encoder is None:
        raise ValueError("This pipeline has no text encoder; style prompts need one (try the class grid instead).")
    if num_images < 1:
        raise ValueError(f"num_images is {num_images}; expected at least 1.")
    class_id = pipe.resolve_class_labels(label)[0] if pipe.num_classes else None
    name = (pipe.config.id2label or {}).get(str(class_id), str(label)) if class_id is not None else str(label)
    prompts = style_prompts(name, sizes)
    images = pipe(
        prompt=list(prompts.values()),
        class_labels=class_id,
        num_images_per_prompt=num_images,
        latents=_shared_noise(pipe, num_images, len(prompts), generator),
        generator=generator,
        **pipeline_kwargs,
    ).images
    cells = [image_grid(images[i * num_images : (i + 1) * num_images], 1, num_images) for i in range(len(prompts))]
    num_cols = len(SLANT_WORDS)
    keys, texts = list(prompts), list(prompts.values())
    return labeled_grid(
        [cells[i : i + num_cols] for i in range(0, len(cells), num_cols)],
        row_labels=[" ".join(key[:-1]) for key in keys[::num_cols]],
        column_labels=list(SLANT_WORDS),
        captions=[texts[i : i + num_cols] for i in range(0, len(texts), num_cols)],
        title=f"class {name}" if class_id is not None else None,
        scale=scale,
    )


def class_grid(
    pipe: MnistDiffusionPipeline,
    num_images: int = 8,
    generator: torch.Generator | None = None,
    scale: int = 4,
    **pipeline_kwargs,
) -> Image.Image:
    r"""
    `num_images` samples of every class, a row per class labelled with its `id2label` name; column `j` starts from
    the same noise in every row, so rows differ only by the class.

    Example:

    ```py
    >>> import torch
    >>> from mnist_diffusion import MnistDiffusionPipeline
    >>> from mnist_diffusion.visualization import class_grid

    >>> pipe = MnistDiffusionPipeline.from_pretrained("path/to/pipeline")  # doctest: +SKIP
    >>> class_grid(pipe, num_images=8, num_inference_steps=50).save("classes.png")  # doctest: +SKIP
    ```
    """
    if not pipe.num_classes:
        raise ValueError("This pipeline's UNet has no class conditioning; a class grid needs classes.")
    if num_images < 1:
        raise ValueError(f"num_images is {num_images}; expected at least 1.")
    classes = list(range(pipe.num_classes))
    images = pipe(
        class_labels=classes,
        num_images_per_prompt=num_images,
        latents=_shared_noise(pipe, num_images, len(classes), generator),
        generator=generator,
        **pipeline_kwargs,
    ).images
    id2label = pipe.config.id2label or {}
    return labeled_grid(
        [images[c * num_images : (c + 1) * num_images] for c in classes],
        row_labels=[id2label.get(str(c), str(c)) for c in classes],
        scale=scale,
    )


def read_training_curves(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    r"""
    The scalars of a training run as `{tag: [(step, value), ...]}` sorted by step: every scalar of the TensorBoard
    event files under `run_dir` (e.g. `train/loss`, `train/lr`) and the metrics of `run_dir/eval_history.jsonl` as
    `eval/<name>`. Where a step appears twice (a resumed run), the value written last wins.

    Example:

    ```py
    >>> from mnist_diffusion.visualization import read_training_curves

    >>> curves = read_training_curves("outputs/run-small-v")  # doctest: +SKIP
    >>> curves["train/loss"][:2]  # doctest: +SKIP
    [(1, 0.2814...), (2, 0.3234...)]
    ```
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"Run folder {str(run_dir)!r} does not exist; expected the --output_dir of a training run.")
    curves: dict[str, dict[int, tuple[float, float]]] = {}  # tag -> step -> (wall time, value)
    for events in sorted(run_dir.rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            for event in accumulator.Scalars(tag):
                previous = curves.setdefault(tag, {}).get(event.step)
                if previous is None or event.wall_time >= previous[0]:
                    curves[tag][event.step] = (event.wall_time, event.value)
    history = run_dir / EVAL_HISTORY_FILE
    if history.is_file():
        for line in history.read_text().splitlines():
            entry = json.loads(line)
            for key, value in entry.items():
                if isinstance(value, (int, float)) and key != "step" and not key.startswith("num_"):
                    curves.setdefault(f"eval/{key}", {})[entry["step"]] = (float("inf"), float(value))
    return {tag: [(step, value) for step, (_, value) in sorted(points.items())] for tag, points in curves.items()}


def plot_training_curves(
    curves: dict[str, list[tuple[int, float]]], title: str | None = None, smoothing: float = 0.9
) -> Figure:
    r"""
    A row of panels, one per curve of [`TRAINING_CURVES`] present in `curves`: the loss (raw, and smoothed with an
    exponential moving average of weight `smoothing`), the learning rate, conditional accuracy and classifier FID.

    Example:

    ```py
    >>> from mnist_diffusion.visualization import plot_training_curves, read_training_curves

    >>> figure = plot_training_curves(read_training_curves("outputs/run-small-v"))  # doctest: +SKIP
    >>> figure.savefig("training.png")  # doctest: +SKIP
    ```
    """
    from matplotlib.figure import Figure

    if not 0 <= smoothing < 1:
        raise ValueError(f"smoothing is {smoothing}; expected a value in [0, 1).")
    present = [tag for tag in TRAINING_CURVES if curves.get(tag)]
    if not present:
        raise ValueError(
            f"No curve to plot: got {sorted(curves)}; expected some of {list(TRAINING_CURVES)} (TensorBoard logs of "
            f"training/train.py, or its {EVAL_HISTORY_FILE})."
        )
    figure = Figure(figsize=(4.5 * len(present), 3.5), dpi=100, layout="constrained")
    for axes, tag in zip(figure.subplots(1, len(present), squeeze=False)[0], present, strict=True):
        steps, values = zip(*curves[tag], strict=True)
        if tag == "train/loss":
            axes.plot(steps, values, color="tab:blue", alpha=0.3, linewidth=0.8, label="per step")
            smoothed, average = [], values[0]
            for value in values:
                average = smoothing * average + (1 - smoothing) * value
                smoothed.append(average)
            axes.plot(steps, smoothed, color="tab:blue", label=f"EMA {smoothing}")
            axes.legend()
        else:
            axes.plot(steps, values, marker="o" if tag.startswith("eval/") else None, markersize=3)
        axes.set_title(TRAINING_CURVES[tag])
        axes.set_xlabel("step")
        axes.grid(alpha=0.3)
    if title:
        figure.suptitle(title)
    return figure
