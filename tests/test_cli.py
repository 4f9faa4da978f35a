"""Tests of the `mnist-diffusion` command line."""

import subprocess
import sys

import PIL.Image
import pytest
from conftest import make_tiny_pipeline

from mnist_diffusion.cli import main
from mnist_diffusion.commands.loading import open_pipeline
from mnist_diffusion.image_grid import image_grid


@pytest.fixture
def saved_pipeline(tmp_path):
    make_tiny_pipeline().save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def test_generate_writes_a_grid(saved_pipeline, tmp_path):
    output = tmp_path / "out" / "sevens.png"
    argv = ["generate", "a thick 7", "--model", str(saved_pipeline), "-n", "5", "-o", str(output), "--steps", "2"]
    assert main(argv + ["--class-label", "7", "--scheduler", "dpm", "--seed", "1"]) == 0
    grid = PIL.Image.open(output)
    assert grid.size == (3 * 8, 2 * 8) and grid.mode == "L"
    assert grid.crop((2 * 8, 8, 3 * 8, 2 * 8)).getextrema() == (0, 0)  # the sixth cell is left black


def test_generate_guidance_interval(saved_pipeline, tmp_path, capsys):
    def argv(*options):
        output = tmp_path / f"grid{len(list(tmp_path.glob('grid*.png')))}.png"
        command = ["generate", "a 3", "--model", str(saved_pipeline), "-n", "2", "-o", str(output), "--steps", "4"]
        return command + ["--class-label", "3", *options], output

    def grid(*options):
        command, output = argv(*options)
        assert main(command) == 0
        return PIL.Image.open(output).tobytes()

    guided, unguided = grid("--guidance-scale", "5"), grid("--guidance-scale", "1")
    assert guided != unguided
    # No step inside the interval: the same images as without guidance.
    assert grid("--guidance-scale", "5", "--guidance-start", "1.0") == unguided
    assert grid("--guidance-scale", "5", "--guidance-start", "0.5") not in (guided, unguided)
    command, output = argv("--guidance-start", "0.8", "--guidance-stop", "0.2")
    assert main(command) == 2
    assert "`guidance_start` is 0.8 and `guidance_stop` is 0.2" in capsys.readouterr().err
    assert not output.exists()


def test_image_grid_refuses_more_images_than_cells():
    with pytest.raises(ValueError, match="Got 7 images for a 2x3 grid"):
        image_grid([PIL.Image.new("L", (8, 8))] * 7, rows=2, cols=3)


def test_open_pipeline_swaps_the_scheduler(saved_pipeline):
    assert type(open_pipeline(str(saved_pipeline), "ddim").scheduler).__name__ == "DDIMScheduler"
    with pytest.raises(ValueError, match="Unknown scheduler 'euler'"):
        open_pipeline(str(saved_pipeline), "euler")


def test_console_script_reports_bad_input(saved_pipeline, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnist_diffusion.cli",
            "generate",
            "--model",
            str(saved_pipeline),
            "--class-label",
            "12",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "Class label 12 is out of range" in result.stderr
    assert not (tmp_path / "samples.png").exists()


def test_generate_uses_the_shipped_release_model_by_default(tmp_path):
    output = tmp_path / "sevens.png"
    assert main(["generate", "a thick slanted 7", "-n", "2", "-o", str(output), "--steps", "2"]) == 0
    assert PIL.Image.open(output).size == (2 * 28, 28)
    pipe = open_pipeline()
    assert pipe.num_classes == 10 and pipe.text_encoder is not None
