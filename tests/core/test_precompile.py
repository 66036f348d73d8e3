"""The install-time byte-compilation of what a run imports (``orchestrator.precompile``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from orchestrator import precompile


def test_every_listed_library_module_exists():
    """A stale name would silently leave that module uncompiled at install."""
    listed = (*precompile.MODEL_MODULES, *precompile.ORCHESTRATION_MODULES)
    missing = [name for name in listed if importlib.util.find_spec(name) is None]
    assert missing == []
    for package_name, relative in precompile.FOLDERS:
        spec = importlib.util.find_spec(package_name)
        assert (Path(next(iter(spec.submodule_search_locations))) / relative).is_dir()


def test_the_project_modules_are_all_listed():
    names = precompile.module_names()
    for expected in (
        "viewcoop_core.engine.epoch",
        "workers.train_loop",
        "orchestrator.cli",
        "ray.dashboard.modules.job.job_head",
    ):
        assert expected in names
    assert "orchestrator.precompile" in names and len(names) == len(set(names))


def test_bytecode_is_written_even_where_the_environment_turns_it_off(tmp_path, monkeypatch):
    package = tmp_path / "precompile_probe"
    package.mkdir()
    (package / "__init__.py").write_text("VALUE = 1\n")
    (package / "child.py").write_text("VALUE = 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # as PYTHONDONTWRITEBYTECODE=1
    monkeypatch.setattr(sys, "pycache_prefix", None)
    loaded, failed = precompile.precompile(
        ["precompile_probe.child", "precompile_probe_absent", "precompile_probe.__main__"]
    )
    assert failed == ["precompile_probe_absent"]
    cached = sorted(p.name.split(".")[0] for p in (package / "__pycache__").glob("*.pyc"))
    assert cached == ["__init__", "child"]
    assert loaded == len(sys.modules)


def test_main_writes_the_bytecode_of_the_packages_it_lists(tmp_path, monkeypatch):
    """Listing a package's modules imports the package: that must write bytecode too."""
    package = tmp_path / "precompile_probe"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from precompile_probe.sub import leaf\n")
    (package / "sub" / "leaf.py").write_text("VALUE = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)
    monkeypatch.setattr(sys, "pycache_prefix", None)
    monkeypatch.setattr(precompile, "MODEL_PACKAGES", ("precompile_probe",))
    for name in (
        "MODEL_MODULES",
        "ORCHESTRATION_MODULES",
        "ORCHESTRATION_WALKED",
        "ORCHESTRATION_PACKAGES",
        "FOLDERS",
    ):
        monkeypatch.setattr(precompile, name, ())
    precompile.main()
    assert (package / "sub" / "__pycache__").is_dir()
    assert sorted(
        p.name.split(".")[0] for p in (package / "sub" / "__pycache__").glob("*.pyc")
    ) == [
        "__init__",
        "leaf",
    ]


@pytest.fixture(autouse=True)
def _forget_probe_modules():
    yield
    for name in [n for n in sys.modules if n.startswith("precompile_probe")]:
        del sys.modules[name]
