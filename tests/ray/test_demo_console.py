"""What `viewcoop demo` prints, captured as a user's terminal log would hold it.

A short demo profile (the smoke set's size, random-init tiny CLIP, 3 epochs x 3
iterations) on its own local Ray with 2 CPU workers, in a subprocess, stdout and stderr
together. None of the lines issue 14 found in the demo's log may appear, each epoch gets
its one line, and what lies between two epoch lines stays within a few lines.

Ray's system actors may report trouble of the machine rather than of the run (a
resource request timing out on an overloaded CPU; "multiple active Ray instances" where
other Ray instances run beside the test): such lines count towards the per-epoch bound
when they fall inside an epoch, not towards the bound on the whole log.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]

EPOCHS = 3
SHORT_DEMO = [
    f"train.epochs={EPOCHS}",
    "train.iters=3",
    "train.batch_size=8",
    "train.num_instances=2",
    "data.synthetic.num_ids=16",
    "data.synthetic.num_cameras=4",
    "data.synthetic.images_per_camera=2",
    "data.synthetic.image_size=64",
    "model.image_size=64",
    "cluster.min_samples=2",
    "cluster.k1=6",
    "cluster.k2=2",
]
FORBIDDEN = {
    "tqdm bar fragment": re.compile(r"\d+%\|"),
    "open_clip's random-init warning": re.compile(r"No pretrained weights loaded"),
    "Ray's PreemptionWatcher error": re.compile(r"PreemptionWatcher|core_worker\.cc"),
    "MLflow's database set-up": re.compile(r"Creating initial MLflow database|Updating database"),
    "PyTorch's scheduler-order warning": re.compile(r"lr_scheduler\.step\(\)"),
    "a cut-short table cell": re.compile("\u2026"),
    "reStructuredText markup": re.compile(r"``"),
    "a Python warning from the project's own code": re.compile(
        r"(viewcoop_core|workers|orchestrator)/\S+\.py:\d+: \w*Warning"
    ),
}
MAX_LINES_PER_EPOCH = 5  # the epoch's line, room for a warning
MAX_OWN_LINES = 30  # banner, start-up, epoch lines, the results table and paths
RAY_PROCESS_LINE = re.compile(r"^(\x1b\[[0-9;]*m)?\(\w+ pid=\d+")


@pytest.fixture(scope="module")
def demo_log(tmp_path_factory) -> list[str]:
    workdir = tmp_path_factory.mktemp("demo-console")
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "demo", *SHORT_DEMO, "--run-name", "console"],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=900,
    )
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stdout[-4000:]
    return lines


def test_no_line_the_issue_found_in_the_demo_log(demo_log):
    for what, pattern in FORBIDDEN.items():
        hits = [line for line in demo_log if pattern.search(line)]
        assert not hits, f"{what}: {hits[:3]}"


def test_one_line_per_epoch_and_few_lines_between(demo_log):
    epoch_rows = [i for i, line in enumerate(demo_log) if re.match(r"epoch \d+/\d+  ", line)]
    expected = [f"{epoch}/{EPOCHS}" for epoch in range(1, EPOCHS + 1)]
    assert [demo_log[i].split()[1] for i in epoch_rows] == expected
    assert "mAP" in demo_log[epoch_rows[-1]] and "loss" in demo_log[epoch_rows[-1]]
    for first, second in zip(epoch_rows, epoch_rows[1:]):
        assert second - first <= MAX_LINES_PER_EPOCH, demo_log[first:second]
    own = [line for line in demo_log if not RAY_PROCESS_LINE.match(line)]
    assert len(own) <= MAX_OWN_LINES, "\n".join(own)


def test_results_table_is_whole_and_fits_100_columns(demo_log):
    [header] = [i for i, line in enumerate(demo_log) if line.startswith("epoch   mAP")]
    table = demo_log[header : header + EPOCHS + 2]
    assert table[0].split()[-4:] == ["img_clusters", "txt_clusters", "img_ari", "txt_ari"]
    assert [row.split()[0] for row in table[1:]] == [str(e) for e in range(EPOCHS + 1)]
    assert max(len(line) for line in table) <= 100
    assert any(line.startswith("dashboard:   viewcoop ui runs") for line in demo_log)
