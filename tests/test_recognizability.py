"""Tests of the recognisability analysis and of `mnist-diffusion analyze recognizability`."""

import json

import pytest
import torch
from conftest import make_tiny_classifier, make_tiny_pipeline

from mnist_diffusion.cli import main
from mnist_diffusion.recognizability import first_fraction_reaching, recognizability


def test_recognizability_curves_per_step_and_class():
    pipe = make_tiny_pipeline()
    kwargs = {"classifier": make_tiny_classifier(), "num_inference_steps": 4, "batch_size": 8, "seed": 1}
    result = recognizability(pipe, 2, **kwargs)
    assert result.fractions == [0.25, 0.5, 0.75, 1.0] and len(result.timesteps) == 4
    assert result.timesteps == sorted(result.timesteps, reverse=True)  # from noise to image
    assert list(result.accuracy_per_class) == [str(i) for i in range(10)]
    for curve in result.accuracy_per_class.values():
        assert len(curve) == 4 and all(value in (0.0, 0.5, 1.0) for value in curve)  # 2 samples per class
    per_class_mean = torch.tensor(list(result.accuracy_per_class.values())).mean(dim=0)
    torch.testing.assert_close(torch.tensor(result.accuracy), per_class_mean, rtol=0, atol=1e-6)
    assert list(result.first_fraction) == ["90%", "99%"]
    for threshold, by_class in result.first_fraction.items():
        assert list(by_class) == [*result.class_names, "overall"]
        for name, fraction in by_class.items():
            curve = result.accuracy if name == "overall" else result.accuracy_per_class[name]
            assert fraction == first_fraction_reaching(curve, result.fractions, int(threshold[:-1]) / 100)
    assert json.loads(json.dumps(result.to_dict())) == result.to_dict()
    markdown = result.to_markdown()
    assert "| Class | accuracy >= 90% | accuracy >= 99% |" in markdown
    assert [markdown.count(f"\n| {fraction:.2f} | ") for fraction in result.fractions] == [1, 1, 1, 1]
    assert recognizability(pipe, 2, **kwargs).to_dict() == result.to_dict()  # deterministic for a seed


def test_first_fraction_reaching():
    fractions = [0.25, 0.5, 0.75, 1.0]
    assert first_fraction_reaching([0.1, 0.95, 0.8, 1.0], fractions, 0.9) == 0.5
    assert first_fraction_reaching([0.1, 0.95, 0.8, 1.0], fractions, 0.99) == 1.0
    assert first_fraction_reaching([0.1, 0.2, 0.3, 0.4], fractions, 0.9) is None


def test_recognizability_bad_input():
    with pytest.raises(ValueError, match="samples_per_class is 0; expected a positive integer"):
        recognizability(make_tiny_pipeline(), 0, classifier=make_tiny_classifier())
    with pytest.raises(ValueError, match="'label' needs class labels but this pipeline's UNet has no classes"):
        recognizability(make_tiny_pipeline(classes=False), 1, classifier=make_tiny_classifier(), conditioning="label")


def test_cli_writes_table_json_and_plot(tmp_path, capsys):
    make_tiny_pipeline(text=False).save_pretrained(tmp_path / "model")
    make_tiny_classifier().save_pretrained(tmp_path / "classifier")
    output = tmp_path / "analysis"
    common = ["analyze", "recognizability", "--model", str(tmp_path / "model"), "--output-dir", str(output)]
    argv = common + ["--classifier", str(tmp_path / "classifier"), "--samples-per-class", "1", "--steps", "3"]
    assert main(argv + ["--scheduler", "dpm"]) == 0
    assert sorted(path.name for path in output.iterdir()) == [
        "recognizability.json",
        "recognizability.md",
        "recognizability.png",
    ]
    report = json.loads((output / "recognizability.json").read_text())
    assert report["fractions"] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert report["settings"]["scheduler"] == "DPMSolverMultistepScheduler"
    assert main(common + ["--samples-per-class", "0"]) == 2
    assert "--samples-per-class is 0; expected at least 1" in capsys.readouterr().err
