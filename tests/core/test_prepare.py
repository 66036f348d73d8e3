"""Everything before Ray: bad configs, bad files and an unreachable Ray head are reported
without starting (or importing) Ray, MLflow or torch, and leave no run folder behind."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import ray
import yaml
from veri_files import write_set

from orchestrator.config import load_config
from orchestrator.prepare import SKIP_LIST, check_reachable, prepare_run, ray_endpoint
from orchestrator.sweep.plan import plan_sweep
from orchestrator.train import init_ray
from viewcoop_core.config import ConfigError
from viewcoop_core.data.datasets import load_dataset
from viewcoop_core.data.preflight import DataCheckError

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "ray", "mlflow")


def veri_overrides(root: Path, storage: Path, **extra) -> dict:
    return {
        "data.dataset": "veri776",
        "data.root": str(root),
        "data.masks_dir": str(root / "masks"),
        "data.max_skipped_fraction": 0.2,
        "ray.storage_path": str(storage),
        **extra,
    }


def run_cli(args: list[str]) -> subprocess.CompletedProcess:
    """``viewcoop ARGS`` in a fresh interpreter; stdout ends with the heavy modules imported."""
    code = (
        "import sys\n"
        "from orchestrator.cli import main\n"
        f"rc = main({args!r})\n"
        f"print('HEAVY', [m for m in {HEAVY!r} if m in sys.modules])\n"
        "sys.exit(rc)\n"
    )
    env = {**os.environ, "COLUMNS": "1000"}  # rich wraps log lines at the terminal width
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


def assert_refused_before_ray(result: subprocess.CompletedProcess, message: str) -> None:
    """Exit status 2, ``message`` logged, and neither torch, Ray nor MLflow imported."""
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "HEAVY []" in result.stdout


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_config_typo_fails_before_any_heavy_import(tmp_path):
    result = run_cli(
        ["train", "experiments/smoke.yaml", f"ray.storage_path={tmp_path}", "train.num_instances=0"]
    )
    assert_refused_before_ray(result, "train.num_instances=0 is not allowed")
    assert not any(tmp_path.iterdir())


def test_a_bad_dataset_file_fails_before_ray_and_leaves_no_run_folder(tmp_path):
    root, storage = tmp_path / "veri", tmp_path / "runs"
    bad = write_set(root)["image_query"][1]
    bad.write_bytes(b"")
    overrides = [f"{k}={v}" for k, v in veri_overrides(root, storage).items()]
    result = run_cli(["train", "experiments/smoke.yaml", *overrides, "--run-name", "r1"])
    assert_refused_before_ray(result, bad.name)
    assert not (storage / "r1").exists()


def test_a_sweep_typo_fails_before_any_heavy_import(tmp_path):
    result = run_cli(
        [
            "sweep",
            "experiments/table3_tau.yaml",
            "--profile",
            "smoke",
            "--name",
            "s",
            f"ray.storage_path={tmp_path}",
            "--grid",
            "optim.lr=[1e-4, -1]",
        ]
    )
    assert_refused_before_ray(result, "optim.lr=-1.0 is not allowed")
    assert not any(tmp_path.iterdir())


def test_unreadable_training_images_are_skipped_through_a_list_in_the_run_folder(tmp_path):
    root, storage = tmp_path / "veri", tmp_path / "runs"
    bad = write_set(root)["image_train"][3]
    bad.write_bytes(b"not a jpeg")
    prepared = prepare_run(load_config(None, veri_overrides(root, storage)), run_name="r")
    skip_list = storage / "r" / SKIP_LIST
    assert prepared.cfg.data.skip_list == str(skip_list)
    assert skip_list.read_text().startswith(f"{bad}\t")
    assert prepared.data_metrics["data_skipped_train_images"] == 1.0
    # What the workers will load: the configured dataset without that image.
    train = load_dataset(prepared.cfg.data).train
    assert len(train) == 11 and str(bad) not in {s.path for s in train}
    assert prepared.cfg.ray.storage_path == str(storage)  # pinned absolute
    assert (storage / ".preflight-cache").is_dir()  # the cache lives under the run storage


def test_a_resumed_run_refuses_images_lost_since_its_checkpoint(tmp_path):
    root, storage = tmp_path / "veri", tmp_path / "runs"
    files = write_set(root)
    files["image_train"][0].write_bytes(b"")
    cfg = load_config(None, veri_overrides(root, storage))
    prepare_run(cfg, run_name="r")
    (storage / "r" / "checkpoint_000001").mkdir()
    prepare_run(cfg, run_name="r")  # same set: resumes
    files["image_train"][1].write_bytes(b"")
    with pytest.raises(DataCheckError, match=r"became unreadable since this run began"):
        prepare_run(cfg, run_name="r")
    assert files["image_train"][0].name in (storage / "r" / SKIP_LIST).read_text()


def test_an_unreachable_ray_head_fails_at_once_naming_it(tmp_path):
    root, storage = tmp_path / "veri", tmp_path / "runs"
    write_set(root)
    address = f"127.0.0.1:{closed_port()}"
    cfg = load_config(None, veri_overrides(root, storage, **{"ray.address": address}))
    with pytest.raises(ConfigError, match=f"ray.address='{address}': cannot reach"):
        prepare_run(cfg, run_name="r")
    assert not (storage / "r").exists()


def test_a_listening_ray_head_passes_the_check():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        check_reachable(f"127.0.0.1:{server.getsockname()[1]}")


@pytest.mark.parametrize(
    "address, endpoint",
    [
        ("auto", None),
        ("local", None),
        ("10.0.0.5:6380", ("10.0.0.5", 6380)),
        ("head", ("head", 6379)),
        ("ray://head", ("head", 10001)),
        ("ray://head:10002", ("head", 10002)),
        ("[::1]:6379", ("::1", 6379)),
    ],
)
def test_ray_endpoint(address, endpoint):
    assert ray_endpoint(address) == endpoint


@pytest.mark.parametrize("address", ["head:port", "head:0", "head:70000", ":6379"])
def test_ray_endpoint_refuses_malformed_addresses(address):
    with pytest.raises(ConfigError, match="ray.address"):
        ray_endpoint(address)


def sweep_file(tmp_path: Path, root: Path, storage: Path) -> Path:
    path = tmp_path / "sweep.yaml"
    overrides = veri_overrides(root, storage)
    tree: dict = {"prompt": {"variant": "viewcoop"}, "sweep": {"graph.tau": ["1", "2"]}}
    for key, value in overrides.items():
        section, field = key.split(".")
        tree.setdefault(section, {})[field] = value
    path.write_text(yaml.safe_dump(tree))
    return path


def test_a_sweep_with_a_bad_query_image_stops_before_its_folder_exists(tmp_path):
    root, storage = tmp_path / "veri", tmp_path / "runs"
    write_set(root)["image_query"][0].write_bytes(b"")
    with pytest.raises(DataCheckError, match="query image"):
        plan_sweep(sweep_file(tmp_path, root, storage), name="s")
    assert not (storage / "s").exists()


def test_a_sweep_pins_one_skip_list_into_every_trial(tmp_path):
    root, storage = tmp_path / "veri", tmp_path / "runs"
    bad = write_set(root)["image_train"][2]
    bad.write_bytes(b"")
    draft = plan_sweep(sweep_file(tmp_path, root, storage), name="s")
    lists = {cfg.data.skip_list for cfg in draft.configs.values()}
    assert lists == {str(storage / "s" / SKIP_LIST)}
    assert str(bad) in (storage / "s" / SKIP_LIST).read_text()
    assert draft.data_metrics == {"data_skipped_train_images": 1.0}
    assert json.loads((storage / "s" / "sweep.json").read_text())["name"] == "s"


def test_evaluate_checks_the_evaluation_images_first(tmp_path):
    from orchestrator.evaluate import resolve_evaluation
    from viewcoop_core.engine.checkpoint import save_checkpoint

    root, storage = tmp_path / "veri", tmp_path / "runs"
    files = write_set(root)
    cfg = load_config(None, veri_overrides(root, storage, **{"data.skip_list": "/gone.txt"}))
    save_checkpoint(tmp_path, model={}, epoch=3, config=cfg.to_dict())
    checked, _ = resolve_evaluation(tmp_path)
    assert checked.data.skip_list is None  # the training run's list is not needed here
    files["image_test"][1].write_bytes(b"")
    with pytest.raises(DataCheckError, match=files["image_test"][1].name):
        resolve_evaluation(tmp_path)
    with pytest.raises(ConfigError, match="not valid YAML"):
        resolve_evaluation(tmp_path, overrides=["train.epochs=[1"])


def test_init_ray_checks_the_address_before_calling_ray(monkeypatch):
    """``ray.init("127.0.0.1:1")`` used to hang; the check answers before it is called."""
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: pytest.fail("ray.init was called"))
    address = f"127.0.0.1:{closed_port()}"
    with pytest.raises(ConfigError, match=f"cannot reach a Ray head at {address}"):
        init_ray(address, "viewcoop")


def test_a_sweep_point_with_missing_data_is_left_to_fail_as_its_trial(tmp_path):
    """Only when every point's data fails does the sweep stop before Ray; otherwise the
    bad points fail as trials and run once their data is there (``--resume``)."""
    root, storage = tmp_path / "veri", tmp_path / "runs"
    write_set(root)
    path = sweep_file(tmp_path, root, storage)
    tree = yaml.safe_load(path.read_text())
    missing = str(tmp_path / "late")
    tree["sweep"] = {"points": {"ready": {}, "late": {"data.root": missing}}}
    path.write_text(yaml.safe_dump(tree))
    draft = plan_sweep(path, name="s")
    assert draft.unchecked == {"late"}
    assert draft.configs["late"].data.root == missing
    tree["sweep"] = {"points": {"late": {"data.root": missing}}}
    path.write_text(yaml.safe_dump(tree))
    with pytest.raises(FileNotFoundError, match="late does not exist"):
        plan_sweep(path, name="s2")
    assert not (storage / "s2").exists()
