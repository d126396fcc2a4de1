"""Evaluation with JPEG decoding on the device (`pumlc eval --decode gpu`).

Why: evaluation is bound by CPU JPEG decoding (about 900 images/s with 16 workers) while a GPU infers more than
twice as fast. Here the loader workers only read file bytes; a whole batch is decoded by nvJPEG
(`torchvision.io.decode_jpeg(list, device=...)`), resized on the device (bicubic with antialiasing, like the PIL
`EvalTransform`) and normalised there. Non-JPEG files are decoded on the CPU. With `device=cpu` the same code runs
anywhere, which is how the tests check it against the PIL path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from pumlc_cli.data.datasets import MEAN, STD
from pumlc_cli.data.imagelist import kept_paths
from pumlc_cli.errors import PumlcError
from pumlc_cli.evaluate.inference import autocast_context, shut_down_workers
from pumlc_cli.inputs import read_input
from pumlc_cli.runtime.dist import DistInfo, gather_rows
from pumlc_cli.runtime.workers import init_worker

JPEG_MAGIC = b"\xff\xd8\xff"


class EncodedImages(Dataset):
    """Images under `root` as raw file bytes (uint8 1-D tensors), with their index: decoding is left to the batch."""

    def __init__(self, root: Path, images: Sequence[str]) -> None:
        self.root = Path(root)
        self.images = kept_paths(images)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        data = read_input(self.root / self.images[index], "image")  # a FIFO or a folder is refused, never read
        return torch.frombuffer(bytearray(data), dtype=torch.uint8), index


def collate_encoded(batch: list[tuple[torch.Tensor, int]]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Byte tensors differ in length: keep them as a list."""
    return [data for data, _ in batch], torch.tensor([index for _, index in batch], dtype=torch.long)


def _is_jpeg(data: torch.Tensor) -> bool:
    return data.numel() >= 3 and bytes(data[:3].tolist()) == JPEG_MAGIC


def _decode_cpu(data: torch.Tensor, name: str) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_image

    try:
        return decode_image(data, mode=ImageReadMode.RGB)
    except RuntimeError as err:
        raise PumlcError(f"{name}: cannot decode image ({err})") from err


def decode_batch(
    data: list[torch.Tensor],
    image_size: int,
    device: torch.device,
    names: Sequence[str] | None = None,
    channels_last: bool = True,
) -> torch.Tensor:
    """Encoded images → normalised float [B, 3, S, S] on `device`, as `EvalTransform` makes them from PIL.

    JPEGs are decoded together on the device; a JPEG the device decoder rejects (e.g. CMYK on some nvJPEG
    versions), PNGs and other formats go through `decode_image` on the CPU. Grayscale and CMYK become RGB.
    """
    from torchvision.io import ImageReadMode, decode_jpeg
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2.functional import resize

    names = list(names) if names is not None else [f"image {i}" for i in range(len(data))]
    pixels: list[torch.Tensor | None] = [None] * len(data)
    jpeg = [i for i, d in enumerate(data) if _is_jpeg(d)]
    if jpeg:
        try:
            decoded = decode_jpeg([data[i] for i in jpeg], mode=ImageReadMode.RGB, device=device)
        except RuntimeError:
            decoded = [None] * len(jpeg)  # one bad file fails the batch: retry one by one below
        for i, img in zip(jpeg, decoded, strict=True):
            pixels[i] = img
    out = []
    for i, img in enumerate(pixels):
        if img is None and i in jpeg:
            try:
                img = decode_jpeg(data[i], mode=ImageReadMode.RGB, device=device)
            except RuntimeError:
                img = None
        if img is None:
            img = _decode_cpu(data[i], names[i])
        img = img.to(device, non_blocking=True)
        # uint8 in and out: rounded and clamped like PIL's bicubic resize of an 8-bit image.
        out.append(resize(img, [image_size, image_size], interpolation=InterpolationMode.BICUBIC, antialias=True))
    batch = torch.stack(out).float()
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1).mul_(255.0)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1).mul_(255.0)
    batch = batch.sub_(mean).div_(std)
    return batch.contiguous(memory_format=torch.channels_last) if channels_last else batch


def encoded_loader(root: Path, images: Sequence[str], info: DistInfo, batch_size: int, workers: int) -> DataLoader:
    """Rank r reads indices r, r+W, …, as `inference.shard_loader` does: every image exactly once."""
    dataset = EncodedImages(root, images)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=list(range(info.rank, len(dataset), info.world)),
        num_workers=workers,
        collate_fn=collate_encoded,
        worker_init_fn=init_worker,
    )


@torch.no_grad()
def predict_probs_decoded(
    models: dict[str, nn.Module],
    loader: DataLoader,
    info: DistInfo,
    amp: str,
    channels_last: bool,
    num_classes: int,
    image_size: int,
    decode_device: torch.device,
) -> dict[str, np.ndarray]:
    """Sigmoid scores of each model for every image, rows in dataset order on every rank.

    Mirrors `inference.predict_probs`, but each batch is decoded once and scored by all models (regular and EMA
    weights), since decoding is what this path is there to make cheap.
    """
    dataset: EncodedImages = loader.dataset
    idx_parts: list[torch.Tensor] = []
    prob_parts: dict[str, list[torch.Tensor]] = {name: [] for name in models}
    batches = iter(loader)
    try:
        for data, indices in batches:
            names = [str(dataset.root / dataset.images[int(i)]) for i in indices]
            images = decode_batch(data, image_size, decode_device, names, channels_last).to(info.device)
            for name, model in models.items():
                with autocast_context(info.device, amp):
                    logits = model(images)
                prob_parts[name].append(torch.sigmoid(logits.float()).cpu())
            idx_parts.append(indices)
    finally:
        shut_down_workers(batches)
    idx = torch.cat(idx_parts) if idx_parts else torch.zeros(0, dtype=torch.long)
    result: dict[str, np.ndarray] = {}
    for name, parts in prob_parts.items():
        probs = torch.cat(parts) if parts else torch.zeros(0, num_classes)
        all_idx, all_probs = gather_rows(idx, probs, info)
        if all_idx.numel() != len(dataset) or not torch.equal(all_idx, torch.arange(len(dataset))):
            raise RuntimeError(f"sharded inference covered {all_idx.numel()} of {len(dataset)} images")
        result[name] = all_probs.double().numpy()
    return result
