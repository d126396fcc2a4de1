"""What a run reports while it trains: step lines for logs, the epoch metrics files, TensorBoard scalars.

Why a module of its own: the trainer only hands over numbers; where they go (a terminal's progress bar, a SLURM
log without one, RUN/metrics.jsonl and .csv, event files) is decided here. Nothing here draws random numbers or
touches the model, so tracking never changes a run's trajectory.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pumlc_cli.atomic import write_text_atomic
from pumlc_cli.errors import PumlcError

METRICS_FILES = ("metrics.jsonl", "metrics.csv")
# Without --log-every and without a terminal (a batch log), this many step lines per epoch.
LINES_PER_EPOCH = 10
# Per-epoch scalars under TensorBoard's groups: the record's key -> the tag.
TB_TAGS = {
    "train_loss": "train/loss",
    "lr": "train/lr",
    "images_per_s": "train/images_per_s",
    "val_mAP": "val/mAP",
    "val_mAP_ema": "val/mAP_ema",
}


def log_interval(flag: int | None, steps_per_epoch: int, terminal: bool) -> int:
    """Steps between plain-text step lines: the flag when given (0: none); by default none on a terminal (its
    progress bar shows the same) and about LINES_PER_EPOCH an epoch elsewhere."""
    if flag is not None:
        return flag
    return 0 if terminal else max(1, steps_per_epoch // LINES_PER_EPOCH)


class StepLog:
    """One line every `every` steps: loss (mean over the interval), learning rate, images per second."""

    def __init__(self, every: int, batch_size: int, emit: Callable[[str], None]) -> None:
        self.every = every
        self.batch_size = batch_size
        self.emit = emit
        self._mark = (time.perf_counter(), 0, 0.0)  # (time, steps, loss sum) at the last line

    def start(self, loss_sum: float) -> None:
        """Start an interval (each epoch, after a resume): throughput counts only what follows."""
        self._mark = (time.perf_counter(), 0, loss_sum)

    def due(self, step_in_epoch: int) -> bool:
        return self.every > 0 and step_in_epoch % self.every == 0

    def line(self, where: str, steps: int, loss_sum: float, lr: float) -> None:
        """`steps` counts this interval's steps since `start`; `loss_sum` is the epoch's running sum."""
        t0, steps0, sum0 = self._mark
        now = time.perf_counter()
        n = max(1, steps - steps0)
        ips = n * self.batch_size / max(now - t0, 1e-9)
        self.emit(f"{where}: loss {(loss_sum - sum0) / n:.4f}, lr {lr:.2e}, {ips:.0f} img/s")
        self._mark = (now, steps, loss_sum)


def write_metrics(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """RUN/metrics.jsonl (a JSON object an epoch) and RUN/metrics.csv (the same, a row an epoch, columns in
    first-seen order), each replaced atomically so a reader never sees half an epoch."""
    write_text_atomic(run_dir / "metrics.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in history))
    columns = list(dict.fromkeys(key for record in history for key in record))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for record in history:
        writer.writerow([_cell(record.get(key)) for key in columns])
    write_text_atomic(run_dir / "metrics.csv", buffer.getvalue())


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def check_tensorboard() -> None:
    """`--tensorboard` needs the optional package: refused before the run folder is made, and in --dry-run."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise PumlcError("--tensorboard needs the tensorboard package: pip install 'pumlc[tensorboard]'") from None


class TensorBoard:
    """RUN/tensorboard event files: per-epoch val mAP (regular, EMA), loss, lr and throughput at the epoch's last
    step. A resumed run purges what the first run logged after its checkpoint, so curves do not fold back."""

    def __init__(self, folder: Path, resume_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(folder), purge_step=resume_step or None)

    def epoch(self, record: dict[str, Any]) -> None:
        for key, tag in TB_TAGS.items():
            if record.get(key) is not None:
                self.writer.add_scalar(tag, record[key], record["step"])
        self.writer.flush()  # an epoch's numbers are on disk when its line is printed

    def close(self) -> None:
        self.writer.close()
