"""viewcoop make-synthetic and viewcoop pretrain-tiny: the synthetic world.

Both take a synthetic set's description as options generated from the fields of
SyntheticSpec (--num-ids, --num-cameras, ...), so the spec is spelled out in one place.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing

from orchestrator.commands import add_command
from orchestrator.console import console
from viewcoop_core.synthetic.recipe import PretrainRecipe
from viewcoop_core.synthetic.spec import SyntheticSpec
from viewcoop_core.vocabulary import PROJECT_MODEL_NAMES

# Shorter spellings kept for the options of earlier versions.
_ALIASES = {"num_ids": ["--ids"], "num_cameras": ["--cameras"]}


def add_spec_options(parser: argparse.ArgumentParser, defaults: SyntheticSpec) -> None:
    """One ``--<field>`` option per ``SyntheticSpec`` field, defaulting to ``defaults``."""
    hints = typing.get_type_hints(SyntheticSpec)
    group = parser.add_argument_group("synthetic set")
    for spec_field in dataclasses.fields(SyntheticSpec):
        name = spec_field.name
        kind = hints[name]
        convert = float if kind is float else int  # int | None parses as int
        group.add_argument(
            f"--{name.replace('_', '-')}",
            *_ALIASES.get(name, []),
            dest=f"spec_{name}",
            type=convert,
            default=getattr(defaults, name),
            help=f"(default: {getattr(defaults, name)})",
        )


def spec_from_args(args: argparse.Namespace) -> SyntheticSpec:
    values = {f.name: getattr(args, f"spec_{f.name}") for f in dataclasses.fields(SyntheticSpec)}
    return SyntheticSpec(**values)


def cmd_make_synthetic(args: argparse.Namespace) -> int:
    from viewcoop_core.synthetic import make_synthetic

    console.print(make_synthetic(args.out, spec_from_args(args)))
    return 0


def cmd_pretrain_tiny(args: argparse.Namespace) -> int:
    import torch

    from viewcoop_core.models.clip import build_clip
    from viewcoop_core.synthetic.probe import log_probe, reid_probe
    from viewcoop_core.synthetic.recipe import PretrainRecipe
    from viewcoop_core.synthetic.weights import make_synthetic_clip_weights

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    recipe = PretrainRecipe(
        spec=spec_from_args(args),
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.train_seed,
        model=args.model,
    )
    make_synthetic_clip_weights(args.out, recipe, args.work_dir, device=args.device)
    console.print(f"weights: {args.out} (recipe, summary and sha256 in its .json)")
    if args.probe_data is None:
        return 0
    settings = [(eps, k1) for eps in (0.5, 0.6) for k1 in (10, 20)]
    torch.manual_seed(0)
    for name, pretrained in (("random init", None), ("pretrained", str(args.out))):
        bundle = build_clip(args.model, pretrained=pretrained, image_size=args.spec_image_size)
        log_probe(name, reid_probe(bundle, args.probe_data, settings))
    return 0


def register(sub) -> None:
    synth = add_command(
        sub,
        "make-synthetic",
        "draw the synthetic multi-view vehicle set",
        "Draws procedural vehicles seen by several cameras from front, back, side and top,\n"
        "in the VeRi-776 layout, with an exact view mask per image (masks/).",
        "viewcoop make-synthetic --out data/syn --ids 40 --cameras 6 --seed 0",
    )
    synth.add_argument("--out", required=True, help="output folder (VeRi-776 layout + masks/)")
    add_spec_options(synth, SyntheticSpec())
    synth.set_defaults(func=cmd_make_synthetic)

    recipe = PretrainRecipe()
    pre = add_command(
        sub,
        "pretrain-tiny",
        "pretrain the tiny CLIP on captioned synthetic vehicles (the shipped weights)",
        "Pretrains the tiny CLIP (viewcoop-tiny, or --model viewcoop-small: every width\n"
        "doubled) contrastively on captioned synthetic vehicles for a fixed number of\n"
        "steps and writes .safetensors weights with a .json record (recipe, summary,\n"
        "sha256). The defaults are the recipe of the weights shipped as\n"
        "model.pretrained: synthetic; --out onto a shipped file remakes it.",
        "viewcoop pretrain-tiny --out data/pretrained/tiny.safetensors --steps 3000",
    )
    pre.add_argument("--out", required=True, help="the .safetensors file to write")
    pre.add_argument(
        "--work-dir", default="data/pretrained", help="where the pretraining set is drawn"
    )
    pre.add_argument("--steps", type=int, default=recipe.steps)
    pre.add_argument("--batch-size", type=int, default=recipe.batch_size)
    pre.add_argument("--lr", type=float, default=recipe.lr)
    pre.add_argument(
        "--train-seed",
        type=int,
        default=recipe.seed,
        help="initialisation, batches and augmentation (--seed draws the set)",
    )
    pre.add_argument(
        "--model",
        default=recipe.model,
        choices=PROJECT_MODEL_NAMES,
        help="the architecture to pretrain from random init",
    )
    pre.add_argument("--device", default="cpu", help="cpu or cuda")
    pre.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    pre.add_argument("--probe-data", help="a synthetic re-id set to probe the weights on")
    add_spec_options(pre, recipe.spec)
    pre.set_defaults(func=cmd_pretrain_tiny)
