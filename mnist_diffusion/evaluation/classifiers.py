"""The classifier that scores a pipeline's samples: the shipped one for its classes, checked against the pipeline."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..classifier import MnistClassifier
from ..pretrained import FASHION_MNIST_CLASSIFIER, MNIST_CLASSIFIER

if TYPE_CHECKING:
    from ..pipelines import MnistDiffusionPipeline

#: The shipped classifiers [`default_classifier`] chooses from, by the class names they were trained on.
SHIPPED_CLASSIFIERS = (MNIST_CLASSIFIER, FASHION_MNIST_CLASSIFIER)


def default_classifier(class_names: Sequence[str] | None) -> MnistClassifier:
    r"""
    The shipped classifier trained on `class_names` (MNIST digits or Fashion-MNIST items); MNIST when `None`.

    Example:

    ```py
    >>> from mnist_diffusion.evaluation import default_classifier

    >>> default_classifier(["T - shirt / top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
    ...                     "Bag", "Ankle boot"]).config.num_classes
    10
    ```
    """
    if class_names is None:
        return MnistClassifier.from_pretrained(MNIST_CLASSIFIER)
    wanted = [name.lower() for name in class_names]
    for path in SHIPPED_CLASSIFIERS:
        id2label = json.loads((path / "config.json").read_text())["id2label"]
        if [id2label[str(i)].lower() for i in range(len(id2label))] == wanted:
            return MnistClassifier.from_pretrained(path)
    raise ValueError(
        f"No shipped classifier knows the classes {list(class_names)}; expected MNIST digits or Fashion-MNIST "
        "items, or pass a classifier trained on these classes (training/train_classifier.py)."
    )


def class_names_and_classifier(
    pipe: MnistDiffusionPipeline, classifier: MnistClassifier | None
) -> tuple[list[str], MnistClassifier]:
    r"""
    The pipeline's class names (`id2label`; the classifier's for a text-only pipeline) and the classifier scoring
    them (the shipped one for those names by default), checked against each other and the pipeline's images.
    """
    names = pipe.label_names
    if names is None and pipe.num_classes:
        names = [str(i) for i in range(pipe.num_classes)]
    classifier = default_classifier(names) if classifier is None else classifier
    if names is None:
        classifier_labels = classifier.config.id2label or {}
        names = [classifier_labels.get(str(i), str(i)) for i in range(classifier.config.num_classes)]
    if classifier.config.num_classes != len(names):
        raise ValueError(
            f"The classifier has {classifier.config.num_classes} classes but the pipeline has {len(names)} "
            f"({names}); expected a classifier trained on the pipeline's classes."
        )
    image_shape = (pipe.unet.config.in_channels, pipe.unet.config.sample_size)
    classifier_shape = (classifier.config.in_channels, classifier.config.sample_size)
    if image_shape != classifier_shape:
        raise ValueError(
            f"The pipeline makes {image_shape[1]}px images with {image_shape[0]} channel(s) but the classifier takes "
            f"{classifier_shape[1]}px with {classifier_shape[0]}; expected a classifier for the pipeline's images."
        )
    return names, classifier.to(pipe.device)
