"""Image paths held as one Arrow string array, read as a sequence of `str`.

Why: a Python `str` per path costs about 60 bytes over its characters (about 1 GB for Open Images' 9M images), and
a list of them is built by touching every row. An `ImageList` keeps the paths as the bytes the prepared folder
stores (offsets + characters); a path becomes a `str` only when a dataset asks for it by index.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator, Sequence
from typing import overload

import numpy as np

ITER_CHUNK = 1 << 16  # rows converted to str at a time when iterating


class ImageList(Sequence[str]):
    """A read-only sequence of image paths over a pyarrow string array (`arrow`)."""

    __slots__ = ("arrow",)

    def __init__(self, values: object = ()) -> None:
        import pyarrow as pa

        if isinstance(values, ImageList):
            values = values.arrow
        elif isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
        elif not isinstance(values, pa.Array):
            values = pa.array(list(values), pa.string())
        self.arrow = values

    def __len__(self) -> int:
        return len(self.arrow)

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> ImageList: ...

    def __getitem__(self, index):
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step == 1:
                return ImageList(self.arrow.slice(start, max(stop - start, 0)))
            return self.take(np.arange(start, stop, step))
        i = operator.index(index)
        n = len(self.arrow)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("image index out of range")
        return self.arrow[i].as_py()

    def __iter__(self) -> Iterator[str]:
        for start in range(0, len(self.arrow), ITER_CHUNK):
            yield from self.arrow.slice(start, ITER_CHUNK).to_pylist()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ImageList):
            return self.arrow.equals(other.arrow) or list(self) == list(other)
        if isinstance(other, list | tuple):
            return len(self) == len(other) and list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable-looking sequence: unhashable like a list

    def __repr__(self) -> str:
        head = ", ".join(repr(p) for p in self[:3])
        return f"ImageList([{head}{', ...' if len(self) > 3 else ''}], n={len(self)})"

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self.arrow.to_numpy(zero_copy_only=False)
        return out if dtype is None else out.astype(dtype)

    def take(self, rows: Iterable[int] | np.ndarray) -> ImageList:
        """The paths at `rows` (indices, or a boolean mask over the list), in that order."""
        import pyarrow as pa

        rows = np.asarray(rows)
        if rows.dtype == bool:
            return ImageList(self.arrow.filter(pa.array(rows)))
        return ImageList(self.arrow.take(pa.array(rows.astype(np.int64, copy=False))))


def kept_paths(images: Sequence[str]) -> Sequence[str]:
    """`images` as a dataset holds them: an ImageList as it is (a path becomes a str when its item is read), any
    other sequence as a list of its own."""
    return images if isinstance(images, ImageList) else list(images)
