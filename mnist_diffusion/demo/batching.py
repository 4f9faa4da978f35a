"""`SamplingWorker`: runs all of the demo's sampling on one thread, merging concurrent generation requests."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import PIL.Image
import torch

from ..pipelines import MnistDiffusionPipeline

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationRequest:
    r"""
    One user's request for `num_images` images; image `i` is sampled with `torch.Generator().manual_seed(seed + i)`,
    so the result does not depend on which other requests it was batched with.
    """

    prompt: str | None
    class_label: int | None
    scheduler: str
    num_inference_steps: int
    guidance_scale: float
    seed: int
    num_images: int

    @property
    def batch_key(self) -> tuple:
        """Requests with equal keys can share one pipeline call (same scheduler, steps, guidance and conditioning)."""
        return (
            self.scheduler,
            self.num_inference_steps,
            self.guidance_scale,
            self.prompt is None,
            self.class_label is None,
        )


@dataclass(frozen=True)
class Generation:
    r"""
    The images of a [`GenerationRequest`] and, when the worker has a `read_images`, the classifier's reading of each
    (class ids, `(num_images,)`), else None.
    """

    images: list[PIL.Image.Image]
    labels: torch.Tensor | None = None


class SamplingCancelled(Exception):
    """A sampling job stopped early because its caller cancelled it (the client left or pressed stop)."""


class SamplingControl:
    r"""
    A caller's handle on its sampling job: how many denoising steps the job has done, and a way to stop it.

    Use it as the pipeline's `callback_on_step_end` (or call it from one): it counts the steps and, once `cancel()`
    was called, sets the pipeline's `_interrupt`, so the denoising loop skips its remaining steps.

    Example:

    ```py
    >>> from mnist_diffusion.demo.batching import SamplingControl

    >>> control = SamplingControl()
    >>> control.cancel()  # e.g. from the request's thread, while the worker samples
    >>> images = pipe("a 7", num_inference_steps=50, callback_on_step_end=control).images  # doctest: +SKIP
    >>> control.steps  # doctest: +SKIP
    1
    ```
    """

    def __init__(self) -> None:
        self.steps = 0
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        """Stop the job after its current step (a job still queued never starts)."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        """Whether `cancel()` was called."""
        return self._cancelled.is_set()

    def __call__(self, pipe: MnistDiffusionPipeline, step: int, timestep: Any, tensors: dict) -> dict:
        self.steps = step + 1
        if self.cancelled:
            pipe._interrupt = True
        return {}

    def check(self, what: str) -> None:
        """Raise [`SamplingCancelled`] naming `what` and the steps done, when the job was cancelled."""
        if self.cancelled:
            raise SamplingCancelled(f"{what} was cancelled by its caller after {self.steps} denoising steps.")


@dataclass
class _Job:
    future: Future
    request: GenerationRequest | None = None
    function: Callable[[], Any] | None = None
    control: SamplingControl | None = None


class SamplingWorker:
    r"""
    One thread that runs every sampling job of the demo in turn, so the torch threads (the machine's cores) are never
    oversubscribed and a scheduler, which keeps per-call state, is never used by two calls at once.

    Generation requests waiting in the queue with the same settings ([`GenerationRequest.batch_key`]) run as one
    batched pipeline call of up to `max_batch_images` images, so the requests of several users share the UNet's
    forward passes; the classifier reads the merged images in one call too, on this thread, rather than on each
    user's request thread beside the sampler. Other jobs (`submit`) run alone, in arrival order.

    Args:
        pipes (`dict[str, MnistDiffusionPipeline]`): The pipeline for each scheduler name of the requests.
        max_batch_images (`int`, defaults to 64): Most images in one merged call (a single request may be larger).
            Everyone in a merged call waits for all of it, so merging stops at one full request's worth: small
            requests share a call's fixed costs, and the first users of a burst are not held up by the last.
        read_images (`Callable[[list[PIL.Image.Image]], torch.Tensor]`, *optional*): The classifier's class id for
            each image (e.g. [`DemoModels.read_images`]); each [`Generation`] then has its `labels`.
        by_steps (`dict[str, dict[int, MnistDiffusionPipeline]]`, *optional*): For a scheduler name, the pipeline
            of each step count, used instead of `pipes` (the few-step students, one per step count:
            [`DemoModels.few_step`]).

    Example:

    ```py
    >>> from mnist_diffusion.demo.batching import GenerationRequest, SamplingWorker
    >>> from mnist_diffusion.demo.models import FEW_STEP, DemoModels
    >>> from mnist_diffusion.pretrained import FAST_GUIDANCE_SCALE

    >>> models = DemoModels()
    >>> worker = SamplingWorker(models.samplers, read_images=models.read_images, by_steps={FEW_STEP: models.few_step})
    >>> request = GenerationRequest("a thick 7", 7, FEW_STEP, 4, FAST_GUIDANCE_SCALE, seed=0, num_images=4)
    >>> generation = worker.generate(request)
    >>> len(generation.images), generation.labels.tolist()
    (4, [7, 7, 7, 7])
    >>> worker.close()
    ```
    """

    def __init__(
        self,
        pipes: dict[str, MnistDiffusionPipeline],
        max_batch_images: int = 64,
        read_images: Callable[[list[PIL.Image.Image]], torch.Tensor] | None = None,
        by_steps: dict[str, dict[int, MnistDiffusionPipeline]] | None = None,
    ):
        self.pipes = pipes
        self.by_steps = by_steps or {}
        self.max_batch_images = max_batch_images
        self.read_images = read_images
        self._jobs: deque[_Job] = deque()
        self._condition = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="mnist-diffusion-sampler", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Jobs waiting for the worker (the running one not counted)."""
        with self._condition:
            return len(self._jobs)

    def submit(self, function: Callable[[], Any]) -> Future:
        """
        Run `function()` on the worker thread after the jobs already queued; returns its future. To stop it early,
        `function` passes a [`SamplingControl`] as its pipeline's `callback_on_step_end` and calls its `check`.
        """
        return self._put(_Job(Future(), function=function))

    def submit_generation(self, request: GenerationRequest, control: SamplingControl | None = None) -> Future:
        """
        Queue `request`; its future gives the [`Generation`]. `control` counts its steps and cancels it: a merged
        call stops once all of its requests are cancelled, and their futures raise [`SamplingCancelled`].
        """
        if request.scheduler not in self.pipes:
            raise ValueError(f"Unknown scheduler {request.scheduler!r}; expected one of {list(self.pipes)}.")
        return self._put(_Job(Future(), request=request, control=control or SamplingControl()))

    def generate(self, request: GenerationRequest) -> Generation:
        """The images of `request` and their reading (blocks until done; errors of the pipeline are raised here)."""
        return self.submit_generation(request).result()

    def close(self) -> None:
        """Stop the thread after the running job; jobs still queued are cancelled."""
        with self._condition:
            self._closed = True
            for job in self._jobs:
                job.future.cancel()
            self._jobs.clear()
            self._condition.notify_all()
        self._thread.join()

    def _put(self, job: _Job) -> Future:
        with self._condition:
            if self._closed:
                raise RuntimeError("The sampling worker is closed.")
            self._jobs.append(job)
            self._condition.notify()
        return job.future

    def _next_batch(self) -> list[_Job] | None:
        """The next job, with the queued generation requests that can join it; None once closed."""
        with self._condition:
            while not self._jobs and not self._closed:
                self._condition.wait()
            if self._closed:
                return None
            batch = [self._jobs.popleft()]
            if batch[0].request is None:
                return batch
            key, total = batch[0].request.batch_key, batch[0].request.num_images
            for job in list(self._jobs):
                request = job.request
                if request is not None and request.batch_key == key:
                    if total + request.num_images > self.max_batch_images:
                        break
                    self._jobs.remove(job)
                    batch.append(job)
                    total += request.num_images
            return batch

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            batch = [job for job in batch if job.future.set_running_or_notify_cancel()]
            if not batch:
                continue
            try:
                if batch[0].request is None:
                    batch[0].future.set_result(batch[0].function())
                else:
                    self._generate(batch)
            except Exception as error:  # handed to the waiting callers, which report it
                if isinstance(error, SamplingCancelled):
                    logger.info("%s", error)
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(error)

    def _generate(self, batch: list[_Job]) -> None:
        """One pipeline call (and one reading) for every request of `batch` (one prompt/label, generator per image)."""
        requests = [job.request for job in batch]
        first = requests[0]
        prompts = [r.prompt for r in requests for _ in range(r.num_images)]
        labels = [r.class_label for r in requests for _ in range(r.num_images)]
        generators = [torch.Generator().manual_seed(r.seed + i) for r in requests for i in range(r.num_images)]
        pipe = self.by_steps.get(first.scheduler, {}).get(first.num_inference_steps, self.pipes[first.scheduler])
        controls = [job.control for job in batch]

        def on_step_end(pipe: MnistDiffusionPipeline, step: int, timestep: Any, tensors: dict) -> dict:
            for control in controls:
                control.steps = step + 1
            if all(control.cancelled for control in controls):  # nobody waits for these images any more
                pipe._interrupt = True
            return {}

        images = pipe(
            prompt=None if first.prompt is None else prompts,
            class_labels=None if first.class_label is None else labels,
            num_inference_steps=first.num_inference_steps,
            guidance_scale=first.guidance_scale,
            generator=generators,
            callback_on_step_end=on_step_end,
        ).images
        if all(control.cancelled for control in controls):
            what = f"Generating {len(images)} images ({first.scheduler}, {first.num_inference_steps} steps)"
            controls[0].check(what)
        labels = None if self.read_images is None else self.read_images(images)
        start = 0
        for job, request in zip(batch, requests, strict=True):
            end = start + request.num_images
            job.future.set_result(Generation(images[start:end], None if labels is None else labels[start:end]))
            start = end
