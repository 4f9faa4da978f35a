"""CAS: the classifier recipe trained on generated and on real images for the same steps, tested on real ones."""

from __future__ import annotations

import json

import pytest
from conftest import make_digit_dataset

from mnist_diffusion.cas import classification_accuracy_score
from mnist_diffusion.data import prepare_training_data


def test_cas_trains_the_recipe_on_each_side_for_the_same_steps_and_tests_on_real():
    real_train, real_test, generated = (
        prepare_training_data(make_digit_dataset(num_samples=n, seed=seed)) for n, seed in ((40, 0), (20, 1), (40, 2))
    )
    score = classification_accuracy_score(generated, real_train, real_test, num_steps=2, num_images=20, batch_size=8)
    assert (score.num_images, score.num_steps, score.num_test_images) == (20, 2, 20)
    assert 0 <= score.synthetic_accuracy <= 1 and score.ratio == score.synthetic_accuracy / score.real_accuracy
    assert "20 generated images" in score.to_markdown() and json.dumps(score.to_dict())
    other_classes = prepare_training_data(make_digit_dataset(num_samples=20, num_classes=3))
    with pytest.raises(ValueError, match=r"classes \['0', '1', '2'\]; expected \['0', '1', '2', '3'\]"):
        classification_accuracy_score(other_classes, real_train, real_test, num_steps=1)
    with pytest.raises(ValueError, match="num_images is 50; expected 1 to 40"):
        classification_accuracy_score(generated, real_train, real_test, num_steps=1, num_images=50)
