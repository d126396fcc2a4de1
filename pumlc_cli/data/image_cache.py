"""The pre-resized image cache that `pumlc prepare --cache-size S` writes under `<prepared>/images`.

Why: decoding full-size COCO JPEGs (640x480 and larger) bounds data loading long before the GPU is busy; images
whose shorter side is already near the training scale decode and augment several times faster. Each image is
decoded once, its shorter side resized to S (bicubic, never upscaled) and stored as an RGB JPEG under the same
relative path, so `labels.parquet` is unchanged and readers only swap the image root.
"""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path, PurePosixPath

from pumlc_cli.errors import PumlcError
from pumlc_cli.runtime.workers import available_cpus, cap_workers, init_worker

CACHE_DIR = "images"
CACHE_QUALITY = 95
_CHUNK = 64  # at most this many images per pool task: amortises inter-process traffic, still balances the load


def cache_record(shorter_side: int) -> dict:
    """The manifest entry; `load_prepared` serves `<prepared>/<dir>` as the image root when it is present."""
    return {"dir": CACHE_DIR, "shorter_side": shorter_side, "quality": CACHE_QUALITY}


def check_cache_size(shorter_side: int | None, workers: int | None) -> None:
    if shorter_side is not None and shorter_side < 1:
        raise PumlcError(f"--cache-size must be a positive number of pixels, got {shorter_side}")
    if workers is not None and workers < 1:
        raise PumlcError(f"--cache-workers must be at least 1, got {workers}")


def cache_one(src: str, dst: str, shorter_side: int) -> str | None:
    """Write one cached image; returns an error message instead of raising (it crosses a process boundary).

    A JPEG that is already small enough and in RGB or grayscale is copied byte for byte (no second lossy pass);
    everything else is decoded, resized if larger and re-encoded as an RGB JPEG.
    """
    from PIL import Image

    from pumlc_cli.data.pixels import open_image, rgb8

    try:
        with open_image(src) as img:
            w, h = img.size
            small = min(w, h) <= shorter_side
            if small and img.format == "JPEG" and img.mode in ("RGB", "L"):
                shutil.copyfile(src, dst)
                return None
            if not small and img.format == "JPEG":
                img.draft("RGB", (shorter_side, shorter_side))  # DCT-domain downscale, never below S
            rgb = rgb8(img)
        if not small:
            scale = shorter_side / min(w, h)
            size = (shorter_side, max(1, round(h * scale))) if w <= h else (max(1, round(w * scale)), shorter_side)
            rgb = rgb.resize(size, Image.BICUBIC)
        rgb.save(dst, format="JPEG", quality=CACHE_QUALITY)
    except PumlcError as err:  # more pixels than pumlc decodes
        return str(err)
    except Exception as err:  # PIL raises many types for damaged files
        return f"{src}: cannot be cached as an image ({err.__class__.__name__}: {err})"
    return None


def _cache_chunk(jobs: list[tuple[str, str]], shorter_side: int) -> str | None:
    for src, dst in jobs:
        error = cache_one(src, dst, shorter_side)
        if error:
            return error
    return None


def write_image_cache(
    image_root: Path, images: list[str], out_dir: Path, shorter_side: int, workers: int | None = None
) -> None:
    """Cache every image of the table under `out_dir` (a folder inside the prepared folder's temp copy).

    The first unreadable image stops the work and raises a `PumlcError` naming it; the caller removes the folder.
    """
    jobs: list[tuple[str, str]] = []
    out_dir = Path(out_dir)
    for rel in images:
        parts = PurePosixPath(rel).parts
        if PurePosixPath(rel).is_absolute() or ".." in parts:
            raise PumlcError(f"{rel}: image path leaves the image root; it cannot be cached")
        dst = out_dir.joinpath(*parts)
        jobs.append((str(Path(image_root) / rel), str(dst)))
    for folder in sorted({str(Path(dst).parent) for _, dst in jobs}):
        os.makedirs(folder, exist_ok=True)
    workers = min(cap_workers("--cache-workers", workers) if workers else available_cpus(), max(1, len(jobs)))
    size = max(1, min(_CHUNK, -(-len(jobs) // (4 * workers))))
    chunks = [jobs[i : i + size] for i in range(0, len(jobs), size)]
    if workers == 1:
        errors = (_cache_chunk(chunk, shorter_side) for chunk in chunks)
        _raise_first(errors)
        return
    pool = ProcessPoolExecutor(max_workers=workers, initializer=init_worker)
    try:
        futures = [pool.submit(_cache_chunk, chunk, shorter_side) for chunk in chunks]
        _raise_first(f.result() for f in futures)
    except BrokenProcessPool:
        raise PumlcError(f"{out_dir}: an image cache worker process died (out of memory?)") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _raise_first(errors) -> None:
    for error in errors:
        if error:
            raise PumlcError(error)
