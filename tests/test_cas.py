"""CAS: the classifier recipe trained on generated and on real images for the same steps, tested on real ones."""

from __future__ import annotations

import json

import pytest
from conftest import make_digit_dataset, make_tiny_classifier, make_tiny_pipeline

from mnist_diffusion.cas import classification_accuracy_score
from mnist_diffusion.cli import main
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


@pytest.fixture
def cas_command(tmp_path):
    """`evaluate --cas` on a saved tiny pipeline and classifier, with a tiny real dataset of train and test splits."""
    make_tiny_pipeline().save_pretrained(tmp_path / "model")
    make_tiny_classifier().save_pretrained(tmp_path / "classifier")
    (tmp_path / "data").mkdir()
    for split, num_samples, seed in (("train", 60, 0), ("test", 30, 1)):
        dataset = make_digit_dataset(num_samples=num_samples, num_classes=10, seed=seed)
        dataset.to_parquet(str(tmp_path / "data" / f"{split}-00000-of-00001.parquet"))
    return [
        "evaluate", "--model", str(tmp_path / "model"), "--classifier", str(tmp_path / "classifier"), "--clip-model",
        "none", "--reference-dataset", str(tmp_path / "data"), "--num-samples", "10", "--steps", "2",
        "--style-samples-per-request", "0", "--batch-size", "10", "--cas-steps", "2",
    ]  # fmt: skip


def test_evaluate_cas_reports_both_accuracies_and_their_ratio(cas_command, tmp_path, capsys):
    kept = tmp_path / "cas-images"
    assert main([*cas_command, "--cas", "20", "--output-dir", str(tmp_path / "report")]) == 0
    printed = capsys.readouterr().out
    assert "| 20 generated images |" in printed and "| 20 real images |" in printed and "CAS ratio" in printed
    cas = json.loads((tmp_path / "report" / "evaluation.json").read_text())["cas"]
    assert (cas["num_images"], cas["num_steps"], cas["num_test_images"]) == (20, 2, 30)
    assert cas["ratio"] == cas["synthetic_accuracy"] / cas["real_accuracy"]
    assert cas["images"] == {
        "dataset": None, "model": cas_command[2], "scheduler": "MnistDDPMScheduler", "num_inference_steps": 2,
        "guidance_scale": 3.0, "conditioning": "label+prompt", "seed": 0,
    }  # fmt: skip
    assert "## Classification Accuracy Score" in (tmp_path / "report" / "evaluation.md").read_text()
    # --cas-dataset keeps the images in a generate-dataset folder; a finished one is scored as it is.
    for run in ("generated", "read back"):
        output = tmp_path / run
        assert main([*cas_command, "--cas", "20", "--cas-dataset", str(kept), "--output-dir", str(output)]) == 0
        assert json.loads((output / "evaluation.json").read_text())["cas"] == {
            **cas,
            "images": {**cas["images"], "dataset": str(kept)},
        }
    assert (kept / "README.md").is_file()
    assert main([*cas_command, "--cas", "30", "--cas-dataset", str(kept), "--output-dir", str(tmp_path / "x")]) == 2
    assert f"--cas is 30; expected at most the 20 images of --cas-dataset {str(kept)!r}." in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--cas", "15"], "--cas is 15; expected a multiple of the 10 classes of the model."),
        (["--cas", "70"], "--cas is 70; expected at most the 60 images of --reference-dataset"),
        (["--cas", "-10"], "--cas is -10; expected 0 (no CAS) or a number of images per side."),
        (["--cas", "20", "--cas-steps", "0"], "--cas-steps is 0; expected at least 1 classifier update."),
        (["--cas-dataset", "x"], "--cas-dataset 'x' holds the images of a CAS; expected --cas N too."),
        (["--cas", "20", "--reference-split", "train"], "--cas trains on the 'train' split of --reference-dataset"),
        (["--cas", "20", "--cas-dataset", "{file}"], "--cas-dataset: Output folder '{file}' is a file"),
        (["--cas", "20", "--model", "{unlabelled}"], "--cas labels each generated image with its class; expected"),
        (["--fast", "--model", "{unlabelled}"], "--fast uses the shipped few-step model; got --model"),
    ],
)
def test_evaluate_cas_bad_input_is_one_line_naming_the_flag(cas_command, tmp_path, capsys, flags, message):
    (tmp_path / "file").write_text("not a folder")
    make_tiny_pipeline(classes=False).save_pretrained(tmp_path / "unlabelled")
    names = {"file": str(tmp_path / "file"), "unlabelled": str(tmp_path / "unlabelled")}
    flags = [flag.format(**names) for flag in flags]
    assert main([*cas_command, *flags, "--output-dir", str(tmp_path / "report")]) == 2
    last_line = capsys.readouterr().err.splitlines()[-1]  # the lines before it are progress bars
    assert last_line.startswith("mnist-diffusion: error: ") and message.format(**names) in last_line
    assert not (tmp_path / "report").exists()
