"""One configuration trained without Ray, over seeds, with the per-epoch diagnostics.

The Ray-free engine (``viewcoop_core/engine/local_loop.py``) runs the same epoch as a
Ray Train worker (extract, cluster, train, evaluate) in one process: the quick way to
compare settings on a CPU. Prints one line per epoch (mAP, R1, the ARI of the image and
text pseudo-labels against the true ids, k-NN identity precision of image and text
features, the share of text-feature variance due to the image / the view percentages /
the clause order; the precision of the graph edges only the text adds, same text cluster
and not the same image cluster, and the share of same-identity pairs they find) and a
last line per seed; ``--json`` keeps every row. The README's
option measurements ("Defaults that depart from the printed paper") were made with it:

    python benchmarks/train_local.py experiments/table1_modules.yaml --profile bench \\
        cluster.camera_norm=none loss.cm_form=eq8 --seeds 0 1 2 --json runs/as-printed.json

``--true-image-labels`` trains on the true ids instead of the image clusters: the mAP that
perfect pseudo-labels would reach with the same backbone and schedule, the ceiling of what
any pseudo-label improvement can show on a profile (README, "Synthetic benchmark").
``--true-text-labels`` does the same for the text pseudo-labels only: what the
cross-modal half (L_t, L_cm and the mutual graph in L_g) adds when the text side carries
perfect identity and the image side is still clustered (README, "What perfect text
pseudo-labels would add").
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

COLUMNS = (
    "mAP",
    "R1",
    "img_ari",
    "txt_ari",
    "knn_prec_img",
    "knn_prec_txt",
    "txt_var_image",
    "txt_var_view",
    "txt_var_order",
    "graph_precision_txt_only",
    "graph_recall_txt_only",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config", help="a YAML config, e.g. experiments/table1_modules.yaml")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. loss.terms=full")
    parser.add_argument("--profile", help="a profile of the config, e.g. bench")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="train.seed values")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", help="write every epoch's row of every seed here")
    parser.add_argument(
        "--true-image-labels",
        action="store_true",
        help="train on the true ids instead of the image clusters: the ceiling that perfect "
        "pseudo-labels would reach with this schedule (a diagnostic, never a method)",
    )
    parser.add_argument(
        "--true-text-labels",
        action="store_true",
        help="the true ids as the text pseudo-labels, the image side still clustered: what "
        "the text's half would add with perfect identity (a diagnostic, never a method)",
    )
    # Intermixed: overrides may also follow the options (`... --profile bench a.b=1`).
    return parser.parse_intermixed_args(argv)


# The environment's entries on the console (all of them go to --json).
ENVIRONMENT_SHOWN = ("cpu", "torch_cpu_capability", "torch_threads", "torch", "numpy", "open_clip")


def line(seed: int, row: dict) -> str:
    cells = [f"{key} {100 * row[key]:.1f}" for key in COLUMNS if key in row]
    return f"seed {seed} epoch {int(row['epoch'])}: " + "  ".join(cells)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import torch

    from orchestrator.config import load_config
    from orchestrator.prepare import absolute_paths, ensure_weights, with_view_masks
    from viewcoop_core.engine.environment import software_environment
    from viewcoop_core.engine.local_loop import train_locally

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    # What the figures were computed on: per-seed digits hold on the same machine and stack.
    environment = software_environment()
    print(  # noqa: T201 - a report
        "environment: " + ", ".join(f"{k} {environment[k]}" for k in ENVIRONMENT_SHOWN)
    )
    runs = {}
    for seed in args.seeds:
        cfg = load_config(args.config, [*args.overrides, f"train.seed={seed}"], args.profile)
        # The dataset drawn if needed, and a data.view_parser's masks made and pinned.
        cfg = with_view_masks(ensure_weights(absolute_paths(cfg)))
        start = time.perf_counter()
        rows = train_locally(
            cfg,
            diagnostics=True,
            on_epoch=lambda r, s=seed: print(line(s, r)),
            true_image_labels=args.true_image_labels,
            true_text_labels=args.true_text_labels,
        )
        print(f"seed {seed}: {time.perf_counter() - start:.0f} s")  # noqa: T201 - a report
        runs[seed] = rows
    if args.json:
        record = {
            "config": args.config,
            "profile": args.profile,
            "overrides": args.overrides,
            "true_image_labels": args.true_image_labels,
            "true_text_labels": args.true_text_labels,
            "environment": environment,
        }
        Path(args.json).write_text(json.dumps({**record, "runs": runs}, indent=1, default=float))


if __name__ == "__main__":
    main()
