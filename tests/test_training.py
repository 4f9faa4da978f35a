"""Tests of `training/train.py` and its run folder: in-process runs, and `accelerate launch` for the README command,
two processes and kills, on tiny datasets written by the tests."""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    TINY_TRAINING_ARGS,
    load_training_script,
    make_digit_dataset,
    make_tiny_pipeline,
    make_tiny_unet,
)
from PIL import Image
from safetensors.torch import load_file

from mnist_diffusion import MnistDiffusionPipeline, build_caption_tokenizer, build_text_encoder
from mnist_diffusion.data import prepare_training_data
from mnist_diffusion.pretrained import MNIST_CLIP
from mnist_diffusion.training import arguments, run_folder
from mnist_diffusion.training.classifier import train_classifier
from mnist_diffusion.training.text_to_image import resolve_text_encoder
from mnist_diffusion.training.validation import build_evaluator

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("single_thread")
TRAIN_SCRIPT = REPO / "training" / "train.py"
SINGLE_CPU_CONFIG = REPO / "training" / "configs" / "single_cpu.yaml"


@pytest.fixture(scope="module")
def parquet_dataset(tmp_path_factory) -> Path:
    """A folder of parquet files in the Hub layout (`train-00000-of-00001.parquet`)."""
    folder = tmp_path_factory.mktemp("parquet_dataset")
    make_digit_dataset().to_parquet(str(folder / "train-00000-of-00001.parquet"))
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# The tiny run settings without the flags that describe the models (a fine-tuned pipeline brings its own).
FINE_TUNING_ARGS = [
    arg
    for flag, value in zip(TINY_TRAINING_ARGS[::2], TINY_TRAINING_ARGS[1::2], strict=True)
    if flag.lstrip("-")
    not in {"block_out_channels", "attention_levels", "attention_head_dim", "text_encoder_hidden_size"}
    for arg in (flag, value)
]


def launch(
    args: list[str], num_processes: int = 1, mixed_precision: str = "no", base_args: list[str] = TINY_TRAINING_ARGS
) -> subprocess.CompletedProcess:
    """Run the training script with `accelerate launch` on CPU; fails the test with its output on error."""
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TQDM_DISABLE="1")
    if num_processes == 1:
        launcher = ["--config_file", str(SINGLE_CPU_CONFIG)]
    else:
        # Several CPU processes on one machine: accelerate's torchrun launcher, with the CPU forced (gloo backend).
        launcher = ["--multi_gpu", "--num_processes", str(num_processes), "--num_machines", "1"]
        launcher += ["--main_process_ip", "127.0.0.1", "--main_process_port", str(free_port())]
        env.update(ACCELERATE_USE_CPU="1", MASTER_ADDR="127.0.0.1")
    command = [
        sys.executable, "-m", "accelerate.commands.launch", *launcher, "--mixed_precision", mixed_precision,
        "--dynamo_backend", "no", str(TRAIN_SCRIPT), *base_args, *args,
    ]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        pytest.fail(f"training failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


@pytest.fixture(scope="module")
def train_module():
    return load_training_script("train")


def train(train_module, args: list[str], base_args: list[str] = TINY_TRAINING_ARGS) -> MnistDiffusionPipeline | None:
    """Run `training/train.py`'s `main` in this process (the tiny settings, no TensorBoard unless asked)."""
    return train_module.main(train_module.parse_args([*base_args, "--report_to", "none", *args]))


def generate(output_dir: Path) -> np.ndarray:
    pipe = MnistDiffusionPipeline.from_pretrained(output_dir)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(0)
    return pipe(
        prompt="a thick 3", class_labels="3", num_inference_steps=2, generator=generator, output_type="np"
    ).images


@pytest.mark.slow
def test_end_to_end_saves_a_pipeline_that_generates(parquet_dataset, tmp_path):
    output_dir = tmp_path / "out"
    launch(
        ["--dataset_name", str(parquet_dataset), "--output_dir", str(output_dir), "--max_train_steps", "2",
         "--validation_steps", "2", "--validation_prompts", "a thick 3", "--checkpointing_steps", "0"]
    )  # fmt: skip
    images = generate(output_dir)
    assert images.shape == (1, 8, 8, 1) and np.isfinite(images).all()
    config = json.loads((output_dir / "model_index.json").read_text())
    assert config["id2label"] == {"0": "0", "1": "1", "2": "2", "3": "3"}
    assert (output_dir / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert json.loads((output_dir / "training_args.json").read_text())["max_train_steps"] == 2
    assert sorted(p.name for p in (output_dir / "validation").iterdir()) == [
        "step-2_classes.png",
        "step-2_prompt-0.png",
    ]
    assert Image.open(output_dir / "validation" / "step-2_classes.png").size == (2 * 8, 4 * 8)
    assert list((output_dir / "logs").rglob("events.out.tfevents.*"))


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_resume_continues_at_the_same_step_with_the_same_result(
    train_module, parquet_dataset, tmp_path, capsys, optimizer
):
    # 48 samples / batch 16 = 3 batches per epoch: resuming at step 2 skips 2 batches, then starts epoch 1.
    common = ["--dataset_name", str(parquet_dataset), "--max_train_steps", "4", "--checkpointing_steps", "2",
              "--validation_steps", "0", "--use_ema", "--optimizer", optimizer]  # fmt: skip
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    train(train_module, common + ["--output_dir", str(full)])
    assert sorted(p.name for p in full.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert json.loads((full / "checkpoint-2" / "training_state.json").read_text()) == {"global_step": 2}

    capsys.readouterr()
    train(
        train_module, common + ["--output_dir", str(resumed), "--resume_from_checkpoint", str(full / "checkpoint-2")]
    )
    assert "Resuming from checkpoint" in capsys.readouterr().out
    assert sorted(p.name for p in resumed.glob("checkpoint-*")) == ["checkpoint-4"]
    expected = load_file(full / "unet" / "diffusion_pytorch_model.safetensors")
    actual = load_file(resumed / "unet" / "diffusion_pytorch_model.safetensors")
    for name, tensor in expected.items():
        torch.testing.assert_close(actual[name], tensor, msg=f"{name} differs after resuming")

    # "latest" picks checkpoint-4 of the finished run: nothing is left to train, the pipeline is saved again.
    train(
        train_module,
        common + ["--output_dir", str(full), "--resume_from_checkpoint", "latest", "--checkpoints_total_limit", "1"],
    )
    again = load_file(full / "unet" / "diffusion_pytorch_model.safetensors")
    for name, tensor in expected.items():
        torch.testing.assert_close(again[name], tensor, msg=f"{name} changed though no step was left")


@pytest.mark.slow
def test_two_processes_train_and_save_a_loadable_pipeline(parquet_dataset, tmp_path):
    output_dir = tmp_path / "ddp"
    result = launch(
        ["--dataset_name", str(parquet_dataset), "--output_dir", str(output_dir), "--max_train_steps", "2",
         "--validation_steps", "0", "--checkpointing_steps", "2"],
        num_processes=2,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert "DistributedType.MULTI_CPU  Backend: gloo" in output and "Num processes: 2" in output
    checkpoint = output_dir / "checkpoint-2"
    assert {"random_states_0.pkl", "random_states_1.pkl"} <= {p.name for p in checkpoint.iterdir()}
    assert generate(output_dir).shape == (1, 8, 8, 1)


def test_bf16_patch_size_2_conv_transpose_frozen_text_encoder_and_caption_column(
    train_module, tmp_path, caplog, fresh_accelerate_state
):
    dataset_dir, encoder_dir, output_dir = tmp_path / "captioned", tmp_path / "encoder", tmp_path / "bf16"
    dataset = make_digit_dataset()
    dataset.add_column("text", [f"a thick {label}" for label in dataset["label"]]).save_to_disk(str(dataset_dir))
    tokenizer = build_caption_tokenizer()
    torch.manual_seed(0)
    build_text_encoder(tokenizer, hidden_size=32, intermediate_size=64).save_pretrained(encoder_dir)
    tokenizer.save_pretrained(encoder_dir)
    caplog.set_level(logging.INFO)
    train(
        train_module,
        ["--dataset_name", str(dataset_dir), "--caption_column", "text", "--text_encoder_name_or_path",
         str(encoder_dir), "--output_dir", str(output_dir), "--max_train_steps", "2", "--validation_steps", "0",
         "--checkpointing_steps", "0", "--no-use_ema", "--prediction_type", "v_prediction", "--patch_size", "2",
         "--upsample_type", "conv_transpose", "--mixed_precision", "bf16"],
    )  # fmt: skip
    assert "Mixed precision type: bf16" in caplog.text
    assert np.isfinite(generate(output_dir)).all()
    frozen = load_file(encoder_dir / "model.safetensors")
    saved = load_file(output_dir / "text_encoder" / "model.safetensors")
    for name, tensor in frozen.items():
        torch.testing.assert_close(saved[name], tensor, msg=f"frozen text encoder weight {name} changed")
    scheduler_config = json.loads((output_dir / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler_config["prediction_type"] == "v_prediction"
    unet_config = json.loads((output_dir / "unet" / "config.json").read_text())
    assert (unet_config["patch_size"], unet_config["upsample_type"]) == (2, "conv_transpose")


@pytest.mark.slow
def test_fine_tuning_starts_from_a_saved_pipeline_and_keeps_its_models(train_module, parquet_dataset, tmp_path):
    base, tuned = tmp_path / "base", tmp_path / "tuned"
    common = ["--dataset_name", str(parquet_dataset), "--validation_steps", "0", "--checkpointing_steps", "0"]
    train(train_module, common + ["--output_dir", str(base), "--max_train_steps", "3", "--seed", "1", "--patch_size",
                                  "2", "--prediction_type", "epsilon"])  # fmt: skip
    # One step at a negligible learning rate: the result is the base model, not a fresh initialisation.
    train(
        train_module,
        common + ["--output_dir", str(tuned), "--pretrained_model_name_or_path", str(base), "--max_train_steps", "1",
                  "--learning_rate", "1e-12", "--no-use_ema"],
        base_args=FINE_TUNING_ARGS,
    )  # fmt: skip
    for component, weights in (("unet", "diffusion_pytorch_model.safetensors"), ("text_encoder", "model.safetensors")):
        expected, actual = load_file(base / component / weights), load_file(tuned / component / weights)
        assert expected.keys() == actual.keys()
        for name, tensor in expected.items():
            torch.testing.assert_close(actual[name], tensor, atol=1e-6, rtol=0, msg=f"{component} {name} differs")
    unet_config = json.loads((tuned / "unet" / "config.json").read_text())
    assert (unet_config["patch_size"], unet_config["block_out_channels"]) == (2, [16, 32])
    scheduler_config = json.loads((tuned / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler_config["prediction_type"] == "epsilon"
    recorded = json.loads((tuned / "training_args.json").read_text())
    assert recorded["pretrained_model_name_or_path"] == str(base)
    assert recorded["block_out_channels"] is None and recorded["prediction_type"] is None  # not the unused defaults
    assert generate(tuned).shape == (1, 8, 8, 1)

    # A fresh run from the same seed differs: the match above is the loaded weights, not a coincidence.
    fresh = tmp_path / "fresh"
    train(train_module, common + ["--output_dir", str(fresh), "--max_train_steps", "1", "--learning_rate", "1e-12",
                                  "--no-use_ema", "--patch_size", "2"])  # fmt: skip
    fresh_unet = load_file(fresh / "unet" / "diffusion_pytorch_model.safetensors")
    tuned_unet = load_file(tuned / "unet" / "diffusion_pytorch_model.safetensors")
    assert any(not torch.allclose(fresh_unet[name], tensor) for name, tensor in tuned_unet.items())


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--label_column", "digit"], "--label_column 'digit' is not a column"),
        (["--image_column", "label"], "expected images"),
        (["--caption_mode", "poetry"], "--caption_mode is 'poetry'"),
        (["--train_split", "validation"], "Split 'validation' not found"),
        (["--resume_from_checkpoint", "checkpoint-7"], "is not a checkpoint"),
        (["--block_out_channels", "16,x"], "comma-separated integers"),
        (["--resolution", "7"], "--resolution is 7"),
        (["--patch_size", "0"], "--patch_size is 0"),
        (["--patch_size", "3"], "--resolution is 8; expected a positive multiple of 6"),
        (["--cond_dropout_prob", "0.6"], "--cond_dropout_prob is 0.6"),
        (["--pretrained_model_name_or_path", "user/model"], "--block_out_channels is '16,32', but --pretrained"),
        (["--cond_dropout_prob", "0.3", "--class_dropout_prob", "0.5"], "--class_dropout_prob is 0.5"),
        (["--timestep_log_snr_std", "0"], "--timestep_log_snr_std is 0.0"),
    ],
)
def test_bad_input_fails_before_training_without_writing(train_module, parquet_dataset, tmp_path, extra, message):
    output_dir = tmp_path / "out"
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        train_module.main(
            train_module.parse_args(
                [*TINY_TRAINING_ARGS, "--dataset_name", str(parquet_dataset), "--output_dir", str(output_dir), *extra]
            )
        )
    assert not output_dir.exists()


def test_report_to_wandb_without_wandb_fails_early_with_the_install_hint(
    train_module, parquet_dataset, tmp_path, monkeypatch
):
    argv = [*TINY_TRAINING_ARGS, "--dataset_name", str(parquet_dataset), "--output_dir", str(tmp_path / "out")]
    monkeypatch.setattr(arguments, "is_wandb_available", lambda: False)
    with pytest.raises(ValueError, match="--report_to is 'wandb' but wandb is not installed.*`pip install wandb`"):
        train_module.parse_args([*argv, "--report_to", "wandb"])
    assert not (tmp_path / "out").exists()
    assert train_module.parse_args([*argv, "--report_to", "none"]).report_to == "none"
    monkeypatch.setattr(arguments, "is_wandb_available", lambda: True)
    assert train_module.parse_args([*argv, "--report_to", "wandb"]).report_to == "wandb"


def test_text_encoder_defaults_to_mnist_clip_for_digits_and_to_a_built_one_otherwise(train_module):
    argv = ["--output_dir", "out", "--max_train_steps", "1"]
    digits = [str(digit) for digit in range(10)]
    args = train_module.parse_args(argv)
    resolve_text_encoder(args, digits)
    assert (args.text_encoder_name_or_path, args.train_text_encoder) == (str(MNIST_CLIP), False)
    args = train_module.parse_args(argv)
    resolve_text_encoder(args, ["T-shirt/top", "Trouser"])
    assert (args.text_encoder_name_or_path, args.train_text_encoder) == ("build", True)
    args = train_module.parse_args([*argv, "--text_encoder_name_or_path", "build", "--no-train_text_encoder"])
    resolve_text_encoder(args, digits)
    assert (args.text_encoder_name_or_path, args.train_text_encoder) == ("build", False)
    args = train_module.parse_args([*argv, "--text_encoder_name_or_path", "some/clip", "--train_text_encoder"])
    resolve_text_encoder(args, digits)
    assert (args.text_encoder_name_or_path, args.train_text_encoder) == ("some/clip", True)


def test_digit_datasets_train_with_the_frozen_mnist_clip_text_tower(train_module, tmp_path):
    dataset_dir = tmp_path / "digits"
    dataset_dir.mkdir()
    make_digit_dataset(num_samples=20, num_classes=10).to_parquet(str(dataset_dir / "train-00000-of-00001.parquet"))
    output_dir = tmp_path / "out"
    base_args = [arg for arg in TINY_TRAINING_ARGS if arg not in ("--text_encoder_hidden_size", "32")]
    train(
        train_module,
        ["--dataset_name", str(dataset_dir), "--output_dir", str(output_dir), "--max_train_steps", "1",
         "--validation_steps", "0", "--checkpointing_steps", "0"],
        base_args=base_args,
    )  # fmt: skip
    recorded = json.loads((output_dir / "training_args.json").read_text())
    assert recorded["text_encoder_name_or_path"] == str(MNIST_CLIP) and recorded["train_text_encoder"] is False
    saved = load_file(output_dir / "text_encoder" / "model.safetensors")
    bundled = load_file(MNIST_CLIP / "model.safetensors")
    for name, tensor in saved.items():  # frozen: the bundled text tower's weights, unchanged
        torch.testing.assert_close(tensor, bundled[name])
    assert generate(output_dir).shape == (1, 8, 8, 1)


@pytest.mark.parametrize(
    "base, message",
    [
        ("empty folder", "could not be loaded as an MnistDiffusionPipeline .*no model_index.json"),
        ("class-only pipeline", "has no text encoder and tokenizer; expected a text-conditioned pipeline"),
        ("10-class pipeline", "has a UNet with .*'num_class_embeds': 11.*; expected .*'num_class_embeds': 5.* for 4 "),
    ],
)
def test_fine_tuning_refuses_a_base_that_does_not_fit(train_module, parquet_dataset, tmp_path, base, message):
    folder, output_dir = tmp_path / "base", tmp_path / "out"
    if base == "empty folder":
        folder.mkdir()
    else:  # the tiny pipelines are 10-class; the dataset has 4 classes
        make_tiny_pipeline(text=base != "class-only pipeline").save_pretrained(folder)
    args = [*FINE_TUNING_ARGS, "--dataset_name", str(parquet_dataset), "--output_dir", str(output_dir)]
    with pytest.raises(ValueError, match=message):
        train_module.main(train_module.parse_args([*args, "--pretrained_model_name_or_path", str(folder)]))
    assert not output_dir.exists()
    if base != "empty folder":  # the base pipeline is left as it was
        assert MnistDiffusionPipeline.from_pretrained(folder).unet.config.num_class_embeds == 11


def test_empty_datasets_are_refused(train_module, tmp_path):
    saved, parquet = tmp_path / "saved", tmp_path / "parquet"
    make_digit_dataset().select([]).save_to_disk(str(saved))
    parquet.mkdir()
    make_digit_dataset().select([]).to_parquet(str(parquet / "train-00000-of-00001.parquet"))
    for folder, message in ((saved, "is an empty dataset"), (parquet, "has an empty split")):
        args = train_module.parse_args(
            [*TINY_TRAINING_ARGS, "--dataset_name", str(folder), "--output_dir", str(tmp_path / "out")]
        )
        with pytest.raises(ValueError, match=message):
            train_module.main(args)
    assert not (tmp_path / "out").exists()


def test_foreign_output_dir_and_unresumed_checkpoints_are_left_alone(train_module, parquet_dataset, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    args = train_module.parse_args(
        [*TINY_TRAINING_ARGS, "--dataset_name", str(parquet_dataset), "--output_dir", str(foreign)]
    )
    with pytest.raises(ValueError, match="was not written by this script"):
        train_module.main(args)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]

    ours = tmp_path / "ours"
    (ours / "checkpoint-3").mkdir(parents=True)
    (ours / "checkpoint-3" / "training_state.json").write_text('{"global_step": 3}')
    (ours / "training_args.json").write_text("{}")
    args = train_module.parse_args(
        [*TINY_TRAINING_ARGS, "--dataset_name", str(parquet_dataset), "--output_dir", str(ours)]
    )
    with pytest.raises(ValueError, match="pass --resume_from_checkpoint latest"):
        train_module.main(args)
    assert (ours / "training_args.json").read_text() == "{}"


def test_find_checkpoints_ignores_incomplete_ones(train_module, tmp_path):
    for name, complete in (("checkpoint-2", True), ("checkpoint-10", True), ("checkpoint-12.tmp", True),
                           ("checkpoint-11", False)):  # fmt: skip
        (tmp_path / name).mkdir()
        if complete:
            (tmp_path / name / "training_state.json").write_text("{}")
    assert [Path(p).name for p in run_folder.find_checkpoints(str(tmp_path))] == ["checkpoint-2", "checkpoint-10"]


@pytest.fixture(scope="module")
def eval_setup(tmp_path_factory) -> tuple[Path, Path]:
    """A parquet dataset with train and test splits, and a tiny saved classifier for its 8x8 images and 4 classes."""
    from mnist_diffusion.classifier import MnistClassifier

    root = tmp_path_factory.mktemp("eval")
    make_digit_dataset().to_parquet(str(root / "data" / "train-00000-of-00001.parquet"))
    make_digit_dataset(num_samples=20, seed=1).to_parquet(str(root / "data" / "test-00000-of-00001.parquet"))
    torch.manual_seed(0)
    MnistClassifier(num_classes=4, sample_size=8, block_out_channels=(4, 8), feature_dim=8).save_pretrained(
        root / "classifier"
    )
    return root / "data", root / "classifier"


def read_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the TensorBoard event files under `log_dir`, as `{tag: [(step, value), ...]}`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars = {}
    for events in log_dir.rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((e.step, e.value) for e in accumulator.Scalars(tag))
    return scalars


def test_eval_classifier_logs_metrics_at_every_validation_step(train_module, eval_setup, tmp_path, caplog):
    dataset, classifier = eval_setup
    output_dir = tmp_path / "out"
    caplog.set_level(logging.INFO)
    train(
        train_module,
        ["--dataset_name", str(dataset), "--output_dir", str(output_dir), "--max_train_steps", "3",
         "--validation_steps", "2", "--checkpointing_steps", "0", "--eval_classifier", str(classifier),
         "--eval_num_samples", "8", "--report_to", "tensorboard"],
    )  # fmt: skip
    history = [json.loads(line) for line in (output_dir / "eval_history.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in history] == [2, 3]  # every --validation_steps, and the last step
    for entry in history:
        assert 0 <= entry["conditional_accuracy"] <= 1 and entry["classifier_fid"] >= 0
        assert entry["num_samples"] == 8 and entry["num_reference_images"] == 20
        assert entry["classifier_fid_floor"] >= 0 and entry["conditioning"] == "label+prompt"
        assert sorted(entry["per_class_accuracy"]) == ["0", "1", "2", "3"]
    assert f"Step 3: conditional accuracy {history[1]['conditional_accuracy']:.3f}" in caplog.text
    scalars = read_scalars(output_dir / "logs")
    for tag, key in (("eval/conditional_accuracy", "conditional_accuracy"), ("eval/classifier_fid", "classifier_fid")):
        assert [step for step, _ in scalars[tag]] == [2, 3]
        np.testing.assert_allclose([value for _, value in scalars[tag]], [e[key] for e in history], rtol=1e-6)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--eval_classifier", "{empty}"], "holds no MnistClassifier"),
        (["--eval_classifier", "{classifier}", "--eval_num_samples", "0"], "--eval_num_samples is 0"),
        (["--eval_classifier", "{classifier}", "--eval_num_samples", "6"], "expected a multiple of the dataset's 4"),
        (["--eval_classifier", "{classifier}", "--resolution", "16"], "expected 1-channel 16x16 images"),
        (["--eval_classifier", "{classifier}", "--eval_split", "validation"], "Split 'validation' not found"),
        (["--eval_classifier", "{classifier}", "--validation_steps", "0"], "--validation_steps is 0"),
    ],
)
def test_bad_eval_input_fails_before_training(train_module, eval_setup, tmp_path, extra, message):
    dataset, classifier = eval_setup
    (tmp_path / "empty").mkdir()
    extra = [value.format(empty=tmp_path / "empty", classifier=classifier) for value in extra]
    output_dir = tmp_path / "out"
    with pytest.raises(ValueError, match=message):
        train_module.main(
            train_module.parse_args(
                [*TINY_TRAINING_ARGS, "--dataset_name", str(dataset), "--output_dir", str(output_dir), *extra]
            )
        )
    assert not output_dir.exists()


FILE_SYSTEM_CALLS = ("replace", "remove", "rmdir", "makedirs", "unlink")


def run_and_kill(function, kill_at: int) -> bool:
    r"""
    Run `function(arm)` in a forked child that kills itself with SIGKILL (a real `kill -9`: no cleanup, no
    `finally`) at its `kill_at`-th call, counted from `arm()`, to one of the `os` functions in `FILE_SYSTEM_CALLS`;
    returns whether the child was killed.
    """
    pid = os.fork()
    if pid == 0:  # the child: count the calls, die at the chosen one, never return into pytest
        calls, armed = [0], [False]

        def counting(real):
            def wrapper(*args, **kwargs):
                if armed[0]:
                    if calls[0] == kill_at:
                        os.kill(os.getpid(), signal.SIGKILL)
                    calls[0] += 1
                return real(*args, **kwargs)

            return wrapper

        try:
            for name in FILE_SYSTEM_CALLS:
                setattr(os, name, counting(getattr(os, name)))
            function(lambda: armed.__setitem__(0, True))
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) or os.WTERMSIG(status) == signal.SIGKILL
    return os.WIFSIGNALED(status)


def pipeline_files(folder: Path) -> dict[str, bytes] | None:
    """What `from_pretrained(folder)` would read (`None`: no `model_index.json`, it refuses the folder): every file of
    the pipeline, by path."""
    if not (folder / "model_index.json").is_file():
        return None
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != "training_args.json" and not path.relative_to(folder).parts[0][0] == "."
    }


@pytest.mark.slow
def test_a_kill_during_the_final_save_never_leaves_a_mixed_pipeline(tmp_path):
    old, new = make_tiny_pipeline(), make_tiny_pipeline()
    with torch.no_grad():
        for module in (new.unet, new.text_encoder):
            for parameter in module.parameters():
                parameter.add_(1.0)
    old.save_pretrained(tmp_path / "old")
    new.save_pretrained(tmp_path / "new")
    old_files, new_files = pipeline_files(tmp_path / "old"), pipeline_files(tmp_path / "new")
    assert old_files.keys() == new_files.keys() and old_files != new_files

    def final_save(arm, folder):  # the kills are counted from the moment the staging folder is complete
        # the staging folder is written as save_pretrained writes it (a copy of its files: quicker in each child)
        new.save_pretrained = lambda path: (shutil.copytree(tmp_path / "new", path), arm())
        run_folder.save_final_pipeline(new, str(folder))

    outcomes = []
    for kill_at in range(100):
        folder = tmp_path / f"run-{kill_at}"
        shutil.copytree(tmp_path / "old", folder)
        (folder / "training_args.json").write_text("{}")
        killed = run_and_kill(lambda arm, folder=folder: final_save(arm, folder), kill_at)
        files = pipeline_files(folder)
        if files is None:
            if "none" not in outcomes:  # what from_pretrained says of such a folder
                with pytest.raises(OSError, match="has no model_index.json"):
                    MnistDiffusionPipeline.from_pretrained(folder)
            outcomes.append("none")
        else:
            assert files in (old_files, new_files), f"killed at call {kill_at}: a mix of the old and new pipeline"
            outcomes.append("old" if files == old_files else "new")
        if not killed:
            break
        if kill_at % 8 == 0:  # the next save (a resumed run) clears what the killed one left
            run_folder.save_final_pipeline(make_tiny_pipeline(), str(folder))
            assert not (folder / ".pipeline.tmp").exists() and not (folder / ".pipeline.old").exists()
            assert pipeline_files(folder) == old_files  # the tiny pipeline again: its files replaced the others
    assert not killed, "the save never finished"
    assert outcomes[0] == "old" and outcomes[-1] == "new" and "none" in outcomes
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["model_index.json", "scheduler", "text_encoder", "tokenizer", "unet", "training_args.json"]
    )
    loaded = MnistDiffusionPipeline.from_pretrained(folder)
    assert torch.equal(loaded.unet.conv_out.weight, new.unet.conv_out.weight)


def make_checkpoint(folder: Path, step: int) -> Path:
    """A complete checkpoint folder as accelerate and save_checkpoint write it (small real files)."""
    checkpoint = folder / f"checkpoint-{step}"
    (checkpoint / "unet").mkdir(parents=True)
    from safetensors.torch import save_file

    save_file({"weight": torch.full((4,), float(step))}, checkpoint / "model.safetensors")
    torch.save({"state": {}, "step": step}, checkpoint / "optimizer.bin")
    torch.save({"lr": 0.1}, checkpoint / "scheduler.bin")
    torch.save({"seed": step}, checkpoint / "random_states_0.pkl")
    (checkpoint / "training_state.json").write_text(json.dumps({"global_step": step}))
    (folder / "training_args.json").write_text("{}")  # the output folder is ours
    return checkpoint


def test_a_kill_while_pruning_leaves_leftovers_that_are_never_picked_and_are_cleaned(train_module, tmp_path):
    for kill_at in (1, 3, 6):  # mid-way through deleting the first, then the second old checkpoint
        folder = tmp_path / f"run-{kill_at}"
        for step in (1, 2, 3, 4):
            make_checkpoint(folder, step)
        pruning = lambda arm, folder=folder: (arm(), run_folder.prune_checkpoints(str(folder), 2))  # noqa: E731
        assert run_and_kill(pruning, kill_at)
        leftovers = run_folder.checkpoint_leftovers(str(folder))
        assert leftovers, f"killed at call {kill_at}: nothing half-deleted"
        complete = run_folder.find_checkpoints(str(folder))
        assert set(complete).isdisjoint(leftovers)
        assert complete[-2:] == [str(folder / "checkpoint-3"), str(folder / "checkpoint-4")]
        assert run_folder.resume_checkpoint(str(folder), "latest") == str(folder / "checkpoint-4")
        # The next pruning (after the next checkpoint) removes the leftovers as well as the old checkpoints.
        make_checkpoint(folder, 5)
        run_folder.prune_checkpoints(str(folder), 2)
        assert sorted(p.name for p in folder.iterdir()) == ["checkpoint-4", "checkpoint-5", "training_args.json"]


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: max(1, path.stat().st_size // 3)])


@pytest.mark.parametrize(
    "damaged, message",
    [
        ("model.safetensors", "model.safetensors: SafetensorError"),
        ("optimizer.bin", "optimizer.bin: "),
        ("training_state.json", "training_state.json: "),
    ],
)
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(train_module, tmp_path, damaged, message):
    for step in (2, 4):
        make_checkpoint(tmp_path, step)
    truncate(tmp_path / "checkpoint-4" / damaged)
    with pytest.warns(UserWarning, match=f"Checkpoint {tmp_path / 'checkpoint-4'} cannot be read back .*{message}"):
        assert run_folder.resume_checkpoint(str(tmp_path), "latest") == str(tmp_path / "checkpoint-2")
    with pytest.raises(ValueError, match=f"checkpoint-4 cannot be read back .*{message}"):
        run_folder.resume_checkpoint(str(tmp_path), "checkpoint-4")
    truncate(tmp_path / "checkpoint-2" / "random_states_0.pkl")
    with pytest.raises(
        ValueError, match="no checkpoint in --output_dir can be read back .*checkpoint-4.*checkpoint-2"
    ):
        run_folder.resume_checkpoint(str(tmp_path), "latest")


class Payload:
    """Unpickled, it writes a file: what a pickle dropped in a checkpoint folder could run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "the payload ran"))


def drop_payload(checkpoint: Path, marker: Path) -> None:
    with open(checkpoint / "payload.pkl", "wb") as f:
        pickle.dump(Payload(marker), f, protocol=2)


def test_a_pickle_dropped_in_a_checkpoint_is_never_run(tmp_path):
    for step in (2, 4):
        make_checkpoint(tmp_path, step)
    marker = tmp_path / "ran.txt"
    drop_payload(tmp_path / "checkpoint-4", marker)
    with pytest.warns(UserWarning, match="checkpoint-4 cannot be read back \\(payload.pkl: UnpicklingError"):
        assert run_folder.resume_checkpoint(str(tmp_path), "latest") == str(tmp_path / "checkpoint-2")
    with pytest.raises(ValueError, match="checkpoint-4 cannot be read back \\(payload.pkl: UnpicklingError"):
        run_folder.resume_checkpoint(str(tmp_path), "checkpoint-4")
    assert not marker.exists()


@pytest.mark.slow
def test_resume_skips_a_refused_checkpoint_and_keeps_training_args_until_it_succeeds(
    train_module, parquet_dataset, tmp_path, capsys
):
    common = ["--dataset_name", str(parquet_dataset), "--max_train_steps", "4", "--checkpointing_steps", "2",
              "--validation_steps", "0", "--output_dir", str(tmp_path / "run")]  # fmt: skip
    train(train_module, common)
    expected = load_file(tmp_path / "run" / "unet" / "diffusion_pytorch_model.safetensors")
    marker = tmp_path / "ran.txt"
    drop_payload(tmp_path / "run" / "checkpoint-4", marker)
    capsys.readouterr()
    with pytest.warns(UserWarning, match=f"Checkpoint {tmp_path / 'run' / 'checkpoint-4'} cannot be read back"):
        train(train_module, common + ["--resume_from_checkpoint", "latest"])
    assert f"Resuming from checkpoint {tmp_path / 'run' / 'checkpoint-2'}" in capsys.readouterr().out
    assert not marker.exists()
    assert run_folder.checkpoint_problem(str(tmp_path / "run" / "checkpoint-4")) is None  # saved again, complete
    actual = load_file(tmp_path / "run" / "unet" / "diffusion_pytorch_model.safetensors")
    for name, tensor in expected.items():
        torch.testing.assert_close(actual[name], tensor, msg=f"{name} differs after resuming from checkpoint-2")

    args_file = tmp_path / "run" / "training_args.json"
    before = args_file.read_text()
    for checkpoint in ("checkpoint-2", "checkpoint-4"):
        truncate(tmp_path / "run" / checkpoint / "optimizer.bin")
    argv = [*TINY_TRAINING_ARGS, *common, "--resume_from_checkpoint", "latest", "--learning_rate", "0.5"]
    assert arguments.run_script(train_module.parse_args, train_module.main, argv) == 2
    assert capsys.readouterr().err.strip().startswith("train.py: error: --resume_from_checkpoint latest: no ")
    assert args_file.read_text() == before


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--lr_scheduler", "bogus"], "--lr_scheduler is 'bogus'; expected one of ["),
        (["--learning_rate", "nan"], "--learning_rate is nan; expected a finite number."),
        (["--adam_epsilon", "inf"], "--adam_epsilon is inf; expected a finite number."),
        (["--output_dir", "{file}/sub"], "--output_dir '{file}/sub' is inside '{file}', which is a file"),
        (["--hub_token", "hf_secret_value"], "--hub_token is refused: a token on the command line"),
    ],
)
def test_script_errors_are_one_line_naming_the_flag(train_module, parquet_dataset, tmp_path, capsys, extra, message):
    (tmp_path / "file").write_text("not a folder")
    extra = [value.format(file=tmp_path / "file") for value in extra]
    argv = [*TINY_TRAINING_ARGS, "--dataset_name", str(parquet_dataset), "--output_dir", str(tmp_path / "out"), *extra]
    assert arguments.run_script(train_module.parse_args, train_module.main, argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("train.py: error: ")
    assert message.format(file=tmp_path / "file") in err
    assert "hf_secret_value" not in err
    assert not (tmp_path / "out").exists()


def test_push_to_hub_without_a_token_fails_before_training(train_module, parquet_dataset, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    argv = [*TINY_TRAINING_ARGS, "--dataset_name", str(parquet_dataset), "--output_dir", str(tmp_path / "out")]
    with pytest.raises(ValueError, match="No Hugging Face token found"):
        train_module.main(train_module.parse_args(argv + ["--push_to_hub", "--hub_model_id", "user/x"]))
    assert not (tmp_path / "out").exists()


def test_training_evaluation_is_the_evaluate_protocol_and_independent_of_the_batch_size(
    train_module, eval_setup, tmp_path
):
    from mnist_diffusion.classifier import MnistClassifier
    from mnist_diffusion.data import load_split, prepare_training_data
    from mnist_diffusion.evaluation import evaluate

    dataset, classifier = eval_setup
    names = ["0", "1", "2", "3"]
    pipe = make_tiny_pipeline()
    pipe.unet = make_tiny_unet(num_class_embeds=len(names) + 1)
    pipe.register_to_config(id2label={str(i): name for i, name in enumerate(names)})

    def training_metrics(batch_size: str) -> dict:
        args = train_module.parse_args(
            [*TINY_TRAINING_ARGS, "--dataset_name", str(dataset), "--output_dir", str(tmp_path / "out"),
             "--eval_classifier", str(classifier), "--eval_num_samples", "8", "--train_batch_size", batch_size,
             "--seed", "3"]
        )  # fmt: skip
        return build_evaluator(args, names, torch.device("cpu")).evaluate(pipe)

    small_batches, one_batch = training_metrics("3"), training_metrics("16")
    reference = prepare_training_data(load_split(str(dataset), split="test"), resolution=8)
    expected = evaluate(
        pipe,
        8,
        classifier=MnistClassifier.from_pretrained(classifier),
        reference_images=reference.images,
        guidance_scale=3.0,
        num_inference_steps=2,
        seed=3,
        style_samples_per_request=0,
    )
    for metrics in (small_batches, one_batch):
        assert metrics["conditioning"] == expected.settings["conditioning"] == "label+prompt"
        assert metrics["conditional_accuracy"] == expected.accuracy
        assert metrics["per_class_accuracy"] == expected.accuracy_per_class
        assert metrics["classifier_fid"] == pytest.approx(expected.classifier_fid, rel=1e-4, abs=1e-7)
        assert metrics["classifier_fid_floor"] == pytest.approx(expected.classifier_fid_floor, rel=1e-6)


def test_train_classifier_is_callable_in_process_and_reproducible():
    dataset = make_digit_dataset(num_samples=32)
    first = train_classifier(dataset, num_steps=2, batch_size=16, seed=3)
    again = train_classifier(prepare_training_data(dataset), num_steps=2, batch_size=16, seed=3)
    assert not first.training and first.config.id2label == {"0": "0", "1": "1", "2": "2", "3": "3"}
    for name, tensor in first.state_dict().items():
        torch.testing.assert_close(again.state_dict()[name], tensor, msg=f"{name} differs with the same seed")
    other_seed = train_classifier(dataset, num_steps=2, batch_size=16, seed=4)
    assert not torch.equal(other_seed.state_dict()["head.1.weight"], first.state_dict()["head.1.weight"])
    epochs = []
    train_classifier(dataset, num_epochs=2, batch_size=16, end_of_epoch=lambda epoch, model: epochs.append(epoch))
    assert epochs == [0, 1]
    with pytest.raises(ValueError, match="num_steps is 0; expected a positive integer"):
        train_classifier(dataset, num_steps=0)
