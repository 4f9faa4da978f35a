"""Tests of the `mnist-diffusion img2img`, `inpaint` and `visualize interpolate` commands."""

import numpy as np
import PIL.Image
import pytest
from conftest import make_tiny_pipeline
from test_image_input import png_header

from mnist_diffusion.cli import main


@pytest.fixture
def files(tmp_path):
    make_tiny_pipeline().save_pretrained(tmp_path / "model")
    drawing = np.full((40, 40, 3), 255, dtype=np.uint8)  # a dark stroke on white paper, RGB, not 8x8
    drawing[5:35, 18:23] = 0
    PIL.Image.fromarray(drawing).save(tmp_path / "drawing.png")
    mask = np.zeros((40, 40), dtype=np.uint8)
    mask[:20] = 255
    PIL.Image.fromarray(mask).save(tmp_path / "mask.png")
    return tmp_path


def test_img2img_writes_its_file(files):
    output = files / "out" / "seven.png"
    argv = ["img2img", str(files / "drawing.png"), "a thick 7", "--model", str(files / "model"), "--steps", "3"]
    assert main(argv + ["--strength", "0.6", "-o", str(output)]) == 0
    image = PIL.Image.open(output)
    assert image.size == (8, 8) and image.mode == "L"
    assert main(argv + ["-n", "4", "--class-label", "7", "-o", str(files / "grid.png")]) == 0
    assert PIL.Image.open(files / "grid.png").size == (16, 16)


def test_inpaint_writes_its_file(files):
    output = files / "done.png"
    argv = ["inpaint", str(files / "drawing.png"), str(files / "mask.png"), "--class-label", "8"]
    assert main(argv + ["--model", str(files / "model"), "--steps", "4", "-o", str(output)]) == 0
    assert PIL.Image.open(output).size == (8, 8)


def test_visualize_interpolate_writes_its_file(files):
    output = files / "morph.png"
    argv = ["visualize", "interpolate", "a 3", "an 8", "--model", str(files / "model"), "--steps", "2"]
    assert main(argv + ["-n", "3", "-o", str(output)]) == 0
    assert output.is_file()
    argv = ["visualize", "interpolate", "--class-labels", "3", "8", "--model", str(files / "model"), "--steps", "2"]
    assert main(argv + ["--seeds", "0", "1", "-o", str(files / "classes.png")]) == 0


def test_errors_name_the_argument_and_nothing_is_overwritten(files, capsys):
    model = ["--model", str(files / "model"), "--steps", "2"]
    existing = files / "existing.png"
    PIL.Image.new("L", (3, 3), 7).save(existing)
    before = existing.read_bytes()
    broken = files / "broken.png"
    broken.write_bytes(b"not an image")
    small_mask = files / "small.png"
    PIL.Image.new("L", (10, 10), 255).save(small_mask)
    empty_mask = files / "empty.png"
    PIL.Image.new("L", (40, 40), 0).save(empty_mask)
    cases = [
        (["img2img", str(files / "drawing.png"), "a 7", "-o", str(existing)], "exists; pass --overwrite"),
        (["img2img", str(files / "drawing.png"), "a 7", "--strength", "1.5", "-o", str(files / "a.png")], "strength"),
        (["img2img", str(broken), "a 7", "-o", str(files / "b.png")], "is not a readable image file"),
        (["img2img", str(files / "drawing.png"), "a 7", "-o", str(files / "c.txt")], "has no image extension"),
        (["inpaint", str(files / "drawing.png"), str(small_mask), "-o", str(files / "d.png")], "mask_image` is 10x10"),
        (["inpaint", str(files / "drawing.png"), str(empty_mask), "-o", str(files / "e.png")], "marks nothing"),
        (["inpaint", str(files / "drawing.png"), str(files / "nope.png"), "-o", str(files / "f.png")], "mask '"),
    ]
    for argv, message in cases:
        assert main(argv + model) == 2, argv
        assert message in capsys.readouterr().err, argv
    assert existing.read_bytes() == before
    assert not any((files / name).exists() for name in ("a.png", "b.png", "c.txt", "d.png", "e.png", "f.png"))
    argv = ["img2img", str(files / "drawing.png"), "a 7", "-o", str(existing), "--overwrite"]
    assert main(argv + model) == 0 and existing.read_bytes() != before


def test_huge_images_and_work_are_refused_before_any_compute(files, capsys):
    bomb = png_header(files / "bomb.png", 20000, 20000)
    model = ["--model", str(files / "nonexistent-model")]  # each case is refused before the model is opened
    drawing, mask = str(files / "drawing.png"), str(files / "mask.png")
    cases = [
        (["img2img", str(bomb), "a 7"], f"image '{bomb}' is too large to decode"),
        (["inpaint", drawing, str(bomb)], f"mask '{bomb}' is too large to decode"),
        (["img2img", drawing, "a 7", "-n", "1000000"], "-n/--num-images is 1000000; expected 1 to 1000"),
        (["inpaint", drawing, mask, "-n", "1001"], "-n/--num-images is 1001; expected 1 to 1000"),
        (["inpaint", drawing, mask, "--jump-n-sample", "1000000", "--jump-length", "1"], "expected 1 to 20"),
        (["img2img", drawing, "a 7", "--seed", str(2**70)], f"--seed is {2**70}; expected an integer in 0.."),
        (["inpaint", drawing, mask, "--seed", "-1"], "--seed is -1"),
        (["img2img", drawing, "a 7", "-o", "/proc/x.png"], "-o/--output '/proc/x.png': cannot write in '/proc'"),
    ]
    for argv, message in cases:
        assert main(argv + model + ["-o", str(files / "out.png")] * ("-o" not in argv)) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, (argv, err)
    assert not (files / "out.png").exists()
