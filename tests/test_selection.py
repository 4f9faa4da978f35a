"""Tests of CLIP-guided best-of-N selection (`mnist_diffusion.selection`) and `mnist-diffusion generate --best-of`."""

from __future__ import annotations

import PIL.Image
import pytest
import torch
from conftest import make_tiny_pipeline

from mnist_diffusion.cli import main
from mnist_diffusion.clip_model import ClipScorer, build_clip_model, build_clip_processor
from mnist_diffusion.selection import select_best


@pytest.fixture(scope="module")
def scorer() -> ClipScorer:
    """A tiny random CLIP for the tiny pipeline's 8x8 images (seed 1: positive scores that differ between images)."""
    pipe = make_tiny_pipeline()
    torch.manual_seed(1)
    model = build_clip_model(
        pipe.tokenizer, image_size=8, patch_size=4, vision_hidden_size=32, vision_layers=1, text_hidden_size=32,
        text_layers=1, projection_dim=16,
    )  # fmt: skip
    return ClipScorer(model, build_clip_processor(pipe.tokenizer, image_size=8))


def test_select_best_keeps_the_top_scored_candidates_in_order(tiny_pipeline, scorer):
    kwargs = {"prompt": "a thick 7", "class_labels": "7", "num_inference_steps": 2}
    selection = select_best(
        tiny_pipeline, scorer, num_candidates=8, keep=3, generator=torch.Generator().manual_seed(0), **kwargs
    )
    generator = torch.Generator().manual_seed(0)
    direct = tiny_pipeline(num_images_per_prompt=8, generator=generator, output_type="pt", **kwargs)
    torch.testing.assert_close(selection.candidates, direct.images)
    torch.testing.assert_close(selection.candidate_scores, scorer.score(direct.images, ["a thick 7"] * 8))
    assert selection.images.shape == (3, 1, 8, 8) and selection.text == "a thick 7"
    assert torch.equal(selection.scores, selection.candidate_scores.sort(descending=True).values[:3])
    torch.testing.assert_close(selection.images, selection.candidates[selection.indices])
    random_pick = torch.randperm(8, generator=torch.Generator().manual_seed(1))[:3]
    assert selection.scores.mean() > selection.candidate_scores[random_pick].mean()
    assert selection.scores.mean() > selection.candidate_scores.mean()


def test_a_class_label_alone_is_scored_against_its_caption(tiny_pipeline, scorer):
    selection = select_best(tiny_pipeline, scorer, class_labels=7, num_candidates=2, keep=1, num_inference_steps=1)
    assert selection.text == "a handwritten seven" and selection.images.shape == (1, 1, 8, 8)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_candidates": 3, "keep": 4}, r"keep is 4; expected an int in 1..num_candidates \(3\)"),
        ({"keep": 0}, "keep is 0"),
        ({"num_candidates": 0}, "num_candidates is 0"),
        ({"prompt": ["a 1", "a 2"]}, r"prompt is \['a 1', 'a 2'\]; expected a single prompt"),
        ({"output_type": "pil"}, "`output_type` is set by select_best"),
        ({"prompt": None}, "Give a `prompt`, `class_labels`, or both"),
    ],
)
def test_select_best_refuses_bad_arguments(tiny_pipeline, scorer, kwargs, message):
    with pytest.raises(ValueError, match=message):
        select_best(tiny_pipeline, scorer, **{"prompt": "a 1", **kwargs})


def test_generate_best_of_keeps_k_of_n(scorer, tmp_path, capsys):
    make_tiny_pipeline().save_pretrained(tmp_path / "model")
    scorer.save_pretrained(tmp_path / "clip")
    output = tmp_path / "best.png"
    argv = ["generate", "a thick 7", "--model", str(tmp_path / "model"), "-o", str(output), "--steps", "2"]
    clip = ["--clip-model", str(tmp_path / "clip")]
    # `--best-of 10 --keep 3` keeps 3 of 10 candidates: a grid of 3 images, as the README says.
    assert main(argv + ["--best-of", "10", "--keep", "3", *clip]) == 0
    assert "Kept 3 of 10 candidates" in capsys.readouterr().out
    grid = PIL.Image.open(output)
    assert grid.size == (2 * 8, 2 * 8) and grid.mode == "L"
    assert grid.crop((8, 8, 16, 16)).getextrema() == (0, 0)  # the fourth cell is left black
    assert main(argv + ["--best-of", "4", *clip]) == 0  # --keep defaults to 1
    assert "Kept 1 of 4 candidates" in capsys.readouterr().out
    assert PIL.Image.open(output).size == (8, 8)
    assert main(argv + ["--best-of", "4", "-n", "5"]) == 2
    assert "-n/--num-images 5 does not apply with --best-of 4" in capsys.readouterr().err
    assert main(argv + ["--best-of", "2", "--keep", "3"]) == 2
    assert "--best-of 2 --keep 3; expected 1 <= keep <= best-of" in capsys.readouterr().err
    assert main(argv + ["--best-of", "2", "--keep", "0"]) == 2
    assert "--best-of 2 --keep 0; expected 1 <= keep <= best-of" in capsys.readouterr().err
    assert main(argv + ["--keep", "2"]) == 2
    assert "--keep and --clip-model only apply with --best-of N" in capsys.readouterr().err
