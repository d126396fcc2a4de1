"""Evaluation of a checkpoint on a prepared split: scores for regular and EMA weights, then metrics.

Test targets are the truth (a VOC difficult-only class is 0 there and so ignored); `mask_unknown` scores against
the observed labels instead, for data that has no truth beyond what was annotated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pumlc_cli.errors import PumlcError
from pumlc_cli.evaluate.inference import eval_dataset, predict_entry_scores, predict_probs, shard_loader
from pumlc_cli.evaluate.metrics import masked_metrics, multilabel_metrics
from pumlc_cli.runtime import dist
from pumlc_cli.runtime.checkpoint import check_classes

WEIGHTS = ("regular", "ema")


def model_from_checkpoint(payload: dict[str, Any], weights: str, device: torch.device) -> nn.Module:
    """Rebuild the architecture from the saved config and load the chosen weights (no download)."""
    from pumlc_cli.models import build_model

    cfg = payload["config"]
    model = build_model(
        cfg["model"],
        len(payload["classes"]),
        local_global=cfg["local_global"],
        pretrained=False,
        pretrained_path=None,
        head=cfg["head"],
        class_embeddings=cfg.get("class_embeddings"),
    )
    if weights not in available_weights(payload):
        raise PumlcError(
            f"this checkpoint holds only the {payload['weights']} weights (best.pt keeps the val-selected set); "
            "use last.pt of the run for the other"
        )
    state = payload["ema"]["module"] if weights == "ema" and "ema" in payload else payload["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise PumlcError(f"checkpoint weights do not fit model {cfg['model']!r}: {str(err).splitlines()[0]}") from err
    model.to(device).eval()
    if cfg.get("channels_last", True):
        model.to(memory_format=torch.channels_last)
    return model


def selected_weights(payload: dict[str, Any]) -> str:
    """The weights that won on the val split during training (EMA when no selection was recorded)."""
    return payload.get("weights") or (payload.get("best") or {}).get("weights") or "ema"


def available_weights(payload: dict[str, Any]) -> tuple[str, ...]:
    """last.pt holds the regular and the EMA weights; a slim best.pt only the val-selected set (`weights`)."""
    return WEIGHTS if "ema" in payload else (payload["weights"],)


@dataclass
class EvalResult:
    """Scores and metrics per weight set. Dense data: [N, C] targets and scores; data kept as entries (Open Images):
    `entries` = (image row, class) of each label entry, and `targets`/`scores` are per entry."""

    images: list[str]
    targets: np.ndarray
    scores: dict[str, np.ndarray]
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    entries: tuple[np.ndarray, np.ndarray] | None = None


def evaluate(
    payload: dict[str, Any],
    ckpt_path: Path,
    data: Path,
    split: str,
    *,
    threshold: float,
    mask_unknown: bool,
    voc11: bool,
    batch_size: int,
    workers: int,
    info: dist.DistInfo,
    amp: str,
    decode_device: torch.device | None = None,
) -> EvalResult:
    """Score every image of the split (sharded across ranks, gathered in order) and compute metrics.

    With `decode_device`, workers only read file bytes and JPEGs are decoded and resized on that device
    (`pumlc_cli.evaluate.gpu_decode`); otherwise PIL decodes in the workers.
    """
    from pumlc_cli.data.prepared import load_prepared

    prepared = load_prepared(data)
    check_classes(payload, list(prepared.classes), ckpt_path, data)
    if prepared.absent_truth == 0:  # absent labels unknown (Open Images): score the label entries only
        if decode_device is not None or voc11:
            raise PumlcError(f"{data}: --decode gpu and --voc11 are not available on data whose labels are entries")
        return _evaluate_entries(payload, prepared, split, threshold, mask_unknown, batch_size, workers, info, amp)
    part = prepared.split_data(split)
    if not part.images:
        hint = "; evaluate with --split val" if split == "test" and prepared.split_data("val").images else ""
        raise PumlcError(f"{data}: split {split!r} has no images{hint}")
    targets = part.observed if mask_unknown else part.truth
    image_size = int(payload["config"]["image_size"])
    result = EvalResult(images=list(part.images), targets=np.asarray(targets), scores={})
    channels_last = bool(payload["config"].get("channels_last", True))
    n_classes = len(prepared.classes)
    if decode_device is not None:
        from pumlc_cli.evaluate.gpu_decode import encoded_loader, predict_probs_decoded

        loader = encoded_loader(prepared.image_root, part.images, info, batch_size, workers)
        models = {
            weights: model_from_checkpoint(payload, weights, info.device) for weights in available_weights(payload)
        }
        result.scores = predict_probs_decoded(
            models, loader, info, amp, channels_last, n_classes, image_size, decode_device
        )
        for weights in models:
            result.metrics[weights] = compute_metrics(result.scores[weights], result.targets, threshold, voc11)
        return result
    dataset = eval_dataset(prepared.image_root, part.images, targets, image_size)
    loader = shard_loader(dataset, info, batch_size, workers)
    for weights in available_weights(payload):
        model = model_from_checkpoint(payload, weights, info.device)
        result.scores[weights] = predict_probs(model, loader, info, amp, channels_last, n_classes)
        result.metrics[weights] = compute_metrics(result.scores[weights], result.targets, threshold, voc11)
    return result


def _evaluate_entries(
    payload: dict[str, Any],
    prepared: Any,
    split: str,
    threshold: float,
    mask_unknown: bool,
    batch_size: int,
    workers: int,
    info: dist.DistInfo,
    amp: str,
) -> EvalResult:
    """The Open Images protocol: each class's AP over the images where it is known (verified), the scores
    gathered per batch at the label entries only, so no images x classes matrix is ever built."""
    part = prepared.split_entries(split)
    if not len(part):
        raise PumlcError(f"{prepared.path}: split {split!r} has no images")
    targets = part.values("observed" if mask_unknown else "truth")
    rows, n_classes = part.rows, len(prepared.classes)
    result = EvalResult(list(part.images), targets, {}, entries=(rows, part.classes))
    dataset = eval_dataset(prepared.image_root, part.images, None, int(payload["config"]["image_size"]))
    loader = shard_loader(dataset, info, batch_size, workers)
    channels_last = bool(payload["config"].get("channels_last", True))
    for weights in available_weights(payload):
        model = model_from_checkpoint(payload, weights, info.device)
        scores, kth = predict_entry_scores(model, loader, info, amp, channels_last, part.indptr, part.classes, 3)
        result.scores[weights] = scores
        result.metrics[weights] = masked_metrics((rows, part.classes, targets, scores), kth, n_classes, threshold, 3)
    return result


def compute_metrics(scores: np.ndarray, targets: np.ndarray, threshold: float, voc11: bool) -> dict[str, Any]:
    return multilabel_metrics(scores, targets, threshold=threshold, top_k=3, voc11=voc11)
