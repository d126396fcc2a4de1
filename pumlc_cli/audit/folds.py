"""Scores for the audit: one checkpoint over a split, or cross-fitted folds of the training split.

Why cross-fitting: a model scores the images it trained on as it was told to, so hidden positives there look like
negatives. With K folds, K models each train on K−1 folds (same recipe, same val split for model selection) and
each fold is scored by the model that never saw it. Scoring goes through the same inference path as `pumlc eval`
(`pumlc_cli.evaluate.inference`), with the weights selected on val during training.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pumlc_cli.errors import PumlcError
from pumlc_cli.outputs import FOLDS_FILE

if TYPE_CHECKING:
    from pumlc_cli.train.start import TrainRequest

FOLD_STREAM = 9001  # numpy.random.default_rng([seed, FOLD_STREAM]) draws the fold assignment


def assign_folds(n: int, folds: int, seed: int) -> np.ndarray:
    """Fold index of each of `n` rows: a seeded permutation dealt round-robin, so fold sizes differ by ≤ 1."""
    if folds < 2:
        raise PumlcError(f"--folds must be at least 2, got {folds}")
    if n < folds:
        raise PumlcError(f"--folds {folds}: the split has only {n} images")
    fold = np.empty(n, dtype=np.int64)
    fold[np.random.default_rng([seed, FOLD_STREAM]).permutation(n)] = np.arange(n) % folds
    return fold


@dataclass(frozen=True)
class ScoreOptions:
    """How to run inference (the knobs `pumlc eval` has)."""

    batch_size: int
    workers: int
    amp: str
    show_progress: bool = True


def score_images(payload: dict[str, Any], image_root: Path, images: list[str], info: Any, opts: ScoreOptions):
    """Sigmoid scores of the checkpoint's val-selected weights for `images`, sharded across ranks, in order."""
    from pumlc_cli.evaluate.evaluation import model_from_checkpoint, selected_weights
    from pumlc_cli.evaluate.inference import eval_dataset, predict_probs, shard_loader

    n_classes = len(payload["classes"])
    cfg = payload["config"]
    dataset = eval_dataset(image_root, images, np.zeros((len(images), n_classes), np.int8), int(cfg["image_size"]))
    loader = shard_loader(dataset, info, opts.batch_size, opts.workers)
    model = model_from_checkpoint(payload, selected_weights(payload), info.device)
    with _progress(loader, info, opts.show_progress) as shown:
        return predict_probs(model, shown, info, opts.amp, bool(cfg.get("channels_last", True)), n_classes)


@dataclass(frozen=True)
class EntryScores:
    """Scores of data kept as entries: at each stated label, and each image's K best unknown classes."""

    entry: np.ndarray  # [E] at the label entries
    top_classes: np.ndarray  # int64 [n, K]
    top_scores: np.ndarray  # [n, K]; -1 where an image has fewer than K unknown classes


def score_entry_images(
    payload: dict[str, Any],
    image_root: Path,
    images: list[str],
    entries: tuple[np.ndarray, np.ndarray, np.ndarray],
    k: int,
    info: Any,
    opts: ScoreOptions,
) -> EntryScores:
    """`score_images` for entry data: the scores at the entries (CSR `indptr`, `classes`, and `skip`: the entries
    kept out of the top K) and the K highest other classes of each image; memory E + n·K, never n x C."""
    from pumlc_cli.evaluate.evaluation import model_from_checkpoint, selected_weights
    from pumlc_cli.evaluate.inference import eval_dataset, predict_entries_and_top, shard_loader

    cfg = payload["config"]
    loader = shard_loader(
        eval_dataset(image_root, images, None, int(cfg["image_size"])), info, opts.batch_size, opts.workers
    )
    model = model_from_checkpoint(payload, selected_weights(payload), info.device)
    k = min(k, len(payload["classes"]))
    with _progress(loader, info, opts.show_progress) as shown:
        channels_last = bool(cfg.get("channels_last", True))
        return EntryScores(*predict_entries_and_top(model, shown, info, opts.amp, channels_last, entries, k))


class _Counted:
    """A loader that advances a progress bar; keeps `.dataset` for the coverage check of `predict_probs`."""

    def __init__(self, loader: Any, advance: Callable[[int], None], world: int) -> None:
        self.loader, self.dataset, self.advance, self.world = loader, loader.dataset, advance, world

    def __iter__(self) -> Iterator:
        for batch in self.loader:
            yield batch
            self.advance(len(batch[0]) * self.world)  # ranks advance in step: one rank's share × ranks


@contextmanager
def _progress(loader: Any, info: Any, show: bool) -> Iterator[Any]:
    """Rich progress on the main rank (stderr, cleared when done); other ranks iterate silently."""
    if not (show and info.is_main):
        yield loader
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("scoring", total=len(loader.dataset))
        yield _Counted(loader, lambda n: bar.advance(task, n), info.world)


# ---------------------------------------------------------------------------------------------- folds


@dataclass(frozen=True)
class FoldPlan:
    """Where the fold folders live and how the training split is dealt into folds."""

    root: Path
    folds: int
    seed: int
    assignment: np.ndarray  # fold of each training row, in the prepared folder's order

    def data(self, k: int) -> Path:
        return self.root / f"fold{k}" / "data"

    def run(self, k: int) -> Path:
        return self.root / f"fold{k}" / "run"


def plan_folds(prepared: Any, root: Path, folds: int, seed: int) -> FoldPlan:
    """The fold assignment; a folder made for another data/folds/seed is refused (it would mix models)."""
    train = prepared.split_entries("train")  # the image count only: no dense labels
    plan = FoldPlan(Path(root), folds, seed, assign_folds(len(train), folds, seed))
    record = {"folds": folds, "seed": seed, "data": str(prepared.path), "manifest_sha256": prepared.manifest_hash}
    marker = plan.root / FOLDS_FILE
    if marker.is_file():
        try:
            saved = json.loads(marker.read_text())
        except ValueError:
            raise PumlcError(f"{marker}: unreadable; remove the folder or pass another --folds-dir") from None
        if {k: saved.get(k) for k in ("folds", "seed", "manifest_sha256")} != {
            k: record[k] for k in ("folds", "seed", "manifest_sha256")
        }:
            raise PumlcError(f"{marker}: made for other data, --folds or --seed; pass another --folds-dir")
    else:
        from pumlc_cli.atomic import write_text_atomic

        plan.root.mkdir(parents=True, exist_ok=True)
        write_text_atomic(marker, json.dumps(record, indent=2) + "\n")
    return plan


def write_fold_data(prepared: Any, plan: FoldPlan, k: int) -> None:
    """The prepared folder of model k: the source minus fold k's training rows (val and test unchanged)."""
    from pumlc_cli.data.entries import reindex
    from pumlc_cli.data.prepared import LabelStore, store_of, write_prepared

    source = store_of(prepared)
    is_train = source.split == "train"
    drop = np.zeros(len(source.split), dtype=bool)
    drop[np.flatnonzero(is_train)] = plan.assignment == k
    keep = ~drop
    store = LabelStore(
        [name for name, kept in zip(source.images, keep, strict=True) if kept],
        source.split[keep],
        reindex(source.entries, keep),
    )
    manifest = json.loads(json.dumps(prepared.manifest))
    manifest.pop("image_cache", None)  # images are read where the source folder serves them from
    manifest["image_root"] = str(Path(prepared.image_root).resolve())
    manifest["audit_fold"] = {
        "fold": k,
        "folds": plan.folds,
        "seed": plan.seed,
        "rng": f"numpy.random.default_rng([seed, {FOLD_STREAM}])",
        "source": str(prepared.path),
        "source_manifest_sha256": prepared.manifest_hash,
        "held_out_train_images": int(drop.sum()),
    }
    manifest.setdefault("counts", {})["train"] = int((store.split == "train").sum())
    write_prepared(plan.data(k), store, manifest, force=True)


def fold_finished(run: Path) -> bool:
    """A fold's run is done when its metrics reach the epochs of its saved config (what `make reproduce` checks)."""
    metrics, config = run / "metrics.jsonl", run / "config.json"
    if not (run / "best.pt").is_file() or not metrics.is_file() or not config.is_file():
        return False
    lines = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    return bool(lines) and lines[-1]["epoch"] >= int(json.loads(config.read_text())["epochs"])


def train_folds(prepared: Any, plan: FoldPlan, template: TrainRequest) -> None:
    """Train every unfinished fold in this process (resuming an interrupted one); finished folds are kept.

    `template` holds the options of every fold's run (the run's config.json and --train-args); each fold changes
    only its data, its run folder and whether it resumes."""
    from pumlc_cli.train.start import start_training

    for k in range(plan.folds):
        run = plan.run(k)
        if fold_finished(run):
            continue
        if not (plan.data(k) / "manifest.json").is_file():
            write_fold_data(prepared, plan, k)
        resume = (run / "last.pt").is_file()
        explicit = {**template.explicit, "resume": True} if resume else template.explicit
        request = replace(template, data=plan.data(k), out=run, explicit=explicit, resume=resume)
        code = start_training(request)
        if code:
            raise SystemExit(code)


def score_folds(prepared: Any, plan: FoldPlan, info: Any, opts: ScoreOptions) -> np.ndarray:
    """Scores of every training row, each from the fold model that did not train on it."""
    from pumlc_cli.runtime.checkpoint import check_classes, load_checkpoint

    train = prepared.split_data("train")
    probs = np.full((len(train), len(prepared.classes)), np.nan)
    for k in range(plan.folds):
        ckpt = plan.run(k) / "best.pt"
        if not fold_finished(plan.run(k)):
            raise PumlcError(f"{plan.run(k)}: fold {k} is not trained (run `pumlc audit --folds` without torchrun)")
        payload = load_checkpoint(ckpt)
        check_classes(payload, list(prepared.classes), ckpt, prepared.path)
        rows = np.flatnonzero(plan.assignment == k)
        probs[rows] = score_images(payload, prepared.image_root, [train.images[i] for i in rows], info, opts)
    return probs


def score_entry_folds(
    prepared: Any,
    plan: FoldPlan,
    entries: tuple[np.ndarray, np.ndarray, np.ndarray],
    k: int,
    info: Any,
    opts: ScoreOptions,
) -> EntryScores:
    """`score_folds` for entry data: every training row's entry and top-K scores from the fold model that did not
    train on it (`entries` as in `score_entry_images`, over the training split)."""
    from pumlc_cli.data.datasets import entry_positions
    from pumlc_cli.runtime.checkpoint import check_classes, load_checkpoint

    indptr, classes, skip = entries
    train = prepared.split_entries("train")
    k = min(k, len(prepared.classes))
    out = EntryScores(
        np.full(len(classes), np.nan), np.zeros((len(train), k), np.int64), np.full((len(train), k), -1.0)
    )
    for fold in range(plan.folds):
        ckpt = plan.run(fold) / "best.pt"
        if not fold_finished(plan.run(fold)):
            raise PumlcError(
                f"{plan.run(fold)}: fold {fold} is not trained (run `pumlc audit --folds` without torchrun)"
            )
        payload = load_checkpoint(ckpt)
        check_classes(payload, list(prepared.classes), ckpt, prepared.path)
        rows = np.flatnonzero(plan.assignment == fold)
        _, pick = entry_positions(indptr, rows)
        sub = np.concatenate([[0], np.cumsum(indptr[rows + 1] - indptr[rows])])
        images = [train.images[i] for i in rows]
        got = score_entry_images(payload, prepared.image_root, images, (sub, classes[pick], skip[pick]), k, info, opts)
        out.entry[pick] = got.entry
        out.top_classes[rows], out.top_scores[rows] = got.top_classes, got.top_scores
    return out
