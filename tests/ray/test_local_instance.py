"""A local instance the project starts runs its workers at the driver's priority: Ray's
default niceness 15 starves the Train workers beside any other busy process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import os, ray
from orchestrator.train import init_ray
init_ray("local", "niceness-probe", num_cpus=1)
@ray.remote
def niceness():
    return os.nice(0)
@ray.remote
class Actor:
    def niceness(self):
        return os.nice(0)
print("niceness", ray.get(niceness.remote()), ray.get(Actor.remote().niceness.remote()))
ray.shutdown()
"""


def test_workers_of_a_local_instance_run_at_the_drivers_priority(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_worker_niceness"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    driver = os.nice(0)  # the probe inherits it (0 unless the suite itself runs under nice)
    assert f"niceness {driver} {driver}" in done.stdout
