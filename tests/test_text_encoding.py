"""Tests of the offline word-level CLIP tokenizer and text encoder builders."""

import pytest
import torch
from transformers import CLIPTextModel, CLIPTokenizer

from mnist_diffusion import build_caption_tokenizer, build_text_encoder
from mnist_diffusion.text_encoding import CAPTION_VOCABULARY


def test_every_vocabulary_word_is_one_token():
    tokenizer = build_caption_tokenizer()
    split = {word: tokenizer.tokenize(word) for word in CAPTION_VOCABULARY if len(tokenizer.tokenize(word)) != 1}
    assert split == {}
    assert tokenizer.tokenize("A Thick slanted SEVEN") == ["a</w>", "thick</w>", "slanted</w>", "seven</w>"]


def test_digits_punctuation_and_unknown_words_still_tokenize():
    tokenizer = build_caption_tokenizer()
    assert tokenizer.tokenize("digit 7") == ["digit</w>", "7</w>"]
    assert tokenizer.tokenize("T-shirt/top") == ["t</w>", "-</w>", "shirt</w>", "/</w>", "top</w>"]
    assert "".join(tokenizer.tokenize("zebra")).replace("</w>", "") == "zebra"
    assert tokenizer.unk_token_id not in tokenizer("zebra 42!").input_ids[1:-1]


def test_padding_truncation_and_special_tokens():
    tokenizer = build_caption_tokenizer(model_max_length=8)
    encoded = tokenizer(["seven", " ".join(["thick"] * 20)], padding="max_length", truncation=True)
    assert [len(ids) for ids in encoded.input_ids] == [8, 8]
    assert encoded.input_ids[0][0] == tokenizer.bos_token_id and encoded.input_ids[0][2] == tokenizer.eos_token_id
    assert encoded.attention_mask[0] == [1, 1, 1, 0, 0, 0, 0, 0]


def test_custom_vocabulary_with_overlapping_words():
    words = ["abc", "bcd", "cde", "abcde", "bcdef", "three", "regular"]
    tokenizer = build_caption_tokenizer(words)
    assert all(len(tokenizer.tokenize(word)) == 1 for word in words)
    with pytest.raises(ValueError, match="'t-shirt'"):
        build_caption_tokenizer(["t-shirt"])
    with pytest.raises(ValueError, match="empty"):
        build_caption_tokenizer([])


def test_tokenizer_and_text_encoder_round_trip(tmp_path):
    tokenizer = build_caption_tokenizer()
    torch.manual_seed(0)
    text_encoder = build_text_encoder(tokenizer, hidden_size=32, intermediate_size=64)
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    text_encoder.save_pretrained(tmp_path / "text_encoder")
    tokenizer2 = CLIPTokenizer.from_pretrained(tmp_path / "tokenizer")
    text_encoder2 = CLIPTextModel.from_pretrained(tmp_path / "text_encoder")
    inputs = tokenizer(["a thick slanted seven"], padding="max_length", return_tensors="pt")
    assert tokenizer2("a thick slanted seven").input_ids == tokenizer("a thick slanted seven").input_ids
    assert tokenizer2.model_max_length == 16
    with torch.no_grad():
        a = text_encoder(**inputs).last_hidden_state
        b = text_encoder2(**inputs).last_hidden_state
    assert a.shape == (1, 16, 32) and torch.equal(a, b)
