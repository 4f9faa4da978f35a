"""Tests of the `mnist-diffusion` command line."""

import shutil
import subprocess
import sys

import PIL.Image
import pytest
from conftest import make_tiny_pipeline

from mnist_diffusion import MnistDiffusionPipeline
from mnist_diffusion.cli import main
from mnist_diffusion.image_grid import image_grid
from mnist_diffusion.loading import open_pipeline


@pytest.fixture
def saved_pipeline(tmp_path):
    make_tiny_pipeline().save_pretrained(tmp_path / "model")
    return tmp_path / "model"


def test_generate_writes_a_grid(saved_pipeline, tmp_path):
    output = tmp_path / "out" / "sevens.png"
    argv = ["generate", "a thick 7", "--model", str(saved_pipeline), "-n", "5", "-o", str(output), "--steps", "2"]
    assert main(argv + ["--class-label", "7", "--scheduler", "dpm", "--seed", "1"]) == 0
    grid = PIL.Image.open(output)
    assert grid.size == (3 * 8, 2 * 8) and grid.mode == "L"
    assert grid.crop((2 * 8, 8, 3 * 8, 2 * 8)).getextrema() == (0, 0)  # the sixth cell is left black


def test_generate_guidance_interval(saved_pipeline, tmp_path, capsys):
    def argv(*options):
        output = tmp_path / f"grid{len(list(tmp_path.glob('grid*.png')))}.png"
        command = ["generate", "a 3", "--model", str(saved_pipeline), "-n", "2", "-o", str(output), "--steps", "4"]
        return command + ["--class-label", "3", *options], output

    def grid(*options):
        command, output = argv(*options)
        assert main(command) == 0
        return PIL.Image.open(output).tobytes()

    guided, unguided = grid("--guidance-scale", "5"), grid("--guidance-scale", "1")
    assert guided != unguided
    # No step inside the interval: the same images as without guidance.
    assert grid("--guidance-scale", "5", "--guidance-start", "1.0") == unguided
    assert grid("--guidance-scale", "5", "--guidance-start", "0.5") not in (guided, unguided)
    command, output = argv("--guidance-start", "0.8", "--guidance-stop", "0.2")
    assert main(command) == 2
    assert "`guidance_start` is 0.8 and `guidance_stop` is 0.2" in capsys.readouterr().err
    assert not output.exists()


def test_image_grid_refuses_more_images_than_cells():
    with pytest.raises(ValueError, match="Got 7 images for a 2x3 grid"):
        image_grid([PIL.Image.new("L", (8, 8))] * 7, rows=2, cols=3)


def test_open_pipeline_swaps_the_scheduler(saved_pipeline):
    assert type(open_pipeline(str(saved_pipeline), "ddim").scheduler).__name__ == "DDIMScheduler"
    with pytest.raises(ValueError, match="Unknown scheduler 'euler'"):
        open_pipeline(str(saved_pipeline), "euler")


def test_console_script_reports_bad_input(saved_pipeline, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mnist_diffusion.cli",
            "generate",
            "--model",
            str(saved_pipeline),
            "--class-label",
            "12",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "Class label 12 is out of range" in result.stderr
    assert not (tmp_path / "samples.png").exists()


def test_generate_uses_the_shipped_release_model_by_default(tmp_path):
    output = tmp_path / "sevens.png"
    assert main(["generate", "a thick slanted 7", "-n", "2", "-o", str(output), "--steps", "2"]) == 0
    assert PIL.Image.open(output).size == (2 * 28, 28)
    pipe = open_pipeline()
    assert pipe.num_classes == 10 and pipe.text_encoder is not None


def test_generate_seeds_each_image_and_chunks_without_changing_it(saved_pipeline, tmp_path, capsys):
    def grid(*options):
        output = tmp_path / f"grid{len(list(tmp_path.glob('grid*.png')))}.png"
        argv = ["generate", "--class-label", "3", "--model", str(saved_pipeline), "-o", str(output), "--steps", "2"]
        assert main(argv + list(options)) == 0
        return PIL.Image.open(output)

    whole = grid("-n", "5", "--seed", "10")
    printed = capsys.readouterr().out
    assert "drawn with seed 10 + i; to get one alone, run this command with -n 1 --seed 10 + i" in printed
    assert "(the last image: -n 1 --seed 14)" in printed
    chunked = grid("-n", "5", "--seed", "10", "--batch-size", "2")
    assert chunked.tobytes() == whole.tobytes()  # the batch size changes nothing
    fourth_alone = grid("-n", "1", "--seed", "13")  # image 3 (row 1, column 0 of the 3x2 grid) used seed 10 + 3
    assert whole.crop((0, 8, 8, 16)).tobytes() == fourth_alone.tobytes()
    assert whole.crop((0, 0, 8, 8)).tobytes() != fourth_alone.tobytes()


def test_generate_caps_the_count_and_keeps_memory_to_one_batch(saved_pipeline, tmp_path, capsys, monkeypatch):
    from mnist_diffusion.commands import generate as generate_module

    assert main(["generate", "--class-label", "1", "--model", str(saved_pipeline), "-n", "10001"]) == 2
    assert "-n/--num-images is 10001; expected 1 to 10000" in capsys.readouterr().err
    batches = []
    pipeline_call = MnistDiffusionPipeline.__call__

    def recording_call(self, *args, **kwargs):
        batches.append(kwargs["num_images_per_prompt"])
        return pipeline_call(self, *args, **kwargs)

    monkeypatch.setattr(MnistDiffusionPipeline, "__call__", recording_call)
    output = tmp_path / "many.png"
    argv = ["generate", "--class-label", "1", "--model", str(saved_pipeline), "-n", "300", "-o", str(output)]
    assert main(argv + ["--steps", "1", "--batch-size", "128"]) == 0
    assert batches == [128, 128, 44]
    assert PIL.Image.open(output).size == (18 * 8, 17 * 8)
    assert generate_module.MAX_IMAGES == 10_000


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["generate", "--class-label", "3", "--guidance-scale", "nan"],
            "argument --guidance-scale: nan is not a finite",
        ),
        (
            ["generate", "--class-label", "3", "--guidance-scale", "inf"],
            "argument --guidance-scale: inf is not a finite",
        ),
        (
            ["generate", "--class-label", "3", "--guidance-start", "nan"],
            "argument --guidance-start: nan is not a finite",
        ),
        (["evaluate", "--output-dir", "x", "--guidance-scale=-inf"], "argument --guidance-scale: -inf is not"),
        (["visualize", "classes", "--guidance-scale", "NaN"], "argument --guidance-scale: NaN is not a finite number"),
    ],
)
def test_non_finite_numbers_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_model_paths_and_broken_folders_get_clear_errors(saved_pipeline, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()

    def error(model):
        assert main(["generate", "--class-label", "3", "--model", model, "-o", str(tmp_path / "x.png")]) == 2
        assert not (tmp_path / "x.png").exists()
        return capsys.readouterr().err

    for missing in ("./missing", "~/surely-not-here-42", str(tmp_path / "missing"), "outputs/run", "a/b/c"):
        assert f"--model {missing!r} is a path, but that folder does not exist" in error(missing)
    (tmp_path / "model.txt").write_text("")
    assert "--model 'model.txt' is a file, not a folder" in error("model.txt")
    assert "--model 'bad id!' is not a folder and not a Hub repo id" in error("bad id!")

    broken = tmp_path / "broken"
    shutil.copytree(saved_pipeline, broken)
    index = (broken / "model_index.json").read_text()
    (broken / "model_index.json").write_text(index[: len(index) // 2])
    assert f"{broken / 'model_index.json'} is not valid JSON" in error(str(broken))
    (broken / "model_index.json").write_text(index)
    shutil.rmtree(broken / "unet")
    assert f"{broken} has no unet/ folder, but its model_index.json names a MnistUNet2DConditionModel" in error(
        str(broken)
    )


def fail_if_sampling(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("sampled before the output was checked")

    monkeypatch.setattr(MnistDiffusionPipeline, "__call__", refuse)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "--class-label", "3", "-o", "{folder}"], "-o/--output '{folder}' is a folder"),
        (["generate", "--class-label", "3", "-o", "{folder}/grid.txt"], "has no image extension PIL can write"),
        (["generate", "--class-label", "3", "-o", "{file}/grid.png"], "which is a file; expected a folder path"),
        (["evaluate", "--num-samples", "10", "--output-dir", "{file}"], "--output-dir '{file}' is a file"),
        (["analyze", "recognizability", "--output-dir", "{file}"], "--output-dir '{file}' is a file"),
        (
            ["visualize", "denoise", "--class-label", "3", "-o", "{folder}/d"],
            "-o/--output '{folder}/d.gif' is a folder",
        ),
        (["visualize", "classes", "-o", "{file}/c"], "which is a file; expected a folder path"),
        # Permission bits say /proc is writable for root; only a real write shows it is not.
        (
            ["generate", "--class-label", "3", "-o", "/proc/x.png"],
            "-o/--output '/proc/x.png': cannot write in '/proc'",
        ),
    ],
)
def test_outputs_are_checked_before_any_sampling(saved_pipeline, tmp_path, capsys, monkeypatch, argv, message):
    (tmp_path / "file").write_text("keep me")
    (tmp_path / "out" / "d.gif").mkdir(parents=True)
    names = {"folder": tmp_path / "out", "file": tmp_path / "file"}
    fail_if_sampling(monkeypatch)
    assert main([arg.format(**names) for arg in argv] + ["--model", str(saved_pipeline)]) == 2
    assert message.format(**names) in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["d.gif"]  # the .png was not written either
    assert (tmp_path / "file").read_text() == "keep me"


def test_the_command_line_starts_without_the_heavy_libraries():
    # `--help` and argument errors stay quick: building the parser imports no torch, diffusers or transformers
    # (each command imports them when it runs); `import mnist_diffusion` exports its classes lazily.
    code = (
        "import sys, mnist_diffusion, mnist_diffusion.cli; mnist_diffusion.cli.build_parser(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'diffusers', 'transformers', "
        "'datasets', 'matplotlib')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_a_model_that_is_neither_here_nor_cached_is_named(tmp_path, capsys, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    expected = "No folder named 'nonexistent_dir' exists here, and as a Hub repo id 'nonexistent_dir' is not in the"
    argv = ["generate", "--class-label", "3", "--model", "nonexistent_dir", "-o", str(tmp_path / "x.png")]
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert main(argv) == 2
    assert expected in capsys.readouterr().err
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: the Hub is unreachable
    assert main(argv) == 2
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize(
    "command",
    [
        ["push", "{model}", "--repo-id", "user/model"],
        ["generate-dataset", "--num-images", "10", "--output-dir", "{out}", "--push-to-hub", "user/digits"],
    ],
)
def test_no_command_takes_a_token_on_the_command_line(saved_pipeline, tmp_path, capsys, command):
    command = [arg.format(model=saved_pipeline, out=tmp_path / "out") for arg in command]
    for argv in (["--token", "hf_secret"], ["--token=hf_secret"]):
        with pytest.raises(SystemExit) as exit_info:
            main([*command, *argv])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert "--token is not accepted" in err and "HF_TOKEN" in err and "hf_secret" not in err
    with pytest.raises(SystemExit):
        main([command[0], "--help"])
    assert "--token" not in capsys.readouterr().out
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["generate", "--class-label", "3"],
        ["generate-dataset", "--num-images", "5", "--output-dir", "unused"],
        ["evaluate"],
        ["analyze", "recognizability"],
        ["visualize", "classes"],
    ],
)
def test_a_seed_out_of_range_names_the_flag_before_any_work(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--seed", str(2**70)])
    assert exit_info.value.code == 2
    assert (
        f"argument --seed: {2**70} is out of range; expected an integer in 0..{2**63 - 1}" in capsys.readouterr().err
    )
