"""Batched inference shared by validation and `pumlc eval`: sharded across ranks, gathered in index order."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from pumlc_cli.data.datasets import EvalTransform, LabelledImages, entry_positions
from pumlc_cli.runtime.dist import DistInfo, gather_rows
from pumlc_cli.runtime.workers import init_worker


def autocast_context(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """bf16/fp16 autocast on the device, or nothing."""
    if amp in {"bf16", "fp16"}:
        dtype = torch.bfloat16 if amp == "bf16" else torch.float16
        return torch.autocast(device_type=device.type, dtype=dtype)
    return contextlib.nullcontext()


def shard_loader(
    dataset: LabelledImages, info: DistInfo, batch_size: int, workers: int, persistent: bool = False
) -> DataLoader:
    """Each rank takes indices rank, rank+world, …: every image exactly once, none dropped or repeated.
    `persistent` keeps the workers between passes (validation runs twice an epoch)."""
    indices = list(range(info.rank, len(dataset), info.world))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=indices,
        num_workers=workers,
        pin_memory=info.device.type == "cuda",
        worker_init_fn=init_worker,
        persistent_workers=persistent and workers > 0,
        collate_fn=dataset.collate,
    )


@torch.no_grad()
def predict_probs(
    model: nn.Module,
    loader: DataLoader,
    info: DistInfo,
    amp: str,
    channels_last: bool,
    num_classes: int,
) -> np.ndarray:
    """Sigmoid scores for every image of the loader's dataset, on every rank, rows in dataset order."""
    was_training = model.training
    model.eval()
    idx_parts: list[torch.Tensor] = []
    prob_parts: list[torch.Tensor] = []
    batches = iter(loader)
    try:
        for images, _, indices in batches:
            images = images.to(info.device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast_context(info.device, amp):
                logits = model(images)
            prob_parts.append(torch.sigmoid(logits.float()).cpu())
            idx_parts.append(indices)
    finally:
        if batches is not getattr(loader, "_iterator", None):  # a persistent loader keeps its workers for the next pass
            shut_down_workers(batches)
    model.train(was_training)
    idx = torch.cat(idx_parts) if idx_parts else torch.zeros(0, dtype=torch.long)
    probs = torch.cat(prob_parts) if prob_parts else torch.zeros(0, num_classes)
    all_idx, all_probs = gather_rows(idx, probs, info)
    expected = len(loader.dataset)
    if all_idx.numel() != expected or not torch.equal(all_idx, torch.arange(expected)):
        raise RuntimeError(f"sharded inference covered {all_idx.numel()} of {expected} images")
    return all_probs.double().numpy()


def shut_down_workers(batches: object) -> None:
    """Stop a loader iterator's worker processes now, not when the garbage collector finds it: after an error
    its traceback keeps the iterator alive, and its workers (which ignore SIGTERM) with it."""
    shutdown = getattr(batches, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()


def close_loader(loader: DataLoader) -> None:
    """Stop a persistent loader's workers (they otherwise live as long as the loader object)."""
    if getattr(loader, "_iterator", None) is not None:
        shut_down_workers(loader._iterator)
        loader._iterator = None


def _batch_scores(
    model: nn.Module, loader: DataLoader, info: DistInfo, amp: str, channels_last: bool
) -> Iterator[tuple[torch.Tensor, np.ndarray]]:
    """(sigmoid scores [B, C] on the device, dataset rows) of every batch of the loader, in eval mode."""
    was_training = model.training
    model.eval()
    batches = iter(loader)
    try:
        for images, _, indices in batches:
            images = images.to(info.device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.no_grad(), autocast_context(info.device, amp):
                logits = model(images)
            yield torch.sigmoid(logits.float()), indices.numpy()
    finally:
        if batches is not getattr(loader, "_iterator", None):  # a persistent loader keeps its workers for the next pass
            shut_down_workers(batches)
        model.train(was_training)


def _gather_filled(
    info: DistInfo, indptr: np.ndarray, seen: np.ndarray, per_entry: list[np.ndarray], per_image: list[np.ndarray]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The arrays this rank filled at the rows it `seen` (and at their entries), gathered from every rank; checks
    that the ranks covered every image and entry exactly once."""
    rows = np.flatnonzero(seen)
    _, pos = entry_positions(indptr, rows)
    n, e = len(seen), int(indptr[-1])
    entry_out, image_out = [], []
    all_pos, all_idx = torch.arange(e), torch.arange(n)
    for values in per_entry:
        all_pos, got = gather_rows(torch.from_numpy(pos), torch.from_numpy(values[pos]), info)
        entry_out.append(got.numpy())
    for values in per_image:
        all_idx, got = gather_rows(torch.from_numpy(rows), torch.from_numpy(values[rows]), info)
        image_out.append(got.numpy())
    if not torch.equal(all_idx, torch.arange(n)) or not torch.equal(all_pos, torch.arange(e)):
        raise RuntimeError(
            f"sharded inference covered {all_idx.numel()} of {n} images, {all_pos.numel()} of {e} entries"
        )
    return entry_out, image_out


@torch.no_grad()
def predict_entry_scores(
    model: nn.Module,
    loader: DataLoader,
    info: DistInfo,
    amp: str,
    channels_last: bool,
    indptr: np.ndarray,
    classes: np.ndarray,
    top_k: int = 3,
) -> tuple[np.ndarray, np.ndarray]:
    """Sigmoid scores at the label entries of every image (CSR `indptr`/`classes` over the loader's dataset) and
    each image's k-th highest score, on every rank; each batch's [B, C] scores are gathered at its entries and
    dropped, so memory grows with the entries, never with images x classes. The outputs are allocated once and
    filled in place: a list of small per-batch parts left between the freed [B, C] blocks fragmented the heap
    (RSS grew by about one [B, C] block per batch)."""
    n, e = len(loader.dataset), int(indptr[-1])
    scores, kth, seen = np.zeros(e), np.zeros(n), np.zeros(n, dtype=bool)
    for probs, rows in _batch_scores(model, loader, info, amp, channels_last):
        local, pos = entry_positions(indptr, rows)
        at = probs[torch.from_numpy(local).to(probs.device), torch.from_numpy(classes[pos]).to(probs.device)]
        scores[pos] = at.cpu().numpy()
        kth[rows] = probs.topk(min(top_k, probs.shape[1]), dim=1).values[:, -1].cpu().numpy()
        seen[rows] = True
    (scores,), (kth,) = _gather_filled(info, indptr, seen, [scores], [kth])
    return scores, kth


@torch.no_grad()
def predict_entries_and_top(
    model: nn.Module,
    loader: DataLoader,
    info: DistInfo,
    amp: str,
    channels_last: bool,
    entries: tuple[np.ndarray, np.ndarray, np.ndarray],
    k: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores at the label entries (`entries` = CSR `indptr`, `classes`, and `skip`: entries left out of the top
    k) and each image's `k` highest-scoring other classes, on every rank: (entry scores [E], top classes int64
    [n, k], top scores [n, k]; a score of -1 where an image has fewer than k other classes; k at most the number
    of classes). Each batch's [B, C] scores are dropped after the gather, and the outputs are filled in place (see
    `predict_entry_scores`): memory grows with E + n·k, never with images x classes."""
    indptr, classes, skip = entries
    n, e = len(loader.dataset), int(indptr[-1])
    scores, seen = np.zeros(e), np.zeros(n, dtype=bool)
    top_classes, top_scores = np.zeros((n, k), dtype=np.int64), np.full((n, k), -1.0)
    for probs, rows in _batch_scores(model, loader, info, amp, channels_last):
        local, pos = entry_positions(indptr, rows)
        at_rows, at_cols = torch.from_numpy(local).to(probs.device), torch.from_numpy(classes[pos]).to(probs.device)
        scores[pos] = probs[at_rows, at_cols].cpu().numpy()
        left_out = torch.from_numpy(skip[pos]).to(probs.device)
        probs[at_rows[left_out], at_cols[left_out]] = -1.0  # below every sigmoid: never among the top k
        top = probs.topk(k, dim=1)
        top_scores[rows], top_classes[rows] = top.values.cpu().numpy(), top.indices.cpu().numpy()
        seen[rows] = True
    (scores,), (top_classes, top_scores) = _gather_filled(info, indptr, seen, [scores], [top_classes, top_scores])
    return scores, top_classes, top_scores


def eval_dataset(root, images, targets, image_size: int) -> LabelledImages:
    """A dataset with the deterministic evaluation transform."""
    return LabelledImages(root, images, targets, EvalTransform(image_size))
