"""``benchmarks/gpu_check.py --dry-run``: the one GPU command, run on the CPU at toy sizes,
so that it cannot rot between GPU visits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_gpu_check_dry_run_runs_every_step_and_writes_its_figures(tmp_path):
    out = tmp_path / "gpu"
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--dry-run", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    log = json.loads((out / "gpu_check.json").read_text())
    assert log["dry_run"] and log["missing_before"] == []
    for step in ("gpu_tests", "suite", "epoch"):
        assert log[step]["returncode"] == 0, step
    suite = json.loads((out / "suite" / "suite.json").read_text())
    [row] = suite["clustering"]["rows"]
    assert row["ari_vs_dense"] == 1.0 and row["ari_vs_sklearn_dbscan"] == 1.0
    assert suite["training"]["ours_images_per_s"] > 0
    assert suite["evaluation"]["mAP_abs_diff_vs_numpy"] < 1e-9
    epoch = json.loads((out / "epoch.json").read_text())
    assert epoch["train_images_per_s"] > 0 and 0 <= epoch["mAP"] <= 1
    table = (out / "results.md").read_text()
    assert "gpu_check --dry-run" in table and "**Clustering**" in table
