"""Tests of the MNIST-CLIP (`mnist_diffusion.clip_model`) and its training script `training/train_clip.py`."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import load_training_script, make_digit_dataset
from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

from mnist_diffusion.captions import build_captions, caption_templates
from mnist_diffusion.clip_model import ClipScorer, build_clip_config, build_clip_model, build_clip_processor
from mnist_diffusion.data import prepare_training_data
from mnist_diffusion.text_encoding import build_caption_tokenizer
from mnist_diffusion.training.text_to_image import load_text_encoder

TINY_SIZES = {"vision_hidden_size": 32, "vision_layers": 1, "text_hidden_size": 32, "text_layers": 1}
train_clip = load_training_script("train_clip")


def make_tiny_scorer() -> ClipScorer:
    torch.manual_seed(0)
    tokenizer = build_caption_tokenizer()
    return ClipScorer(build_clip_model(tokenizer, projection_dim=16, **TINY_SIZES), build_clip_processor(tokenizer))


@pytest.fixture(scope="module")
def bars():
    """The synthetic bar "digits" of `make_digit_dataset` (4 classes) as floats in [0, 1], with their labels."""
    data = prepare_training_data(make_digit_dataset(64))
    return data.images.float() / 255, data.labels, data.label_names


@pytest.fixture(scope="module")
def trained_scorer(bars) -> ClipScorer:
    """A tiny CLIP trained for 60 contrastive steps on the bars, with fresh random label captions each step."""
    images, labels, label_names = bars
    scorer = make_tiny_scorer()
    tokenizer = scorer.processor.tokenizer
    optimizer = torch.optim.AdamW(scorer.model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    scorer.model.train()
    for _ in range(60):
        indices = torch.randperm(len(labels), generator=generator)[:32]
        phrasings = torch.randint(0, 4, (32,), generator=generator)
        texts = build_captions(label_names, labels[indices], "label", phrasings)
        tokens = tokenizer(texts, padding="max_length", return_tensors="pt")
        loss = scorer.model(**tokens, pixel_values=scorer.preprocess(images[indices]), return_loss=True).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    scorer.model.eval()
    return scorer


def test_config_is_sized_by_the_tokenizer():
    tokenizer = build_caption_tokenizer()
    config = build_clip_config(tokenizer)
    assert config.text_config.vocab_size == len(tokenizer)
    assert config.text_config.max_position_embeddings == 16
    assert (config.text_config.eos_token_id, config.text_config.pad_token_id) == (
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
    )
    assert (config.vision_config.image_size, config.vision_config.num_channels) == (28, 1)
    with pytest.raises(ValueError, match="image_size is 30; expected a multiple of patch_size 7"):
        build_clip_config(tokenizer, image_size=30)


def test_score_is_100_times_the_clamped_cosine_of_the_model_embeddings(bars):
    scorer = make_tiny_scorer()
    images = bars[0][:6]
    prompts = ["a handwritten 1", "seven", "a thick 3", "a", "two", "a thin left-slanted 0"]
    scores = scorer.score(images, prompts)
    assert scores.shape == (6,) and ((scores >= 0) & (scores <= 100)).all()
    tokens = scorer.processor.tokenizer(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        output = scorer.model(**tokens, pixel_values=images * 2 - 1)
    cosine = (output.image_embeds * output.text_embeds).sum(dim=-1)
    torch.testing.assert_close(scores, 100 * cosine.clamp(min=0))
    similarity = scorer.image_text_similarity(images, prompts)
    assert similarity.shape == (6, 6)
    torch.testing.assert_close(100 * similarity.diagonal().clamp(min=0), scores)


def test_trained_clip_scores_matching_captions_above_shuffled_ones(bars, trained_scorer):
    images, labels, label_names = bars
    matching = [f"a handwritten {label_names[label]}" for label in labels.tolist()]
    shuffled = [f"a handwritten {label_names[(label + 1) % 4]}" for label in labels.tolist()]
    assert trained_scorer.score(images, matching).mean() > trained_scorer.score(images, shuffled).mean() + 30
    prompts = [caption_templates(name, "label") for name in label_names]
    assert (trained_scorer.classify(images, prompts) == labels).float().mean() > 0.9


def test_save_and_load_give_identical_scores(bars, trained_scorer, tmp_path):
    trained_scorer.save_pretrained(tmp_path / "clip")
    assert (tmp_path / "clip" / "model.safetensors").is_file()
    loaded = ClipScorer.from_pretrained(tmp_path / "clip")
    assert isinstance(loaded.processor.image_processor, CLIPImageProcessorPil)
    assert loaded.processor.image_processor.do_resize is False
    images, prompts = bars[0][:8], ["a handwritten 2"] * 8
    assert torch.equal(loaded.score(images, prompts), trained_scorer.score(images, prompts))


def test_bad_input_raises_errors_naming_the_value(bars, tmp_path):
    scorer = make_tiny_scorer()
    images = bars[0][:3]
    with pytest.raises(ValueError, match="Got 2 prompts for 3 images"):
        scorer.score(images, ["a 1", "a 2"])
    with pytest.raises(ValueError, match="Got a string for 3 images"):
        scorer.score(images, "a 1")
    with pytest.raises(ValueError, match=r"values in \[-1, 1\]; expected \[0, 1\]"):
        scorer.score(images * 2 - 1, ["a 1"] * 3)
    with pytest.raises(ValueError, match=r"Images are \(3, 28, 28\); expected a float tensor"):
        scorer.score(images[:, 0], ["a 1"] * 3)
    with pytest.raises(ValueError, match="Images have 3 channels; expected 1"):
        scorer.score(images.expand(-1, 3, -1, -1), ["a 1"] * 3)
    with pytest.raises(ValueError, match="expected a non-empty list of lists of prompts"):
        scorer.classify(images, ["a 1", "a 2"])
    with pytest.raises(OSError, match="missing-clip"):
        ClipScorer.from_pretrained(tmp_path / "missing-clip")


def test_grayscale_images_are_converted_for_an_rgb_224_clip(bars):
    """An OpenAI-style CLIP (3 channels, 224 px, its default processor) scores 28x28 grayscale images."""
    tokenizer = build_caption_tokenizer()
    config = CLIPConfig(
        text_config={**build_clip_config(tokenizer).text_config.to_dict(), "hidden_size": 32, "num_hidden_layers": 1},
        vision_config={"image_size": 224, "patch_size": 32, "hidden_size": 32, "intermediate_size": 64,
                       "num_hidden_layers": 1, "num_attention_heads": 2},
        projection_dim=16,
    )  # fmt: skip
    torch.manual_seed(0)
    processor = CLIPProcessor(image_processor=CLIPImageProcessorPil(), tokenizer=tokenizer)
    scorer = ClipScorer(CLIPModel(config), processor)
    assert scorer.preprocess(bars[0][:2]).shape == (2, 3, 224, 224)
    scores = scorer.score(bars[0][:2], ["a 1", "a 2"])
    assert scores.shape == (2,) and torch.isfinite(scores).all()


def test_a_clip_folder_serves_as_the_diffusion_text_encoder(trained_scorer, tmp_path):
    trained_scorer.save_pretrained(tmp_path / "clip")
    tokenizer, text_encoder = load_text_encoder(str(tmp_path / "clip"))
    tokens = tokenizer(["a thick 3"], padding="max_length", return_tensors="pt")
    with torch.no_grad():
        expected = trained_scorer.model.text_model(**tokens).last_hidden_state
        torch.testing.assert_close(text_encoder(**tokens).last_hidden_state, expected)
    assert text_encoder.config.hidden_size == 32 and tokenizer.model_max_length == 16


def test_train_clip_runs_end_to_end_and_protects_foreign_folders(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    make_digit_dataset(64).to_parquet(str(folder / "train-00000-of-00001.parquet"))
    make_digit_dataset(32, seed=1).to_parquet(str(folder / "test-00000-of-00001.parquet"))
    output = tmp_path / "clip"
    argv = ["--dataset_name", str(folder), "--output_dir", str(output), "--num_epochs", "2"]
    results = train_clip.main(train_clip.parse_args(argv + ["--train_batch_size", "32"]))
    assert len(results["eval_zero_shot_accuracy_per_epoch"]) == 2
    assert 0 <= results["eval_zero_shot_accuracy"] <= 1
    assert json.loads((output / "eval_results.json").read_text())["eval_samples"] == 32
    scorer = ClipScorer.from_pretrained(output)
    assert scorer.processor.tokenizer.tokenize("a thick seven") == ["a</w>", "thick</w>", "seven</w>"]

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty and holds no CLIP"):
        train_clip.main(train_clip.parse_args(["--dataset_name", str(folder), "--output_dir", str(foreign)]))
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    with pytest.raises(ValueError, match="--caption_mode is 'style'"):
        train_clip.parse_args(["--caption_mode", "style"])
