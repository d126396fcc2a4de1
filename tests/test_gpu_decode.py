"""`pumlc eval --decode gpu`: batched decode + resize + normalise on a device, checked on the CPU against the PIL
evaluation transform; the CUDA test (bench/gpu_check.sh) runs the real nvJPEG path.

Imports nothing that needs pycocotools or typer at module level: the GPU machine runs the cuda-marked test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pumlc_cli.data.datasets import STD, EvalTransform, open_rgb
from pumlc_cli.errors import PumlcError
from pumlc_cli.evaluate.gpu_decode import EncodedImages, decode_batch

# Both paths decode with libjpeg-turbo and resize with PIL's bicubic antialias kernel on 8-bit pixels, so on the
# CPU they differ only by rounding: measured max 1 grey level (0.0175), mean < 1e-4. Allow 2 levels and a mean of
# 1e-3 in normalised units.
LEVEL = 1 / 255 / min(STD)
CPU_MAX, CPU_MEAN = 2 * LEVEL + 1e-6, 1e-3
# nvJPEG's IDCT and chroma upsampling differ from libjpeg-turbo's and the CUDA resize runs in float: allow a mean
# of 0.05 (about 3 grey levels).
CUDA_MEAN = 0.05


def _pil_batch(root: Path, names: list[str], size: int) -> torch.Tensor:
    return torch.stack([EvalTransform(size)(open_rgb(root / n, size)) for n in names])


def _synth_jpegs(tmp_path: Path) -> tuple[Path, list[str]]:
    from pumlc_cli.data.synth import make_synth

    root = tmp_path / "coco"
    make_synth(root, n_train=24, n_test=8, seed=3, image_size=48)
    return root, sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg"))


def _odd_files(root: Path) -> list[str]:
    """PNG with alpha, palette PNG, grayscale and CMYK JPEGs: the CPU fallbacks and the RGB conversion."""
    arr = (np.random.default_rng(0).random((40, 56, 3)) * 255).astype(np.uint8)
    img = Image.fromarray(arr)
    img.convert("RGBA").save(root / "rgba.png")
    img.convert("P").save(root / "pal.png")
    img.convert("L").save(root / "gray.jpg", quality=95)
    img.convert("CMYK").save(root / "cmyk.jpg", quality=95)
    return ["rgba.png", "pal.png", "gray.jpg", "cmyk.jpg"]


@pytest.mark.parametrize("size", [32, 64])
def test_cpu_decode_matches_pil_transform(tmp_path: Path, size: int) -> None:
    root, names = _synth_jpegs(tmp_path)
    names += _odd_files(root)
    data = EncodedImages(root, names)
    got = decode_batch([data[i][0] for i in range(len(data))], size, torch.device("cpu"))
    assert got.shape == (len(names), 3, size, size) and got.dtype == torch.float32
    assert got.is_contiguous(memory_format=torch.channels_last)
    diff = (got - _pil_batch(root, names, size)).abs()
    assert diff.max() <= CPU_MAX and diff.mean() < CPU_MEAN


def test_undecodable_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    data = EncodedImages(tmp_path, ["bad.jpg"])
    with pytest.raises(PumlcError, match="bad.jpg"):
        decode_batch([data[0][0]], 32, torch.device("cpu"), names=[str(bad)])


@pytest.fixture(scope="module")
def checkpoint(synth_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.helpers import run_cli, train_args

    run = tmp_path_factory.mktemp("gpu_decode") / "run"
    run_cli(*train_args(synth_prepared, run, "--max-steps", "3", epochs=1))  # any weights will do; keep it short
    return run / "last.pt"


def test_evaluate_with_device_decoding_matches_pil(checkpoint: Path, synth_prepared: Path) -> None:
    from pumlc_cli.evaluate.evaluation import evaluate
    from pumlc_cli.runtime import dist
    from pumlc_cli.runtime.checkpoint import load_checkpoint

    payload = load_checkpoint(checkpoint)
    info = dist.setup("cpu")
    kw = dict(threshold=0.5, mask_unknown=False, voc11=False, batch_size=7, workers=0, info=info, amp="none")
    pil = evaluate(payload, checkpoint, synth_prepared, "val", **kw)
    dec = evaluate(payload, checkpoint, synth_prepared, "val", decode_device=torch.device("cpu"), **kw)
    assert dec.images == pil.images and np.array_equal(dec.targets, pil.targets)
    for weights in ("regular", "ema"):
        # Same pixels up to rounding: scores agree closely and mAP within 0.1 points.
        np.testing.assert_allclose(dec.scores[weights], pil.scores[weights], atol=1e-2)
        assert dec.metrics[weights]["mAP"] == pytest.approx(pil.metrics[weights]["mAP"], abs=0.1)


def test_eval_decode_gpu_without_cuda_is_refused(checkpoint: Path) -> None:
    from tests.helpers import run_cli

    done = run_cli("eval", checkpoint, "--decode", "gpu", "--device", "cpu", "--workers", "0", check=False)
    assert done.returncode == 2 and "--decode gpu needs a CUDA device" in done.stderr


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_decode_close_to_pil(tmp_path: Path) -> None:
    root, names = _synth_jpegs(tmp_path)
    names += _odd_files(root)
    data = EncodedImages(root, names)
    encoded = [data[i][0] for i in range(len(data))]
    for size in (32, 224):
        got = decode_batch(encoded, size, torch.device("cuda"))
        assert got.device.type == "cuda" and got.shape == (len(names), 3, size, size)
        diff = (got.cpu() - _pil_batch(root, names, size)).abs()
        print(f"cuda decode vs PIL at {size}px: mean {diff.mean():.4f}, max {diff.max():.4f}")
        assert diff.mean() < CUDA_MEAN
