"""The tree keeps its promises: equations findable, names defined once, layers one way."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from viewcoop_core import vocabulary
from viewcoop_core.data import datasets
from viewcoop_core.graph import dictionary

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("viewcoop_core", "workers", "orchestrator")


def equation_table_entries() -> list[tuple[str, str]]:
    """(equation, `path:qualname`) of every entry of the README's equation table."""
    text = (REPO / "README.md").read_text()
    table = text[text.index("### Where each equation lives") :]
    table = table[: table.index("\n\n", table.index("|---"))]
    entries = []
    for row in table.splitlines()[3:]:
        equation = row.split("|")[1].strip()
        entries += [(equation, ref) for ref in re.findall(r"`([\w/]+\.py:[\w.]+)`", row)]
    return entries


def test_readme_equation_table_covers_equations_1_to_9():
    equations = {eq for eq, _ in equation_table_entries()}
    assert {str(k) for k in range(1, 10)} <= equations


@pytest.mark.parametrize("equation, reference", equation_table_entries())
def test_every_equation_entry_resolves_to_a_function_naming_it(equation, reference):
    path, qualname = reference.split(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    target = module
    for part in qualname.split("."):
        target = getattr(target, part)
    assert callable(target), reference
    if equation.isdigit():
        doc = (target.__doc__ or "") + (module.__doc__ or "")
        assert f"Eq. {equation}" in doc or f"Eq. ({equation})" in doc, reference


def test_registries_agree_with_the_modules_that_implement_them():
    assert set(datasets.DATASETS) == set(vocabulary.DATASET_NAMES)
    dbscan = importlib.import_module("viewcoop_core.clustering.dbscan")
    assert dbscan.BACKENDS == vocabulary.DBSCAN_BACKENDS
    assert dictionary.BACKENDS == vocabulary.DICTIONARY_BACKEND_CHOICES
    assert vocabulary.VIEW_MASK_VALUES == (1, 2, 4, 3)


def test_validating_a_config_imports_neither_torch_nor_ray_nor_mlflow():
    code = (
        "import sys\n"
        "from orchestrator.config import load_config\n"
        "load_config('experiments/demo.yaml', ['train.epochs=3'])\n"
        "heavy = [m for m in ('torch', 'ray', 'mlflow') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_no_library_file_over_500_lines_and_at_most_three_over_400():
    sizes = {
        path: len(path.read_text().splitlines())
        for package in PACKAGES
        for path in (REPO / package).rglob("*.py")
    }
    assert max(sizes.values()) <= 500, max(sizes, key=sizes.get)
    assert sum(size > 400 for size in sizes.values()) <= 3, sorted(sizes, key=sizes.get)[-4:]


def test_workers_modules_are_the_ray_side():
    """Each workers/ module imports Ray, is wrapped as a Ray actor by the orchestrator, or
    is imported only by workers/ modules that are themselves Ray-side; core never imports
    workers."""
    core = [p.read_text() for p in (REPO / "viewcoop_core").rglob("*.py")]
    assert not any("from workers" in text or "import workers" in text for text in core)
    sources = {
        p.stem: p.read_text() for p in (REPO / "workers").glob("*.py") if p.stem != "__init__"
    }
    orchestrator = [p.read_text() for p in (REPO / "orchestrator").rglob("*.py")]
    ray_side = {
        name
        for name, text in sources.items()
        if re.search(r"^(import ray|from ray)", text, re.MULTILINE)
        or any(f"workers.{name}" in o and "ray.remote" in o for o in orchestrator)
    }
    changed = True
    while changed:
        changed = False
        for name in set(sources) - ray_side:
            importers = [
                other for other, text in sources.items() if f"workers.{name} import" in text
            ]
            outside = any(f"workers.{name}" in o for o in orchestrator)
            if importers and not outside and set(importers) <= ray_side:
                ray_side.add(name)
                changed = True
    assert ray_side == set(sources), sorted(set(sources) - ray_side)
