import os

import pytest

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    """A private local Ray instance with 2 CPUs for this test module."""
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "120")
    ray.init(address="local", num_cpus=2, namespace="viewcoop-tests", include_dashboard=False)
    yield
    ray.shutdown()
