"""The demo's parts that need no browser: the sketch conversion, the sampling worker's batching, the test digits."""

from __future__ import annotations

import logging
import tempfile
import threading
from concurrent.futures import CancelledError
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mnist_diffusion import MnistDiffusionPipeline
from mnist_diffusion.classifier import MnistClassifier
from mnist_diffusion.cli import main
from mnist_diffusion.demo.batching import GenerationRequest, SamplingCancelled, SamplingControl, SamplingWorker
from mnist_diffusion.demo.drawing import sketch_to_digit
from mnist_diffusion.demo.models import FEW_STEP, DemoModels
from mnist_diffusion.demo.test_digits import load_test_digits
from mnist_diffusion.loading import open_pipeline
from mnist_diffusion.pretrained import FAST_DIFFUSION_MODEL, FAST_GUIDANCE_SCALE, FAST_STEPS, MNIST_CLASSIFIER
from mnist_diffusion.visualization import to_images

gradio = pytest.importorskip("gradio", reason="the demo's handlers need gradio: pip install -e '.[demo]'")

from mnist_diffusion.demo.handlers import DemoHandlers, named_classes  # noqa: E402
from mnist_diffusion.demo.sketchpad import MAX_DRAWING_PIXELS, check_drawing_size  # noqa: E402


@pytest.fixture(scope="module")
def models():
    return DemoModels()


@pytest.fixture
def handlers(models):
    worker = SamplingWorker(models.samplers, read_images=models.read_images, by_steps={FEW_STEP: models.few_step})
    yield DemoHandlers(models, worker, Path(tempfile.mkdtemp(prefix="mnist-diffusion-demo-test-")))
    worker.close()


def test_shipped_test_digits_are_real_digits_of_each_class():
    images, labels = load_test_digits()
    assert images.shape == (20, 1, 28, 28) and images.min() == -1 and images.max() == 1
    assert labels.tolist() == list(range(10)) * 2
    predicted, _ = MnistClassifier.from_pretrained(MNIST_CLASSIFIER).predict((images + 1) / 2)
    assert predicted.tolist() == labels.tolist()


def test_sketch_to_digit_centres_the_ink_like_mnist():
    # A white stroke near the corner of a black canvas, as the demo's sketchpad gives it (opaque RGBA).
    canvas = np.zeros((280, 280, 4), dtype=np.uint8)
    canvas[..., 3] = 255
    canvas[10:110, 10:30, :3] = 255
    digit = sketch_to_digit({"composite": canvas})
    assert digit.shape == (1, 1, 28, 28) and digit.min() == -1 and digit.max() == 1
    ink = (digit[0, 0] + 1) / 2
    rows, cols = torch.nonzero(ink > 0.5, as_tuple=True)
    assert rows.max() - rows.min() + 1 == 20  # the long side fills the 20x20 box
    centre = (ink * torch.arange(28.0)[:, None]).sum() / ink.sum(), (ink * torch.arange(28.0)).sum() / ink.sum()
    assert abs(centre[0] - 13.5) <= 1 and abs(centre[1] - 13.5) <= 1


def test_sketch_to_digit_reads_dark_ink_on_paper_and_transparent_canvases():
    paper = np.full((200, 200, 3), 255, dtype=np.uint8)
    paper[20:180, 90:110] = 0  # black pen on white paper
    transparent = np.zeros((200, 200, 4), dtype=np.uint8)
    transparent[20:180, 90:110] = (0, 0, 0, 255)  # black strokes on a transparent layer
    for drawing in (paper, {"composite": transparent}):
        digit = sketch_to_digit(drawing)
        assert digit[0, 0, 14, 14] == 1 and digit[0, 0, 0, 0] == -1  # white ink on black, like MNIST


@pytest.mark.parametrize("blank", [None, {"composite": None}, np.zeros((50, 50, 4), np.uint8), np.full((50, 50), 7)])
def test_sketch_to_digit_returns_none_for_a_blank_drawing(blank):
    assert sketch_to_digit(blank) is None


def test_worker_merges_waiting_requests_into_one_call_with_the_same_images(monkeypatch):
    pipe = open_pipeline(None, "dpm")
    pipe.set_progress_bar_config(disable=True)
    calls = []
    original_call = type(pipe).__call__

    def counting_call(self, *args, **kwargs):
        calls.append(len(kwargs["generator"]))
        return original_call(self, *args, **kwargs)

    classifier = MnistClassifier.from_pretrained(MNIST_CLASSIFIER).eval()
    read_calls = []

    def read_images(images):
        read_calls.append(len(images))
        pixels = torch.from_numpy(np.stack([np.asarray(image) for image in images])).unsqueeze(1) / 255
        return classifier.predict(pixels)[0]

    worker = SamplingWorker({"DPM-Solver++": pipe}, read_images=read_images)
    requests = [
        GenerationRequest(None, 3, "DPM-Solver++", 3, 1.4, seed=0, num_images=2),
        GenerationRequest(None, 5, "DPM-Solver++", 3, 1.4, seed=7, num_images=3),
        GenerationRequest("a thick 5", None, "DPM-Solver++", 3, 1.4, seed=0, num_images=1),  # cannot join
    ]
    results = {}
    release = threading.Event()
    monkeypatch.setattr(type(pipe), "__call__", counting_call)
    try:
        worker.submit(release.wait)  # hold the worker so that the requests queue up behind it
        threads = [threading.Thread(target=lambda r=r: results.__setitem__(r, worker.generate(r))) for r in requests]
        for thread in threads:
            thread.start()
        while worker.pending < len(requests):
            threading.Event().wait(0.01)
        release.set()
        for thread in threads:
            thread.join()
    finally:
        worker.close()
    monkeypatch.undo()
    assert calls == [5, 1]  # the two label requests in one call, the prompt-only one alone
    assert read_calls == [5, 1]  # and one reading of each call's images
    for request in requests:
        alone = pipe(
            prompt=request.prompt,
            class_labels=request.class_label,
            num_images_per_prompt=request.num_images,
            num_inference_steps=3,
            guidance_scale=1.4,
            generator=[torch.Generator().manual_seed(request.seed + i) for i in range(request.num_images)],
        ).images
        generation = results[request]
        assert len(generation.images) == len(generation.labels) == request.num_images
        assert generation.labels.tolist() == read_images(generation.images).tolist()  # each request's own readings
        for merged, single in zip(generation.images, alone, strict=True):
            difference = np.abs(np.asarray(merged, dtype=int) - np.asarray(single, dtype=int)).max()
            assert difference <= 2  # batch-size rounding of the UNet's matmuls at most


def test_worker_hands_errors_to_the_caller_and_keeps_running():
    pipe = open_pipeline(None, "dpm")
    worker = SamplingWorker({"DPM-Solver++": pipe})
    try:
        with pytest.raises(ValueError, match="Unknown scheduler 'Euler'"):
            worker.generate(GenerationRequest(None, 3, "Euler", 2, 1.0, seed=0, num_images=1))
        with pytest.raises(ValueError, match="out of range"):
            worker.generate(GenerationRequest(None, 12, "DPM-Solver++", 2, 1.0, seed=0, num_images=1))
        generation = worker.generate(GenerationRequest(None, 3, "DPM-Solver++", 2, 1.0, seed=0, num_images=2))
        assert len(generation.images) == 2 and generation.labels is None  # no classifier given: no reading
    finally:
        worker.close()


def test_few_step_sampler_shares_the_release_components_and_matches_the_shipped_student():
    models = DemoModels()
    fast = models.samplers[FEW_STEP]
    assert list(models.samplers) == [FEW_STEP, "DPM-Solver++", "DDIM", "DDPM"]  # the Generate tab's order
    assert fast.text_encoder is models.pipe.text_encoder and fast.tokenizer is models.pipe.tokenizer
    assert fast.unet is not models.pipe.unet and fast.guidance_embedded
    assert type(fast.scheduler).__name__ == "DDIMScheduler"
    # one student per step count: 1 step, 2 steps, 3-8 steps (the 4-step student is the pipeline's own UNet)
    assert sorted(models.few_step) == list(range(1, 9)) and fast is models.few_step[4]
    unets = [models.few_step[steps].unet for steps in range(1, 9)]
    assert [len({id(unet) for unet in unets[:n]}) for n in range(1, 9)] == [1, 2, 3, 3, 3, 3, 3, 3]
    # The student's own text encoder is the release's: sharing it changes no image.
    shipped = MnistDiffusionPipeline.from_pretrained(FAST_DIFFUSION_MODEL)
    for name, tensor in shipped.text_encoder.state_dict().items():
        assert torch.equal(tensor, models.pipe.text_encoder.state_dict()[name]), name
    settings = {"class_labels": 4, "num_inference_steps": 2, "guidance_scale": 1.4, "output_type": "pt"}
    ours = fast(prompt="a thin 4", generator=torch.Generator().manual_seed(0), **settings).images
    theirs = shipped(prompt="a thin 4", generator=torch.Generator().manual_seed(0), **settings).images
    assert torch.equal(ours, theirs)


def test_a_custom_model_has_no_few_step_sampler(tmp_path):
    open_pipeline(None).save_pretrained(tmp_path / "model")
    models = DemoModels(str(tmp_path / "model"))
    assert list(models.samplers) == ["DPM-Solver++", "DDIM", "DDPM"]  # the student is distilled from the release


def test_demo_command_refuses_a_bad_port(capsys):
    assert main(["demo", "--port", "70000"]) == 2
    assert "--port is 70000" in capsys.readouterr().err


def test_a_prompt_naming_no_class_or_another_class_than_the_one_picked_is_pointed_out(handlers):
    digits = [str(i) for i in range(10)]
    assert named_classes("a thick upright 5", digits) == [5] and named_classes("Seven, or a 1", digits) == [1, 7]
    assert named_classes("a banana riding a bicycle", digits) == [] and named_classes("a 17", digits) == []
    fashion = ["T-shirt/top", "Trouser", "Ankle boot"]
    assert named_classes("a red t-shirt", fashion) == [0] and named_classes("an ankle boot", fashion) == [2]
    assert "names no digit or class" in handlers.conditioning_note("a banana riding a bicycle", None)
    assert handlers.conditioning_note("a banana riding a bicycle", 3) is None  # the class says what to draw
    assert "names 5 but the class is 0" in handlers.conditioning_note("a thick upright 5", 0)
    assert handlers.conditioning_note("a thick upright 5", 5) is None
    assert handlers.conditioning_note("a thick upright 5", None) is None
    *_, (_, _, summary, _) = handlers.generate("a banana riding a bicycle", "(none)", FEW_STEP, 1, 1.45, 0, 2)
    assert summary.startswith("The prompt names no digit or class") and "The classifier reads them" in summary


def test_few_step_defaults_are_the_clis(handlers):
    from mnist_diffusion.commands import generate

    assert handlers.default_settings(FEW_STEP) == (FAST_STEPS, FAST_GUIDANCE_SCALE)
    assert handlers.default_settings("DPM-Solver++") == (20, 1.4)  # the release's recommended setting
    assert (generate.FAST_STEPS, generate.FAST_GUIDANCE_SCALE) == (FAST_STEPS, FAST_GUIDANCE_SCALE)


def test_forward_process_reads_the_models_predicted_x0_not_the_noisy_image(handlers):
    two = next(choice for choice in handlers.digit_choices if choice.endswith("(a 2)"))
    clean, noisy, predicted, info, _ = handlers.forward(two, None, 0, 0)
    assert predicted is None and "The classifier reads it as **2**" in info  # a clean digit: the classifier knows it
    for percent in (10, 25, 40):
        clean, noisy, predicted, info, _ = handlers.forward(two, None, percent, 0)
        assert "predicted x_0" in info and "reads as **2**" in info, info
        assert predicted.size == noisy.size and np.asarray(predicted).std() > 0
    namespace = {}
    exec(handlers.forward(two, None, 25, 3)[-1], namespace)  # noqa: S102 - the tab's own snippet makes the same
    shown = np.asarray(handlers.forward(two, None, 25, 3)[2], dtype=int)[::8, ::8]  # shown 8x enlarged
    made = np.asarray(to_images(namespace["predicted"])[0], dtype=int)
    assert np.abs(shown - made).max() <= 2


def test_worker_stops_a_cancelled_generation_after_its_current_step(models, caplog):
    worker = SamplingWorker(models.pipes)
    try:
        release = threading.Event()
        worker.submit(release.wait)  # hold the worker: the next job queues behind it
        queued = SamplingControl()
        never = worker.submit_generation(GenerationRequest(None, 3, "DDPM", 100, 1.4, 0, 4), queued)
        never.cancel()  # cancelled while queued: never runs
        long = GenerationRequest(None, 5, "DDPM", 100, 1.4, seed=0, num_images=8)
        control = SamplingControl()
        future = worker.submit_generation(long, control)
        release.set()
        while control.steps < 2:
            threading.Event().wait(0.01)
        with caplog.at_level(logging.INFO, logger="mnist_diffusion.demo.batching"):
            control.cancel()
            with pytest.raises(SamplingCancelled, match="cancelled by its caller after"):
                future.result()
        assert control.steps < 100 and queued.steps == 0
        with pytest.raises(CancelledError):
            never.result()
        assert [r.getMessage() for r in caplog.records] == [
            f"Generating 8 images (DDPM, 100 steps) was cancelled by its caller after {control.steps} denoising steps."
        ]
        # the worker serves the next request
        generation = worker.generate(GenerationRequest(None, 5, "DPM-Solver++", 2, 1.4, seed=0, num_images=1))
        assert len(generation.images) == 1
    finally:
        worker.close()


def test_a_merged_call_runs_on_while_one_of_its_requests_is_still_wanted(models):
    worker = SamplingWorker(models.pipes)
    try:
        release = threading.Event()
        worker.submit(release.wait)
        wanted, dropped = SamplingControl(), SamplingControl()
        kept = worker.submit_generation(GenerationRequest(None, 3, "DDIM", 6, 1.4, 0, 1), wanted)
        gone = worker.submit_generation(GenerationRequest(None, 5, "DDIM", 6, 1.4, 0, 1), dropped)
        dropped.cancel()
        release.set()
        assert len(kept.result().images) == 1 and wanted.steps == 6
        assert len(gone.result().images) == 1  # computed with the other in one call
    finally:
        worker.close()


def test_huge_drawing_is_refused_from_its_header(tmp_path):
    huge = tmp_path / "huge.png"
    Image.new("1", (12000, 12000)).save(huge)  # 144 million pixels in a small file
    assert huge.stat().st_size < 1_000_000
    with pytest.raises(gradio.Error, match=r"12000x12000 pixels; the demo takes at most 4,194,304 pixels \(2048x"):
        check_drawing_size(huge)
    with pytest.raises(gradio.Error, match="not an image"):
        check_drawing_size(b"not a png")
    Image.new("L", (2048, 2048)).save(tmp_path / "ok.png")
    check_drawing_size(tmp_path / "ok.png")
    assert MAX_DRAWING_PIXELS == 2048 * 2048
