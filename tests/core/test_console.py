"""What the user reads: help texts, log lines, the results table and the epoch lines."""

from __future__ import annotations

import argparse
import logging
import re

import pytest

from orchestrator.cli import build_parser, main
from orchestrator.console import library_log_level, setup_logging
from viewcoop_core.engine.results import HISTORY_COLUMNS, epoch_line, history_text

HISTORY = [
    {"epoch": 0, "mAP": 0.196, "R1": 0.262, "R5": 0.569, "R10": 0.738},
    {
        "epoch": 1,
        "mAP": 0.204,
        "R1": 0.25,
        "R5": 0.606,
        "R10": 1.0,
        "img_clusters": 1097,
        "txt_clusters": 118,
        "img_ari": -0.268,
        "txt_ari": 0.002,
    },
]


def subcommand_parsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_results_table_keeps_every_column_name_and_fits_100_columns():
    text = history_text(HISTORY)
    lines = text.splitlines()
    assert lines[0].split() == ["epoch", *HISTORY_COLUMNS]
    assert max(len(line) for line in lines) <= 100
    assert lines[1].split() == ["0", "19.6", "26.2", "56.9", "73.8", "-", "-", "-", "-"]
    assert lines[2].split() == ["1", "20.4", "25.0", "60.6", "100.0", "1097", "118", "-26.8", "0.2"]
    # right-aligned: every cell ends where its column name ends
    ends = [m.end() for m in re.finditer(r"\S+", lines[0])]
    assert all([m.end() for m in re.finditer(r"\S+", line)] == ends for line in lines[1:])


def test_epoch_line_shows_the_key_figures_it_has():
    line = epoch_line({**HISTORY[1], "loss": 3.21449, "skipped_training": 0.0}, 8, 23.4)
    assert line == (
        "epoch 1/8  loss 3.214  clusters 1097 img / 118 txt  img_ari -26.8  mAP 20.4  R1 25.0  (23 s)"
    )
    skipped = epoch_line({"epoch": 2, "img_clusters": 3, "skipped_training": 1.0, "loss": 1}, 8)
    assert skipped == "epoch 2/8  training skipped  clusters 3 img"


def test_help_is_plain_text_with_an_example_for_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    top = capsys.readouterr().out
    assert "``" not in top and "example:" in top
    commands = subcommand_parsers()
    assert {"demo", "train", "sweep", "ui", "show"} <= set(commands)
    for name, parser in commands.items():
        text = parser.format_help()
        assert "``" not in text, name
        assert re.search(rf"^example:\n  viewcoop {name}\b", text, re.MULTILINE), name
        assert name in top, name


def test_default_logging_shows_the_project_and_hides_library_chatter(capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_LOGGING_LEVEL", raising=False)  # setup_logging sets it
    try:
        setup_logging(verbose=False)
        logging.getLogger("viewcoop_core.x").info("project message")
        logging.getLogger("some.library").info("library chatter")
        logging.getLogger().info("root chatter")  # open_clip logs here
        logging.getLogger("some.library").warning("library warning")
        assert library_log_level() == logging.WARNING
        err = capsys.readouterr().err
        assert "project message" in err and "library warning" in err
        assert "chatter" not in err
        assert re.search(r"^\d\d:\d\d:\d\d warning: library warning$", err, re.MULTILINE)

        setup_logging(verbose=True)  # -v: the detail comes back
        logging.getLogger().info("root detail")
        logging.getLogger("viewcoop_core.x").debug("project debug")
        assert library_log_level() == logging.INFO
        err = capsys.readouterr().err
        assert "root detail" in err and "project debug" in err
    finally:
        setup_logging(verbose=False)
