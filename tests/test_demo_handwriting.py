"""The demo's "Your handwriting" tab without a browser: collecting digits, learning a style, redrawing it, the code."""

from __future__ import annotations

import dataclasses
import zipfile

import numpy as np
import pytest
import torch
from conftest import make_tiny_pipeline
from PIL import Image, ImageDraw

from mnist_diffusion import MnistDiffusionPipeline
from mnist_diffusion.training.lora import LoraRecipe

gradio = pytest.importorskip("gradio", reason="the demo's handlers need gradio: pip install -e '.[demo]'")

from mnist_diffusion.demo.handwriting import HandwritingHandlers  # noqa: E402

#: A few steps and one prior image per class: the tiny model learns in a second.
TINY_RECIPE = dataclasses.replace(LoraRecipe(), max_train_steps=4, num_class_images=1, train_batch_size=4)


def canvas(points: list[tuple[int, int]]) -> dict:
    """What the sketchpad sends for a white stroke through `points` on its black 280x280 canvas."""
    image = Image.new("RGBA", (280, 280), (0, 0, 0, 255))
    ImageDraw.Draw(image).line(points, fill=(255, 255, 255, 255), width=20)
    return {"composite": np.asarray(image), "background": None, "layers": []}


ONE = canvas([(140, 40), (145, 240)])
SEVEN = canvas([(70, 50), (210, 50), (120, 240)])


@pytest.fixture
def tab(tmp_path, single_thread):
    return HandwritingHandlers(make_tiny_pipeline(text=False), tmp_path / "downloads", recipe=TINY_RECIPE)


def test_drawings_and_uploads_are_collected_with_their_digits(tab, tmp_path):
    examples, gallery, status = tab.add_drawing([], ONE, "1")
    examples, gallery, status = tab.add_drawing(examples, SEVEN, "7")
    assert [label for _, label in examples] == [1, 7] and [caption for _, caption in gallery] == ["1", "7"]
    assert examples[0][0].size == (28, 28) and np.asarray(tab.blank_pad()).max() == 0
    # a dark pen on white paper, named by its digit
    upload = Image.new("L", (100, 100), 255)
    ImageDraw.Draw(upload).line([(20, 20), (80, 20), (40, 90)], fill=0, width=8)
    upload.save(tmp_path / "7_mine.png")
    examples, gallery, box, status = tab.add_uploads(examples, [str(tmp_path / "7_mine.png")])
    assert box is None and status == "3 digit(s) collected (1: 1, 7: 2)."
    uploaded = np.asarray(examples[2][0])
    assert uploaded[0, 0] == 0 and uploaded.max() == 255  # white ink on black, like the drawings
    assert tab.clear() == ([], [], "No digits yet.")


def test_bad_input_is_refused_with_one_line(tab, tmp_path):
    with pytest.raises(gradio.Error, match="pick which digit it shows"):
        tab.add_drawing([], ONE, None)
    with pytest.raises(gradio.Error, match="The drawing is blank"):
        tab.add_drawing([], canvas([]), "3")
    Image.new("L", (50, 50)).save(tmp_path / "mine.png")
    with pytest.raises(gradio.Error, match="The file 'mine.png' .name it like 3_a.png.: pick which digit"):
        tab.add_uploads([], [str(tmp_path / "mine.png")])
    Image.new("L", (50, 50)).save(tmp_path / "4_blank.png")
    with pytest.raises(gradio.Error, match="The image '4_blank.png' is blank"):
        tab.add_uploads([], [str(tmp_path / "4_blank.png")])
    (tmp_path / "5_text.png").write_text("not an image")
    with pytest.raises(gradio.Error, match="is not an image the demo can read"):
        tab.add_uploads([], [str(tmp_path / "5_text.png")])
    with pytest.raises(gradio.Error, match="You added 0 digit"):
        tab.learn([], 1.0)
    examples, *_ = tab.add_drawing([], ONE, "1")
    with pytest.raises(gradio.Error, match="You added 1 digit"):
        tab.learn(examples, 1.0)
    with pytest.raises(gradio.Error, match="Style strength is 3; expected a number from 0 to 1.5"):
        tab.restyle(None, 3)


def test_learn_my_style_trains_a_copy_and_redraws_at_any_strength(tab, tmp_path):
    base_weights = {name: p.clone() for name, p in tab.base.unet.state_dict().items()}
    examples, *_ = tab.add_drawing([], ONE, "1")
    examples, *_ = tab.add_drawing(examples, SEVEN, "7")
    steps = []
    style, grid, download, summary, code = tab.learn(examples, 1.0, progress=lambda *a, **k: steps.append(a[0]))
    assert steps[0] == 0 and (TINY_RECIPE.max_train_steps, TINY_RECIPE.max_train_steps) in steps and steps[-1] == 1
    assert summary.startswith("Learned from 2 digits of 2 class(es)") and "(4 steps)" in summary
    # the demo's shared model is untouched: no adapter, the same weights
    assert not getattr(tab.base.unet, "peft_config", None)
    assert all(torch.equal(p, base_weights[name]) for name, p in tab.base.unet.state_dict().items())
    assert grid.size == (560, 224)  # ten digits, five a row
    # the download: the adapter with its card and samples, and the digits as the model saw them
    with zipfile.ZipFile(download) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "unzipped")
    expected = {"pytorch_lora_weights.safetensors", "README.md", "samples.png"}
    assert {f"my-handwriting/{name}" for name in expected} <= names
    assert {"my-digits/1/00.png", "my-digits/7/01.png"} <= names
    fresh = make_tiny_pipeline(text=False)
    fresh.load_lora_weights(str(tmp_path / "unzipped" / "my-handwriting"))
    assert fresh.get_active_adapters()
    # the slider redraws without training; strength 0 is the base model
    stronger, _ = tab.restyle(style, 1.5)
    base, base_code = tab.restyle(style, 0)
    assert np.asarray(stronger).tobytes() != np.asarray(grid).tobytes()
    unstyled = tab.render(dataclasses.replace(style, pipe=tab.base), 1.0)
    assert np.abs(np.asarray(base, dtype=int) - np.asarray(unstyled, dtype=int)).max() <= 1
    assert '"scale": 0' in base_code and "max_train_steps=4" in code and "--max_train_steps 4" in code


def test_the_code_trains_on_the_downloaded_digits(tab, tmp_path, monkeypatch):
    model = tmp_path / "base"
    tab.base.save_pretrained(model)
    tab = HandwritingHandlers(MnistDiffusionPipeline.from_pretrained(model), tmp_path / "dl", str(model), TINY_RECIPE)
    examples, *_ = tab.add_drawing([], ONE, "1")
    examples, *_ = tab.add_drawing(examples, SEVEN, "7")
    _, _, download, _, code = tab.learn(examples, 0.5, progress=lambda *a, **k: None)
    with zipfile.ZipFile(download) as archive:
        archive.extractall(tmp_path / "run")
    monkeypatch.chdir(tmp_path / "run")
    namespace = {}
    exec(code, namespace)  # noqa: S102 - the tab's own snippet
    assert len(namespace["images"]) == 10 and (tmp_path / "run" / "my-handwriting").is_dir()
