"""`ray job submit` against a head this test starts (and stops) on free loopback ports."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from ray.job_submission import JobStatus, JobSubmissionClient

pytestmark = [pytest.mark.ray, pytest.mark.cluster]

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_dashboard(url: str, head: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise RuntimeError(f"ray head exited with {head.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/api/version", timeout=2):
                return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"no Ray dashboard at {url} after {timeout} s")


@pytest.fixture
def ray_head(monkeypatch):
    """A head node of our own (`ray start --head --block`), stopped by terminating it:
    `ray stop` would kill every Ray process on the machine. Token auth is off on both
    sides (Ray 2.59+ would otherwise need the head's token in the submitting shell)."""
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    env = dict(os.environ)
    gcs, dashboard = free_port(), free_port()
    # Ray's socket paths must stay under 107 bytes: pytest's tmp_path is too deep.
    temp_dir = tempfile.mkdtemp(prefix="vc-ray-")
    head = subprocess.Popen(
        [
            RAY,
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={gcs}",
            f"--dashboard-port={dashboard}",
            "--dashboard-host=127.0.0.1",
            "--num-cpus=2",
            "--include-dashboard=true",
            f"--temp-dir={temp_dir}",
        ],
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{dashboard}"
    try:
        wait_for_dashboard(url, head)
        yield url, env
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_job_submit_runs_the_smoke_config(ray_head, tmp_path):
    url, env = ray_head
    storage = tmp_path / "runs"
    entrypoint = (
        f"{sys.executable} -m orchestrator.cli train experiments/smoke.yaml --run-name submitted "
        f"data.root={tmp_path / 'data'} ray.storage_path={storage} ray.address=auto"
    )
    command = [RAY, "job", "submit", "--address", url, "--working-dir", str(REPO), "--"]
    # The dashboard answers before its job agent has registered; Ray then refuses the
    # submission ("No available agent", HTTP 500) without creating a job: ask again.
    for _ in range(12):
        submit = subprocess.run(
            [*command, *entrypoint.split()],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if "No available agent" not in submit.stdout + submit.stderr:
            break
        time.sleep(5)
    assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]
    job_id = re.search(r"Job '(raysubmit_\w+)' submitted", submit.stdout + submit.stderr).group(1)
    assert JobSubmissionClient(url).get_job_status(job_id) == JobStatus.SUCCEEDED
    client = MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("viewcoop-smoke").experiment_id])
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "mAP")] == [0, 1, 2]
