"""`--recipe paper`: the resolved config equals the released commands; config files validate like flags."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import run_cli

# The released code (TAKELAMAG/PU-MLC 1a4445f): README commands + train.py + helper_functions.ModelEma.
RELEASED_COMMON = {
    "model": "resnet101.tv_in1k",  # torchvision's ImageNet ResNet-101 file
    "pretrained": True,
    "local_global": True,
    "head": "semantic",
    "train_policy": "last",  # branches + layer4 + head
    "freeze_bn": True,  # fix_bn
    "image_size": 448,  # --cropSize
    "scale_size": 512,  # --scaleSize
    "optimizer": "adam",  # torch.optim.Adam(weight_decay=1e-4): L2
    "weight_decay": 1e-4,
    "pct_start": 0.2,
    "schedule_epochs": 80,  # Epochs = 80
    "ema_warmup": False,
    "grad_clip": 0.0,
    "mixup_weight": 1.0,
    "mixup_beta": 0.3,  # args.mix_alpha
    "loss": "pu",
}
RELEASED = {
    # --b=35 on 2 GPUs, --lr=1e-4, --Stop_epoch=40 (epochs 0..40), --ema=0.9997, --alpha=1.0, --gamma=0.55
    "coco": {"batch_size": 70, "lr": 1e-4, "epochs": 41, "ema_decay": 0.9997, "alpha": 1.0, "gamma": 0.55},
    # --b=45 on 2 GPUs, --lr=4e-5, --Stop_epoch=55, --ema=0.991, --alpha=2.0, --gamma=0.85
    "voc": {"batch_size": 90, "lr": 4e-5, "epochs": 56, "ema_decay": 0.991, "alpha": 2.0, "gamma": 0.85},
}
# The class vectors the released network loads for each dataset (copied into the shared test data, bytes unchanged).
RELEASED_VECTORS = {"coco": "coco80_glove300.npy", "voc": "voc20_glove300.npy"}


@pytest.fixture(scope="module")
def voc_prepared(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("voc") / "prepared"
    root = shared_dir / "data" / "voc2007" / "VOCdevkit" / "VOC2007"
    run_cli("prepare", "voc", "--root", root, "--out", out, "--partial", "0.5")
    return out


@pytest.fixture(scope="module")
def coco_prepared(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("coco") / "prepared"
    base = shared_dir / "data" / "coco128"
    ann, images = base / "annotations" / "instances_train2017.json", base / "train2017"
    run_cli("prepare", "coco", "--train-ann", ann, "--train-images", images, "--out", out)
    return out


@pytest.fixture(scope="module")
def csv_prepared(synth_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CSV dataset (3 made-up classes) over the synth images."""
    from pumlc_cli import load_prepared

    prepared = load_prepared(synth_prepared)
    images = prepared.split_data("train").images[:40]
    base = tmp_path_factory.mktemp("csv")
    csv = base / "labels.csv"
    csv.write_text("image,labels\n" + "".join(f"{img},{'ab'[i % 2]} c\n" for i, img in enumerate(images)))
    out = base / "prepared"
    run_cli("prepare", "csv", "--train", csv, "--images", prepared.image_root, "--out", out)
    return out


def dry_run(data: Path, out: Path, *args: object) -> tuple[dict, str]:
    done = run_cli("train", data, "--out", out, "--dry-run", *args)
    return json.loads(done.stdout), done.stderr


@pytest.mark.parametrize("kind", ["voc", "coco"])
def test_paper_recipe_equals_released_values(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    data = request.getfixturevalue(f"{kind}_prepared")
    cfg, err = dry_run(data, tmp_path / "run")
    expected = {**RELEASED_COMMON, **RELEASED[kind]}
    assert {k: cfg[k] for k in expected} == expected
    vectors = Path(cfg["class_embeddings"])
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "class_vectors" / RELEASED_VECTORS[kind]
    assert vectors.read_bytes() == shared.read_bytes()
    assert f"α={RELEASED[kind]['alpha']} from {kind.upper()} dataset default" in err
    assert not (tmp_path / "run").exists()  # a dry run writes nothing


def test_flags_beat_config_file_beat_recipe(voc_prepared: Path, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("lr: 1e-3\nepochs: 5\ngamma: 0.5\n")  # YAML reads 1e-3 as text; a number all the same
    cfg, err = dry_run(voc_prepared, tmp_path / "run", "--config", config, "--lr", "2e-3", "--alpha", "3")
    assert (cfg["lr"], cfg["epochs"], cfg["batch_size"]) == (2e-3, 5, RELEASED["voc"]["batch_size"])
    assert "α=3.0 from --alpha" in err and f"γ=0.5 from config file {config}" in err


def test_without_pretrained_weights_everything_trains(voc_prepared: Path, tmp_path: Path) -> None:
    cfg, err = dry_run(voc_prepared, tmp_path / "run", "--no-pretrained", "--epochs", "7")
    assert (cfg["train_policy"], cfg["freeze_bn"], cfg["schedule_epochs"]) == ("all", False, 7)
    assert cfg["ema_warmup"] is True
    assert "warning" not in err
    _, err = dry_run(voc_prepared, tmp_path / "run", "--no-pretrained", "--train", "last")
    assert "warning: --train last without pretrained weights" in err


def test_csv_dataset_falls_back_to_linear_head(csv_prepared: Path, tmp_path: Path) -> None:
    cfg, err = dry_run(csv_prepared, tmp_path / "run")
    assert cfg["head"] == "linear" and cfg["class_embeddings"] is None
    assert "linear head" in err and "(CSV data: COCO's values)" in err
    assert cfg["batch_size"] == RELEASED["coco"]["batch_size"]
    vectors = tmp_path / "v.npy"
    np.save(vectors, np.ones((3, 5), dtype=np.float32))
    cfg, err = dry_run(csv_prepared, tmp_path / "run", "--class-embeddings", vectors)
    assert cfg["head"] == "semantic" and cfg["class_embeddings"] == str(vectors)
    assert "linear head" not in err
    np.save(vectors, np.ones((4, 5), dtype=np.float32))  # a row too many: refused before anything is written
    bad = run_cli("train", csv_prepared, "--out", tmp_path / "run", "--class-embeddings", vectors, check=False)
    assert bad.returncode == 2 and "expected one row per class (3)" in bad.stderr
    assert not (tmp_path / "run").exists()


BAD_CONFIGS = [
    ("a.toml", 'epochs = "many"\n', "epochs: input should be a valid integer"),
    ("b.toml", "epochs = -3\n", "epochs: input should be greater than or equal to 1"),
    ("c.yaml", "batch_size: 0\n", "batch_size: input should be greater than or equal to 1"),
    ("d.toml", "lr = nan\n", "lr: input should be a finite number"),
    ("e.json", '{"lr": Infinity}\n', "lr: input should be a finite number"),
    ("f.yaml", "epochs: [1\n", "cannot parse config"),
    ("g.toml", "epochs = true\n", "epochs: input should be a valid integer"),
    ("h.toml", "epochs = 1.5\n", "epochs: input should be a valid integer"),
    ("i.yaml", "optimizer: sgd\n", "optimizer: input should be 'adam' or 'adamw'"),
    ("j.yaml", "- 1\n- 2\n", "config must be a table of option names"),
    ("k.toml", "bogus = 1\n", "unknown option(s) bogus"),
    ("l.json", '{"pretrained": "yes"}\n', "pretrained: input should be a valid boolean"),
]


@pytest.mark.parametrize(("name", "text", "message"), BAD_CONFIGS)
def test_config_values_are_validated_like_flags(
    synth_prepared: Path, tmp_path: Path, name: str, text: str, message: str
) -> None:
    config = tmp_path / name
    config.write_text(text)
    run = tmp_path / "run"
    done = run_cli("train", synth_prepared, "--out", run, "--config", config, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]  # one line, no traceback
    assert done.stderr.startswith(f"pumlc: error: {config}: {message}"), done.stderr
    assert not run.exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--epochs", "-3"], "--epochs: input should be greater than or equal to 1"),
        (["--lr", "nan"], "--lr: input should be a finite number"),
        (["--epochs", "81"], "--epochs 81 exceeds --schedule-epochs 80"),
        (["--no-pretrained", "--pretrained-path", "w.pth"], "--pretrained-path and --no-pretrained contradict"),
    ],
)
def test_flag_values_fail_the_same_way(synth_prepared: Path, tmp_path: Path, flags: list[str], message: str) -> None:
    done = run_cli("train", synth_prepared, "--out", tmp_path / "run", *flags, check=False)
    assert done.returncode == 2 and f"pumlc: error: {message}" in done.stderr, done.stderr
    assert not (tmp_path / "run").exists()


def test_loss_choices_match_the_registry() -> None:
    from typing import get_args

    from pumlc_cli.losses import LOSS_NAMES
    from pumlc_cli.train.config import LossName

    assert set(get_args(LossName)) == set(LOSS_NAMES)


def test_training_crops_are_square_of_the_released_sizes() -> None:
    import torch

    from pumlc_cli.data.datasets import TrainTransform

    transform, gen = TrainTransform(448, 512), torch.Generator().manual_seed(0)
    boxes = [transform.crop_box(gen) for _ in range(400)]
    sides = {(x1 - x0, y1 - y0) for x0, y0, x1, y1 in boxes}
    assert sides == {(s, s) for s in (512, 448, 384, 320, 256)}  # dataloader.py's randomCropList at scale 512
    assert min(min(x0, y0) for x0, y0, _, _ in boxes) >= 0 and max(max(x1, y1) for _, _, x1, y1 in boxes) <= 512


def test_voc_mini_command_resolves_to_its_setting(csv_prepared: Path, tmp_path: Path) -> None:
    """The voc-mini grid's train command: the issue-12 setting, with live BatchNorm and a warmed-up EMA."""
    from pumlc_cli.benchmarks.reproduce import RECIPES, train_args

    recipe = RECIPES["voc-mini"]
    args = train_args(recipe, csv_prepared, tmp_path / "run", "pu", 3, 1, "cpu", [])
    assert args[:4] == ["train", str(csv_prepared), "--out", str(tmp_path / "run")]
    cfg, err = dry_run(csv_prepared, tmp_path / "run", *args[4:])
    assert (cfg["freeze_bn"], cfg["ema_warmup"], cfg["local_global"]) == (False, True, False)
    assert (cfg["epochs"], cfg["schedule_epochs"], cfg["lr"], cfg["batch_size"]) == (6, 6, 1e-3, 16)
    assert (cfg["train_policy"], cfg["head"], cfg["val_unknown"], cfg["seed"]) == ("last", "linear", "ignore", 3)
    assert "α=2.0 from --alpha" in err
