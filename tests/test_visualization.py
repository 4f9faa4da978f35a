"""Tests of `mnist_diffusion.visualization` and `mnist-diffusion visualize`, on tiny models and data made in code."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import DIGIT_NAMES, make_digit_dataset, make_tiny_pipeline
from PIL import Image

from mnist_diffusion.captions import caption_templates
from mnist_diffusion.cli import main
from mnist_diffusion.visualization import (
    labeled_grid,
    plot_training_curves,
    read_training_curves,
    save_gif,
    style_prompts,
    to_images,
)

SCALE = 2
BLANK = Image.new("L", (8, 8))


@pytest.fixture(scope="module")
def saved_pipeline(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipeline") / "model"
    make_tiny_pipeline().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory):
    """A parquet dataset with a test split of 28x28 bars."""
    folder = tmp_path_factory.mktemp("digits")
    make_digit_dataset(num_samples=8).to_parquet(str(folder / "test-00000-of-00001.parquet"))
    return folder


def sampling_args(model, output) -> list[str]:
    return ["--model", str(model), "-o", str(output), "--steps", "2", "--scale", str(SCALE)]


def test_to_images_maps_minus_one_to_one_onto_grayscale_and_clips():
    image = to_images(torch.tensor([-2.0, -1.0, 0.0, 1.0, 3.0]).view(1, 1, 1, 5))[0]
    assert image.mode == "L" and np.asarray(image).ravel().tolist() == [0, 0, 128, 255, 255]


def test_labeled_grid_upscales_with_nearest_neighbour_and_adds_label_margins():
    digit = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4, mode="L")
    grid = labeled_grid([[digit, BLANK], [BLANK, digit]], scale=3)
    gap = 3
    assert grid.size == (2 * (24 + gap) + gap, 2 * (24 + gap) + gap)
    cell = grid.crop((gap, gap, gap + 24, gap + 24))
    assert cell.tobytes() == digit.resize((24, 24), Image.Resampling.NEAREST).tobytes()
    assert grid.getpixel((0, 0)) == 255  # white page between cells

    labeled = labeled_grid(
        [[digit, BLANK], [BLANK, digit]],
        row_labels=["thin", "thick"],
        column_labels=["left", "right"],
        captions=[["a", "b"], ["c", "d"]],
        title="title",
        scale=3,
    )
    assert labeled.width > grid.width and labeled.height > grid.height


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"cells": [[BLANK, BLANK], [BLANK]]}, "expected equal, non-empty rows"),
        ({"cells": [[BLANK, Image.new("L", (4, 4))]]}, "expected one"),
        ({"cells": [[BLANK]], "row_labels": ["a", "b"]}, "Got 2 row_labels for 1"),
        ({"cells": [[BLANK]], "captions": [["a", "b"]]}, "captions have row lengths \\[2\\]"),
        ({"cells": [[BLANK]], "scale": 0}, "scale is 0"),
    ],
)
def test_labeled_grid_refuses_bad_layouts(kwargs, message):
    with pytest.raises(ValueError, match=message):
        labeled_grid(**kwargs)


def test_forward_writes_one_column_per_noise_fraction(digit_folder, tmp_path, capsys):
    output = tmp_path / "figures" / "forward.png"
    argv = ["visualize", "forward", "--dataset", str(digit_folder), "--index", "3", "-o", str(output)]
    assert main(argv + ["--scale", str(SCALE)]) == 0
    figure = Image.open(output)
    expected = labeled_grid(
        [[Image.new("L", (28, 28))] * 11],
        column_labels=[f"{p}%\nt={10 * p - 1}" if p else "0%\nclean" for p in range(0, 101, 10)],
        title="noise added (share of the forward process)",
        scale=SCALE,
    )
    assert figure.size == expected.size and figure.mode == "L"
    assert "test[3]" in capsys.readouterr().out

    # The same from an image file, with the scheduler config of a saved pipeline.
    make_digit_dataset(num_samples=1)[0]["image"].save(tmp_path / "digit.png")
    from_image = tmp_path / "from_image.png"
    argv = ["visualize", "forward", "--image", str(tmp_path / "digit.png"), "-o", str(from_image), "--scale", "2"]
    assert main(argv + ["--model", str(tmp_path / "missing")]) == 2  # no scheduler config there
    make_tiny_pipeline().save_pretrained(tmp_path / "model")
    assert main(argv + ["--model", str(tmp_path / "model")]) == 0
    assert Image.open(from_image).size == expected.size


def test_forward_uses_the_shipped_test_digits_by_default(tmp_path, capsys):
    from mnist_diffusion.demo.test_digits import load_test_digits

    output = tmp_path / "forward.png"
    assert main(["visualize", "forward", "--index", "7", "-o", str(output), "--scale", "1"]) == 0
    assert "shipped MNIST test digit 7 (a 7)" in capsys.readouterr().out
    # the same figure as from that digit saved as an image file
    digits, _ = load_test_digits()
    Image.fromarray(((digits[7, 0] + 1) * 127.5).round().byte().numpy()).save(tmp_path / "seven.png")
    from_file = tmp_path / "from_file.png"
    argv = ["visualize", "forward", "--image", str(tmp_path / "seven.png"), "-o", str(from_file), "--scale", "1"]
    assert main(argv) == 0
    difference = np.asarray(Image.open(output), dtype=int) - np.asarray(Image.open(from_file), dtype=int)
    assert np.abs(difference).max() <= 1
    assert main(["visualize", "forward", "--index", "20", "-o", str(output)]) == 2
    assert "--index is 20; expected 0..19 (the shipped MNIST test digits" in capsys.readouterr().err


def test_forward_fails_at_once_when_the_hub_cannot_be_reached(tmp_path, capsys, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    output = tmp_path / "forward.png"
    assert main(["visualize", "forward", "--dataset", "ylecun/mnist", "-o", str(output)]) == 2
    error = capsys.readouterr().err
    assert "--dataset 'ylecun/mnist' is not a local folder and the Hub (http://127.0.0.1:9) cannot be reached" in error
    assert "leave out --dataset to use the real MNIST test digits shipped with the package" in error
    assert not output.exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--index", "8"], "--index is 8; expected 0..7"),
        (["--split", "train"], "Split 'train' not found"),
        (["--image", "missing.png"], "--image 'missing.png' is not a file"),
    ],
)
def test_forward_reports_bad_input(digit_folder, tmp_path, capsys, extra, message):
    output = tmp_path / "forward.png"
    assert main(["visualize", "forward", "--dataset", str(digit_folder), "-o", str(output), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not output.exists()


def test_denoise_writes_a_figure_and_one_gif_frame_per_step(saved_pipeline, tmp_path):
    output = tmp_path / "denoise.png"
    argv = ["visualize", "denoise", "a thick 7", "--class-label", "7", *sampling_args(saved_pipeline, output)]
    assert main(argv + ["--steps", "5", "--columns", "3", "--scheduler", "ddim"]) == 0
    figure = Image.open(output)
    expected = labeled_grid(
        [[BLANK] * 3] * 2,
        row_labels=["x_t", "predicted x_0"],
        column_labels=["step 1\nt=999", "step 3\nt=599", "step 5\nt=199"],
        title="a thick 7 + class 7",
        scale=SCALE,
    )
    assert figure.size == expected.size
    gif = Image.open(tmp_path / "denoise.gif")
    assert gif.n_frames == 5 and gif.info["loop"] == 0
    first = np.asarray(gif.convert("L"))
    gif.seek(4)
    last = np.asarray(gif.convert("L"))
    assert first.shape == last.shape and not np.array_equal(first, last)


def test_denoise_needs_a_prompt_or_a_class(saved_pipeline, tmp_path, capsys):
    assert main(["visualize", "denoise", *sampling_args(saved_pipeline, tmp_path / "d.png")]) == 2
    assert "Give a prompt, --class-label, or both" in capsys.readouterr().err


def test_style_prompts_are_training_phrasings():
    prompts = style_prompts("7")
    assert len(prompts) == 9 and prompts[("thin", "left-slanted")] == "a thin left-slanted seven"
    trained = {t for t in caption_templates("7", "label+style") if "{thickness}" in t and "{slant}" in t}
    assert len(style_prompts("7", sizes=True)) == 27 and len(trained) == 2


def test_styles_writes_a_thickness_by_slant_grid(saved_pipeline, tmp_path):
    output = tmp_path / "styles.png"
    assert main(["visualize", "styles", "7", "-n", "2", *sampling_args(saved_pipeline, output)]) == 0
    with_sizes = tmp_path / "sizes.png"
    assert main(["visualize", "styles", "7", "-n", "2", "--sizes", *sampling_args(saved_pipeline, with_sizes)]) == 0
    cell = Image.new("L", (2 * 8, 8))
    for path, prompts in ((output, style_prompts("7")), (with_sizes, style_prompts("7", sizes=True))):
        captions = list(prompts.values())
        expected = labeled_grid(
            [[cell] * 3 for _ in range(len(prompts) // 3)],
            row_labels=[" ".join(key[:-1]) for key in list(prompts)[::3]],
            column_labels=["left-slanted", "upright", "right-slanted"],
            captions=[captions[i : i + 3] for i in range(0, len(captions), 3)],
            title="class 7",
            scale=SCALE,
        )
        assert Image.open(path).size == expected.size


def test_styles_needs_a_text_encoder(tmp_path, capsys):
    make_tiny_pipeline(text=False).save_pretrained(tmp_path / "classes-only")
    assert main(["visualize", "styles", "7", *sampling_args(tmp_path / "classes-only", tmp_path / "s.png")]) == 2
    assert "has no text encoder" in capsys.readouterr().err


def test_classes_writes_a_row_per_class(saved_pipeline, tmp_path):
    output = tmp_path / "classes.png"
    assert main(["visualize", "classes", "-n", "3", *sampling_args(saved_pipeline, output)]) == 0
    expected = labeled_grid([[BLANK] * 3] * 10, row_labels=list(DIGIT_NAMES.values()), scale=SCALE)
    assert Image.open(output).size == expected.size
    assert main(["visualize", "classes", "-n", "0", *sampling_args(saved_pipeline, output)]) == 2


@pytest.fixture
def training_run(tmp_path):
    """A run folder like training/train.py's: two TensorBoard event files (a resumed run) and an eval history."""
    from torch.utils.tensorboard import SummaryWriter

    run = tmp_path / "run"
    for steps, offset in ((range(1, 5), 0.0), (range(3, 7), 10.0)):  # the second run repeats steps 3 and 4
        writer = SummaryWriter(run / "logs" / "mnist-diffusion")
        for step in steps:
            writer.add_scalar("train/loss", offset + 1 / step, step)
            writer.add_scalar("train/lr", 1e-3, step)
        writer.close()
    history = [{"step": 3, "conditional_accuracy": 0.5, "classifier_fid": 40.0, "per_class_accuracy": {"0": 0.5}}]
    history.append({"step": 6, "conditional_accuracy": 0.75, "classifier_fid": 20.0, "num_samples": 8})
    (run / "eval_history.jsonl").write_text("".join(json.dumps(entry) + "\n" for entry in history))
    return run


def test_read_training_curves_merges_event_files_and_the_eval_history(training_run):
    curves = read_training_curves(training_run)
    assert [step for step, _ in curves["train/loss"]] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose([v for _, v in curves["train/loss"]][2:4], [10 + 1 / 3, 10.25])  # the later run wins
    assert curves["eval/conditional_accuracy"] == [(3, 0.5), (6, 0.75)]
    assert curves["eval/classifier_fid"] == [(3, 40.0), (6, 20.0)]
    assert "eval/num_samples" not in curves and "eval/step" not in curves


def test_training_plots_one_panel_per_curve(training_run, tmp_path):
    output = tmp_path / "curves.png"
    assert main(["visualize", "training", "--run", str(training_run), "-o", str(output)]) == 0
    assert Image.open(output).size == (4 * 450, 350)
    (training_run / "eval_history.jsonl").unlink()
    assert plot_training_curves(read_training_curves(training_run)).get_size_inches()[0] == 2 * 4.5


def test_training_reports_runs_without_curves(tmp_path, capsys):
    assert main(["visualize", "training", "--run", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["visualize", "training", "--run", str(tmp_path)]) == 2
    assert "No curve to plot" in capsys.readouterr().err


def test_save_gif_holds_the_last_frame(tmp_path):
    path = save_gif([Image.new("L", (4, 4), v) for v in (0, 128, 255)], tmp_path / "fade.gif", duration=50)
    gif = Image.open(path)
    durations = []
    for i in range(gif.n_frames):
        gif.seek(i)
        durations.append(gif.info["duration"])
    assert durations == [50, 50, 1500]
    with pytest.raises(ValueError, match="Got no frames"):
        save_gif([], tmp_path / "empty.gif")
