"""Tests of the style measurements and generated captions."""

from __future__ import annotations

import pytest
import torch

from mnist_diffusion import build_caption_tokenizer
from mnist_diffusion.captions import (
    TrainingCaptioner,
    build_captions,
    caption_templates,
    conditioning_dropout,
    label_word,
    measure_style,
)


def bar(width: int, shift: float = 0.0, height: int = 20, size: int = 28) -> torch.Tensor:
    """A vertical bar `width` pixels wide whose top is shifted right by `shift * height` pixels."""
    image = torch.zeros(size, size, dtype=torch.uint8)
    top = (size - height) // 2
    for row in range(top, top + height):
        offset = round(shift * (top + height - 1 - row))
        left = size // 2 - width // 2 + offset - round(shift * height / 2)
        image[row, left : left + width] = 255
    return image


def test_thickness_slant_and_size_are_measured_and_named():
    images = torch.stack([bar(1), bar(4), bar(2, shift=0.5), bar(2, shift=-0.5), bar(2, height=8)])
    style = measure_style(images.unsqueeze(1))
    assert style.thickness[0] < 1.75 < 2.2 < style.thickness[1]
    assert style.slant[2] > 0.24 and style.slant[3] < -0.02 and abs(style.slant[0]) < 1e-6
    words = style.words()
    assert words[0][0] == "thin" and words[1][0] == "thick"
    assert [w[1] for w in words[:4]] == ["upright", "upright", "right-slanted", "left-slanted"]
    assert words[4][2] == "small"


def test_measurements_are_resolution_independent_and_accept_floats():
    small = measure_style(bar(4).unsqueeze(0))
    large = torch.nn.functional.interpolate(bar(4)[None, None].float() / 255, scale_factor=2, mode="nearest")
    assert measure_style(large).words() == small.words()
    torch.testing.assert_close(measure_style(large).thickness, small.thickness, atol=0.2, rtol=0)
    empty = measure_style(torch.zeros(1, 28, 28))
    assert empty.thickness.item() == empty.slant.item() == empty.size.item() == 0
    with pytest.raises(ValueError, match="single-channel"):
        measure_style(torch.zeros(1, 3, 28, 28))


def test_captions_use_labels_phrasings_and_style():
    assert label_word("7") == "seven" and label_word("Ankle boot") == "ankle boot"
    assert caption_templates("7", "label") == ["7", "seven", "a handwritten 7", "a handwritten seven"]
    labels, words = torch.tensor([7, 7, 3]), [("thick", "right-slanted", "large")] * 3
    captions = build_captions([str(i) for i in range(10)], labels, "label+style", torch.tensor([0, 4, 8]), words)
    assert captions == ["7", "a thick right-slanted seven", "a large thick right-slanted 3"]
    fashion = build_captions(["Sneaker"], torch.tensor([0]), "label", torch.tensor([2]))
    assert fashion == ["a picture of a sneaker"]
    with pytest.raises(ValueError, match="Unknown caption mode 'poetry'"):
        caption_templates("7", "poetry")


def test_every_generated_caption_fits_the_tokenizer_and_uses_its_vocabulary():
    tokenizer = build_caption_tokenizer()
    for name in [str(i) for i in range(10)] + ["Sneaker", "Ankle boot", "T - shirt / top"]:
        for template in caption_templates(name, "label+style"):
            caption = template.format(thickness="regular", slant="left-slanted", size="medium")
            tokens = tokenizer(caption, truncation=False).input_ids
            assert len(tokens) <= tokenizer.model_max_length, caption


def test_slant_synonyms_teach_plain_slanted_and_straight():
    labels, words = (
        torch.tensor([7, 7, 7, 7]),
        [("thick", "right-slanted", "large")] * 2 + [("thin", "upright", "small")] * 2,
    )
    captions = build_captions([str(i) for i in range(10)], labels, "label+style", torch.tensor([4, 13, 4, 13]), words)
    assert captions == [
        "a thick right-slanted seven",
        "a thick slanted seven",
        "a thin upright seven",
        "a thin straight seven",
    ]
    left = build_captions(
        [str(i) for i in range(10)],
        torch.tensor([1]),
        "label+style",
        torch.tensor([13]),
        [("thin", "left-slanted", "small")],
    )
    assert left == ["a thin left-slanted one"]


def test_conditioning_dropout_rates_and_overlap():
    torch.manual_seed(0)
    drop_prompt, drop_class = conditioning_dropout(20_000, 0.1, 0.3)
    both = (drop_prompt & drop_class).float().mean().item()
    prompt_only = (drop_prompt & ~drop_class).float().mean().item()
    class_only = (~drop_prompt & drop_class).float().mean().item()
    assert abs(both - 0.1) < 0.01 and abs(prompt_only - 0.1) < 0.01 and abs(class_only - 0.3) < 0.01
    with pytest.raises(ValueError, match="class_dropout_prob 0.9"):
        conditioning_dropout(4, 0.1, 0.9)


def test_training_captioner_builds_drops_and_tokenizes():
    tokenizer = build_caption_tokenizer()
    names = [str(i) for i in range(10)]
    labels, indices = torch.arange(10).repeat(50), torch.arange(500)
    words = [("thick", "right-slanted", "large")] * 500
    torch.manual_seed(0)
    conditioning = TrainingCaptioner(tokenizer, names, style_words=words)(labels, indices)
    assert conditioning.input_ids.shape == conditioning.attention_mask.shape == (500, tokenizer.model_max_length)
    dropped_class = conditioning.class_labels == 10
    kept = ~dropped_class
    assert torch.equal(conditioning.class_labels[kept], labels[kept])
    empty = torch.tensor([prompt == "" for prompt in conditioning.prompts])
    assert 0.1 < empty.float().mean() < 0.3 and 0.3 < dropped_class.float().mean() < 0.5
    assert any("thick" in prompt for prompt in conditioning.prompts)
    # the empty prompt tokenizes to start and end tokens only
    assert (conditioning.attention_mask[empty].sum(dim=1) == 2).all()


def test_training_captioner_uses_a_caption_column_and_checks_its_inputs():
    tokenizer = build_caption_tokenizer()
    captioner = TrainingCaptioner(
        tokenizer, ["0", "1"], captions=["a zero", "a one", "another one"], cond_dropout_prob=0, class_dropout_prob=0
    )
    conditioning = captioner(torch.tensor([1, 0]), torch.tensor([2, 0]))
    assert conditioning.prompts == ["another one", "a zero"]
    assert conditioning.class_labels.tolist() == [1, 0]
    with pytest.raises(ValueError, match="needs `style_words`"):
        TrainingCaptioner(tokenizer, ["0", "1"], caption_mode="label+style")
    with pytest.raises(ValueError, match="Unknown caption mode 'poetry'"):
        TrainingCaptioner(tokenizer, ["0", "1"], caption_mode="poetry")
