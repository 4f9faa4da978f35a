"""A word-level CLIP tokenizer and a small CLIP text encoder for MNIST-style captions, built offline in code."""

from __future__ import annotations

import string
from collections.abc import Iterable

from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
END_OF_WORD = "</w>"

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
FASHION_WORDS = (
    "t", "shirt", "top", "trouser", "trousers", "pullover", "dress", "coat", "sandal", "sneaker", "bag", "ankle",
    "boot", "tshirt", "jacket", "shoe", "pants",
)  # fmt: skip
STYLE_WORDS = (
    "thin", "regular", "thick", "bold", "light", "heavy", "fine", "slanted", "slant", "tilted", "italic", "left",
    "right", "upright", "straight", "leaning", "small", "medium", "large", "big", "tiny", "wide", "narrow", "tall",
    "short", "stroke", "strokes", "neat", "messy",
)  # fmt: skip
FILLER_WORDS = (
    "a", "an", "the", "of", "with", "and", "in", "digit", "number", "numeral", "handwritten", "written", "hand",
    "drawn", "image", "photo", "picture", "drawing", "sketch", "black", "white", "grayscale", "clothing", "item",
    "fashion", "style",
)  # fmt: skip

#: Words that tokenize to a single token with [`build_caption_tokenizer`]'s default vocabulary.
CAPTION_VOCABULARY: tuple[str, ...] = DIGIT_WORDS + FASHION_WORDS + STYLE_WORDS + FILLER_WORDS

# Characters that get their own token, alone and at the end of a word, so any text can be tokenized.
_BASE_CHARACTERS = string.ascii_lowercase + string.digits + string.punctuation
_MAX_MERGE_PASSES = 8


def build_caption_tokenizer(
    vocabulary: Iterable[str] = CAPTION_VOCABULARY, model_max_length: int = 16
) -> CLIPTokenizer:
    r"""
    Build a [`~transformers.CLIPTokenizer`] whose vocabulary holds each word of `vocabulary` as one token.

    The tokenizer is an ordinary CLIP BPE tokenizer (same normalisation, pre-tokenization and special tokens as
    OpenAI's), constructed in memory from `vocab=` and `merges=`: single characters (alone and word-final) plus, for
    each vocabulary word, a chain of merges that joins its pieces left to right. Words outside the vocabulary still
    tokenize, as several tokens. Nothing is downloaded; it round-trips with `save_pretrained`/`from_pretrained`.

    Args:
        vocabulary (`Iterable[str]`): Lower-case words to keep whole (letters and digits only).
        model_max_length (`int`, defaults to 16): Tokens per caption, start and end tokens included.

    Example:

    ```py
    >>> from mnist_diffusion.text_encoding import build_caption_tokenizer

    >>> tokenizer = build_caption_tokenizer()
    >>> tokenizer.tokenize("a thick slanted seven")
    ['a</w>', 'thick</w>', 'slanted</w>', 'seven</w>']
    >>> len(tokenizer("digit 7", padding="max_length").input_ids)
    16
    ```
    """
    words = sorted({w.lower() for w in vocabulary})
    if not words:
        raise ValueError("The vocabulary is empty; expected at least one word.")
    for word in words:
        if not word.isalnum() or not word.isascii():
            raise ValueError(f"Vocabulary word {word!r} must be lower-case ASCII letters and digits only.")
    tokens = [char + suffix for char in _BASE_CHARACTERS for suffix in ("", END_OF_WORD)]
    merges: list[tuple[str, str]] = []
    pending = {word: list(word[:-1]) + [word[-1] + END_OF_WORD] for word in words}
    # Each pass adds, for every word not yet a single token, merges that join its current pieces left to right.
    # A merge chain of one word can split another (BPE applies the lowest-ranked merge first), so repeat on the
    # words that still come out in pieces (the default vocabulary needs two passes).
    for _ in range(_MAX_MERGE_PASSES):
        for pieces in pending.values():
            prefix = pieces[0]
            for piece in pieces[1:]:
                merge, prefix = (prefix, piece), prefix + piece
                if merge not in merges:
                    merges.append(merge)
                    tokens.append(prefix)
        tokenizer = CLIPTokenizer(
            vocab={token: i for i, token in enumerate(dict.fromkeys(tokens + [BOS_TOKEN, EOS_TOKEN]))},
            merges=merges,
            model_max_length=model_max_length,
        )
        pending = {word: tokenizer.tokenize(word) for word in pending}
        pending = {word: pieces for word, pieces in pending.items() if len(pieces) > 1}
        if not pending:
            return tokenizer
    raise ValueError(f"Could not make these vocabulary words single tokens: {sorted(pending)}.")


def build_text_encoder_config(
    tokenizer: CLIPTokenizer,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    intermediate_size: int = 128,
) -> CLIPTextConfig:
    r"""
    A small [`~transformers.CLIPTextConfig`] sized for `tokenizer` (vocabulary, special tokens, caption length).

    Example:

    ```py
    >>> from transformers import CLIPTextModel
    >>> from mnist_diffusion.text_encoding import build_caption_tokenizer, build_text_encoder_config

    >>> tokenizer = build_caption_tokenizer()
    >>> text_encoder = CLIPTextModel(build_text_encoder_config(tokenizer))
    >>> text_encoder.config.hidden_size
    64
    ```
    """
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_text_encoder(tokenizer: CLIPTokenizer, **config_kwargs) -> CLIPTextModel:
    r"""A randomly initialised [`~transformers.CLIPTextModel`] sized by [`build_text_encoder_config`]."""
    return CLIPTextModel(build_text_encoder_config(tokenizer, **config_kwargs))
