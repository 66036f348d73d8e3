"""Byte-compile, once at install, the modules a run's processes import.

``make demo`` installs with ``pip --no-compile``: compiling every module of every package
(18,729 files) takes 57 s on 2 cores, most of it for modules no run imports. Without any
bytecode, though, each of a local run's processes (the driver, the Train controller, each
Train worker, the clustering actor, Ray's autoscaling coordinator) compiles the same
modules again at its first import, at the same time: ~85 s of a first demo on 2 cores.
Where ``PYTHONDONTWRITEBYTECODE`` is set (many CI images and containers), no process ever
writes what it compiled, so every run pays it again.

``python -m orchestrator.precompile`` imports those modules once, in one process, with
bytecode writing on, into the project's own ``.venv`` (``make`` calls it after the
install; it writes only ``__pycache__`` folders of installed packages): ~50 s on 2 cores
for ~6,600 files, 99% of the files a demo's processes compile (66 missed). A module
missing from the lists below is merely compiled at its first import, as before.
"""

from __future__ import annotations

import compileall
import importlib
import importlib.util
import logging
import pkgutil
import sys
import time
import warnings
from pathlib import Path

logger = logging.getLogger(__name__)

# The model stack (torch, open_clip, the pure-PyTorch core). One process imports it and
# then the orchestration stack below: two processes, one per stack, took as long (51 s vs
# 50 s on 2 cores), since the stacks share most of their imports.
MODEL_PACKAGES = ("viewcoop_core",)
MODEL_MODULES = (
    "torch.distributed",
    "torch.nn.parallel",
    "open_clip",
    "sklearn.cluster",
    "sklearn.metrics",
    "scipy.sparse.csgraph",
    "PIL.PngImagePlugin",
    "PIL.JpegImagePlugin",
)
# What a local run's processes import beyond the project's own imports (found by running
# a demo with PYTHONPYCACHEPREFIX set and listing the files all of its processes compiled):
# Ray's own processes (dashboard, agents), Ray Train v2's controller and actors, MLflow's
# SQLite store.
ORCHESTRATION_MODULES = (
    "ray._private.workers.default_worker",
    "ray._private.log_monitor",
    "ray.autoscaler._private.monitor",
    "ray.dashboard.dashboard",
    "ray.dashboard.agent",
    "ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator",
    "mlflow",
    "mlflow.tracking",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.db.utils",
    "sqlalchemy.dialects.sqlite",
    "alembic.command",
    "alembic.runtime.migration",
    "ray.util.collective",
    "ray.tune",
    "ray.train.v2._internal.execution.controller.controller",
    "ray.train.v2._internal.execution.worker_group.worker",
    "ray.train.v2.api.data_parallel_trainer",
    "ray.train.torch.config",
)
# Packages whose every module is loaded by name at run time (the dashboard's modules).
ORCHESTRATION_WALKED = ("ray.dashboard",)
ORCHESTRATION_PACKAGES = ("workers", "orchestrator")
# Folders of source files loaded by path rather than imported by name: MLflow's schema
# migrations (Alembic) and the libraries Ray's runtime-env agent puts on its own sys.path.
FOLDERS = (
    ("mlflow", "store/db_migrations/versions"),
    ("ray", "_private/runtime_env/agent/thirdparty_files"),
)


def package_modules(package_names: tuple[str, ...]) -> list[str]:
    """Every module of each package (the package itself first)."""
    names: list[str] = []
    for package_name in package_names:
        try:
            package = importlib.import_module(package_name)
        except Exception:
            continue
        names.append(package_name)
        prefix = package_name + "."
        walked = pkgutil.walk_packages(package.__path__, prefix, onerror=lambda _: None)
        names += [m.name for m in walked if ".tests" not in m.name and ".test_" not in m.name]
    return names


def module_names() -> list[str]:
    """Every module to import, once: the model stack first, then the orchestration stack."""
    names = [
        *package_modules(MODEL_PACKAGES),
        *MODEL_MODULES,
        *ORCHESTRATION_MODULES,
        *package_modules(ORCHESTRATION_WALKED),
        *package_modules(ORCHESTRATION_PACKAGES),
    ]
    return list(dict.fromkeys(names))


def precompile(names: list[str]) -> tuple[int, list[str]]:
    """Import ``names`` with bytecode writing on: (modules now loaded, names that failed)."""
    sys.dont_write_bytecode = False
    failed = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # import-time deprecation notes of the libraries
        for name in names:
            if name.endswith("__main__"):
                continue
            try:
                importlib.import_module(name)
            except Exception:  # an optional extra not installed: compiled when it is
                failed.append(name)
    return len(sys.modules), failed


def compile_folders(folders: tuple[tuple[str, str], ...]) -> int:
    """Byte-compile the source files of ``folders`` (package, relative path): how many."""
    count = 0
    for package_name, relative in folders:
        spec = importlib.util.find_spec(package_name)
        if spec is None or not spec.submodule_search_locations:
            continue
        folder = Path(next(iter(spec.submodule_search_locations))) / relative
        if folder.is_dir():
            compileall.compile_dir(folder, quiet=2)
            count += sum(1 for _ in folder.rglob("*.py"))
    return count


def main() -> None:
    # Before anything is imported: listing the project's modules imports its packages.
    sys.dont_write_bytecode = False
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.perf_counter()
    compiled = compile_folders(FOLDERS)
    loaded, failed = precompile(module_names())
    logger.info(
        "byte-compiled the modules a run imports (%d loaded, %d files by folder) in %.0f s",
        loaded,
        compiled,
        time.perf_counter() - start,
    )
    if failed:
        logger.info("not importable here (compiled at first use): %s", ", ".join(failed))


if __name__ == "__main__":
    main()
