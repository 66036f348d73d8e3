"""The software and hardware a run trained on, recorded with its results.

A run's figures are reproducible to the digit for a config and seed on one kind of machine
and software stack (every step is seeded and bounded by steps). Across machines they need
not be: the CPU's vector kernels (``torch.backends.cpu.get_cpu_capability()``: AVX2,
AVX512, ...), the thread count and the library builds can change the floating-point sums,
and unsupervised training can amplify the last bits through its clustering; on two
machines the per-seed figures differed while their means over seeds agreed (README,
"Synthetic benchmark"). So every run records what it ran on, next to its config: rank 0 of a Ray
run as MLflow tags ``env.<key>``, ``benchmarks/train_local.py`` in its ``--json``.
"""

from __future__ import annotations

import functools
import importlib.metadata
import platform
from collections.abc import Mapping

import torch

# Distributions whose version can change a run's figures (or says how it ran); the key is
# the name recorded, the value the distribution's name on PyPI.
# torch is recorded with its build (``torch.__version__``: +cpu, +cu132, ...).
PACKAGES = {
    "torchvision": "torchvision",
    "open_clip": "open-clip-torch",
    "numpy": "numpy",
    "scipy": "scipy",
    "scikit_learn": "scikit-learn",
    "pillow": "pillow",
    "cupy": "cupy",
    "cuml": "cuml",
    "ray": "ray",
    "mlflow": "mlflow",
}
NOT_INSTALLED = "not installed"
TAG_PREFIX = "env."


def package_version(distribution: str) -> str:
    """The installed version of ``distribution``, or ``not installed``. CUDA builds publish
    under suffixed names (``cupy-cuda12x``, ``cuml-cu12``): those are found by the module
    they install, which is ``distribution``'s name here."""
    names = [distribution, *installed_by_module().get(distribution.replace("-", "_"), [])]
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return NOT_INSTALLED


@functools.cache
def installed_by_module() -> Mapping[str, list[str]]:
    """Top-level module -> the distributions that install it (one scan per process)."""
    return importlib.metadata.packages_distributions()


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform`` says."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def software_environment() -> dict[str, str]:
    """``{name: value}`` (all strings): Python, torch, the packages of ``PACKAGES``, the
    CPU, torch's CPU kernel level and thread count, and the CUDA devices (``none`` without
    CUDA)."""
    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
    }
    env.update({key: package_version(dist) for key, dist in PACKAGES.items()})
    env["cpu"] = cpu_model()
    env["torch_cpu_capability"] = str(torch.backends.cpu.get_cpu_capability())
    env["torch_threads"] = str(torch.get_num_threads())
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        env["cuda_devices"] = ", ".join(names)
        env["cuda"] = str(torch.version.cuda)
        env["cudnn"] = str(torch.backends.cudnn.version())
    else:
        env["cuda_devices"] = "none"
    return env


def environment_tags(env: Mapping[str, str]) -> dict[str, str]:
    """MLflow tags ``env.<key>`` for ``software_environment()``'s entries."""
    return {f"{TAG_PREFIX}{key}": value for key, value in env.items()}


def environment_changes(recorded: Mapping[str, str], current: Mapping[str, str]) -> list[str]:
    """``key: recorded -> current`` for every entry of ``recorded`` that ``current`` changes
    (a run resumed on another machine or stack); new keys are not changes."""
    return [
        f"{key}: {recorded[key]} -> {current[key]}"
        for key in sorted(recorded)
        if key in current and recorded[key] != current[key]
    ]
