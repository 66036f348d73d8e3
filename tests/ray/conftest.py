import os

import pytest

ray = pytest.importorskip("ray")

from orchestrator.train import local_instance_settings  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    """A private local Ray instance with 2 CPUs for this test module, set up as the project
    sets up its own (workers at the driver's priority: on a loaded CI machine Ray's default
    niceness 15 starves them)."""
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "120")
    local_instance_settings()
    ray.init(address="local", num_cpus=2, namespace="viewcoop-tests", include_dashboard=False)
    yield
    ray.shutdown()
