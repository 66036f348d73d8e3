"""The viewcoop command; each subcommand lives in orchestrator/commands/."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys

from orchestrator.commands import inspect, parse_views, runs, sweep, synthetic, train
from orchestrator.console import setup_logging

logger = logging.getLogger("viewcoop")

COMMAND_MODULES = (train, sweep, runs, inspect, synthetic, parse_views)

DESCRIPTION = """\
ViewCoOp: unsupervised vehicle re-identification with CLIP-driven, view-aware prompt
learning, trained on Ray and recorded in MLflow.

  viewcoop demo    the method on synthetic vehicles (a few minutes on a laptop CPU)
  viewcoop ui      the MLflow UI on the runs it logged, on 127.0.0.1

viewcoop COMMAND --help explains a command and gives an example."""

EPILOG = """\
example:
  viewcoop demo train.epochs=2"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="viewcoop",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="show the detail: library and Ray worker logs, debug messages",
    )
    sub = parser.add_subparsers(title="commands", dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Overrides may follow options (`train cfg.yaml --run-name x a.b=1`): argparse leaves
    # positionals after an option unparsed, so collect the key=value ones here.
    args, extra = parser.parse_known_args(argv)
    stray = [e for e in extra if "=" not in e or e.startswith("-")]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    setup_logging(args.verbose)
    try:
        return args.func(args)
    except KeyboardInterrupt as exc:
        run_name = getattr(exc, "run_name", None)
        if run_name is not None:
            logger.error(
                "run %s interrupted; resume it with:\n  %s",
                run_name,
                resume_command(argv, run_name),
            )
        return 130
    except (ValueError, FileNotFoundError) as exc:
        logger.error("%s", exc)
        return 2


def resume_command(argv: list[str] | None, run_name: str) -> str:
    """The command line that was run, with ``--run-name`` so it resumes that run."""
    words = list(sys.argv[1:] if argv is None else argv)
    if not any(word.startswith("--run-name") for word in words):
        words += ["--run-name", run_name]
    return shlex.join(["viewcoop", *words])


if __name__ == "__main__":
    sys.exit(main())
