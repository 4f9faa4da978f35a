"""Pinned results of tiny training and distillation runs: fixed-seed weights that catch silent recipe changes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import TINY_TRAINING_ARGS, load_training_script, make_digit_dataset, make_tiny_pipeline, make_tiny_unet
from safetensors.torch import load_file

from mnist_diffusion import MnistDiffusionPipeline

# Computed once with the recipes as of 60ebace; a change here means training or distillation computes differently.
PINNED_TENSORS = ("conv_in.weight", "conv_out.weight", "class_embedding.weight")
TRAINING_RUNS = {
    # the defaults: Muon, EMA, a built text encoder trained jointly
    "muon-ema": ["--max_train_steps", "3"],
    # AdamW without EMA, two batches per update, Min-SNR weighting
    "adamw-accumulation": ["--optimizer", "adamw", "--no-use_ema", "--gradient_accumulation_steps", "2",
                           "--max_train_steps", "2", "--snr_gamma", "5"],
}  # fmt: skip
DISTILLATION_RUNS = {
    "lcm": ["--max_train_steps", "2"],
    "progressive": ["--method", "progressive", "--num_student_steps", "4", "--max_train_steps", "2"],
}
EXPECTED = {
    "adamw-accumulation": {
        "conv_in.weight": [1.89301515, -0.05778892, 0.04139475, -0.06807051, -0.12543708],
        "conv_out.weight": [1.30790669, 0.05076118, 0.03135166, 0.00148458, -0.07104456],
        "class_embedding.weight": [1.36486628, -0.32634759, 1.26720786, 0.82094866, 0.98002452],
        "abs_sum": [10151.344],
    },
    "muon-ema": {
        "conv_in.weight": [1.95230851, -0.05757126, 0.04138624, -0.06820740, -0.12627758],
        "conv_out.weight": [1.44716479, 0.04962375, 0.02976256, -0.00060808, -0.07160028],
        "class_embedding.weight": [1.36108253, -0.32664925, 1.26648569, 0.82067293, 0.97941041],
        "abs_sum": [10139.899],
    },
    "lcm": {
        "conv_in.weight": [0.96801919, 0.28153613, 0.30421293, 0.16276269, 0.16556165],
        "conv_out.weight": [0.28797992, -0.02750706, 0.07609806, -0.02129899, 0.02908472],
        "class_embedding.weight": [-4.86459352, -0.09672315, -1.29442012, 0.10305702, -0.71383464],
        "abs_sum": [10299.787],
    },
    "progressive": {
        "conv_in.weight": [0.96804029, 0.28153354, 0.30420959, 0.16275945, 0.16555880],
        "conv_out.weight": [0.28767784, -0.02750999, 0.07609507, -0.02130196, 0.02908615],
        "class_embedding.weight": [-4.86452402, -0.09672154, -1.29441905, 0.10305980, -0.71383309],
        "abs_sum": [10299.784],
    },
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pinned_dataset")
    make_digit_dataset().to_parquet(str(folder / "train-00000-of-00001.parquet"))
    return folder


def summary(output_dir: Path) -> dict[str, list[float]]:
    """Per pinned tensor of the saved UNet: its sum then its first four values; and the sum of all |weights|."""
    weights = load_file(output_dir / "unet" / "diffusion_pytorch_model.safetensors")
    result = {
        name: [weights[name].double().sum().item(), *weights[name].flatten()[:4].tolist()] for name in PINNED_TENSORS
    }
    result["abs_sum"] = [sum(tensor.double().abs().sum().item() for tensor in weights.values())]
    return result


def assert_pinned(run: str, found: dict[str, list[float]]) -> None:
    for name, expected in EXPECTED[run].items():
        torch.testing.assert_close(
            torch.tensor(found[name], dtype=torch.float64),
            torch.tensor(expected, dtype=torch.float64),
            atol=1e-5,
            rtol=1e-6,
            msg=f"{run}: {name} is {found[name]}",
        )


@pytest.mark.parametrize("run", sorted(TRAINING_RUNS))
def test_tiny_training_run_gives_the_pinned_weights(dataset, tmp_path, run):
    train = load_training_script("train")
    output_dir = tmp_path / run
    argv = [*TINY_TRAINING_ARGS, "--report_to", "none", "--dataset_name", str(dataset), "--output_dir",
            str(output_dir), "--validation_steps", "0", "--checkpointing_steps", "0", *TRAINING_RUNS[run]]  # fmt: skip
    train.main(train.parse_args(argv))
    assert_pinned(run, summary(output_dir))


@pytest.mark.parametrize("run", sorted(DISTILLATION_RUNS))
def test_tiny_distillation_round_gives_the_pinned_weights(dataset, tmp_path, run):
    distill = load_training_script("distill")
    teacher = make_tiny_pipeline()
    teacher = MnistDiffusionPipeline(
        unet=make_tiny_unet(num_class_embeds=5),
        scheduler=teacher.scheduler,
        text_encoder=teacher.text_encoder,
        tokenizer=teacher.tokenizer,
        id2label={str(i): str(i) for i in range(4)},
    )
    teacher.save_pretrained(tmp_path / "teacher")
    output_dir = tmp_path / run
    argv = ["--teacher_model_name_or_path", str(tmp_path / "teacher"), "--dataset_name", str(dataset),
            "--output_dir", str(output_dir), "--train_batch_size", "16", "--num_ddim_timesteps", "10",
            "--lr_warmup_steps", "1", "--validation_steps", "0", "--checkpointing_steps", "0", "--report_to", "none",
            *DISTILLATION_RUNS[run]]  # fmt: skip
    distill.main(distill.parse_args(argv))
    assert_pinned(run, summary(output_dir))
