"""Honest small runs: what `--dry-run` resolves and refuses, offline starts, the recipe on few images, the quick
CPU example of the README."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from tests.helpers import TINY_MODEL, error_line, run_cli

README = Path(__file__).resolve().parents[1] / "README.md"


def dry_run(data: Path, out: Path, *args: object) -> tuple[dict, str]:
    done = run_cli("train", data, "--out", out, "--dry-run", *args)
    return json.loads(done.stdout), done.stderr


@pytest.mark.parametrize(("size", "scale"), [(64, 73), (224, 256), (448, 512)])
def test_scale_size_follows_image_size(synth_prepared: Path, tmp_path: Path, size: int, scale: int) -> None:
    """`--scale-size` defaults to 512/448 × `--image-size`, as its help says, for the recipe's runs too."""
    cfg, _ = dry_run(synth_prepared, tmp_path / "run", "--image-size", size)
    assert (cfg["image_size"], cfg["scale_size"]) == (size, scale)
    cfg, _ = dry_run(synth_prepared, tmp_path / "run", "--image-size", size, "--scale-size", 300)
    assert cfg["scale_size"] == 300


def test_dry_run_checks_the_model_name(synth_prepared: Path, tmp_path: Path) -> None:
    done = run_cli("train", synth_prepared, "--out", tmp_path / "run", "--dry-run", "--model", "resnet19", check=False)
    line = error_line(done)
    assert "unknown model 'resnet19'" in line and "resnet18" in line  # a suggestion
    assert done.stdout == "" and not (tmp_path / "run").exists()
    cfg, _ = dry_run(synth_prepared, tmp_path / "run", "--model", "resnet18")
    assert cfg["model"] == "resnet18"


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE is set and they are not in the cache"),
        ({"HF_ENDPOINT": "http://127.0.0.1:9"}, "127.0.0.1:9 unreachable"),  # nothing listens on port 9
    ],
)
def test_offline_start_fails_at_once_with_the_ways_on(
    synth_prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], reason: str
) -> None:
    """No network (or a host that does not answer): one line before anything is written, instead of the hub
    client's minute of retry lines; the line names the reason and the three ways on."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    run = tmp_path / "run"
    done = run_cli("train", synth_prepared, "--out", run, "--model", TINY_MODEL, check=False, subprocess_=True)
    line = error_line(done)  # exactly one stderr line: no "Retrying" lines before it
    assert line.startswith(f"pumlc: error: cannot download {TINY_MODEL} weights ({reason}")
    for way in ("--pretrained-path FILE", "--no-pretrained", "HF_HUB_OFFLINE=1"):
        assert way in line, line
    assert not run.exists()


def test_probe_leaves_proxied_hosts_to_the_download(monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused direct connection means offline, unless a proxy carries the traffic (then only the download
    itself can tell)."""
    from pumlc_cli.models.hub import _unreachable

    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert "127.0.0.1:9 unreachable" in (_unreachable("http://127.0.0.1:9") or "")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    assert _unreachable("http://127.0.0.1:9") is None


def test_few_images_from_random_weights(coco128: Path, tmp_path: Path) -> None:
    """From random weights on 115 COCO images: the linear head and a quarter-of-the-set batch, not the paper's
    semantic head and a batch of 70 that would leave 45 images out of every epoch; flags still win."""
    cfg, err = dry_run(coco128, tmp_path / "run", "--no-pretrained")
    assert (cfg["head"], cfg["class_embeddings"], cfg["batch_size"]) == ("linear", None, 115 // 4)
    assert "115 training images from random weights: linear head and batch 28" in err
    assert "warning" not in err
    cfg, err = dry_run(coco128, tmp_path / "run", "--no-pretrained", "--head", "semantic", "--batch-size", "23")
    assert (cfg["head"], cfg["batch_size"]) == ("semantic", 23) and cfg["class_embeddings"] is not None
    assert "random weights" not in err
    cfg, err = dry_run(coco128, tmp_path / "run")  # with weights: the paper's values, and the warning
    assert (cfg["head"], cfg["batch_size"]) == ("semantic", 70)
    assert "warning: batch 70 leaves 45 of the 115 training images (39%) out of every epoch" in err


def test_large_drop_is_warned(synth_prepared: Path, tmp_path: Path) -> None:
    from pumlc_cli import load_prepared

    n = len(load_prepared(synth_prepared).split_data("train").images)
    batch = n // 2 + 1  # one step an epoch: almost half the images never seen
    _, err = dry_run(synth_prepared, tmp_path / "run", "--batch-size", batch)
    share = round(100 * (n - batch) / n)
    assert f"warning: batch {batch} leaves {n - batch} of the {n} training images ({share}%)" in err
    _, err = dry_run(synth_prepared, tmp_path / "run", "--batch-size", n // 2)
    assert "warning" not in err  # at most one image left out


def _readme_quick_run() -> list[str]:
    """The README's quick CPU example: the `pumlc train` line under '# a quick CPU run'."""
    text = README.read_text(encoding="utf-8")
    match = re.search(r"# a quick CPU run[^\n]*\n(?:[^\n]*\n)*?(pumlc train [^\n]+)", text)
    assert match, "README lost its quick CPU example"
    return shlex.split(match.group(1))[1:]


def test_readme_quick_example_resolves_as_documented(tmp_path: Path) -> None:
    """The flags of the README's quick example on data the size of `pumlc synth`'s default resolve to what the
    README says they do: linear head, batch 70, 73 → 64 px, every weight trained over one 4-epoch cycle."""
    from pumlc_cli.data.synth import make_synth

    make_synth(tmp_path / "synth", n_train=800, n_test=200, seed=0, image_size=16)  # tiny pixels: nothing is read
    data = tmp_path / "synth-prep"
    run_cli("prepare", "coco", "--root", tmp_path / "synth", "--out", data, "--partial", "0.3", "--strip-negatives")
    args = _readme_quick_run()
    assert args[:3] == ["train", "synth-prep", "--out"]
    cfg, err = dry_run(data, tmp_path / "run", *args[4:])
    expected = {
        "model": "resnet18",
        "pretrained": False,
        "head": "linear",
        "batch_size": 70,
        "image_size": 64,
        "scale_size": 73,
        "train_policy": "all",
        "freeze_bn": False,
        "epochs": 4,
        "schedule_epochs": 4,
        "lr": 3e-3,
        "device": "cpu",
    }
    assert {k: cfg[k] for k in expected} == expected
    assert "warning" not in err


@pytest.fixture(scope="module")
def coco128(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared coco128 (115 train / 13 val after the default split), 70% of the labels hidden."""
    base = shared_dir / "data" / "coco128"
    out = tmp_path_factory.mktemp("coco128") / "prepared"
    ann, images = base / "annotations" / "instances_train2017.json", base / "train2017"
    run_cli("prepare", "coco", "--train-ann", ann, "--train-images", images, "--out", out, "--missing", "0.7")
    return out
