"""How samples are asked for (class labels, prompts or both): the choices and their check against a pipeline."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..pipelines import MnistDiffusionPipeline

#: How samples are conditioned: "auto" uses class labels and prompts when the pipeline has both, else what it has.
CONDITIONINGS = ("auto", "label", "prompt", "label+prompt")


def resolve_conditioning(pipe: MnistDiffusionPipeline, conditioning: str) -> str:
    r"""
    The conditioning to sample with: "auto" becomes "label+prompt" when the pipeline has class labels and a text
    encoder, otherwise the one it has; an explicit choice the pipeline cannot follow raises `ValueError`.
    """
    if conditioning not in CONDITIONINGS:
        raise ValueError(f"Unknown conditioning {conditioning!r}; expected one of {list(CONDITIONINGS)}.")
    has_labels, has_text = pipe.num_classes > 0, pipe.text_encoder is not None
    if conditioning == "auto":
        return "label+prompt" if has_labels and has_text else "label" if has_labels else "prompt"
    if "label" in conditioning and not has_labels:
        raise ValueError(f"Conditioning {conditioning!r} needs class labels but this pipeline's UNet has no classes.")
    if "prompt" in conditioning and not has_text:
        raise ValueError(f"Conditioning {conditioning!r} needs prompts but this pipeline has no text encoder.")
    return conditioning
