"""``viewcoop parse-views train | predict | evaluate``: the view parser that makes view masks.

VeRi-776 and VehicleID ship no view masks; the parser (``viewcoop_core.viewparse``) is
trained on annotated masks (PVEN's format: single-channel PNGs 0..4 matched by image
stem, or the synthetic generator's exact masks) and writes a mask for every image.
"""

from __future__ import annotations

import argparse
import json
from contextlib import contextmanager
from pathlib import Path

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from orchestrator.commands import add_command
from orchestrator.console import console


class RateColumn(ProgressColumn):
    """Items per second of a task, e.g. ``123.4 images/s``."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} {self.unit}/s" if speed else f"- {self.unit}/s")


@contextmanager
def progress_bar(description: str, unit: str):
    """A callback ``(done, total)`` drawing a progress bar with the rate in ``unit``/s."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(unit),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield update


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def cmd_train(args: argparse.Namespace) -> int:
    from viewcoop_core.viewparse.predict import resolve_device
    from viewcoop_core.viewparse.spec import ParserSpec, TrainSettings
    from viewcoop_core.viewparse.train import train_parser
    from viewcoop_core.viewparse.train_parallel import resolve_processes

    _set_threads(args.threads)
    spec = ParserSpec(
        input_size=args.input_size,
        base_channels=args.base_channels,
        depth=args.depth,
        stem_stride=args.stem_stride,
        detail_channels=args.detail_channels,
    )
    settings = TrainSettings(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        loss=args.loss,
        dice_weight=args.dice_weight,
        boundary_weight=args.boundary_weight,
        coarse_fraction=args.coarse_fraction,
    )
    device = resolve_device(args.device)
    processes = resolve_processes(args.processes, device, settings.batch_size)
    with progress_bar("training the view parser", "steps") as update:
        record = train_parser(
            args.images,
            args.masks,
            args.out,
            spec,
            settings,
            device=device,
            progress=lambda step, _loss: update(step, settings.steps),
            processes=processes,
        )
    console.print(
        f"parser: {args.out} ({record['num_pairs']} pairs, {settings.steps} steps, "
        f"{record['seconds']:.0f} s, final loss {record['loss_history'][-1]:.4f})"
    )
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from viewcoop_core.viewparse.predict import predict_folder

    _set_threads(args.threads)
    with progress_bar("predicting view masks", "images") as update:
        summary = predict_folder(
            args.images,
            args.checkpoint,
            args.out,
            batch_size=args.batch_size,
            device=args.device,
            progress=update,
            num_threads=args.io_threads,
            flip=args.flip,
        )
    console.print(
        f"{summary.predicted} masks predicted ({summary.images_per_second:.1f} images/s), "
        f"{summary.already_done} already there, in {summary.out_dir}"
    )
    return 0


def scores_table(title: str, scores: dict[str, float]) -> Table:
    table = Table(title=title)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in scores.items():
        table.add_row(name, f"{int(value)}" if name == "num_images" else f"{value:.4f}")
    return table


def cmd_evaluate(args: argparse.Namespace) -> int:
    from viewcoop_core.viewparse.evaluate import evaluate_parser
    from viewcoop_core.viewparse.predict import resolve_device

    _set_threads(args.threads)
    scores = evaluate_parser(
        args.images,
        args.masks,
        args.checkpoint,
        batch_size=args.batch_size,
        device=resolve_device(args.device),
        ratio_image_size=args.ratio_image_size,
        flip=args.flip,
    )
    console.print(scores_table(f"view parser {args.checkpoint} against {args.masks}", scores))
    if args.json:
        Path(args.json).write_text(json.dumps(scores, indent=2) + "\n")
    return 0


def _processes(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"--processes must be auto or a whole number >= 1, got {text!r}"
        )
    return value


def _common(parser: argparse.ArgumentParser, batch_size: int) -> None:
    parser.add_argument(
        "--images", nargs="+", required=True, metavar="DIR", help="folder(s) of images"
    )
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument(
        "--device", default="auto", help="auto (the GPU when there is one), cpu or cuda"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")


def _flip_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-flip",
        dest="flip",
        action="store_false",
        help="one forward pass per image (default: the mean of the image's and its mirror "
        "image's logits, twice the work, a better mask)",
    )


def register(sub) -> None:
    from viewcoop_core.viewparse.spec import PARSER_LOSSES, ParserSpec, TrainSettings

    spec, settings = ParserSpec(), TrainSettings()
    group = add_command(
        sub,
        "parse-views",
        "view parser: train it, predict view masks, evaluate it",
        "Make the view masks ViewCoOp needs (0 background, 1 front, 2 back, 3 top, 4 side):\n"
        "train a parser on images with masks, predict a mask per image, score it against\n"
        "true masks. A run can also name the checkpoint as data.view_parser.",
        "viewcoop parse-views predict --images data/VeRi/image_train "
        "--checkpoint parser.pt --out masks/",
    )
    commands = group.add_subparsers(dest="parse_views_command", required=True)

    train = commands.add_parser(
        "train", help="train a parser on images and their masks (PNG 0..4, same stem)"
    )
    _common(train, settings.batch_size)
    train.add_argument("--masks", required=True, metavar="DIR", help="masks, <image stem>.png")
    train.add_argument("--out", required=True, metavar="CKPT", help="checkpoint file to write")
    train.add_argument("--steps", type=int, default=settings.steps)
    train.add_argument("--lr", type=float, default=settings.lr)
    train.add_argument("--seed", type=int, default=settings.seed)
    train.add_argument(
        "--loss",
        choices=PARSER_LOSSES,
        default=settings.loss,
        help="pixel cross-entropy, or it plus a soft Dice term per view (default)",
    )
    train.add_argument("--dice-weight", type=float, default=settings.dice_weight)
    train.add_argument(
        "--boundary-weight",
        type=float,
        default=settings.boundary_weight,
        help="extra cross-entropy weight of face-boundary pixels (default %(default)s)",
    )
    train.add_argument(
        "--coarse-fraction",
        type=float,
        default=settings.coarse_fraction,
        help="the share of the steps trained at half the input size (default %(default)s)",
    )
    train.add_argument(
        "--processes",
        type=_processes,
        default="auto",
        help="CPU processes that split each batch: on a CPU, N processes at 1 thread train "
        "faster than one at N threads. auto (default): 1 on a GPU, else one per core with "
        "at least 8 pairs each",
    )
    train.add_argument("--input-size", type=int, default=spec.input_size, help="pixels")
    train.add_argument("--base-channels", type=int, default=spec.base_channels)
    train.add_argument("--depth", type=int, default=spec.depth)
    train.add_argument("--stem-stride", type=int, default=spec.stem_stride)
    train.add_argument(
        "--detail-channels",
        type=int,
        default=spec.detail_channels,
        help="width of the full-resolution edge head (0: none)",
    )
    train.set_defaults(func=cmd_train)

    predict = commands.add_parser(
        "predict", help="write a mask PNG per image (resumes an interrupted run)"
    )
    _common(predict, 64)
    predict.add_argument("--checkpoint", required=True, metavar="CKPT")
    predict.add_argument("--out", required=True, metavar="DIR", help="folder for <stem>.png")
    predict.add_argument(
        "--io-threads", type=int, default=4, help="threads reading images and writing PNGs"
    )
    _flip_option(predict)
    predict.set_defaults(func=cmd_predict)

    evaluate = commands.add_parser(
        "evaluate", help="per-class IoU and view-ratio error against true masks"
    )
    _common(evaluate, 64)
    evaluate.add_argument("--masks", required=True, metavar="DIR", help="true masks")
    evaluate.add_argument("--checkpoint", required=True, metavar="CKPT")
    evaluate.add_argument(
        "--ratio-image-size",
        type=int,
        default=256,
        help="masks are resized to this side before the view ratios are counted (the "
        "re-id input size)",
    )
    evaluate.add_argument("--json", metavar="FILE", help="also write the scores as JSON")
    _flip_option(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)
