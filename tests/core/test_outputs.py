"""Every writer claims its folder: new or empty -> created and marked; marked by the
project -> reused; anything else -> refused by name, nothing touched."""

from __future__ import annotations

import pytest

from orchestrator.sweep.plan import prepare_sweep_dir
from viewcoop_core.outputs import (
    ForeignOutputError,
    check_output_name,
    claim_output_dir,
    exclusive_folder,
    owns,
)


def test_a_new_or_empty_folder_is_created_marked_and_then_ours(tmp_path):
    for folder in (tmp_path / "new" / "deep", tmp_path / "empty"):
        if folder.name == "empty":
            folder.mkdir()
        assert claim_output_dir(folder, "figures") == folder
        assert owns(folder, "figures") and not owns(folder, "sweep")
        (folder / "fig.png").write_bytes(b"ours")
        assert claim_output_dir(folder, "figures") == folder  # ours: reused


def test_a_foreign_folder_or_file_is_refused_by_name_and_left_as_it_was(tmp_path):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(ForeignOutputError, match=f"{foreign}.*holiday.jpg"):
        claim_output_dir(foreign, "figures", purpose="figures")
    assert [p.name for p in foreign.iterdir()] == ["holiday.jpg"]
    ours_for_other_kind = tmp_path / "sets"
    claim_output_dir(ours_for_other_kind, "synthetic-set")
    (ours_for_other_kind / "meta.json").write_text("{}")
    with pytest.raises(ForeignOutputError, match="sets"):
        claim_output_dir(ours_for_other_kind, "figures")
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    with pytest.raises(ForeignOutputError, match="not a folder"):
        claim_output_dir(a_file, "figures")


def test_a_sweep_refuses_a_foreign_folder_by_name(tmp_path):
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "chapter1.tex").write_text("...")
    with pytest.raises(ForeignOutputError, match="chapter1.tex"):
        prepare_sweep_dir(foreign, {"name": "s"}, resume=False)
    assert [p.name for p in foreign.iterdir()] == ["chapter1.tex"]


@pytest.mark.parametrize("name", ["../up", "a/b", "", ".hidden", "x y"])
def test_run_and_sweep_names_stay_one_folder(name):
    with pytest.raises(ValueError, match="run name"):
        check_output_name(name, "run name")


def test_an_exclusive_folder_leaves_nothing_behind_and_refuses_a_file(tmp_path):
    with exclusive_folder(tmp_path / "new") as folder:
        assert folder.is_dir()
    assert list((tmp_path / "new").iterdir()) == []
    (tmp_path / "file").write_text("a user's file")
    with pytest.raises(ForeignOutputError, match="file exists and is not a folder"):
        with exclusive_folder(tmp_path / "file"):
            pass
    assert (tmp_path / "file").read_text() == "a user's file"
