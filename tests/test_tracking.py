"""Tracking a run: step lines in logs, metrics.jsonl/.csv every epoch, TensorBoard scalars, `pumlc compare`, and
how often last.pt is rewritten."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import error_line, run_cli, train_args

HAS_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None


@pytest.fixture(scope="module")
def two_runs(synth_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    """Two 2-epoch runs that differ in lr: `a` with --log-every 3 (and --tensorboard when installed), `b` with
    the default step lines of a log that is not a terminal. Each: (run folder, stderr)."""
    base = tmp_path_factory.mktemp("runs")
    extra = ["--tensorboard"] if HAS_TENSORBOARD else []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is as fast and spares a busy machine
    try:
        a = run_cli(*train_args(synth_prepared, base / "a", "--log-every", "3", *extra))
        b = run_cli(*train_args(synth_prepared, base / "b", "--lr", "1e-3"))
    finally:
        torch.set_num_threads(threads)
    return {"a": (base / "a", a.stderr), "b": (base / "b", b.stderr)}


def _history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


STEP_LINE = re.compile(r"^epoch (\d)/2 step (\d+)/(\d+): loss -?\d+\.\d{4}, lr \d\.\d\de[-+]\d\d, \d+ img/s$")


def test_step_lines_in_logs(two_runs: dict[str, tuple[Path, str]]) -> None:
    """stderr here is not a terminal (as in a SLURM log): plain step lines, every N steps or ~10 an epoch."""
    for name, every in (("a", 3), ("b", None)):
        _, err = two_runs[name]
        found = [STEP_LINE.match(line) for line in err.splitlines()]
        steps = [(int(m[1]), int(m[2])) for m in found if m]
        per_epoch = int(next(m for m in found if m)[3])
        interval = every or max(1, per_epoch // 10)
        expected = [(e, s) for e in (1, 2) for s in range(1, per_epoch + 1) if s % interval == 0]
        assert steps == expected, (name, steps)


def test_metrics_files_every_epoch(two_runs: dict[str, tuple[Path, str]]) -> None:
    run, _ = two_runs["a"]
    history = _history(run)
    assert [h["epoch"] for h in history] == [1, 2]
    with (run / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for row, record in zip(rows, history, strict=True):
        assert set(row) == set(record)
        for key, value in record.items():
            assert row[key] == ("" if value is None else str(value)), key


@pytest.mark.skipif(not HAS_TENSORBOARD, reason="tensorboard is not installed (pip install 'pumlc[tensorboard]')")
def test_tensorboard_scalars(two_runs: dict[str, tuple[Path, str]]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, _ = two_runs["a"]
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    history = _history(run)
    for tag, key in (
        ("val/mAP", "val_mAP"),
        ("val/mAP_ema", "val_mAP_ema"),
        ("train/lr", "lr"),
        ("train/images_per_s", "images_per_s"),
        ("train/loss", "train_loss"),
    ):
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == [h["step"] for h in history], tag
        assert [s.value for s in scalars] == pytest.approx([h[key] for h in history], rel=1e-6), tag
    assert not (two_runs["b"][0] / "tensorboard").exists()


def _row(lines: list[str], label: str) -> list[str]:
    """The cells of the table row labelled `label` (one run a column)."""
    return next(line for line in lines if line.startswith(label + " "))[len(label) :].split()


def test_compare_two_runs(two_runs: dict[str, tuple[Path, str]]) -> None:
    a, b = two_runs["a"][0], two_runs["b"][0]
    run_cli("eval", a, "--split", "test", "--json", a / "eval.json", "--workers", "0", "--device", "cpu")
    report = json.loads((a / "eval.json").read_text())
    lines = run_cli("compare", a, b).stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    assert lines[0].split() == ["a", "b"]
    assert _row(lines, "lr") == ["0.003", "0.001"]
    for same in ("seed", "loss", "model", "epochs", "tensorboard", "log_every", "out"):  # equal, or run-only
        assert not any(re.match(rf"{same}\s\s", line) for line in lines), same
    best = [max(max(h["val_mAP"], h["val_mAP_ema"]) for h in _history(run)) for run in (a, b)]
    cells = _row(lines, "best val mAP")
    assert [cells[0], cells[4]] == [f"{best[0]:.2f}", f"{best[1]:.2f}"], cells
    assert _row(lines, "epochs done") == ["2", "2"]
    assert _row(lines, "test mAP") == [f"{report['mAP']:.2f}", "-"]


def test_compare_refuses_a_non_run(two_runs: dict[str, tuple[Path, str]], tmp_path: Path) -> None:
    done = run_cli("compare", two_runs["a"][0], tmp_path, check=False)
    assert "not a pumlc run folder" in error_line(done)


@pytest.fixture(scope="module")
def few_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """54 training images at 32 px: epochs of 3 steps, so a run logs several epochs within seconds."""
    from pumlc_cli.data.synth import make_synth

    base = tmp_path_factory.mktemp("few")
    make_synth(base / "coco", n_train=60, n_test=10, seed=0, image_size=32)
    run_cli("prepare", "coco", "--root", base / "coco", "--out", base / "prepared", "--partial", "0.5")
    return base / "prepared"


def _kill_after_epochs(args: list[str], run: Path, epochs: int) -> int:
    """Start a training process, SIGKILL it (no handler, no save) once `epochs` epochs are in metrics.jsonl;
    return how many epochs were logged by then."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny tensors; spares a busy machine
    proc = subprocess.Popen([sys.executable, "-m", "pumlc_cli", *args], stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 900
    metrics = run / "metrics.jsonl"
    while time.time() < deadline and proc.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= epochs:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    return len(metrics.read_text().splitlines())


@pytest.mark.parametrize("save_every", [None, 2])
def test_last_pt_is_rewritten_only_when_due(few_images: Path, tmp_path: Path, save_every: int | None) -> None:
    """By default last.pt is written after the first epoch and then at most every 10 minutes; --save-every N
    writes it every N epochs. A run killed outright keeps its last save (and resumes from it)."""
    run = tmp_path / "run"
    extra = ["--save-every", str(save_every)] if save_every else []
    logged = _kill_after_epochs(train_args(few_images, run, *extra, epochs=30), run, 3)
    assert 3 <= logged < 30
    saved = torch.load(run / "last.pt", weights_only=True)["epoch"]
    if save_every is None:
        assert saved == 1
    else:  # last.pt is written just before metrics.jsonl: the kill may fall between the two
        assert saved % save_every == 0 and logged - save_every < saved <= logged + 1, (saved, logged)
