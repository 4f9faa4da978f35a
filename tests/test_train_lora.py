"""training/train_lora.py in-process on a tiny pipeline: adapter files, card, resume, and the one-line input errors."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from conftest import load_training_script, make_tiny_pipeline
from PIL import Image

from mnist_diffusion.training.lora import (
    LoraRecipe,
    prior_preservation_images,
    save_lora_adapter,
    with_null_class_copies,
)
from mnist_diffusion.training.lora import train_lora as train_lora_adapter

train_lora = load_training_script("train_lora")
FAST = ["--max_train_steps", "2", "--num_class_images", "1", "--validation_inference_steps", "2"]


def digest(folder) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file()
    }


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    folder = tmp_path_factory.mktemp("base") / "tiny"
    make_tiny_pipeline().save_pretrained(folder)
    return folder


def write_digits(folder, counts: dict[str, int], dark_on_white: bool = False) -> None:
    """Thick bars whose position depends on the label, as PNG files in `folder/<label>/`."""
    for label, count in counts.items():
        (folder / label).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            array = np.zeros((28, 28), dtype=np.uint8)
            array[4:24, 4 + 2 * int(label) + i : 9 + 2 * int(label) + i] = 255
            Image.fromarray(255 - array if dark_on_white else array).save(folder / label / f"{i}.png")


def run(base, data, output, *extra: str):
    argv = ["--pretrained_model_name_or_path", str(base), "--train_data_dir", str(data), "--output_dir", str(output)]
    return train_lora.main(train_lora.parse_args(argv + FAST + list(extra)))


def test_training_writes_an_adapter_that_loads_onto_the_base(base, tmp_path):
    before = digest(base)
    write_digits(tmp_path / "data", {"1": 2, "3": 2})
    write_digits(tmp_path / "data", {"7": 2}, dark_on_white=True)
    output = tmp_path / "adapter"
    extra = ["--instance_prompt", "in bars", "--validation_steps", "2", "--report_to", "tensorboard"]
    extra += [
        "--null_class_share",
        "0.5",
        "--target_modules",
        "to_q,to_kv,conv1,emb_proj",
        "--module_scales",
        "emb_proj=0.5",
    ]
    run(base, tmp_path / "data", output, *extra)
    assert {"pytorch_lora_weights.safetensors", "README.md", "samples.png", "training_args.json"} <= {
        p.name for p in output.iterdir()
    }
    assert (output / "validation" / "step-2_classes.png").is_file()
    card = (output / "README.md").read_text()
    assert "instance_prompt: in bars" in card and "lora" in card and str(base.resolve()) in card
    assert json.loads((output / "training_args.json").read_text())["rank"] == 2
    pipe = make_tiny_pipeline()
    kwargs = dict(class_labels=[1, 7], num_inference_steps=2, output_type="np")
    plain = pipe(generator=torch.Generator().manual_seed(0), **kwargs).images
    pipe.load_lora_weights(output)
    styled = pipe(generator=torch.Generator().manual_seed(0), **kwargs).images
    assert not np.array_equal(plain, styled)
    assert digest(base) == before  # nothing of the base model changed


def test_resume_continues_from_the_latest_checkpoint(base, tmp_path):
    write_digits(tmp_path / "data", {"2": 2, "5": 2})
    output = tmp_path / "adapter"
    run(base, tmp_path / "data", output, "--max_train_steps", "2", "--checkpointing_steps", "1")
    assert (output / "checkpoint-2").is_dir()
    run(base, tmp_path / "data", output, "--max_train_steps", "3", "--resume_from_checkpoint", "latest")
    assert json.loads((output / "training_args.json").read_text())["max_train_steps"] == 3
    assert (output / "pytorch_lora_weights.safetensors").is_file()


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({}, r"is empty; expected one sub-folder per class"),
        ({"file.png": None}, r"has no class sub-folders; expected DIR/<label>/\*\.png"),
        ({"cat": 2}, r"sub-folder 'cat' is not a class of the base model; expected one of \['0', '1'"),
        ({"3": 1}, r"has 1 image\(s\); expected at least 2"),
        ({"3": 2, "3/notes.txt": None}, r"notes\.txt' is not an image file"),
        ({"3": 2, "3/broken.png": None}, r"broken\.png"),
        ({"3": 0}, r"holds no images"),
    ],
)
def test_bad_training_data_is_a_one_line_error(base, tmp_path, layout, message):
    data = tmp_path / "data"
    data.mkdir()
    for name, count in layout.items():
        if count is None:
            (data / name).write_text("not an image")
        elif count == 0:
            (data / name).mkdir()
        else:
            write_digits(data, {name: count}) if name.isdigit() else (data / name).mkdir()
            for i in range(count if not name.isdigit() else 0):
                Image.new("L", (28, 28)).save(data / name / f"{i}.png")
    with pytest.raises(ValueError, match=message) as error:
        run(base, data, tmp_path / "adapter")
    assert "\n" not in str(error.value)


def test_bad_flags_and_bases_are_refused(base, tmp_path):
    write_digits(tmp_path / "data", {"1": 2})
    argv = ["--train_data_dir", str(tmp_path / "data")]
    with pytest.raises(ValueError, match="--rank is 0"):
        train_lora.parse_args(argv + ["--rank", "0"])
    with pytest.raises(ValueError, match="Pass one of --train_data_dir"):
        train_lora.parse_args([])
    with pytest.raises(ValueError, match="--hub_token is refused"):
        train_lora.parse_args(argv + ["--hub_token", "secret"])
    for bad in ("emb_proj", "emb_proj=x", "=0.5"):
        with pytest.raises(ValueError, match=f"module_scales item '{bad}' is not NAME=SCALE"):
            train_lora.parse_args(argv + ["--module_scales", bad])
    with pytest.raises(ValueError, match="--null_class_share is 2.0; expected a share in"):
        train_lora.parse_args(argv + ["--null_class_share", "2"])
    with pytest.raises(ValueError, match="is inside the base model's folder"):
        run(base, tmp_path / "data", base / "adapter")
    with pytest.raises(ValueError, match="no_such_layer.*not found in the base model"):
        run(base, tmp_path / "data", tmp_path / "out", "--target_modules", "no_such_layer")
    class_only = tmp_path / "class-less"
    make_tiny_pipeline(classes=False).save_pretrained(class_only)
    with pytest.raises(ValueError, match="has no classes"):
        run(class_only, tmp_path / "data", tmp_path / "out2")


def test_prior_images_cover_the_classes_the_training_images_leave_out():
    pipe = make_tiny_pipeline()
    labels = torch.tensor([1, 1, 3])
    recipe = LoraRecipe(num_class_images=0, num_other_class_images=2)
    images, prior_labels = prior_preservation_images(pipe, labels, recipe)
    others = [label for label in range(pipe.num_classes) if label not in (1, 3)]
    assert prior_labels.tolist() == [label for label in others for _ in range(2)]
    assert images.shape == (len(prior_labels), 1, pipe.sample_size, pipe.sample_size)
    both = LoraRecipe(num_class_images=1, num_other_class_images=0)
    assert prior_preservation_images(pipe, labels, both)[1].tolist() == [1, 3]
    assert prior_preservation_images(pipe, torch.arange(pipe.num_classes), recipe) == (None, None)


def test_module_scales_are_saved_with_the_adapter_and_loaded_back(tmp_path):
    images = torch.rand(4, 1, 8, 8) * 2 - 1
    labels = torch.tensor([1, 1, 3, 3])
    targets = (*LoraRecipe().target_modules, "emb_proj")
    scales = {"emb_proj": 0.25, "to_k": 2.0}  # to_k is no target: its scale does not apply
    recipe = LoraRecipe(
        max_train_steps=3, train_batch_size=4, num_other_class_images=0, target_modules=targets, module_scales=scales
    )
    assert recipe.lora_config().alpha_pattern == {"emb_proj": 0.5}  # a quarter of lora_alpha (= rank 2)
    trained = train_lora_adapter(make_tiny_pipeline(), images, labels, recipe)
    kwargs = dict(class_labels=[1, 3], num_inference_steps=2, output_type="np")
    expected = trained(generator=torch.Generator().manual_seed(0), **kwargs).images
    emb_proj = next(m for n, m in trained.unet.named_modules() if n.endswith("emb_proj") and hasattr(m, "scaling"))
    conv1 = next(m for n, m in trained.unet.named_modules() if n.endswith("conv1") and hasattr(m, "scaling"))
    assert (emb_proj.scaling["default"], conv1.scaling["default"]) == (0.25, 1.0)
    save_lora_adapter(trained, tmp_path / "adapter")
    pipe = make_tiny_pipeline()
    pipe.load_lora_weights(tmp_path / "adapter")
    np.testing.assert_allclose(pipe(generator=torch.Generator().manual_seed(0), **kwargs).images, expected, atol=1e-6)
    with pytest.raises(ValueError, match="module_scales gives 'emb_proj' the scale -1"):
        LoraRecipe(module_scales={"emb_proj": -1})


def test_null_class_copies_are_a_share_of_the_training_images_spread_over_the_classes():
    images, labels = torch.arange(10.0).view(10, 1, 1, 1), torch.arange(10) // 2
    copied, copied_labels = with_null_class_copies(images, labels, 0.2, null_label=10)
    assert torch.equal(copied[:10], images) and torch.equal(copied_labels[:10], labels)
    assert copied[10:].flatten().tolist() == [0.0, 9.0] and copied_labels[10:].tolist() == [10, 10]
    assert len(with_null_class_copies(images, labels, 0.0, null_label=10)[0]) == 10
    with pytest.raises(ValueError, match="null_class_share is 1.5; expected a share in"):
        LoraRecipe(null_class_share=1.5)
