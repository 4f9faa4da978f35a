"""`recognizability`: when, during denoising, the predicted clean image becomes recognisable as its class."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .classifier import MnistClassifier
from .evaluation import (
    SamplingSettings,
    class_names_and_classifier,
    class_prompt,
    resolve_conditioning,
    sample_batches,
)
from .pipelines import MnistDiffusionPipeline

#: Accuracy levels for which [`RecognizabilityResult.first_fraction`] reports the first fraction reaching them.
THRESHOLDS = (0.9, 0.99)


@dataclass
class RecognizabilityResult:
    r"""
    The classifier's accuracy on the predicted clean image x_0 after each denoising step.

    Args:
        class_names (`list[str]`): Name of each class id.
        samples_per_class (`int`): Trajectories per class.
        fractions (`list[float]`): Fraction of the denoising process done at each step, `(i + 1) / num_steps`.
        timesteps (`list[int]`): The scheduler's timestep at each step.
        accuracy (`list[float]`): Accuracy over all samples at each step.
        accuracy_per_class (`dict[str, list[float]]`): Accuracy per class name at each step.
        first_fraction (`dict[str, dict[str, float | None]]`): For each threshold ("90%", "99%"), the first fraction
            at which the accuracy of each class (and "overall") reaches it; `None` when it never does.
        settings (`dict`): Conditioning, guidance scale, steps, scheduler and seed of the run.
    """

    class_names: list[str]
    samples_per_class: int
    fractions: list[float]
    timesteps: list[int]
    accuracy: list[float]
    accuracy_per_class: dict[str, list[float]]
    first_fraction: dict[str, dict[str, float | None]]
    settings: dict

    def to_dict(self) -> dict:
        r"""The result as JSON-serialisable values."""
        return json.loads(json.dumps(self.__dict__))

    def to_markdown(self) -> str:
        r"""Two markdown tables: first fraction reaching each threshold per class, and accuracy at every step."""
        thresholds = list(self.first_fraction)
        lines = [
            "First fraction of the denoising process at which the classifier recognises the predicted x_0:",
            "",
            "| Class | " + " | ".join(f"accuracy >= {t}" for t in thresholds) + " |",
            "| --- |" + " --- |" * len(thresholds),
        ]
        for name in [*self.class_names, "overall"]:
            cells = [self.first_fraction[t][name] for t in thresholds]
            lines.append(f"| {name} | " + " | ".join("never" if c is None else f"{c:.2f}" for c in cells) + " |")
        lines += [
            "",
            "Accuracy on the predicted x_0 at each step:",
            "",
            "| Fraction | Timestep | Overall | " + " | ".join(self.class_names) + " |",
            "| --- | --- | --- |" + " --- |" * len(self.class_names),
        ]
        for i, (fraction, timestep) in enumerate(zip(self.fractions, self.timesteps, strict=True)):
            per_class = " | ".join(f"{self.accuracy_per_class[name][i]:.1%}" for name in self.class_names)
            lines.append(f"| {fraction:.2f} | {timestep} | {self.accuracy[i]:.1%} | {per_class} |")
        lines += ["", "Settings: " + ", ".join(f"{k}={v}" for k, v in self.settings.items()) + "."]
        return "\n".join(lines) + "\n"


def first_fraction_reaching(accuracy: Sequence[float], fractions: Sequence[float], threshold: float) -> float | None:
    r"""
    The first fraction at which `accuracy` is at least `threshold`, or `None`.

    Example:

    ```py
    >>> from mnist_diffusion.recognizability import first_fraction_reaching

    >>> first_fraction_reaching([0.1, 0.95, 0.8, 1.0], [0.25, 0.5, 0.75, 1.0], 0.9)
    0.5
    ```
    """
    return next((f for a, f in zip(accuracy, fractions, strict=True) if a >= threshold), None)


@torch.no_grad()
def recognizability(
    pipe: MnistDiffusionPipeline,
    samples_per_class: int = 20,
    *,
    classifier: MnistClassifier | None = None,
    conditioning: str = "auto",
    guidance_scale: float = 3.0,
    num_inference_steps: int = 50,
    seed: int = 0,
    batch_size: int = 100,
) -> RecognizabilityResult:
    r"""
    Sample `samples_per_class` trajectories per class and classify the predicted clean image x_0 at every step.

    At step `i` of `num_inference_steps`, the pipeline predicts x_0 from x_t (after classifier-free guidance); the
    classifier's accuracy on these predictions, per class and overall, tells at which fraction `(i + 1) /
    num_inference_steps` of the denoising process the class is decided.

    Args:
        pipe ([`MnistDiffusionPipeline`]): The pipeline to analyse.
        samples_per_class (`int`, defaults to 20): Trajectories per class.
        classifier ([`~mnist_diffusion.classifier.MnistClassifier`], *optional*): Defaults to the shipped classifier
            for the pipeline's classes (see [`~mnist_diffusion.evaluation.default_classifier`]).
        conditioning (`str`, defaults to `"auto"`): As in [`~mnist_diffusion.evaluation.evaluate`].
        guidance_scale (`float`, defaults to 3.0): Classifier-free guidance weight.
        num_inference_steps (`int`, defaults to 50): Denoising steps with the pipeline's scheduler.
        seed (`int`, defaults to 0): Trajectory `i` starts from the noise of seed `seed + i`.
        batch_size (`int`, defaults to 100): Trajectories per pipeline call.

    Example:

    ```py
    >>> from mnist_diffusion import MnistDiffusionPipeline
    >>> from mnist_diffusion.recognizability import recognizability

    >>> pipe = MnistDiffusionPipeline.from_pretrained("path/to/pipeline")
    >>> result = recognizability(pipe, samples_per_class=20, num_inference_steps=50)
    >>> result.first_fraction["90%"]["7"]
    0.36
    ```
    """
    if not isinstance(samples_per_class, int) or samples_per_class < 1:
        raise ValueError(f"samples_per_class is {samples_per_class!r}; expected a positive integer.")
    conditioning = resolve_conditioning(pipe, conditioning)
    class_names, classifier = class_names_and_classifier(pipe, classifier)
    labels = torch.arange(samples_per_class * len(class_names)) % len(class_names)
    prompts = [class_prompt(class_names[c]) for c in labels.tolist()]
    correct = []  # (num_steps, batch) per batch
    batches = sample_batches(
        pipe,
        labels,
        prompts,
        SamplingSettings(guidance_scale, num_inference_steps, seed, batch_size),
        conditioning=conditioning,
        return_trajectory=True,
        desc="trajectories",
    )
    for positions, output in batches:
        originals = output.trajectory.pred_original_samples
        num_steps, batch = originals.shape[:2]
        predicted, _ = classifier.predict(((originals.flatten(0, 1) + 1) / 2).clamp(0, 1))
        correct.append(predicted.view(num_steps, batch) == labels[positions])
    correct = torch.cat(correct, dim=1).float()
    timesteps = output.trajectory.timesteps.tolist()
    fractions = [(i + 1) / len(timesteps) for i in range(len(timesteps))]
    curves = {name: correct[:, labels == c].mean(dim=1).tolist() for c, name in enumerate(class_names)}
    overall = correct.mean(dim=1).tolist()
    first_fraction = {
        f"{threshold:.0%}": {
            name: first_fraction_reaching(curve, fractions, threshold)
            for name, curve in [*curves.items(), ("overall", overall)]
        }
        for threshold in THRESHOLDS
    }
    return RecognizabilityResult(
        class_names=class_names,
        samples_per_class=samples_per_class,
        fractions=fractions,
        timesteps=[int(t) for t in timesteps],
        accuracy=overall,
        accuracy_per_class=curves,
        first_fraction=first_fraction,
        settings={
            "conditioning": conditioning,
            "guidance_scale": guidance_scale,
            "num_inference_steps": num_inference_steps,
            "scheduler": type(pipe.scheduler).__name__,
            "seed": seed,
        },
    )
