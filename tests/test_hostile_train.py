"""Hostile and unlucky use of `pumlc train` (issue 9): the run folder is checked, claimed and left clean; short
schedules, resumed epochs, missing GPUs and DDP runs behave."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import final_error_line, run_cli, train_args, tree_digest

ROOT = Path(__file__).resolve().parents[1]


def refused(args: list, *, watch: tuple[Path, ...], expect: str) -> str:
    """Exit 2 and one error line (after the notes `train` prints on its resolved options); `watch` unchanged."""
    before = tree_digest(*watch)
    line = final_error_line(run_cli(*args, check=False))
    assert expect in line, line
    assert tree_digest(*watch) == before
    return line


@pytest.fixture
def data(synth_prepared: Path, tmp_path: Path) -> Path:
    """A private copy of the prepared synth folder, so outputs may be aimed at it and around it."""
    return Path(shutil.copytree(synth_prepared, tmp_path / "data"))


# ------------------------------------------------------------------- rules 1 and 3: the run folder


def test_out_overlapping_inputs(data, tmp_path):
    image_root = Path(json.loads((data / "manifest.json").read_text())["image_root"])
    cases = [
        (data, "is the input"),
        (data / "run", "lies inside the input"),
        (tmp_path, "contains the input"),
        (image_root / "train2014", "is the input"),
    ]
    for out, expect in cases:
        refused(train_args(data, out, epochs=1), watch=(data, image_root), expect=expect)
    config = tmp_path / "cfg.json"
    config.write_text("{}")
    refused(train_args(data, config, "--config", config, epochs=1), watch=(data, config), expect="is the input")


def test_out_that_is_not_a_run_folder(data, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    refused(train_args(data, mine, epochs=1), watch=(mine, data), expect="holds files that are not a pumlc run's")
    (tmp_path / "file").write_text("x")
    refused(train_args(data, tmp_path / "file", epochs=1), watch=(tmp_path / "file",), expect="is a file, not a")
    refused(train_args(data, tmp_path / "file" / "run", epochs=1), watch=(tmp_path / "file",), expect="is a file")


def test_second_train_on_a_claimed_folder(data, tmp_path):
    from pumlc_cli.outputs import claim

    with claim(tmp_path / "run", "pumlc train"):
        line = refused(train_args(data, tmp_path / "run", epochs=1), watch=(data,), expect="in use by")
        assert f"pid {os.getpid()}" in line
    assert not (tmp_path / "run").exists() and not (tmp_path / ".run.pumlc-lock").exists()


def test_failed_start_leaves_nothing(data, tmp_path):
    args = train_args(data, tmp_path / "run", "--model", "no_such_model", epochs=1)
    assert "unknown model" in final_error_line(run_cli(*args, check=False))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]
    (tmp_path / "empty").mkdir()
    final_error_line(run_cli(*train_args(data, tmp_path / "empty", "--model", "no_such_model", epochs=1), check=False))
    assert list((tmp_path / "empty").iterdir()) == []


def test_gpus_without_cuda_are_refused(data, tmp_path):
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() >= 3:
        pytest.skip("this machine has the GPUs")
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    args = train_args(data, tmp_path / "run", epochs=1)
    args[args.index("--device") + 1] = "auto"
    ask = max(2, n + 1)
    line = refused([*args, "--gpus", str(ask)], watch=(data,), expect=f"--gpus {ask}: this machine has")
    assert ("no CUDA device" in line) == (n == 0)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------- rule 4: interrupted means clean


@pytest.mark.parametrize("workers,group", [("0", False), ("2", True)], ids=["process", "process-group"])
def test_sigterm_mid_run_then_stale_temps_are_removed(data, tmp_path, workers, group):
    """SIGTERM to the trainer, or to its whole process group (as `timeout` or a scheduler sends it, data-loader
    workers included): a resumable checkpoint, no temp file, no lock; a killed run's temps go on the next run."""
    run = tmp_path / "run"
    args = train_args(data, run, epochs=3)
    args[args.index("--workers") + 1] = workers
    proc = subprocess.Popen(
        [sys.executable, "-m", "pumlc_cli", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=group,
    )
    deadline = time.monotonic() + 120
    while not (run / "metrics.csv").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # after the first epoch (metrics.csv is its last file): interrupt the second one
    if group:
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    assert "Traceback" not in proc.stderr.read()
    names = sorted(p.name for p in run.iterdir())
    assert names == ["best.pt", "config.json", "last.pt", "metrics.csv", "metrics.jsonl", "thresholds.json"]  # no temp
    assert not (tmp_path / ".run.pumlc-lock").exists()
    (run / ".last.tmp424242.pt").write_bytes(b"")  # what a kill -9 during a checkpoint write leaves
    (run / ".metrics.tmp424242.jsonl").write_bytes(b"")
    run_cli(*args, "--resume")
    assert sorted(p.name for p in run.iterdir()) == names
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3


# ----------------------------------------------------------- OneCycle on short schedules; resumed-epoch loss


@pytest.mark.parametrize("batch", ["40", "72", "216"])  # 216 train images: 5, 3 and 1 steps
def test_short_schedules_train(data, tmp_path, batch):
    args = train_args(data, tmp_path / "run", epochs=1)
    args[args.index("--batch-size") + 1] = batch
    run_cli(*args)
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text())
    assert record["epoch"] == 1 and record["step"] == 216 // int(batch)


def test_resumed_epoch_loss_averages_all_its_steps(data, tmp_path):
    run_cli(*train_args(data, tmp_path / "whole", epochs=1))
    run_cli(*train_args(data, tmp_path / "split", "--max-steps", "5", epochs=1))
    assert not (tmp_path / "split" / "metrics.jsonl").exists()
    run_cli(*train_args(data, tmp_path / "split", "--resume", epochs=1))
    whole = json.loads((tmp_path / "whole" / "metrics.jsonl").read_text())
    split = json.loads((tmp_path / "split" / "metrics.jsonl").read_text())
    assert split["step"] == whole["step"] == 13
    assert split["train_loss"] == pytest.approx(whole["train_loss"], rel=1e-6)


def test_damaged_last_checkpoint_on_resume(data, tmp_path):
    import torch

    run = tmp_path / "run"
    run_cli(*train_args(data, run, "--max-steps", "2", epochs=1))
    payload = torch.load(run / "last.pt", weights_only=True)
    del payload["optimizer"]
    torch.save(payload, run / "last.pt")
    refused(
        train_args(data, run, "--resume", epochs=1), watch=(run, data), expect="cannot be resumed (missing optimizer)"
    )


# ------------------------------------------------------------------------------- rule 11: the umask


def test_run_folder_respects_umask(data, tmp_path):
    old = os.umask(0o027)
    try:
        run_cli(*train_args(data, tmp_path / "run", "--max-steps", "2", epochs=1))
    finally:
        os.umask(old)
    run = tmp_path / "run"
    assert oct(run.stat().st_mode & 0o777) == oct(0o750)
    assert {oct(p.stat().st_mode & 0o777) for p in run.iterdir()} == {oct(0o640)}


# ------------------------------------------------------------- rule 8: a clean DDP run prints no warnings


def test_ddp_run_prints_no_library_warnings(data, tmp_path):
    args = train_args(data, tmp_path / "run", "--nproc", "2", epochs=1)
    done = run_cli(*args, subprocess_=True)
    assert "Warning" not in done.stderr and "Grad strides" not in done.stderr, done.stderr[-3000:]
