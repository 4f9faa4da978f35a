"""Tests of the sample-quality metrics and the classifier that embeds images for them."""

import json

import pytest
import torch
from conftest import load_training_script, make_digit_dataset

from mnist_diffusion.classifier import MnistClassifier
from mnist_diffusion.metrics import conditional_accuracy, frechet_distance, precision_recall
from mnist_diffusion.training.classifier import random_affine

train_classifier = load_training_script("train_classifier")


def test_frechet_distance_of_a_set_with_itself_is_zero_and_of_shifted_gaussians_is_known():
    torch.manual_seed(0)
    a = torch.randn(4000, 6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # equal covariances: the distance is the squared distance of the means
    assert frechet_distance(a, a + torch.tensor([1.0, 2.0, 0, 0, 0, 0])) == pytest.approx(5.0, rel=1e-6)
    # N(0, I) vs N(0, 4I) in d dims: d * (1 + 4 - 2 * 2) = d
    assert frechet_distance(torch.randn(20000, 3), 2 * torch.randn(20000, 3)) == pytest.approx(3.0, rel=0.05)


def test_frechet_distance_bad_input():
    with pytest.raises(ValueError, match="Feature sizes differ"):
        frechet_distance(torch.randn(10, 3), torch.randn(10, 4))
    with pytest.raises(ValueError, match="num_samples >= 2"):
        frechet_distance(torch.randn(1, 3), torch.randn(10, 3))


def test_precision_recall_separate_and_overlapping_sets():
    torch.manual_seed(0)
    real = torch.randn(400, 4)
    assert precision_recall(real, real.clone()) == (1.0, 1.0)
    far = precision_recall(real, torch.randn(400, 4) + 100)
    assert far == (0.0, 0.0)
    # samples collapsed onto one real point: realistic (high precision) but no variety (low recall)
    collapsed = real[:1].repeat(400, 1) + 1e-3 * torch.randn(400, 4)
    precision, recall = precision_recall(real, collapsed)
    assert precision == 1.0 and recall < 0.05
    with pytest.raises(ValueError, match="more than k=3"):
        precision_recall(real[:3], real)


def test_conditional_accuracy_overall_and_per_class():
    result = conditional_accuracy(torch.tensor([7, 7, 1, 2, 3]), torch.tensor([7, 7, 1, 1, 3]))
    assert result.overall == pytest.approx(0.8)
    assert result.per_class == {1: 0.5, 3: 1.0, 7: 1.0}
    assert result.counts == {1: 2, 3: 1, 7: 2}
    with pytest.raises(ValueError, match="must be equal"):
        conditional_accuracy(torch.tensor([1]), torch.tensor([1, 2]))


def test_a_perfect_classifier_gives_accuracy_one():
    requested = torch.arange(10).repeat(3)
    result = conditional_accuracy(requested.clone(), requested)
    assert result.overall == 1.0 and set(result.per_class.values()) == {1.0}


def test_train_classifier_learns_a_tiny_dataset_and_protects_foreign_folders(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    make_digit_dataset(64).to_parquet(str(folder / "train-00000-of-00001.parquet"))
    make_digit_dataset(32, seed=1).to_parquet(str(folder / "test-00000-of-00001.parquet"))
    output = tmp_path / "classifier"
    argv = [
        "--dataset_name",
        str(folder),
        "--output_dir",
        str(output),
        "--num_epochs",
        "8",
        "--train_batch_size",
        "16",
    ]
    results = train_classifier.main(train_classifier.parse_args(argv + ["--augment", "0"]))
    assert results["eval_accuracy"] == 1.0 and len(results["eval_accuracy_per_epoch"]) == 8
    assert json.loads((output / "eval_results.json").read_text())["eval_samples"] == 32
    classifier = MnistClassifier.from_pretrained(output)
    assert classifier.config.id2label == {"0": "0", "1": "1", "2": "2", "3": "3"}

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty and holds no classifier"):
        train_classifier.main(
            train_classifier.parse_args(["--dataset_name", str(folder), "--output_dir", str(foreign)])
        )
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    with pytest.raises(ValueError, match="--num_epochs is 0"):
        train_classifier.parse_args(["--num_epochs", "0"])


def test_random_affine_jitters_but_keeps_shape_and_zero_strength_is_identity():
    images = torch.rand(8, 1, 28, 28)
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(random_affine(images, 0.0, generator), images)
    jittered = random_affine(images, 1.0, generator)
    assert jittered.shape == images.shape and not torch.allclose(jittered, images)


def test_classifier_round_trip_and_shape_errors(tmp_path):
    torch.manual_seed(0)
    classifier = MnistClassifier(id2label={str(i): str(i) for i in range(10)}).eval()
    classifier.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    loaded = MnistClassifier.from_pretrained(tmp_path).eval()
    images = torch.rand(3, 1, 28, 28)
    assert torch.equal(loaded(images), classifier(images))
    assert loaded.config.id2label["7"] == "7"
    with pytest.raises(ValueError, match=r"expected \(batch, 1, 28, 28\)"):
        classifier(torch.rand(3, 28, 28))
    with pytest.raises(ValueError, match="multiple of 4"):
        MnistClassifier(sample_size=30)
