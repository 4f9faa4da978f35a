"""`mnist-diffusion visualize`: figures of the forward process, denoising, styles, classes, interpolation, training."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..loading import SCHEDULERS, check_model_argument, open_pipeline, parse_class_label
from .arguments import check_image_output, finite_float, seed_number

if TYPE_CHECKING:
    import PIL.Image
    import torch
    from matplotlib.figure import Figure


def _output(path: str, suffix: str) -> Path:
    """`path` with `suffix`, checked before any work (not a folder, inside a writable one)."""
    return check_image_output("-o/--output", Path(path).with_suffix(suffix))


def _save(figure: PIL.Image.Image | Figure, output: Path) -> None:
    """Save a PIL image or a matplotlib figure to `output`, its folder created."""
    from matplotlib.figure import Figure

    output.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(figure, Figure):
        figure.savefig(output)
    else:
        figure.save(output)


def _sampling_kwargs(args: argparse.Namespace) -> dict:
    import torch

    return {
        "num_inference_steps": args.steps,
        "guidance_scale": args.guidance_scale,
        "generator": torch.Generator().manual_seed(args.seed),
        "scale": args.scale,
    }


def check_hub_dataset(name: str) -> None:
    r"""
    Refuse a `--dataset` Hub id at once when the Hub cannot be reached, instead of after `datasets`' half a minute of
    retries; a local folder, offline mode (`HF_HUB_OFFLINE=1`, which reads the cache) and a Hub that answers pass.
    """
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import HfHubHTTPError

    if os.path.exists(name) or constants.HF_HUB_OFFLINE:
        return
    try:
        HfApi().dataset_info(name)
    except HfHubHTTPError:  # the Hub answered (no such dataset, gated, ...): `datasets` says what it means
        return
    except Exception as error:  # the HTTP client's connection errors, which huggingface_hub does not wrap
        raise ValueError(
            f"--dataset {name!r} is not a local folder and the Hub ({constants.ENDPOINT}) cannot be reached "
            f"({type(error).__name__}); leave out --dataset to use the real MNIST test digits shipped with the "
            "package, give a local copy (e.g. a folder of parquet files), or set HF_HUB_OFFLINE=1 to read a cached "
            "copy."
        ) from None


def load_digit(args: argparse.Namespace) -> tuple[torch.Tensor, str]:
    r"""
    The real image of `forward` in [-1, 1] `(1, 1, res, res)` and its name: from `--image`, `--dataset`, or by
    default the MNIST test digits shipped with the package (two of each class, as in the demo).
    """
    import torch.nn.functional as F
    from diffusers.image_processor import VaeImageProcessor

    from ..data import decode_images, load_split

    if args.image is None and args.dataset is None:
        from ..demo.test_digits import load_test_digits

        digits, labels = load_test_digits()
        if not 0 <= args.index < len(digits):
            raise ValueError(
                f"--index is {args.index}; expected 0..{len(digits) - 1} (the shipped MNIST test digits; pass "
                "--dataset for others)."
            )
        digit = digits[args.index : args.index + 1]
        if digit.shape[-1] != args.resolution:
            digit = F.interpolate(digit, size=(args.resolution,) * 2, mode="bilinear", antialias=True)
        return digit, f"shipped MNIST test digit {args.index} (a {labels[args.index].item()})"
    if args.image is not None:
        import datasets

        if not Path(args.image).is_file():
            raise ValueError(f"--image {args.image!r} is not a file; expected an image file (white ink on black).")
        features = datasets.Features({"image": datasets.Image()})
        split = datasets.Dataset.from_dict({"image": [args.image]}, features=features)
        index, name = 0, Path(args.image).name
    else:
        check_hub_dataset(args.dataset)
        split = load_split(args.dataset, split=args.split)
        if not 0 <= args.index < len(split):
            raise ValueError(
                f"--index is {args.index}; expected 0..{len(split) - 1} (the {args.split!r} split of "
                f"{args.dataset!r})."
            )
        index, name = args.index, f"{args.dataset} {args.split}[{args.index}]"
    pixels = decode_images(split.select([index]), "image", args.resolution)
    return VaeImageProcessor.normalize(pixels.float() / 255), name


def forward(args: argparse.Namespace) -> Path:
    """Save the forward-process figure of one real digit."""
    import torch

    from ..schedulers import MnistDDPMScheduler
    from ..visualization import forward_process_figure

    if args.model is None:
        scheduler = MnistDDPMScheduler()
    else:
        check_model_argument(args.model)
        scheduler = MnistDDPMScheduler.from_pretrained(args.model, subfolder="scheduler")
    output = _output(args.output, ".png")
    digit, name = load_digit(args)
    generator = torch.Generator().manual_seed(args.seed)
    figure = forward_process_figure(scheduler, digit, generator=generator, scale=args.scale)
    _save(figure, output)
    print(f"Saved the forward process of {name} to {output}")
    return output


def denoise(args: argparse.Namespace) -> tuple[Path, Path]:
    """Save the denoising trajectory of a prompt and/or class label as a PNG figure and a GIF."""
    from ..visualization import denoising_figure, denoising_frames, save_gif

    if args.prompt is None and args.class_label is None:
        raise ValueError("Give a prompt, --class-label, or both.")
    png, gif = _output(args.output, ".png"), _output(args.output, ".gif")
    pipe = open_pipeline(args.model, args.scheduler)
    kwargs = _sampling_kwargs(args)
    scale = kwargs.pop("scale")
    trajectory = pipe(
        prompt=args.prompt, class_labels=parse_class_label(args.class_label), return_trajectory=True, **kwargs
    ).trajectory
    title = " + ".join(part for part in (args.prompt, args.class_label and f"class {args.class_label}") if part)
    _save(denoising_figure(trajectory, num_columns=args.columns, title=title, scale=scale), png)
    save_gif(denoising_frames(trajectory, title=title, scale=scale), gif)
    print(f"Saved the denoising trajectory of {title!r} to {png} and {gif} ({len(trajectory.timesteps)} frames)")
    return png, gif


def styles(args: argparse.Namespace) -> Path:
    """Save one class in every style (thickness x slant, optionally size)."""
    from ..visualization import style_grid

    output = _output(args.output, ".png")
    pipe = open_pipeline(args.model, args.scheduler)
    figure = style_grid(pipe, parse_class_label(args.label), args.num_images, args.sizes, **_sampling_kwargs(args))
    _save(figure, output)
    print(f"Saved the styles of {args.label!r} to {output}")
    return output


def classes(args: argparse.Namespace) -> Path:
    """Save a grid of every class, a row per class."""
    from ..visualization import class_grid

    output = _output(args.output, ".png")
    pipe = open_pipeline(args.model, args.scheduler)
    figure = class_grid(pipe, args.num_images, **_sampling_kwargs(args))
    _save(figure, output)
    print(f"Saved {args.num_images} samples of {pipe.num_classes} classes to {output}")
    return output


def interpolation(args: argparse.Namespace) -> Path:
    """Save a row of frames morphing between two prompts, two class labels and/or two seeds."""
    from ..interpolation import interpolate
    from ..visualization import labeled_grid

    prompts = (args.start, args.end) if args.start is not None or args.end is not None else None
    if prompts is not None and None in prompts:
        raise ValueError('Give two prompts (start and end), e.g. "a 3" "an 8".')
    class_labels = None if args.class_labels is None else [parse_class_label(v) for v in args.class_labels]
    seeds = (args.seed, args.seed) if args.seeds is None else tuple(args.seeds)
    output = _output(args.output, ".png")
    pipe = open_pipeline(args.model, args.scheduler)
    frames = interpolate(
        pipe,
        prompts=prompts,
        class_labels=class_labels,
        seeds=seeds,
        prompt=args.prompt,
        class_label=parse_class_label(args.class_label),
        num_frames=args.num_frames,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance_scale,
    ).images
    parts = [f"{pair[0]!r} -> {pair[1]!r}" for pair in (prompts, class_labels) if pair is not None]
    parts += [f"seed {seeds[0]} -> {seeds[1]}"] if seeds[0] != seeds[1] else []
    weights = [f"{i / (args.num_frames - 1):.2f}" for i in range(args.num_frames)]
    _save(labeled_grid([frames], column_labels=weights, title=", ".join(parts), scale=args.scale), output)
    print(f"Saved {args.num_frames} frames ({', '.join(parts)}) to {output}")
    return output


def training(args: argparse.Namespace) -> Path:
    """Plot the loss, learning rate and evaluation curves of a training run."""
    from ..visualization import plot_training_curves, read_training_curves

    output = _output(args.output, ".png")
    curves = read_training_curves(args.run)
    _save(plot_training_curves(curves, title=str(args.run)), output)
    print(f"Saved the curves of {args.run} ({', '.join(sorted(curves))}) to {output}")
    return output


def register(commands: argparse._SubParsersAction) -> None:
    """Add the `visualize` subcommand and its figures to the `mnist-diffusion` parser."""
    parser = commands.add_parser(
        "visualize", help="Figures: forward process, denoising, styles, classes, interpolation, training curves."
    )
    figures = parser.add_subparsers(dest="figure", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--seed", type=seed_number, default=0, help="Random seed (default 0).")
    common.add_argument("--scale", type=int, default=4, help="Nearest-neighbour upscaling of images (default 4).")
    sampling = argparse.ArgumentParser(add_help=False, parents=[common])
    sampling.add_argument("--model", help="A saved pipeline (folder or Hub repo id); default: the released model.")
    sampling.add_argument("--steps", type=int, default=50, help="Denoising steps (default 50).")
    sampling.add_argument(
        "--guidance-scale", type=finite_float, default=3.0, help="Classifier-free guidance (default 3.0)."
    )
    sampling.add_argument("--scheduler", choices=sorted(SCHEDULERS), help="Swap the pipeline's scheduler.")

    fwd = figures.add_parser(
        "forward",
        parents=[common],
        help="A real digit dissolving into noise (0, 10, ..., 100%% of the forward process).",
        description="The forward process needs no network: it uses the noise schedule of --model's scheduler "
        "config, or without --model the default MnistDDPMScheduler (the schedule training/train.py trains with).",
    )
    fwd.add_argument("--model", help="A saved pipeline whose scheduler config to use (default: MnistDDPMScheduler()).")
    fwd.add_argument(
        "--dataset",
        help="A dataset to take the digit from: Hub id (e.g. ylecun/mnist) or local folder (default: the real MNIST "
        "test digits shipped with the package, two of each class).",
    )
    fwd.add_argument("--split", default="test", help="Split of --dataset (default test).")
    fwd.add_argument("--index", type=int, default=0, help="Row of the split, or of the shipped digits (default 0).")
    fwd.add_argument("--image", help="An image file to use instead of the dataset (white ink on black).")
    fwd.add_argument("--resolution", type=int, default=28, help="Images are resized only if their size differs.")
    fwd.add_argument("-o", "--output", default="forward.png", help="Output PNG (default forward.png).")
    fwd.set_defaults(func=forward)

    den = figures.add_parser(
        "denoise",
        parents=[sampling],
        help="The denoising trajectory of a prompt: x_t and predicted x_0 (PNG) and an animation (GIF).",
    )
    den.add_argument("prompt", nargs="?", help='What to draw, e.g. "a thick slanted 7".')
    den.add_argument("--class-label", help='A class id or name ("7", "Sneaker").')
    den.add_argument("--columns", type=int, default=10, help="Steps shown in the PNG, evenly spaced (default 10).")
    den.add_argument("-o", "--output", default="denoise.png", help="Output PNG; the GIF goes beside it as .gif.")
    den.set_defaults(func=denoise)

    sty = figures.add_parser(
        "styles", parents=[sampling], help="One class in every style: thickness x slant (x size), captioned."
    )
    sty.add_argument("label", help='A class id or name ("7").')
    sty.add_argument("-n", "--num-images", type=int, default=4, help="Samples per style (default 4).")
    sty.add_argument("--sizes", action="store_true", help="Also vary the size (small, medium, large).")
    sty.add_argument("-o", "--output", default="styles.png", help="Output PNG (default styles.png).")
    sty.set_defaults(func=styles)

    cls = figures.add_parser("classes", parents=[sampling], help="A grid of every class, a row per class.")
    cls.add_argument("-n", "--num-images", type=int, default=8, help="Samples per class (default 8).")
    cls.add_argument("-o", "--output", default="classes.png", help="Output PNG (default classes.png).")
    cls.set_defaults(func=classes)

    itp = figures.add_parser(
        "interpolate",
        parents=[sampling],
        help="Morph between two prompts, two class labels and/or two seeds (lerp of embeddings, slerp of noise).",
    )
    itp.add_argument("start", nargs="?", help='The first prompt, e.g. "a 3".')
    itp.add_argument("end", nargs="?", help='The last prompt, e.g. "an 8".')
    itp.add_argument("--class-labels", nargs=2, metavar=("START", "END"), help="Interpolate between two classes.")
    itp.add_argument("--seeds", type=seed_number, nargs=2, metavar=("START", "END"), help="Slerp between two noises.")
    itp.add_argument("--prompt", help="A fixed prompt (when prompts are not interpolated).")
    itp.add_argument("--class-label", help="A fixed class (when class labels are not interpolated).")
    itp.add_argument("-n", "--num-frames", type=int, default=8, help="Frames, both ends included (default 8).")
    itp.add_argument("-o", "--output", default="interpolate.png", help="Output PNG (default interpolate.png).")
    itp.set_defaults(func=interpolation, scheduler="dpm")  # deterministic: frames differ only by what is blended

    trn = figures.add_parser(
        "training", help="Loss, learning rate, conditional accuracy and classifier FID of a training run."
    )
    trn.add_argument("--run", required=True, help="The --output_dir of training/train.py (logs/, eval_history.jsonl).")
    trn.add_argument("-o", "--output", default="training.png", help="Output PNG (default training.png).")
    trn.set_defaults(func=training)
