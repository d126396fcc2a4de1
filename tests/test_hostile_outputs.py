"""Hostile and unlucky use of `eval`, `predict` and `stats` (issue 9): report files never overwrite inputs, a
checkpoint or a run's own files; damaged artefacts and undecodable images are one line; the CLI's last resort."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import error_line, final_error_line, run_cli, train_args, tree_digest

ROOT = Path(__file__).resolve().parents[1]


class Foreign:
    """Any class: a pickle of it is what a foreign .pt holds."""


@pytest.fixture(scope="module")
def run(synth_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hostile") / "run"
    run_cli(*train_args(synth_prepared, out, loss="bce-known", epochs=1))
    return out


def refused(*args, watch: tuple[Path, ...], expect: str, code: int = 2) -> str:
    before = tree_digest(*watch)
    line = error_line(run_cli(*args, check=False), code)
    assert expect in line, line
    assert tree_digest(*watch) == before
    return line


def _eval(run: Path, *extra) -> list[str]:
    return ["eval", run / "best.pt", "--device", "cpu", "--workers", "0", *extra]


# -------------------------------------------------------------------------- rules 1-2: report files


@pytest.mark.parametrize(
    "flag,target,expect",
    [
        ("--json", "best.pt", "is the input"),
        ("--json", "last.pt", "overwrite a checkpoint"),
        ("--save-scores", "config.json", "run folder's own config.json"),
        ("--plot", "metrics.jsonl", "run folder's own metrics.jsonl"),
        ("--json", "config.json", "run folder's own config.json"),
        ("--json", ".", "contains the input"),
        ("--json", "tensorboard", "run folder's own tensorboard"),
        ("--json", "nowhere/r.json", "does not exist"),
        ("--json", "best.pt/r.json", "lies inside the input"),
        ("--json", "config.json/r.json", "is a file, not a folder"),
    ],
)
def test_eval_outputs_refused_before_the_evaluation(run, synth_prepared, flag, target, expect):
    refused(*_eval(run, flag, run / target), watch=(run, synth_prepared), expect=expect)


def test_eval_outputs_overlapping_inputs_even_with_force(run, synth_prepared, tmp_path):
    image = Path(json.loads((synth_prepared / "manifest.json").read_text())["image_root"])
    refused(
        *_eval(run, "--json", synth_prepared / "r.json", "--force"),
        watch=(run, synth_prepared),
        expect="lies inside the input",
    )
    other = _copy_prepared(synth_prepared, tmp_path / "other")  # not this command's input, still never written
    refused(*_eval(run, "--json", other / "r.json", "--force"), watch=(other,), expect="inside the prepared folder")
    refused(
        *_eval(run, "--save-scores", image / "train2014" / "s.npz", "--force"),
        watch=(run, synth_prepared),
        expect="lies inside the input",
    )
    (tmp_path / "alias.json").symlink_to(run / "last.pt")
    refused(*_eval(run, "--json", tmp_path / "alias.json", "--force"), watch=(run,), expect="overwrite a checkpoint")
    same = tmp_path / "same"
    refused(*_eval(run, "--json", same, "--save-scores", same), watch=(run,), expect="given to both --json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alias.json", "other"]


def test_eval_existing_report_needs_force(run, tmp_path):
    refused(*_eval(run, "--json", tmp_path, "--force"), watch=(run,), expect="names a folder")
    report = tmp_path / "r.json"
    report.write_text("my earlier report")
    refused(*_eval(run, "--json", report), watch=(run, report), expect="already exists (use --force")
    run_cli(*_eval(run, "--json", report, "--force"))
    assert json.loads(report.read_text())["split"] == "test"
    run_cli(*_eval(run, "--json", tmp_path / "new.json"))  # a new file inside the run folder's neighbourhood
    run_cli(*_eval(run, "--json", run / "eval.json"))  # and a new file in the run folder are fine
    (run / "eval.json").unlink()


@pytest.mark.parametrize("command", ["eval", "audit"])
def test_sharding_over_missing_gpus_is_refused(run, synth_prepared, command):
    """`--gpus N` without N CUDA devices is refused before any work, not run silently as one CPU process."""
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    ask = max(2, n + 1)
    line = refused(
        command, run, "--gpus", str(ask), watch=(run, synth_prepared), expect=f"--gpus {ask}: this machine has"
    )
    assert ("no CUDA device" in line) == (n == 0)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / f"p{i}.jpg")
    return folder


def test_predict_outputs(run, photos, tmp_path):
    refused(
        "predict",
        run / "best.pt",
        photos,
        "--csv",
        run / "last.pt",
        watch=(run, photos),
        expect="overwrite a checkpoint",
    )
    refused(
        "predict",
        run / "best.pt",
        photos,
        "--json",
        photos / "p.json",
        "--force",
        watch=(run, photos),
        expect="lies inside the input",
    )
    refused(
        "predict",
        run / "best.pt",
        photos / "p0.jpg",
        "--json",
        photos / "p0.jpg",
        "--force",
        watch=(run, photos),
        expect="is the input",
    )
    (tmp_path / "old.csv").write_text("keep me")
    refused(
        "predict",
        run / "best.pt",
        photos,
        "--csv",
        tmp_path / "old.csv",
        watch=(run, photos, tmp_path / "old.csv"),
        expect="already exists",
    )
    run_cli("predict", run / "best.pt", photos, "--csv", tmp_path / "old.csv", "--force", "--device", "cpu")
    assert (tmp_path / "old.csv").read_text().startswith("image,labels")


# ---------------------------------------------------------------------- rule 7: damaged artefacts are named


def _copy_prepared(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _rewrite_labels(folder: Path, change, update_hash: bool) -> None:
    import hashlib

    import pandas as pd

    frame = pd.read_parquet(folder / "labels.parquet")
    change(frame)
    frame.to_parquet(folder / "labels.parquet", index=False)
    if update_hash:
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["labels_sha256"] = hashlib.sha256((folder / "labels.parquet").read_bytes()).hexdigest()
        (folder / "manifest.json").write_text(json.dumps(manifest))


def _set_value(frame):
    frame.loc[3, frame.columns[2]] = 7


def _set_split(frame):
    frame.loc[0, "split"] = "bogus"


def _set_image(frame):
    frame.loc[0, "image"] = "../../etc/passwd"


@pytest.mark.parametrize(
    "change,update_hash,expect",
    [
        (_set_value, False, "changed since `pumlc prepare` wrote it"),
        (_set_value, True, "labels must be -1, 0 or 1, found 7"),
        (_set_split, True, "unknown split(s) bogus"),
        (_set_image, True, "leaves the image folder"),
    ],
)
def test_hand_edited_labels(synth_prepared, tmp_path, change, update_hash, expect):
    folder = _copy_prepared(synth_prepared, tmp_path / "p")
    _rewrite_labels(folder, change, update_hash)
    refused("stats", folder, watch=(folder,), expect=expect)


def test_damaged_manifest_and_labels(synth_prepared, tmp_path):
    folder = _copy_prepared(synth_prepared, tmp_path / "p")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["classes"] = manifest["classes"][:-1]  # a class removed by hand
    (folder / "manifest.json").write_text(json.dumps(manifest))
    refused("stats", folder, watch=(folder,), expect="not in the manifest's classes")
    (folder / "manifest.json").write_text("{not json")
    refused("stats", folder, watch=(folder,), expect="malformed manifest")
    folder = _copy_prepared(synth_prepared, tmp_path / "q")
    data = (folder / "labels.parquet").read_bytes()
    (folder / "labels.parquet").write_bytes(data[: len(data) // 2])
    refused("stats", folder, watch=(folder,), expect="labels.parquet: changed since")


def test_damaged_checkpoints(run, tmp_path):
    import torch

    torch.save({"x": Foreign()}, tmp_path / "foreign.pt")
    line = refused("eval", tmp_path / "foreign.pt", watch=(tmp_path,), expect="not a pumlc checkpoint")
    assert "weights_only" not in line
    data = (run / "last.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 3])
    refused("eval", tmp_path / "truncated.pt", watch=(tmp_path,), expect="not a readable checkpoint")
    (tmp_path / "text.pt").write_bytes(b"not a checkpoint")
    line = refused("eval", tmp_path / "text.pt", watch=(tmp_path,), expect="not a readable checkpoint")
    assert "weights_only" not in line
    payload = torch.load(run / "last.pt", weights_only=True)
    for name, edit, expect in [
        ("nomodel", lambda p: p.pop("model"), "missing model"),
        ("badsize", lambda p: p["config"].update(image_size="big"), "config image_size = 'big' is impossible"),
        ("badclasses", lambda p: p.update(classes=3), "'classes' is not a list"),
    ]:
        damaged = {**payload, "config": dict(payload["config"])}
        edit(damaged)
        torch.save(damaged, tmp_path / f"{name}.pt")
        refused("eval", tmp_path / f"{name}.pt", watch=(tmp_path,), expect=expect)


# ------------------------------------------------------------------ rule 8: one line, always (images)


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A valid PNG signature and header declaring a huge image, with a tiny data stream: a decompression bomb."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def test_predict_skips_what_it_cannot_decode(run, photos, tmp_path):
    _png_header_only(photos / "bomb.png", 100_000, 100_000)
    jpeg = (photos / "p0.jpg").read_bytes()
    (photos / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (photos / "text.jpg").write_text("not an image")
    os.mkfifo(tmp_path / "fifo.jpg")
    grey16 = (np.arange(40 * 40).reshape(40, 40) * 40).astype(np.uint16)
    Image.fromarray(grey16).save(photos / "deep.png")
    before = tree_digest(photos)
    done = run_cli(
        "predict", run / "best.pt", photos, tmp_path / "fifo.jpg", "--json", tmp_path / "p.json", "--device", "cpu"
    )
    doc = json.loads((tmp_path / "p.json").read_text())
    assert sorted(Path(r["image"]).name for r in doc["predictions"]) == ["deep.png", "p0.jpg", "p1.jpg", "p2.jpg"]
    skipped = {Path(s["image"]).name: s["error"] for s in doc["skipped"]}
    assert set(skipped) == {"bomb.png", "truncated.jpg", "text.jpg", "fifo.jpg"}
    assert "too many pixels" in skipped["bomb.png"] and "not a regular file" in skipped["fifo.jpg"]
    assert all("\n" not in e for e in skipped.values())
    assert "Traceback" not in done.stderr and "4 unreadable image(s) skipped, 4 predicted" in done.stderr
    assert tree_digest(photos) == before


def test_sixteen_bit_images_are_rescaled_not_clipped(tmp_path):
    from pumlc_cli.data.datasets import open_rgb

    level = np.full((8, 8), 32768, dtype=np.uint16)  # mid grey in 16 bits
    Image.fromarray(level).save(tmp_path / "g.png")
    rgb = np.asarray(open_rgb(tmp_path / "g.png"))
    assert rgb.shape == (8, 8, 3) and abs(int(rgb[0, 0, 0]) - 128) <= 1  # Pillow's convert would give 255


@pytest.mark.parametrize("workers", ["0", "2"])
@pytest.mark.parametrize("damage", ["truncated", "bomb"])
def test_undecodable_training_image_is_one_line(synth_root, tmp_path, workers, damage):
    import shutil

    root = tmp_path / "coco"
    shutil.copytree(synth_root, root)
    run_cli("prepare", "coco", "--root", root, "--out", tmp_path / "p")
    from pumlc_cli import load_prepared

    victim = root / load_prepared(tmp_path / "p").split_data("train").images[5]
    if damage == "truncated":
        victim.write_bytes(victim.read_bytes()[:300])
    else:
        _png_header_only(victim, 100_000, 100_000)
    before = tree_digest(tmp_path / "p", root)
    args = train_args(tmp_path / "p", tmp_path / "run", epochs=1)
    args[args.index("--workers") + 1] = workers
    line = final_error_line(run_cli(*args, check=False))
    assert str(victim) in line and ("cannot read image" in line or "too many pixels" in line)
    assert tree_digest(tmp_path / "p", root) == before
    assert not (tmp_path / "run").exists()  # a failed start leaves nothing


# --------------------------------------------------------------------------- rule 8: the last resort


def test_unexpected_exception_is_one_line_and_a_saved_traceback(tmp_path):
    script = (
        "import sys\n"
        "from pumlc_cli.cli import app, main\n"
        "@app.command('boom')\n"
        "def boom():\n"
        "    raise RuntimeError('kaboom\\nsecond line')\n"
        "sys.argv = ['pumlc', 'boom']\n"
        "main()\n"
    )
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pumlc: error: unexpected RuntimeError: kaboom (a bug; ")
    saved = Path(lines[0].split("traceback saved to ")[1].rstrip(")"))
    assert saved.parent == tmp_path and "Traceback" in saved.read_text() and "second line" in saved.read_text()
