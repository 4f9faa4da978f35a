"""CLIP-guided best-of-N sampling: generate candidates for a prompt and keep those with the highest CLIP score."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .captions import caption_templates
from .clip_model import ClipScorer
from .pipelines import MnistDiffusionPipeline


@dataclass
class Selection:
    r"""
    The candidates of one best-of-N draw and which of them were kept.

    Args:
        candidates (`torch.Tensor`): All generated images `(num_candidates, channels, height, width)` in [0, 1], in
            generation order.
        candidate_scores (`torch.Tensor`): CLIP score of each candidate `(num_candidates,)`.
        indices (`torch.Tensor`): Positions of the kept candidates `(keep,)`, best first.
        text (`str`): The text the candidates were scored against.
    """

    candidates: torch.Tensor
    candidate_scores: torch.Tensor
    indices: torch.Tensor
    text: str

    @property
    def images(self) -> torch.Tensor:
        """The kept images `(keep, channels, height, width)`, best first."""
        return self.candidates[self.indices]

    @property
    def scores(self) -> torch.Tensor:
        """CLIP scores of the kept images `(keep,)`, in decreasing order."""
        return self.candidate_scores[self.indices]


def scoring_text(pipe: MnistDiffusionPipeline, prompt: str | None, class_labels: int | str | None) -> str:
    r"""
    The text candidates are scored against: the prompt, or for a class label alone its longest "label" caption
    ("a handwritten seven", "a picture of a sneaker").
    """
    if prompt is not None:
        return prompt
    (class_id,) = pipe.resolve_class_labels(class_labels)
    name = (pipe.config.id2label or {}).get(str(class_id), str(class_id))
    return caption_templates(name, "label")[-1]


def select_best(
    pipe: MnistDiffusionPipeline,
    scorer: ClipScorer,
    prompt: str | None = None,
    class_labels: int | str | None = None,
    num_candidates: int = 10,
    keep: int = 3,
    generator: torch.Generator | None = None,
    **pipe_kwargs,
) -> Selection:
    r"""
    Generate `num_candidates` images for one prompt and/or class label and keep the `keep` with the best CLIP score.

    Candidates are scored against the prompt or, with a class label alone, against a caption of the label (see
    [`scoring_text`]). `pipe_kwargs` go to the pipeline (`num_inference_steps`, `guidance_scale`, ...).

    Args:
        pipe ([`MnistDiffusionPipeline`]): Generates the candidates.
        scorer ([`~mnist_diffusion.clip_model.ClipScorer`]): Scores them.
        prompt (`str`, *optional*): What to draw.
        class_labels (`int` or `str`, *optional*): One class id or name.
        num_candidates (`int`, defaults to 10): Images generated.
        keep (`int`, defaults to 3): Images kept, between 1 and `num_candidates`.
        generator (`torch.Generator`, *optional*): Makes the candidates reproducible.

    Example:

    ```py
    >>> from mnist_diffusion.clip_model import ClipScorer
    >>> from mnist_diffusion.loading import open_pipeline
    >>> from mnist_diffusion.selection import select_best

    >>> selection = select_best(open_pipeline(), ClipScorer.from_pretrained(), prompt="a thick 7", keep=3)
    >>> selection.images.shape, selection.scores  # doctest: +SKIP
    (torch.Size([3, 1, 28, 28]), tensor([34.1, 33.8, 33.0]))
    ```
    """
    if not isinstance(num_candidates, int) or num_candidates < 1:
        raise ValueError(f"num_candidates is {num_candidates!r}; expected an int >= 1.")
    if not isinstance(keep, int) or not 1 <= keep <= num_candidates:
        raise ValueError(f"keep is {keep!r}; expected an int in 1..num_candidates ({num_candidates}).")
    for name, value in (("prompt", prompt), ("class_labels", class_labels)):
        if isinstance(value, (list, tuple)):
            raise ValueError(f"{name} is {value!r}; expected a single {name} (one best-of-N draw).")
    for name in ("num_images_per_prompt", "output_type", "return_dict"):
        if name in pipe_kwargs:
            raise ValueError(f"`{name}` is set by select_best; got {name}={pipe_kwargs[name]!r}.")
    if prompt is None and class_labels is None:
        raise ValueError("Give a `prompt`, `class_labels`, or both; got neither.")
    text = scoring_text(pipe, prompt, class_labels)
    candidates = pipe(
        prompt=prompt,
        class_labels=class_labels,
        num_images_per_prompt=num_candidates,
        generator=generator,
        output_type="pt",
        **pipe_kwargs,
    ).images.cpu()
    scores = scorer.score(candidates, [text] * num_candidates)
    return Selection(candidates=candidates, candidate_scores=scores, indices=scores.topk(keep).indices, text=text)
