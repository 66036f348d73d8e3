"""What a run records of its machine and software stack (``engine/environment.py``)."""

from __future__ import annotations

import sys

import numpy as np
import torch

from viewcoop_core.engine import environment
from viewcoop_core.engine.environment import (
    NOT_INSTALLED,
    environment_changes,
    environment_tags,
    package_version,
    software_environment,
)


def test_the_environment_names_the_imported_versions_and_the_cpu_kernels():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        env = software_environment()
    finally:
        torch.set_num_threads(previous)
    assert env["torch"] == torch.__version__
    assert env["numpy"] == np.__version__
    assert env["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert env["torch_threads"] == "1"
    assert env["python"] == ".".join(map(str, sys.version_info[:3]))
    assert all(isinstance(value, str) and value for value in env.values())
    if not torch.cuda.is_available():
        assert env["cuda_devices"] == "none"


def test_a_missing_package_is_named_and_a_suffixed_build_is_found_by_its_module(monkeypatch):
    assert package_version("no-such-distribution-viewcoop") == NOT_INSTALLED
    # cupy-cuda12x installs the module cupy: found through the module, as here numpy.
    monkeypatch.setattr(environment, "installed_by_module", lambda: {"fakecupy": ["numpy"]})
    assert package_version("fakecupy") == np.__version__


def test_changes_list_what_a_resume_changed_and_tags_carry_the_prefix():
    recorded = {"torch_cpu_capability": "AVX2", "numpy": "2.4.6", "torch": "2.15.0"}
    current = {"torch_cpu_capability": "AVX512", "numpy": "2.4.6", "torch": "2.15.0", "new": "x"}
    assert environment_changes(recorded, current) == ["torch_cpu_capability: AVX2 -> AVX512"]
    assert environment_changes(recorded, recorded) == []
    assert environment_tags({"numpy": "2.4.6"}) == {"env.numpy": "2.4.6"}
