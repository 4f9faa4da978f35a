"""Benchmark: conditional accuracy and classifier FID of a pipeline across guidance scales and guidance intervals."""

from __future__ import annotations

import argparse
from statistics import fmean as mean

from mnist_diffusion.data import load_split, prepare_training_data
from mnist_diffusion.evaluation import evaluate, mean_and_range
from mnist_diffusion.loading import SCHEDULERS, open_pipeline
from mnist_diffusion.pretrained import DIFFUSION_MODEL


def parse_setting(value: str) -> tuple[float, float, float]:
    """`"2"` -> (2.0, 0.0, 1.0); `"2@0.2-0.8"` -> guidance 2 on the steps from 20% to 80% of the way."""
    scale, _, interval = value.partition("@")
    try:
        start, stop = (float(v) for v in interval.split("-")) if interval else (0.0, 1.0)
        setting = (float(scale), start, stop)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"guidance setting {value!r}; expected SCALE or SCALE@START-STOP such as '1.5' or '2@0.2-0.8'."
        ) from None
    if setting[0] < 0 or not 0 <= start <= stop <= 1:
        raise argparse.ArgumentTypeError(
            f"guidance setting {value!r}; expected a scale >= 0 and 0 <= START <= STOP <= 1."
        )
    return setting


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=str(DIFFUSION_MODEL), help="A saved pipeline (default: the released one).")
    parser.add_argument("--dataset_name", default="../shared/data/mnist", help="Real test split for classifier FID.")
    parser.add_argument("--scheduler", default="dpm", choices=sorted(SCHEDULERS))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--num_samples", type=int, default=1000, help="Samples per setting, spread over the digits.")
    parser.add_argument(
        "--conditioning", default="auto", choices=["auto", "label", "prompt", "label+prompt"], help="See evaluate()."
    )
    parser.add_argument(
        "--guidance",
        type=parse_setting,
        nargs="+",
        default=[parse_setting(v) for v in ("1", "1.25", "1.5", "2", "3", "2@0.2-1", "3@0.2-0.8")],
        help="Settings SCALE or SCALE@START-STOP (guidance on that fraction of the steps only).",
    )
    parser.add_argument(
        "--target_accuracy", type=float, default=99.5, help="Percent; settings meeting both are marked."
    )
    parser.add_argument("--target_fid_ratio", type=float, default=1.5, help="Classifier FID / its floor.")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0],
        help="One evaluation per seed (its samples and its random real subset for the floor); several are averaged.",
    )
    args = parser.parse_args()
    if args.num_samples < 10 or args.steps < 1:
        raise ValueError(f"--num_samples {args.num_samples}, --steps {args.steps}; expected >= 10 and >= 1.")
    return args


def main() -> None:
    args = parse_args()
    pipe = open_pipeline(args.model, args.scheduler)
    pipe.set_progress_bar_config(disable=True)
    test = prepare_training_data(load_split(args.dataset_name, split="test"))
    rows = []
    for scale, start, stop in args.guidance:
        results = []
        for seed in args.seeds:
            result = evaluate(
                pipe,
                args.num_samples,
                reference_images=test.images,
                reference_labels=test.labels,
                conditioning=args.conditioning,
                guidance_scale=scale,
                guidance_start=start,
                guidance_stop=stop,
                num_inference_steps=args.steps,
                seed=seed,
                style_samples_per_request=0,
            )
            results.append(result)
            print(
                f"guidance {scale:g} on [{start:g}, {stop:g}], seed {seed}: {result.accuracy:.2%}, "
                f"FID {result.classifier_fid:.1f}, floor {result.classifier_fid_floor:.1f}"
            )
        rows.append((scale, start, stop, results))
    floors = [result.classifier_fid_floor for result in rows[0][3]]
    floor = mean(floors)
    seeds = f"seed {args.seeds[0]}" if len(args.seeds) == 1 else f"mean over seeds {', '.join(map(str, args.seeds))}"
    print(
        f"\n{args.model}, {args.scheduler}-{args.steps}, {args.num_samples} samples "
        f"({rows[0][3][0].settings['conditioning']}), {seeds}; classifier FID floor {mean_and_range(floors, '.1f')}:\n"
    )
    print(
        "| guidance | steps guided | cond. accuracy | classifier FID | x floor | precision | recall | both targets |"
    )
    print("|---|---|---|---|---|---|---|---|")
    accuracy_format = ".1f" if len(args.seeds) == 1 else ".2f"  # a mean of several seeds to 0.01 points
    for scale, start, stop, results in rows:
        accuracies = [result.accuracy for result in results]
        fids = [result.classifier_fid for result in results]
        met = 100 * mean(accuracies) >= args.target_accuracy and mean(fids) / floor <= args.target_fid_ratio
        print(
            f"| {scale:g} | {start:.0%}-{stop:.0%} | {mean_and_range(accuracies, accuracy_format, 100, '%')} | "
            f"{mean_and_range(fids, '.1f')} | {mean(fids) / floor:.2f} | "
            f"{mean([result.precision for result in results]):.1%} | "
            f"{mean([result.recall for result in results]):.1%} | {'yes' if met else 'no'} |"
        )


if __name__ == "__main__":
    main()
