"""Image datasets for training and inference, with augmentation that is a pure function of (seed, epoch, index).

Seeding every sample's augmentation from its own generator makes a run independent of the worker count and lets
an interrupted epoch resume mid-way with exactly the crops and flips it would have had.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from pumlc_cli.data.imagelist import kept_paths
from pumlc_cli.data.pixels import open_image, rgb8
from pumlc_cli.errors import PumlcError, first_line

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
# The paper's multi-scale crop sizes at a 512 scale (512, 448, 384, 320, 256), as fractions of the scale size.
CROP_FRACTIONS = (1.0, 0.875, 0.75, 0.625, 0.5)


def open_rgb(path: Path, min_side: int | None = None) -> Image.Image:
    """Open an image as RGB; JPEG draft mode decodes at a reduced size when the target is much smaller.

    Anything that is not a decodable regular image file is one `PumlcError` naming it: a FIFO or device (which
    would block the reader), a decompression bomb (more than `pixels.MAX_PIXELS`), a truncated or damaged file.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        raise PumlcError(f"{path}: cannot read image ({err.strerror})") from None
    if not stat.S_ISREG(mode):
        raise PumlcError(f"{path}: not a regular file")
    try:
        with open_image(path) as img:
            if min_side is not None and img.format == "JPEG":
                img.draft("RGB", (min_side, min_side))
            return rgb8(img)
    except PumlcError:
        raise
    except MemoryError:
        raise PumlcError(f"{path}: image too large to decode in memory") from None
    except Exception as err:  # Pillow raises many types (OSError, SyntaxError, struct.error...) for damaged files
        raise PumlcError(f"{path}: cannot read image ({err.__class__.__name__}: {first_line(str(err))})") from None


def to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL → normalised float CHW tensor (ImageNet statistics, as the pretrained backbones expect)."""
    arr = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(MEAN).view(3, 1, 1)
    std = torch.tensor(STD).view(3, 1, 1)
    return arr.sub_(mean).div_(std)


class TrainTransform:
    """Square resize to `scale` (bicubic) → random square crop of 1, 7/8, 3/4, 5/8 or 1/2 of it → resize to `size`
    → horizontal flip."""

    def __init__(self, size: int, scale: int) -> None:
        self.size = size
        self.scale = scale
        self.crops = [max(1, round(f * scale)) for f in CROP_FRACTIONS]

    def crop_box(self, gen: torch.Generator) -> tuple[int, int, int, int]:
        """A square box of one of the crop sizes, as the released loader's RandomChoice of RandomCrop(size)."""
        side = self.crops[int(torch.randint(len(self.crops), (1,), generator=gen))]
        x0 = int(torch.randint(self.scale - side + 1, (1,), generator=gen))
        y0 = int(torch.randint(self.scale - side + 1, (1,), generator=gen))
        return x0, y0, x0 + side, y0 + side

    def __call__(self, img: Image.Image, gen: torch.Generator) -> torch.Tensor:
        img = img.resize((self.scale, self.scale), Image.BICUBIC)
        img = img.crop(self.crop_box(gen)).resize((self.size, self.size), Image.BICUBIC)
        if float(torch.rand(1, generator=gen)) < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        return to_tensor(img)


class EvalTransform:
    """Deterministic square resize, as evaluation in the PU-MLC / ASL code does."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, img: Image.Image, gen: torch.Generator | None = None) -> torch.Tensor:
        return to_tensor(img.resize((self.size, self.size), Image.BICUBIC))


def dense_targets(
    indptr: np.ndarray, classes: np.ndarray, values: np.ndarray, rows: np.ndarray, num_classes: int, fill: int = 0
) -> np.ndarray:
    """int8 [len(rows), num_classes] targets of the CSR rows `rows`: `fill` (the absent value), then each row's
    entries scattered in. Costs the batch's size plus its entries, whatever the number of images."""
    out = np.full((len(rows), num_classes), fill, dtype=np.int8)
    local, pos = entry_positions(indptr, rows)
    out[local, classes[pos]] = values[pos]
    return out


def entry_positions(indptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(batch row, entry position) of every entry of the CSR rows `rows`, in row order."""
    rows = np.asarray(rows, dtype=np.int64)
    starts = indptr[rows]
    lengths = indptr[rows + 1] - starts
    offsets = np.cumsum(lengths) - lengths
    total = int(lengths.sum())
    local = np.repeat(np.arange(len(rows)), lengths)
    return local, np.arange(total, dtype=np.int64) - np.repeat(offsets - starts, lengths)


@dataclass(frozen=True)
class EntryTargets:
    """Targets kept as CSR entries (see `pumlc_cli.data.entries.SplitEntries`); a batch's rows are made dense by
    `dense_targets` in the loader's collate, so no images x classes matrix is ever held."""

    indptr: np.ndarray
    classes: np.ndarray
    values: np.ndarray
    num_classes: int
    fill: int

    @classmethod
    def of(cls, part, which: str = "observed") -> EntryTargets:
        """The `truth` or `observed` targets of a `SplitEntries`."""
        return cls(part.indptr, part.classes, part.values(which), part.num_classes, part.fill(which))

    def rows(self, rows: np.ndarray) -> np.ndarray:
        return dense_targets(self.indptr, self.classes, self.values, rows, self.num_classes, self.fill)


class LabelledImages(Dataset):
    """Images under `root` with their targets (a dense int8 [N, C] matrix, `EntryTargets`, or None when only scores
    are wanted); items are (image, index) and `collate` adds the batch's targets: (images, targets, indices)."""

    def __init__(
        self,
        root: Path,
        images: Sequence[str],
        targets: np.ndarray | EntryTargets | None,
        transform: TrainTransform | EvalTransform,
        seed: int = 0,
    ) -> None:
        self.root = Path(root)
        self.images = kept_paths(images)
        self.targets = np.ascontiguousarray(targets, dtype=np.int8) if isinstance(targets, np.ndarray) else targets
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        """`key` is an index, or (epoch, index) for training: the epoch travels with the key, so persistent
        workers need no per-epoch state."""
        epoch, index = key if isinstance(key, tuple) else (0, key)
        decode_side = getattr(self.transform, "scale", None) or self.transform.size
        img = open_rgb(self.root / self.images[index], decode_side)
        gen = torch.Generator().manual_seed(sample_seed(self.seed, STREAM_AUGMENT, epoch, index))
        return self.transform(img, gen), index

    def batch_targets(self, indices: np.ndarray) -> torch.Tensor:
        """int8 [B, C] targets of these rows ([B, 0] without targets)."""
        if self.targets is None:
            return torch.zeros((len(indices), 0), dtype=torch.int8)
        if isinstance(self.targets, EntryTargets):
            return torch.from_numpy(self.targets.rows(indices))
        return torch.from_numpy(self.targets[indices])

    def collate(self, batch: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images = torch.stack([img for img, _ in batch])
        indices = np.array([i for _, i in batch], dtype=np.int64)
        return images, self.batch_targets(indices), torch.from_numpy(indices)


class KeySampler(Sampler):
    """Yields the keys it currently holds; the trainer swaps them every epoch, so one DataLoader and its
    persistent workers serve the whole run."""

    def __init__(self) -> None:
        self.keys: list = []

    def __iter__(self) -> Iterator:
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


# Independent random streams: a seed is a function of (run seed, stream, keys...), never of call order.
STREAM_AUGMENT, STREAM_PERMUTATION, STREAM_STEP, STREAM_MIXUP = range(4)


def sample_seed(seed: int, stream: int, *keys: int) -> int:
    """A well-mixed 63-bit seed for one draw of one stream (e.g. one sample of one epoch)."""
    entropy = [seed, stream, *keys]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> np.uint64(1))
