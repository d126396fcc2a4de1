"""Hostile runs of issue 21 (items 9-15): no hangs, bounded resources, no orphans, one line for every bad input.

Processes left behind are found through /proc: any process whose command line names the test's tmp folder."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import error_line, final_error_line, run_cli, train_args

ROOT = Path(__file__).resolve().parents[1]


def pumlc(*args: object, timeout: float = 120) -> subprocess.CompletedProcess:
    """`pumlc ARGS` as a child process, killed (and the test failed) if it hangs."""
    return subprocess.run(
        [sys.executable, "-m", "pumlc_cli", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
    )


def start(*args: object, new_session: bool = False) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pumlc_cli", *map(str, args)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=new_session,
    )


def processes_naming(text: str) -> list[int]:
    """Live (not zombie) processes whose command line contains `text`."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if text in cmdline and state != "Z" and int(proc.name) != os.getpid():
            found.append(int(proc.name))
    return found


def assert_no_process_left(tmp_path: Path, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while processes_naming(str(tmp_path)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not processes_naming(str(tmp_path)), "processes left behind"


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None and path.exists(), f"{path} never appeared"


def png_header_only(path: Path, width: int, height: int) -> None:
    """A valid PNG of `width`×`height` grey pixels, compressed to a few KB (a decompression bomb)."""
    Image.new("L", (width, height)).save(path, format="PNG")


@pytest.fixture
def data(synth_prepared: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(synth_prepared, tmp_path / "data"))


@pytest.fixture(scope="module")
def trained(synth_prepared: Path, tmp_path_factory) -> Path:
    """One finished one-epoch run (the checkpoint eval, predict and audit read)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    run_cli(*train_args(synth_prepared, run, epochs=1))
    return run


def damaged_copy(synth_root: Path, tmp_path: Path, damage: str) -> tuple[Path, Path]:
    """A prepared copy of the synth data with one damaged image in the train and in the test split."""
    root = Path(shutil.copytree(synth_root, tmp_path / "coco"))
    victims = [root / "train2014" / sorted(os.listdir(root / "train2014"))[3]]
    victims.append(root / "val2014" / sorted(os.listdir(root / "val2014"))[3])
    for victim in victims:
        victim.unlink()
        if damage == "empty":
            victim.write_bytes(b"")
        elif damage == "bomb":
            png_header_only(victim, 12_000, 12_000)  # 144 megapixels in a few KB
        else:  # a link to a non-image inside the image root (links out of the root are refused by prepare)
            note = root / f"{victim.stem}.txt"
            note.write_text("not an image\n")
            victim.symlink_to(note)
    run_cli("prepare", "coco", "--root", root, "--out", tmp_path / "p")
    return tmp_path / "p", victims[0]


# ---------------------------------------------------------------- 9: a loader worker's error ends the run


@pytest.mark.parametrize("damage", ["empty", "bomb", "symlink"])
def test_worker_error_ends_train_with_workers(synth_root, tmp_path, damage):
    prepared, victim = damaged_copy(synth_root, tmp_path, damage)
    args = train_args(prepared, tmp_path / "run", epochs=1)
    args[args.index("--workers") + 1] = "2"
    line = final_error_line(pumlc(*args))
    assert str(victim) in line
    assert not (tmp_path / "run").exists() and not (tmp_path / ".run.pumlc-lock").exists()
    assert_no_process_left(tmp_path)


@pytest.mark.parametrize("command", ["eval", "audit"])
def test_worker_error_ends_eval_and_audit_with_workers(synth_root, tmp_path, trained, command):
    prepared, _ = damaged_copy(synth_root, tmp_path, "empty")
    split = ["--split", "all"] if command == "audit" else []
    done = pumlc(command, trained, "--data", prepared, "--workers", "2", "--device", "cpu", *split)
    line = error_line(done)
    assert "cannot read image" in line and str(tmp_path / "coco") in line
    assert_no_process_left(tmp_path)


# ------------------------------------------------------------------------ 10: FIFOs and folders as inputs


def _mini_voc(tmp_path: Path) -> Path:
    root = tmp_path / "VOC2007"
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("000001\n")
    return root


def _fifo_cases(tmp_path: Path, fifo: Path, trained: Path, data: Path) -> dict[str, list]:
    voc = _mini_voc(tmp_path)
    return {
        "coco --train-ann": [
            "prepare",
            "coco",
            "--train-ann",
            fifo,
            "--train-images",
            tmp_path / "img",
            "--out",
            tmp_path / "o",
        ],
        "csv --train": ["prepare", "csv", "--train", fifo, "--images", tmp_path / "img", "--out", tmp_path / "o"],
        "voc xml": ["prepare", "voc", "--root", voc, "--out", tmp_path / "o"],
        "voc image set": ["prepare", "voc", "--root", voc, "--out", tmp_path / "o"],
        "noise file": [
            "prepare",
            "csv",
            "--train",
            tmp_path / "t.csv",
            "--images",
            tmp_path / "img",
            "--out",
            tmp_path / "o",
        ]
        + ["--noise-file", fifo],
        "relabel --from": ["relabel", data, "--from", fifo, "--accept-top", "1", "--out", tmp_path / "o"],
        "--config": ["train", data, "--out", tmp_path / "o", "--config", fifo],
        "checkpoint": ["eval", fifo, "--data", data],
        "--class-embeddings": ["train", data, "--out", tmp_path / "o", "--head", "semantic", "--no-pretrained"]
        + ["--class-embeddings", fifo],
    }


CASES = ["coco --train-ann", "csv --train", "voc xml", "voc image set", "noise file", "relabel --from"]
CASES += ["--config", "checkpoint", "--class-embeddings"]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_fifo_or_folder_input_is_one_line(tmp_path, synth_prepared, trained, case, kind):
    special = tmp_path / "special"
    os.mkfifo(special) if kind == "fifo" else special.mkdir()
    (tmp_path / "t.csv").write_text("image,labels\na.jpg,x\n")
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.jpg").write_bytes(b"")
    args = _fifo_cases(tmp_path, special, trained, synth_prepared)[case]
    voc = tmp_path / "VOC2007"
    if case == "voc xml":  # the XML of the listed image is the special file
        (voc / "Annotations" / "000001.xml").unlink(missing_ok=True)
        os.rename(special, voc / "Annotations" / "000001.xml")
        special = voc / "Annotations" / "000001.xml"
    elif case == "voc image set":
        (voc / "ImageSets" / "Main" / "trainval.txt").unlink()
        os.rename(special, voc / "ImageSets" / "Main" / "trainval.txt")
        special = voc / "ImageSets" / "Main" / "trainval.txt"
    done = pumlc(*args, timeout=60)
    line = final_error_line(done)
    what = "a FIFO (named pipe)" if kind == "fifo" else "a folder"
    if case == "checkpoint" and kind == "folder":
        assert "a folder without best.pt or last.pt" in line
    else:
        assert f"{special}: " in line and f"is {what}, not a regular file" in line, line
    assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- 11: DDP runs interrupted


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_two_process_training_interrupted(data, tmp_path, sig):
    run = tmp_path / "run"
    args = train_args(data, run, epochs=20)
    proc = start(*args, "--nproc", "2")
    wait_for(run / "metrics.jsonl", proc)
    proc.send_signal(sig)
    assert proc.wait(timeout=120) == 128 + sig
    err = proc.stderr.read()
    assert "Traceback" not in err and "SignalException" not in err
    interrupted = [line for line in err.splitlines() if "interrupted" in line]
    assert len(interrupted) == 1 and interrupted[0].startswith(f"pumlc: interrupted ({sig.name})")
    assert {"last.pt", "config.json"} <= {p.name for p in run.iterdir()}
    assert not (tmp_path / ".run.pumlc-lock").exists()
    assert_no_process_left(tmp_path)


# ---------------------------------------------------------------------------- 12: bounded resources


def test_workers_are_capped_to_the_cpus(data, tmp_path):
    from pumlc_cli.runtime.workers import available_cpus

    done = run_cli(*train_args(data, tmp_path / "run"), "--workers", "1000", "--dry-run")
    cpus = available_cpus()
    assert f"pumlc: note: --workers 1000 capped to {cpus}, the CPUs available to this process" in done.stderr
    assert json.loads(done.stdout)["workers"] == cpus


def test_cache_workers_are_capped_to_the_cpus(synth_root, tmp_path):
    from pumlc_cli.runtime.workers import available_cpus

    args = ["prepare", "coco", "--root", synth_root, "--out", tmp_path / "p", "--cache-size", "24"]
    done = run_cli(*args, "--cache-workers", 999)
    assert f"pumlc: note: --cache-workers 999 capped to {available_cpus()}" in done.stderr


@pytest.mark.parametrize("flag", ["--image-size", "--scale-size"])
def test_image_sizes_are_bounded(data, tmp_path, flag):
    line = error_line(run_cli(*train_args(data, tmp_path / "run"), flag, "100000", check=False))
    assert f"{flag}: input should be less than or equal to 2048 (got 100000)" in line
    line = error_line(run_cli("synth", tmp_path / "s", "--image-size", "100000", check=False))
    assert "--image-size must be between 16 and 2048, got 100000" in line


def test_decompression_bomb_is_refused_from_its_header(tmp_path):
    import resource
    import warnings

    from pumlc_cli.data.datasets import open_rgb
    from pumlc_cli.errors import PumlcError

    bomb = tmp_path / "bomb.png"
    png_header_only(bomb, 12_000, 12_000)
    assert bomb.stat().st_size < 200_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning must not be raised (nor printed)
        with pytest.raises(PumlcError, match=r"refused, too many pixels \(12000×12000 = 144 megapixels"):
            open_rgb(bomb)
    assert time.perf_counter() - t0 < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KB: nothing was decoded


@pytest.mark.parametrize("nproc", ["1", "2"])
def test_sigkill_leaves_no_worker_behind(data, tmp_path, nproc):
    """kill -9 of the parent: loader workers (--workers 2) or torchrun and its ranks (--nproc 2) die with it."""
    run = tmp_path / "run"
    args = train_args(data, run, epochs=20)
    args[args.index("--workers") + 1] = "2" if nproc == "1" else "0"
    proc = start(*args, "--nproc", nproc)
    wait_for(run / "metrics.jsonl", proc)
    assert len(processes_naming(str(tmp_path))) >= 3  # the parent and its workers (or torchrun and two ranks)
    proc.kill()
    proc.wait(timeout=30)
    assert_no_process_left(tmp_path)


def test_sigkill_leaves_no_cache_worker_behind(tmp_path):
    from pumlc_cli.data.synth import make_synth

    root = tmp_path / "coco"
    make_synth(root, n_train=300, n_test=20, seed=0, image_size=160)
    proc = start("prepare", "coco", "--root", root, "--out", tmp_path / "p", "--cache-size", "32", "--cache-workers", 2)
    deadline = time.monotonic() + 60
    while len(processes_naming(str(tmp_path))) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "prepare finished before its cache workers could be seen"
    proc.kill()
    proc.wait(timeout=30)
    assert_no_process_left(tmp_path)


# ------------------------------------------------------------------------- 13: interrupted synth, relabel


def test_synth_interrupted_leaves_no_temp_and_the_next_run_cleans(tmp_path):
    proc = start("synth", tmp_path / "big", "--images", "3000", "--image-size", "96")
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".big.*.tmp/*2014/*.jpg")) and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143
    assert proc.stderr.read().strip().splitlines() == ["pumlc: interrupted (SIGTERM)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    (tmp_path / ".big.abcd1234.tmp").mkdir()  # what a kill -9 leaves
    run_cli("synth", tmp_path / "big", "--images", "10", "--image-size", "16")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big"]


# --------------------------------------------------------------- 14, 15: one line naming the problem


def test_class_embeddings_that_are_a_checkpoint(data, tmp_path, trained):
    args = train_args(data, tmp_path / "run", "--head", "semantic", "--class-embeddings", trained / "best.pt")
    line = final_error_line(run_cli(*args, check=False))
    assert "not a .npy array of class embeddings" in line


@pytest.mark.parametrize("where", ["coco", "config", "manifest"])
def test_json_nested_too_deeply(synth_root, data, tmp_path, where):
    deep = "[" * 100_000 + "]" * 100_000
    if where == "coco":
        (tmp_path / "ann.json").write_text(deep)
        args = ["prepare", "coco", "--train-ann", tmp_path / "ann.json", "--train-images", synth_root / "train2014"]
        args += ["--out", tmp_path / "o"]
    elif where == "config":
        (tmp_path / "c.json").write_text('{"lr": ' + deep + "}")
        args = train_args(data, tmp_path / "o", "--config", tmp_path / "c.json")
    else:
        (data / "manifest.json").write_text(deep)
        args = ["stats", data]
    line = final_error_line(run_cli(*args, check=False))
    assert "nested too deeply" in line or "malformed manifest" in line


def test_csv_field_over_the_csv_limit(tmp_path):
    (tmp_path / "t.csv").write_text("image,labels\na.jpg," + "x" * 140_000 + "\n")
    args = ["prepare", "csv", "--train", tmp_path / "t.csv", "--images", tmp_path / "img", "--out", tmp_path / "o"]
    line = error_line(run_cli(*args, check=False))
    assert "t.csv: line 2: malformed CSV (field larger than field limit (131072))" in line


@pytest.mark.parametrize(
    "convert,expect",
    [
        (lambda col: col.astype(str), "found '-1', '0', '1'"),
        (lambda col: col.astype(float) + 0.5, "found -0.5, 0.5, 1.5"),
        (lambda col: col.astype(float), "found float64 columns"),
    ],
    ids=["strings", "fractions", "whole-floats"],
)
def test_parquet_label_columns_of_the_wrong_type(data, convert, expect):
    import hashlib

    import pandas as pd

    frame = pd.read_parquet(data / "labels.parquet")
    frame["observed"] = convert(frame["observed"])
    frame.to_parquet(data / "labels.parquet")
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["files_sha256"]["labels.parquet"] = hashlib.sha256((data / "labels.parquet").read_bytes()).hexdigest()
    (data / "manifest.json").write_text(json.dumps(manifest))
    line = error_line(run_cli("stats", data, check=False))
    assert f"labels must be -1, 0 or 1, {expect}" in line


def test_predict_csv_of_a_file_named_with_a_non_utf8_byte(trained, synth_root, tmp_path):
    photos = tmp_path.joinpath("photos")
    photos.mkdir()
    name = os.fsdecode(b"a\xffb.jpg")
    shutil.copy(next((synth_root / "val2014").iterdir()), photos / name)
    done = pumlc("predict", trained, photos, "--csv", tmp_path / "p.csv", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert b"a\xffb.jpg" in (tmp_path / "p.csv").read_bytes()  # the file's own name, byte for byte


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("chattr") is None, reason="chattr +i needs root")
@pytest.mark.parametrize("command", ["synth", "prepare", "resume"])
def test_immutable_folder_is_one_line(synth_root, data, trained, tmp_path, command):
    folder = tmp_path / "imm"
    if command == "resume":  # a run stopped after one step, resumable
        args = train_args(data, folder, epochs=2)
        run_cli(*args, "--max-steps", "1")
        args.append("--resume")
    else:
        folder.mkdir()
        args = ["synth", folder / "s"] if command == "synth" else ["prepare", "coco", "--root", synth_root]
        args += [] if command == "synth" else ["--out", folder, "--force"]
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
        pytest.skip("this file system does not support chattr +i")
    try:
        line = final_error_line(pumlc(*args))
        assert "Operation not permitted" in line or "permission denied" in line.lower()
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


@pytest.mark.parametrize("command", ["eval", "predict", "audit"])
def test_device_cuda_without_a_gpu(trained, synth_root, command):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    extra = [synth_root / "val2014"] if command == "predict" else []
    line = error_line(run_cli(command, trained, *extra, "--device", "cuda", check=False))
    assert "no CUDA device" in line and "cuda" in line


def test_audit_train_args_with_an_unclosed_quote(trained):
    line = error_line(run_cli("audit", trained, "--folds", "2", "--train-args", '--lr "', check=False))
    assert "No closing quotation" in line


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_threshold_nan(trained, synth_root, command):
    extra = [synth_root / "val2014"] if command == "predict" else []
    line = error_line(pumlc(command, trained, *extra, "--threshold", "nan"))
    assert "'--threshold': nan is not a number" in line


def test_non_torch_pickle_prints_no_torch_warning(tmp_path):
    import pickle

    with open(tmp_path / "x.pt", "wb") as fh:
        pickle.dump({"a": np.arange(3)}, fh, protocol=4)
    line = error_line(pumlc("eval", tmp_path / "x.pt"))
    assert "not a readable checkpoint" in line or "not a pumlc checkpoint" in line


def test_relabel_from_a_csv_with_a_bom(trained, tmp_path):
    trusted = ("--split", "val", "--label-frequency", "0.5", "--floor", "0")  # scores relabel accepts
    run_cli("audit", trained, "--csv", tmp_path / "s.csv", *trusted, "--device", "cpu")
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + (tmp_path / "s.csv").read_bytes())
    data = json.loads((trained / "config.json").read_text())["data"]
    run_cli("relabel", data, "--from", bom, "--accept-top", "2", "--min-precision", "0", "--out", tmp_path / "r")
    assert (tmp_path / "r" / "labels.parquet").is_file()


def test_resume_while_another_run_holds_the_lock_names_it(data, tmp_path):
    from pumlc_cli.outputs import claim

    with claim(tmp_path / "run", "pumlc train"):
        line = final_error_line(run_cli(*train_args(data, tmp_path / "run"), "--resume", check=False))
    assert f"in use by pid {os.getpid()}" in line and "nothing to resume" not in line
