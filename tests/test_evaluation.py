"""Tests of `evaluate` (sample-quality and style-control scores) and of `mnist-diffusion evaluate`."""

import json

import pytest
import torch
from conftest import DIGIT_NAMES, make_digit_dataset, make_tiny_classifier, make_tiny_pipeline

from mnist_diffusion import build_caption_tokenizer
from mnist_diffusion.classifier import MnistClassifier
from mnist_diffusion.cli import main
from mnist_diffusion.clip_model import ClipScorer, build_clip_model, build_clip_processor
from mnist_diffusion.data import prepare_training_data
from mnist_diffusion.evaluation import (
    ReferenceFeatures,
    class_prompt,
    default_classifier,
    evaluate,
    score_samples,
    style_agreement,
    style_prompt,
)
from mnist_diffusion.pretrained import FASHION_MNIST_CLASSIFIER

FAST = {"num_inference_steps": 2, "batch_size": 8}


class BarPositionClassifier(MnistClassifier):
    """Classifies `make_digit_dataset` images by their rule (the bar's centre is at column ~5 + 5 * label at 28x28);
    its features are the one-hot predicted class, so it runs through `MnistClassifier.predict` like a trained one."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.head = torch.nn.Identity()

    def features(self, images: torch.Tensor) -> torch.Tensor:
        columns = self._check(images).add(1).sum(dim=(1, 2))
        width = columns.shape[1]
        centre = (columns * torch.arange(width)).sum(dim=1) / columns.sum(dim=1)
        label = (((centre + 0.5) * 28 / width - 0.5 - 5) / 5).round().long().clamp(0, self.config.num_classes - 1)
        return torch.nn.functional.one_hot(label, self.config.num_classes).float()


def make_tiny_clip_scorer() -> ClipScorer:
    torch.manual_seed(0)
    tokenizer = build_caption_tokenizer()
    sizes = {"vision_hidden_size": 16, "vision_layers": 1, "text_hidden_size": 16, "text_layers": 1}
    model = build_clip_model(tokenizer, image_size=8, patch_size=4, projection_dim=8, **sizes)
    return ClipScorer(model, build_clip_processor(tokenizer, image_size=8))


@pytest.fixture(scope="module")
def real():
    """48 real 8x8 images of 4 classes and their labels."""
    return prepare_training_data(make_digit_dataset(48), resolution=8)


def test_evaluate_returns_sane_deterministic_scores(real):
    pipe = make_tiny_pipeline()
    kwargs = {
        "classifier": make_tiny_classifier(),
        "clip_scorer": make_tiny_clip_scorer(),
        "reference_images": real.images,
        "reference_labels": real.labels,
        "style_samples_per_request": 4,
        "seed": 3,
    }
    result = evaluate(pipe, 20, **kwargs, **FAST)
    assert result.num_samples == 20 and result.settings["conditioning"] == "label+prompt"
    assert result.labels.tolist() == list(range(10)) * 2
    assert result.prompts[:2] == ["a handwritten 0", "a handwritten 1"]
    assert result.images.shape == (20, 1, 8, 8) and 0 <= result.images.min() <= result.images.max() <= 1
    assert 0 <= result.accuracy <= 1 and list(result.accuracy_per_class) == list(DIGIT_NAMES.values())
    assert result.classifier_fid > 0 and result.classifier_fid_floor > 0  # 48 references: floor uses 20 vs 28
    assert 0 <= result.precision <= 1 and 0 <= result.recall <= 1 and 0 <= result.reference_accuracy <= 1
    assert result.clip_scores.shape == (20,) and result.clip_score == pytest.approx(result.clip_scores.mean().item())
    requests = [(r.request, r.target, r.num_samples) for r in result.style_control.requests]
    assert requests == [
        ("thin", "thin", 4),
        ("thick", "thick", 4),
        ("left-slanted", "left-slanted", 4),
        ("right-slanted", "right-slanted", 4),
        ("slanted", "right-slanted", 4),
    ]
    assert result.style_control.requests[0].example_prompt == "a thin 0"
    summary = result.to_dict()
    assert json.loads(json.dumps(summary)) == summary and "images" not in summary
    markdown = result.to_markdown()
    assert "| Classifier FID (vs. reference set) |" in markdown and "| FID" not in markdown
    assert "Strict agreement" in markdown and "Contrast agreement" in markdown

    # same seed: same scores; sample i always starts from seed + i, so the batch size changes only rounding
    again = evaluate(pipe, 20, **kwargs, **FAST)
    assert again.to_dict() == summary and torch.equal(again.images, result.images)
    rebatched = evaluate(pipe, 20, **{**kwargs, "style_samples_per_request": 0}, num_inference_steps=2, batch_size=20)
    torch.testing.assert_close(rebatched.images, result.images, rtol=0, atol=1e-5)
    other_seed = evaluate(pipe, 20, **{**kwargs, "seed": 4}, **FAST)
    assert not torch.equal(other_seed.images, result.images)


def test_evaluate_pipelines_without_text_or_without_classes(real):
    class_only = evaluate(make_tiny_pipeline(text=False), 10, classifier=make_tiny_classifier(), **FAST)
    assert class_only.settings["conditioning"] == "label" and class_only.style_control is None
    assert any("no text encoder" in note for note in class_only.notes)
    assert class_only.classifier_fid is None and any("No reference images" in note for note in class_only.notes)
    text_only = evaluate(
        make_tiny_pipeline(classes=False), 10, classifier=make_tiny_classifier(), style_samples_per_request=0, **FAST
    )
    assert text_only.settings["conditioning"] == "prompt" and text_only.class_names == [str(i) for i in range(10)]
    assert any("style_samples_per_request is 0" in note for note in text_only.notes)


def test_a_reference_set_against_itself_has_zero_classifier_fid(real):
    result = score_samples(
        real.images, real.labels, ["0", "1", "2", "3"], make_tiny_classifier(4), reference_images=real.images
    )
    assert result.classifier_fid == pytest.approx(0.0, abs=1e-4)
    assert (result.precision, result.recall) == (1.0, 1.0)
    assert result.classifier_fid_floor is None and "too small for a classifier FID floor" in result.notes[0]


def test_a_perfect_classifier_on_real_images_gives_accuracy_one(real):
    classifier = BarPositionClassifier(num_classes=4, sample_size=8)
    result = score_samples(real.images, real.labels, ["0", "1", "2", "3"], classifier, reference_images=real.images)
    assert result.accuracy == 1.0 and set(result.accuracy_per_class.values()) == {1.0}
    # through evaluate: the classifier's accuracy on the real reference images
    pipe = make_tiny_pipeline(text=False)
    digits = BarPositionClassifier(num_classes=10, sample_size=8)
    evaluated = evaluate(
        pipe, 10, classifier=digits, reference_images=real.images, reference_labels=real.labels, num_inference_steps=1
    )
    assert evaluated.reference_accuracy == 1.0


def test_reference_features_embedded_once_give_the_same_scores(real):
    classifier = make_tiny_classifier(4)
    names = ["0", "1", "2", "3"]
    images, labels = real.images[:8], real.labels[:8]
    direct = score_samples(
        images, labels, names, classifier, reference_images=real.images, reference_labels=real.labels
    )
    reference = ReferenceFeatures.embed(classifier, real.images, real.labels)
    reused = score_samples(images, labels, names, classifier, reference=reference)
    assert direct.to_dict() == reused.to_dict() and reused.classifier_fid_floor is not None
    with pytest.raises(ValueError, match="both `reference` and `reference_images`"):
        score_samples(images, labels, names, classifier, reference=reference, reference_images=real.images)


def test_style_agreement_definitions():
    thickness = torch.tensor([1.5, 1.9, 2.1, 2.5])  # bounds (1.75, 2.2): thin, regular (below middle), regular, thick
    assert style_agreement(thickness, "thickness", "thin") == (0.25, 0.5)
    assert style_agreement(thickness, "thickness", "thick") == (0.25, 0.5)
    slant = torch.tensor([-0.1, 0.05, 0.15, 0.3])  # bounds (-0.02, 0.24), middle 0.11
    assert style_agreement(slant, "slant", "slanted") == (0.25, 0.5)
    assert style_agreement(slant, "slant", "right-slanted") == (0.25, 0.5)
    with pytest.raises(ValueError, match="'regular' asks for the middle thickness band"):
        style_agreement(thickness, "thickness", "regular")
    with pytest.raises(ValueError, match="Unknown slant word 'crooked'"):
        style_agreement(slant, "slant", "crooked")
    with pytest.raises(ValueError, match="Unknown style attribute 'size'"):
        style_agreement(slant, "size", "small")


def test_prompts_and_default_classifiers():
    assert class_prompt("7") == "a handwritten 7" and class_prompt("Ankle boot") == "a ankle boot"
    assert style_prompt("3", "thickness", "thick") == "a thick 3"
    assert style_prompt("Bag", "thickness", "thin") == "a thin bag" and style_prompt("Bag", "slant", "slanted") is None
    assert default_classifier(list(DIGIT_NAMES.values())).config.id2label == {str(i): str(i) for i in range(10)}
    fashion = json.loads((FASHION_MNIST_CLASSIFIER / "config.json").read_text())["id2label"]
    assert default_classifier(list(fashion.values())).config.id2label == fashion
    with pytest.raises(ValueError, match=r"No shipped classifier knows the classes \['cat', 'dog'\]"):
        default_classifier(["cat", "dog"])


def test_evaluate_bad_input(real):
    pipe = make_tiny_pipeline()
    classifier = make_tiny_classifier()
    with pytest.raises(ValueError, match="num_samples is 0; expected a positive integer"):
        evaluate(pipe, 0, classifier=classifier)
    with pytest.raises(ValueError, match="num_samples is 15; expected a multiple of the 10 classes"):
        evaluate(pipe, 15, classifier=classifier)
    with pytest.raises(ValueError, match="The classifier has 4 classes but the pipeline has 10"):
        evaluate(pipe, 10, classifier=make_tiny_classifier(4))
    with pytest.raises(ValueError, match="makes 8px images with 1 channel"):
        evaluate(pipe, 10, classifier=MnistClassifier())
    with pytest.raises(ValueError, match="'prompt' needs prompts but this pipeline has no text encoder"):
        evaluate(make_tiny_pipeline(text=False), 10, classifier=classifier, conditioning="prompt")
    with pytest.raises(ValueError, match="Unknown conditioning 'text'"):
        evaluate(pipe, 10, classifier=classifier, conditioning="text")
    names = ["0", "1", "2", "3"]
    with pytest.raises(ValueError, match="Got 3 prompts for 48 images"):
        score_samples(real.images, real.labels, names, make_tiny_classifier(4), prompts=["a 1"] * 3)
    with pytest.raises(ValueError, match="Got 47 labels for 48 images"):
        score_samples(real.images, real.labels[:-1], names, make_tiny_classifier(4))
    with pytest.raises(ValueError, match="Got 5 reference labels for 48 reference images"):
        score_samples(
            real.images, real.labels, names, make_tiny_classifier(4), reference_images=real.images,
            reference_labels=real.labels[:5],
        )  # fmt: skip


@pytest.fixture
def cli_inputs(tmp_path):
    """A saved tiny pipeline, classifier and CLIP, and a parquet reference dataset."""
    make_tiny_pipeline().save_pretrained(tmp_path / "model")
    make_tiny_classifier().save_pretrained(tmp_path / "classifier")
    make_tiny_clip_scorer().save_pretrained(tmp_path / "clip")
    (tmp_path / "data").mkdir()
    make_digit_dataset(40).to_parquet(str(tmp_path / "data" / "test-00000-of-00001.parquet"))
    return [
        "--model", str(tmp_path / "model"), "--classifier", str(tmp_path / "classifier"), "--clip-model",
        str(tmp_path / "clip"), "--reference-dataset", str(tmp_path / "data"), "--steps", "2", "--batch-size", "10",
    ]  # fmt: skip


def test_cli_writes_all_its_files(cli_inputs, tmp_path):
    output = tmp_path / "report"
    argv = ["evaluate", *cli_inputs, "--num-samples", "20", "--output-dir", str(output)]
    assert main(argv + ["--style-samples-per-request", "3", "--scheduler", "ddim"]) == 0
    files = sorted(path.name for path in output.iterdir())
    assert files == [
        "clip_best.png",
        "clip_worst.png",
        "evaluation.json",
        "evaluation.md",
        "per_class_accuracy.png",
        "style_distributions.png",
    ]
    report = json.loads((output / "evaluation.json").read_text())
    assert report["num_samples"] == 20 and report["settings"]["scheduler"] == "DDIMScheduler"
    assert report["settings"]["reference"].endswith("[test], 40 images")
    assert "| Conditional accuracy |" in (output / "evaluation.md").read_text()


def test_cli_bad_input(cli_inputs, tmp_path, capsys):
    output = str(tmp_path / "report")
    assert main(["evaluate", *cli_inputs, "--num-samples", "0", "--output-dir", output]) == 2
    assert "--num-samples is 0; expected at least 1" in capsys.readouterr().err
    missing = str(tmp_path / "no" / "such" / "model")
    assert main(["evaluate", "--model", missing, "--output-dir", output]) == 2
    assert f"--model {missing!r} is a path, but that folder does not exist" in capsys.readouterr().err
    assert not (tmp_path / "report").exists()
