"""Tests of mnist_diffusion.image_input: what images and masks are accepted, how they are read, what is refused."""

import struct
import zlib

import numpy as np
import PIL.Image
import pytest
import torch

from mnist_diffusion.image_input import MAX_IMAGE_PIXELS, load_image_file, load_images, prepare_image, prepare_mask


def png_header(path, width, height):
    """A PNG file that announces `width` x `height` gray pixels but holds almost no data (a decompression bomb)."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )
    return path


def stroke(dtype=np.uint8, peak=255):
    array = np.zeros((28, 28), dtype=dtype)
    array[4:24, 12:16] = peak
    return array


@pytest.mark.parametrize("side", [5000, 20000])
def test_huge_image_files_are_refused_before_decoding(tmp_path, side):
    path = png_header(tmp_path / "bomb.png", side, side)
    with pytest.raises(ValueError, match=rf"mask '.*bomb.png'.*expected at most {MAX_IMAGE_PIXELS} pixels"):
        load_image_file(path, "mask")


def test_huge_arrays_and_images_are_refused_before_conversion():
    with pytest.raises(ValueError, match=f"`image` has 5000x4000 pixels; expected at most {MAX_IMAGE_PIXELS}"):
        load_images(np.zeros((4000, 5000), dtype=np.uint8), "image")
    with pytest.raises(ValueError, match="`image` has 2 images of 4096x4096 pixels"):
        load_images(torch.zeros(2, 1, 4096, 4096, dtype=torch.uint8), "image")
    with pytest.raises(ValueError, match="`mask_image` has 5000x5000 pixels"):
        load_images(PIL.Image.new("L", (5000, 5000)), "mask_image")
    with pytest.raises(ValueError, match="`image` has 2 images of 3000x3000 pixels"):
        load_images([np.zeros((3000, 3000), dtype=np.uint8)] * 2, "image")


@pytest.mark.parametrize("mode", ["I;16", "F"])
def test_16_bit_and_float_images_are_scaled_not_clipped(tmp_path, mode):
    eight_bit = stroke()
    if mode == "I;16":
        image = PIL.Image.fromarray(stroke(np.uint16, 65535))
        image.save(tmp_path / "deep.png")
        assert PIL.Image.open(tmp_path / "deep.png").mode == "I;16"
        forms = [image, str(tmp_path / "deep.png"), stroke(np.uint16, 65535)]
    else:
        forms = [PIL.Image.fromarray(stroke(np.float32, 1.0))]
    for form in forms:
        assert image_mode_of(form) in (mode, None)
        assert torch.equal(prepare_image(form, 28, 28), prepare_image(eight_bit, 28, 28))
        assert torch.equal(prepare_mask(form, 28, 28), prepare_mask(eight_bit, 28, 28))
        assert 0 < prepare_mask(form, 28, 28).mean() < 0.2  # the stroke, not everything


def image_mode_of(form):
    return form.mode if isinstance(form, PIL.Image.Image) else None


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((28, 28, 5), dtype=np.uint8), r"`image` has shape \(28, 28, 5\); expected a channels-last"),
        (np.zeros((3, 28, 28), dtype=np.uint8), r"a batch of gray images is \(B, H, W, 1\)"),
        (np.zeros((8, 8), dtype=np.complex64), "`image` has dtype complex64; expected real pixel values"),
        (torch.zeros(8, 8, dtype=torch.complex64), "`image` has dtype torch.complex64"),
        (np.array([["a"]]), "`image` has dtype <U1"),
        (np.zeros((0, 0)), r"`image` is empty \(0x0 pixels\)"),
        (torch.zeros(0, 8), r"`image` is empty \(8x0 pixels\)"),
        (np.zeros((2, 0, 8, 1)), r"`image` is empty \(8x0 pixels, 2 images\)"),
        (torch.zeros(5, 8, 8), r"`image` has shape \(5, 8, 8\); expected a channels-first"),
    ],
)
def test_ambiguous_empty_and_complex_arrays_are_refused(image, message):
    with pytest.raises(ValueError, match=message):
        prepare_image(image, 8, 8)


def test_a_batch_of_gray_numpy_images_is_channels_last():
    batch = np.stack([stroke(), 255 - stroke()])[..., None]
    images = prepare_image(batch, 28, 28, invert=False)
    assert images.shape == (2, 1, 28, 28)
    assert torch.equal(images[1], -images[0])
