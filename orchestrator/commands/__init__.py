"""The viewcoop subcommands, one module each: register(subparsers) adds the command's
parser; its handler imports the heavy libraries (torch, Ray, MLflow) only when it runs,
so `viewcoop --help` and config errors answer at once."""

from __future__ import annotations

import argparse


def add_command(sub, name: str, summary: str, description: str, example: str):
    """A subcommand whose help reads as plain text: the one-line ``summary`` in the
    command list, the ``description`` as written (line breaks kept) and an example."""
    return sub.add_parser(
        name,
        help=summary,
        description=description,
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
