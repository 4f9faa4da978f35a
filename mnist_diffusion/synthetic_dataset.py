"""Turn a pipeline into a `datasets` dataset: class-balanced, in resumable parquet shards, split across processes."""

from __future__ import annotations

import functools
import json
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import yaml
from accelerate import PartialState
from accelerate.utils import parse_flag_from_env
from huggingface_hub import CommitInfo, HfApi
from tqdm.auto import tqdm

from .evaluation import class_prompt, resolve_conditioning
from .hub import resolve_token
from .pipelines import MnistDiffusionPipeline

#: Images per parquet shard: the unit of work handed to a process and the most a crash can lose.
DEFAULT_SHARD_SIZE = 1000
#: The settings of the run a folder holds (hidden, so `datasets` does not read it as data); written before any shard.
SETTINGS_FILE = ".generate_dataset.json"
CARD_FILE = "README.md"
DATA_FOLDER = "data"
TEMPORARY_SUFFIX = ".tmp"


@dataclass(frozen=True)
class SyntheticDatasetSettings:
    r"""
    Everything that decides the images of a synthetic dataset; a folder is resumed only by a run with equal settings.

    Image `i` has class `class_labels[i % len(class_labels)]` and prompt `prompts[i % len(prompts)]` (when the
    conditioning uses prompts) and starts from the noise of `torch.Generator().manual_seed(seed + i)`, so the dataset
    does not depend on the batch size or on the number of processes.
    """

    num_images: int
    class_labels: list[int]
    label_names: list[str]
    prompts: list[str] | None
    conditioning: str
    model: str | None
    scheduler: str
    num_inference_steps: int
    guidance_scale: float
    guidance_start: float
    guidance_stop: float
    seed: int
    shard_size: int

    @property
    def num_shards(self) -> int:
        return -(-self.num_images // self.shard_size)

    def shard_path(self, index: int) -> str:
        """Where shard `index` lives inside the output folder (the Hub's parquet layout)."""
        return f"{DATA_FOLDER}/train-{index:05d}-of-{self.num_shards:05d}.parquet"

    def shard_images(self, index: int) -> range:
        """The image indices of shard `index`."""
        return range(index * self.shard_size, min((index + 1) * self.shard_size, self.num_images))

    def label_counts(self) -> dict[str, int]:
        """Images per class name, in class id order."""
        cycles, rest = divmod(self.num_images, len(self.class_labels))
        counts = Counter()
        for i, label in enumerate(self.class_labels):
            counts[label] += cycles + (i < rest)
        return {self.label_names[label]: counts[label] for label in sorted(counts)}

    def features(self) -> datasets.Features:
        """`ylecun/mnist`'s schema (`image`, `label` as `ClassLabel`) plus the `prompt` and `seed` of each image."""
        return datasets.Features(
            {
                "image": datasets.Image(),
                "label": datasets.ClassLabel(names=self.label_names),
                "prompt": datasets.Value("string"),
                "seed": datasets.Value("int64"),
            }
        )


def dataset_settings(
    pipe: MnistDiffusionPipeline,
    num_images: int,
    *,
    class_labels: Sequence[int | str] | None = None,
    prompts: Sequence[str] | None = None,
    conditioning: str = "auto",
    num_inference_steps: int = 50,
    guidance_scale: float = 3.0,
    guidance_start: float = 0.0,
    guidance_stop: float = 1.0,
    seed: int = 0,
    shard_size: int = DEFAULT_SHARD_SIZE,
    model_name: str | None = None,
) -> SyntheticDatasetSettings:
    r"""
    Check the request against the pipeline and fix what each image will be ([`SyntheticDatasetSettings`]).

    Classes cycle through `class_labels` (default: every class of the pipeline, so the dataset is balanced);
    `prompts`, when given, pair with them one to one (the same length). Without prompts, a conditioning that uses
    text asks for each class with its plain prompt ("a handwritten 7"). Raises `ValueError` naming a bad value.
    """
    if num_images < 1:
        raise ValueError(f"num_images is {num_images}; expected at least 1 image.")
    if shard_size < 1:
        raise ValueError(f"shard_size is {shard_size}; expected at least 1 image per shard.")
    label_names = pipe.label_names
    if not label_names:
        raise ValueError(
            "This pipeline has no class labels (its id2label is empty), so its images cannot be labelled; expected "
            "a class-conditioned model such as the released mnist-diffusion."
        )
    labels = pipe.resolve_class_labels(
        list(class_labels) if class_labels is not None else list(range(len(label_names)))
    )
    conditioning = resolve_conditioning(pipe, conditioning)
    if prompts is not None:
        if "prompt" not in conditioning:
            raise ValueError(f"Prompts were given but the conditioning is {conditioning!r}; expected one with text.")
        if class_labels is None or len(prompts) != len(labels):
            raise ValueError(
                f"{len(prompts)} prompts for {len(labels)} class labels; expected one class label per prompt."
            )
        prompts = list(prompts)
    elif "prompt" in conditioning:
        prompts = [class_prompt(label_names[label]) for label in labels]
    return SyntheticDatasetSettings(
        num_images=num_images,
        class_labels=labels,
        label_names=label_names,
        prompts=prompts,
        conditioning=conditioning,
        model=model_name if model_name is not None else pipe.name_or_path and str(pipe.name_or_path),
        scheduler=type(pipe.scheduler).__name__,
        num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale,
        guidance_start=guidance_start,
        guidance_stop=guidance_stop,
        seed=seed,
        shard_size=shard_size,
    )


def is_finished_dataset(folder: str | os.PathLike) -> bool:
    r"""
    Whether `folder` holds a finished [`generate_dataset`] run: one with its dataset card, the last file a run writes
    (so a killed or unfinished run has none).

    Example:

    ```py
    >>> from mnist_diffusion.synthetic_dataset import is_finished_dataset

    >>> is_finished_dataset("synthetic-mnist")  # doctest: +SKIP
    True
    ```
    """
    return (Path(folder) / CARD_FILE).is_file()


def check_output_folder(output_dir: Path, settings: SyntheticDatasetSettings | None = None) -> None:
    r"""
    Refuse (`ValueError`) a file, or a non-empty folder that is not an unfinished run with these `settings` (with
    `None`: not an unfinished run at all, a check that needs no model); nothing in the folder is touched.
    """
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"Output folder {str(output_dir)!r} is a file; expected a new or empty folder.")
    if not output_dir.is_dir() or not any(output_dir.iterdir()):
        return
    settings_file = output_dir / SETTINGS_FILE
    if not settings_file.is_file():
        raise ValueError(
            f"Output folder {str(output_dir)!r} is not empty and holds no unfinished generate-dataset run; expected "
            "a new or empty folder (nothing was written)."
        )
    if settings is None:
        return
    previous = json.loads(settings_file.read_text())
    changed = sorted(key for key, value in asdict(settings).items() if previous.get(key) != value)
    if changed:
        raise ValueError(
            f"Output folder {str(output_dir)!r} holds an unfinished run with other settings ({', '.join(changed)}); "
            "expected the same command to resume it, or a new folder (nothing was written)."
        )
    if is_finished_dataset(output_dir):
        raise ValueError(
            f"Output folder {str(output_dir)!r} already holds the finished dataset of this command; expected a new "
            "or empty folder (nothing was written)."
        )


def write_atomically(path: Path, write: Callable[[str], object]) -> None:
    """Call `write(temporary_path)`, then move that file to `path` in one step: `path` is complete or absent."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}{TEMPORARY_SUFFIX}")
    write(str(temporary))
    os.replace(temporary, path)


def generate_shard(
    pipe: MnistDiffusionPipeline, settings: SyntheticDatasetSettings, index: int, batch_size: int, progress: tqdm
) -> pa.Table:
    """The images of shard `index`, `batch_size` per pipeline call, as an Arrow table with the dataset's features."""
    rows = {"image": [], "label": [], "prompt": [], "seed": []}
    shard = settings.shard_images(index)
    for start in range(shard.start, shard.stop, batch_size):
        images = range(start, min(start + batch_size, shard.stop))
        labels = [settings.class_labels[i % len(settings.class_labels)] for i in images]
        prompts = [settings.prompts[i % len(settings.prompts)] for i in images] if settings.prompts else None
        output = pipe(
            prompt=prompts,
            class_labels=labels if "label" in settings.conditioning else None,
            num_inference_steps=settings.num_inference_steps,
            guidance_scale=settings.guidance_scale,
            guidance_start=settings.guidance_start,
            guidance_stop=settings.guidance_stop,
            generator=[torch.Generator().manual_seed(settings.seed + i) for i in images],
        )
        rows["image"] += output.images
        rows["label"] += labels
        rows["prompt"] += prompts or [None] * len(images)
        rows["seed"] += [settings.seed + i for i in images]
        progress.update(len(images))
    return datasets.Dataset.from_dict(rows, features=settings.features()).data.table


def write_dataset_card(output_dir: Path, settings: SyntheticDatasetSettings) -> None:
    r"""
    Write README.md: the Hub's YAML and the model, sampler, settings and counts per class.

    The YAML names no `configs`: `datasets` finds the split from the shard names, and a local folder's cache key then
    follows its files (with `configs`, regenerating a folder of the same name could load a stale cache).
    """
    metadata = {
        "task_categories": ["image-classification"],
        "tags": ["synthetic", "mnist-diffusion"],
    }
    rows = [
        ("model", settings.model or "an in-memory pipeline"),
        ("sampler", f"{settings.scheduler}, {settings.num_inference_steps} steps"),
        ("guidance", f"{settings.guidance_scale} on the steps from {settings.guidance_start} to "
         f"{settings.guidance_stop} of the way"),
        ("conditioning", settings.conditioning),
        ("images", f"{settings.num_images} in {settings.num_shards} shards of up to {settings.shard_size}"),
        ("seeds", f"image i starts from the noise of seed {settings.seed} + i"),
    ]  # fmt: skip
    counts = settings.label_counts()
    card = [
        f"---\n{yaml.safe_dump(metadata, sort_keys=False)}---\n",
        "# Synthetic dataset generated with mnist-diffusion\n",
        "Every image was generated by a diffusion model; the columns are those of `ylecun/mnist` (`image`, `label`) "
        "plus the `prompt` (empty for label-only conditioning) and `seed` of each image.\n",
        "| setting | value |\n| --- | --- |",
        *(f"| {name} | {value} |" for name, value in rows),
        "\n| class | images |\n| --- | --- |",
        *(f"| {name} | {count} |" for name, count in counts.items()),
        '\n```python\nimport datasets\n\ndataset = datasets.load_dataset(PATH_OR_REPO_ID, split="train")\n```\n',
    ]
    write_atomically(output_dir / CARD_FILE, lambda path: Path(path).write_text("\n".join(card)))


def generate_dataset(
    pipe: MnistDiffusionPipeline,
    output_dir: str | os.PathLike,
    num_images: int,
    *,
    batch_size: int = 64,
    **settings_kwargs,
) -> SyntheticDatasetSettings:
    r"""
    Generate `num_images` labelled images with `pipe` into `output_dir`, in the Hub's parquet layout with
    `ylecun/mnist`'s schema (plus `prompt` and `seed` columns) and a dataset card, so
    `datasets.load_dataset(output_dir)` and `training/train.py --dataset_name output_dir` read it as they read MNIST.

    Shards of `shard_size` images are written atomically (a killed run leaves only complete shards); calling again
    with the same settings generates only the missing shards. Under `accelerate launch`, the missing shards are split
    between the processes with `PartialState().split_between_processes`; image `i` comes from seed `seed + i`, so the
    dataset is the same for any number of processes (bit for bit at the same `batch_size` and threads per process;
    another batch size sums floats in another order, which can round a pixel one grey level the other way). A
    non-empty `output_dir` that is not an unfinished run with these settings raises `ValueError` before anything is
    written.

    `settings_kwargs` are those of [`dataset_settings`]: `class_labels`, `prompts`, `conditioning`,
    `num_inference_steps`, `guidance_scale`, `guidance_start`, `guidance_stop`, `seed`, `shard_size`, and
    `model_name`, recorded in the card (default `pipe.name_or_path`).

    Example:

    ```py
    >>> import datasets
    >>> from mnist_diffusion.loading import open_fast_pipeline
    >>> from mnist_diffusion.synthetic_dataset import generate_dataset

    >>> pipe = open_fast_pipeline(4)
    >>> settings = generate_dataset(pipe, "synthetic-mnist", 1000, num_inference_steps=4, guidance_scale=1.45)
    >>> datasets.load_dataset("synthetic-mnist", split="train").features["label"].names[:3]
    ['0', '1', '2']
    ```
    """
    if batch_size < 1:
        raise ValueError(f"batch_size is {batch_size}; expected at least 1 image per pipeline call.")
    settings = dataset_settings(pipe, num_images, **settings_kwargs)
    output_dir = Path(output_dir)
    # `accelerate launch --cpu` (or ACCELERATE_USE_CPU=1) asks for CPU processes, as `Accelerator` reads it.
    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    # Every process checks and lists the folder before anyone writes, so all split the same list of missing shards.
    check_output_folder(output_dir, settings)
    missing = [i for i in range(settings.num_shards) if not (output_dir / settings.shard_path(i)).is_file()]
    state.wait_for_everyone()
    if state.is_main_process:
        (output_dir / DATA_FOLDER).mkdir(parents=True, exist_ok=True)
        for leftover in (output_dir / DATA_FOLDER).glob(f".*{TEMPORARY_SUFFIX}"):  # shards a killed run was writing
            leftover.unlink()
        settings_text = json.dumps(asdict(settings), indent=2) + "\n"
        write_atomically(output_dir / SETTINGS_FILE, lambda path: Path(path).write_text(settings_text))
    state.wait_for_everyone()
    pipe.to(state.device)
    previous_config = getattr(pipe, "_progress_bar_config", {}).copy()
    pipe.set_progress_bar_config(disable=True)
    try:
        with state.split_between_processes(missing) as mine:
            total = sum(len(settings.shard_images(i)) for i in mine)
            description = "generate-dataset" + (
                f" (process 0 of {state.num_processes})" if state.num_processes > 1 else ""
            )
            with tqdm(total=total, desc=description, unit="image", disable=not state.is_main_process) as progress:
                for index in mine:
                    shard = generate_shard(pipe, settings, index, batch_size, progress)
                    write_atomically(output_dir / settings.shard_path(index), functools.partial(pq.write_table, shard))
    finally:
        pipe._progress_bar_config = previous_config
    state.wait_for_everyone()
    if state.is_main_process:
        write_dataset_card(output_dir, settings)
    state.wait_for_everyone()
    return settings


def push_dataset_to_hub(
    output_dir: str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload a synthetic dataset generated with mnist-diffusion",
) -> CommitInfo:
    r"""
    Upload a finished [`generate_dataset`] folder (card and shards; not its hidden settings file) as the dataset repo
    `repo_id`, created if needed, in one commit.

    Example:

    ```py
    >>> from mnist_diffusion.synthetic_dataset import push_dataset_to_hub

    >>> push_dataset_to_hub("synthetic-mnist", "user/synthetic-mnist", private=True)  # doctest: +SKIP
    ```
    """
    output_dir = Path(output_dir)
    if not is_finished_dataset(output_dir):
        raise ValueError(
            f"{str(output_dir)!r} holds no finished generate-dataset run (no {CARD_FILE}); expected a finished one."
        )
    api = HfApi(token=resolve_token(token))
    repo_id = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True).repo_id
    return api.upload_folder(
        repo_id=repo_id,
        repo_type="dataset",
        folder_path=output_dir,
        commit_message=commit_message,
        allow_patterns=[CARD_FILE, f"{DATA_FOLDER}/*.parquet"],
    )
