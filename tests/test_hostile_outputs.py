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
    report.write_text('{"my": "earlier report"}')
    refused(*_eval(run, "--json", report), watch=(run, report), expect="already exists (use --force")
    notes = tmp_path / "notes.json"
    notes.write_text("my notes, not a report")  # --force replaces only a file of the kind --json writes
    refused(*_eval(run, "--json", notes, "--force"), watch=(run, notes), expect="replaces only a JSON report")
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


def _rewrite_labels(folder: Path, name: str, change, update_hash: bool) -> None:
    import hashlib

    import pandas as pd

    frame = pd.read_parquet(folder / name)
    change(frame)
    frame.to_parquet(folder / name, index=False)
    if update_hash:
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["files_sha256"][name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        (folder / "manifest.json").write_text(json.dumps(manifest))


def _set_value(frame):
    frame.loc[3, "observed"] = 7


def _swap_entries(frame):
    frame.loc[0, "image_idx"] = frame["image_idx"].max()  # the first entry moved to the last image: out of order


def _set_split(frame):
    frame.loc[0, "split"] = "bogus"


def _set_image(frame):
    frame.loc[0, "image"] = "../../etc/passwd"


def _old_layout(frame):
    frame["truth:a"] = 1


@pytest.mark.parametrize(
    "name,change,update_hash,expect",
    [
        ("labels.parquet", _set_value, False, "changed since `pumlc prepare` wrote it"),
        ("labels.parquet", _set_value, True, "labels must be -1, 0 or 1 in column observed"),
        ("labels.parquet", _swap_entries, True, "entries must be sorted by (image_idx, class_idx)"),
        ("labels.parquet", _old_layout, True, "one column per class is the old layout; re-prepare"),
        ("images.parquet", _set_value, False, "images.parquet: changed since `pumlc prepare` wrote it"),
        ("images.parquet", _set_split, True, "unknown split(s) bogus"),
        ("images.parquet", _set_image, True, "leaves the image folder"),
    ],
)
def test_hand_edited_labels(synth_prepared, tmp_path, name, change, update_hash, expect):
    folder = _copy_prepared(synth_prepared, tmp_path / "p")
    _rewrite_labels(folder, name, change, update_hash)
    refused("stats", folder, watch=(folder,), expect=expect)


def test_damaged_manifest_and_labels(synth_prepared, tmp_path):
    folder = _copy_prepared(synth_prepared, tmp_path / "p")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["classes"] = manifest["classes"][:-1]  # a class removed by hand
    (folder / "manifest.json").write_text(json.dumps(manifest))
    refused("stats", folder, watch=(folder,), expect="does not match the manifest's 9 classes")
    (folder / "manifest.json").write_text("{not json")
    refused("stats", folder, watch=(folder,), expect="malformed manifest")
    folder = _copy_prepared(synth_prepared, tmp_path / "q")
    data = (folder / "labels.parquet").read_bytes()
    (folder / "labels.parquet").write_bytes(data[: len(data) // 2])
    refused("stats", folder, watch=(folder,), expect="labels.parquet: changed since")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["format_version"] = 1  # a folder of the dense layout says how to get the new one
    (folder / "manifest.json").write_text(json.dumps(manifest))
    refused("stats", folder, watch=(folder,), expect="re-prepare it with the same `pumlc prepare` command")


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


# ------------------------------------------------ issue 21, items 1-8: --force replaces only what pumlc made


@pytest.fixture(scope="module")
def sugg(run: Path, synth_prepared: Path) -> Path:
    """`pumlc audit run --csv sugg.csv`: suggestions `relabel --from` accepts (out of sample, c given)."""
    out = run.parent / "sugg.csv"
    trusted = ("--split", "val", "--label-frequency", "0.5", "--floor", "0")
    run_cli("audit", run, "--csv", out, *trusted, "--device", "cpu", "--workers", "0")
    return out


def gone_nothing(*args, watch: tuple[Path, ...], expect: str) -> str:
    """`refused`, and no temp file or lock left: the folders in `watch` hold exactly what they held before."""
    before = {p: sorted(q.name for q in p.parent.iterdir()) for p in watch}
    line = refused(*args, watch=watch, expect=expect)
    assert {p: sorted(q.name for q in p.parent.iterdir()) for p in watch} == before
    return line


def _relabel(data: Path, sugg: Path, out: Path, *extra) -> list:
    return ["relabel", data, "--from", sugg, "--accept-top", "3", "--min-precision", "0", "--out", out, *extra]


def test_relabel_force_never_replaces_an_image_root_a_run_or_a_user_folder(
    run, sugg, synth_prepared, synth_root, tmp_path
):
    """Item 1: `relabel --out synth|run|docs --force` replaced the image root, a run, a user's folder."""
    watch = (synth_root, run, synth_prepared)
    gone_nothing(*_relabel(synth_prepared, sugg, synth_root, "--force"), watch=watch, expect="--out is the input")
    gone_nothing(
        *_relabel(synth_prepared, sugg, run, "--force"), watch=watch, expect="one of pumlc's run folders, not one"
    )
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "thesis.tex").write_text("precious")
    gone_nothing(
        *_relabel(synth_prepared, sugg, docs, "--force"),
        watch=(*watch, docs),
        expect="--force only replaces prepared folders and empty folders",
    )
    new = tmp_path / "new"  # what --force may replace: a prepared folder relabel made
    run_cli(*_relabel(synth_prepared, sugg, new))
    gone_nothing(*_relabel(synth_prepared, sugg, new), watch=(new,), expect="already exists (use --force")
    run_cli(*_relabel(synth_prepared, sugg, new, "--force"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs", "new"]


def test_train_out_is_never_a_prepared_folder(synth_prepared, tmp_path):
    """The reverse of item 1: `train --out` over a prepared folder (not its input) is refused."""
    other = _copy_prepared(synth_prepared, tmp_path / "other")
    gone_nothing(
        *train_args(synth_prepared, other, epochs=1),
        watch=(other, synth_prepared),
        expect="one of pumlc's prepared folders, not one of its run folders",
    )


def test_stats_json_needs_force_and_never_hits_a_source(synth_prepared, synth_root, tmp_path):
    """Item 2: `stats --json <annotation file>` (or any existing file) overwrote it; stats had no --force."""
    ann = synth_root / "annotations" / "instances_train2014.json"
    gone_nothing(
        "stats", synth_prepared, "--json", ann, "--force", watch=(synth_root, synth_prepared), expect="is the input"
    )
    earlier = tmp_path / "s.json"
    earlier.write_text('{"earlier": true}')
    gone_nothing("stats", synth_prepared, "--json", earlier, watch=(earlier,), expect="already exists (use --force")
    notes = tmp_path / "notes.txt"
    notes.write_text("not a report")
    gone_nothing(
        "stats", synth_prepared, "--json", notes, "--force", watch=(notes,), expect="replaces only a JSON report"
    )
    run_cli("stats", synth_prepared, "--json", earlier, "--force")
    assert "summary" in json.loads(earlier.read_text())


def test_reports_never_overwrite_the_dataset(run, synth_prepared, synth_root, tmp_path):
    """Item 3: `audit --csv <a file in the image root> --force`, `eval --save-scores <test annotations> --force`."""
    image = next((synth_root / "train2014").iterdir())
    watch = (synth_root, run)
    audit = ["audit", run, "--device", "cpu", "--workers", "0", "--force"]
    gone_nothing(*audit, "--csv", image, watch=watch, expect="lies inside the input")
    gone_nothing(*audit, "--csv", synth_root / "annotations" / "a.csv", watch=watch, expect="lies inside the input")
    test_ann = synth_root / "annotations" / "instances_val2014.json"
    gone_nothing(*_eval(run, "--save-scores", test_ann, "--force"), watch=watch, expect="is the input")


def test_dash_is_stdout_or_refused(run, tmp_path, monkeypatch):
    """Item 4: `eval --save-scores -` and `--plot -` wrote a file named `-`, over an existing one."""
    monkeypatch.chdir(tmp_path)
    dash = tmp_path / "-"
    dash.write_text("a file named -")
    for flag, kind in (("--save-scores", "an .npz"), ("--plot", "a PNG")):
        gone_nothing(*_eval(run, flag, "-"), watch=(dash, run), expect=f"{flag} -: {kind} file cannot go to standard")
    gone_nothing("audit", run, "--plot", "-", watch=(dash, run), expect="--plot -: a PNG file cannot go")
    gone_nothing(*_eval(run, "--json", "-", "--save-scores", "-"), watch=(dash,), expect="standard output")
    done = run_cli(*_eval(run, "--json", "-"))
    assert json.loads(done.stdout)["split"] == "test" and dash.read_text() == "a file named -"


def test_special_files_are_never_replaced(run, synth_prepared, tmp_path):
    """Item 5: `--json /dev/full --force` and a FIFO as `stats --json` became regular files (temp + rename)."""
    import stat

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for args in (
        _eval(run, "--json", "/dev/full", "--force"),
        ["stats", synth_prepared, "--json", "/dev/full", "--force"],
        ["stats", synth_prepared, "--json", fifo],
        ["stats", synth_prepared, "--json", fifo, "--force"],
    ):
        done = run_cli(*args, check=False, subprocess_=True, timeout=120)  # a FIFO opened for writing would block
        assert "is not a regular file (a device, FIFO or socket)" in error_line(done)
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode) and stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["fifo"]


def test_config_inside_train_out_is_refused(synth_prepared, tmp_path):
    """Item 6: `train prep --out runG --config runG/config.json` accepted the config, then overwrote it."""
    run_g = tmp_path / "runG"
    run_g.mkdir()
    (run_g / "config.json").write_text('{"epochs": 1}')
    gone_nothing(
        *train_args(synth_prepared, run_g, "--config", run_g / "config.json", epochs=1),
        watch=(run_g, synth_prepared),
        expect="--out contains the input",
    )


def test_folds_dir_never_inside_the_data(run, synth_prepared, synth_root, tmp_path):
    """Item 7: `audit --folds 2 --folds-dir prep` wrote folds into the prepared folder; `--folds-dir
    synth/train2014` left folds.json and fold0/data in the image folder."""
    audit = ["audit", run, "--folds", "2", "--device", "cpu", "--workers", "0", "--folds-dir"]
    watch = (synth_prepared, synth_root, run)
    gone_nothing(*audit, synth_prepared, watch=watch, expect="--folds-dir is the input")
    gone_nothing(*audit, synth_root / "train2014", watch=watch, expect="--folds-dir is the input")
    gone_nothing(*audit, synth_root / "train2014" / "f", watch=watch, expect="--folds-dir lies inside the input")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    gone_nothing(*audit, mine, watch=(*watch, mine), expect="--force only replaces audit folds folders")


def test_relabel_out_never_inside_an_image_folder(sugg, synth_prepared, synth_root):
    """Item 8: `relabel … --out synth/val2014/new` wrote inside an image folder."""
    gone_nothing(
        *_relabel(synth_prepared, sugg, synth_root / "val2014" / "new"),
        watch=(synth_root, synth_prepared),
        expect="--out lies inside the input",
    )


def test_a_fifo_manifest_never_blocks_the_output_checks(tmp_path: Path) -> None:
    """The overlap checks read a folder's manifest.json; a FIFO there is no prepared folder and must not block."""
    from pumlc_cli.outputs import is_prepared_folder, prepared_inputs

    os.mkfifo(tmp_path / "manifest.json")
    assert not is_prepared_folder(tmp_path)
    assert prepared_inputs(tmp_path) == [tmp_path]
