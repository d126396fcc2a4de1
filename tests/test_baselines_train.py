"""Baselines inside the trainer: per-dataset values reach the loss, ROLE's estimates train, save and resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pumlc_cli import load_prepared
from pumlc_cli.runtime.dist import DistInfo
from pumlc_cli.train.config import TrainConfig
from pumlc_cli.train.trainer import Trainer
from tests.helpers import TINY_MODEL, run_cli, train_args

CPU = DistInfo(rank=0, world=1, local_rank=0, device=torch.device("cpu"))


@pytest.fixture(scope="module")
def positive_only(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synth data in the single-positive setting ROLE was made for: half the labels known, negatives stripped."""
    out = tmp_path_factory.mktemp("role") / "prepared"
    run_cli("prepare", "coco", "--root", synth_root, "--out", out, "--partial", "0.5", "--strip-negatives")
    return out


def _trainer(data: Path, out: Path, loss: str) -> Trainer:
    cfg = TrainConfig(
        data=str(data),
        out=str(out),
        loss=loss,
        model=TINY_MODEL,
        pretrained=False,
        train_policy="all",
        batch_size=4,
        image_size=32,
        workers=0,
    )
    return Trainer(cfg, CPU)


def test_epr_on_a_voc_folder_uses_the_voc_count(shared_dir: Path, tmp_path: Path) -> None:
    voc = shared_dir / "data" / "voc2007" / "VOCdevkit" / "VOC2007"
    run_cli("prepare", "voc", "--root", voc, "--out", tmp_path / "voc")
    assert _trainer(tmp_path / "voc", tmp_path / "run", "epr").loss_fn.expected_positives == 1.5


def test_role_estimates_train_save_and_resume(positive_only: Path, tmp_path: Path) -> None:
    full, parted = tmp_path / "full", tmp_path / "parted"
    trainer = _trainer(positive_only, tmp_path / "unused", "role")
    start = trainer.loss_fn.estimates.detach().clone()
    groups = trainer.optimizer.param_groups
    assert groups[-1]["params"][0] is trainer.loss_fn.estimates
    assert groups[-1]["initial_lr"] == pytest.approx(10 * groups[0]["initial_lr"])  # one-cycle per group
    run_cli(*train_args(positive_only, full, loss="role", epochs=2))
    run_cli(*train_args(positive_only, parted, "--max-steps", "5", loss="role", epochs=2))
    run_cli("train", positive_only, "--out", parted, "--resume")
    a = torch.load(full / "last.pt", weights_only=True)
    b = torch.load(parted / "last.pt", weights_only=True)
    torch.testing.assert_close(a["loss"]["estimates"], b["loss"]["estimates"], rtol=0, atol=1e-6)
    estimates = torch.sigmoid(a["loss"]["estimates"])
    train = load_prepared(positive_only).split_data("train")
    observed = torch.from_numpy(train.observed.copy())
    assert estimates.shape == observed.shape and start.shape == observed.shape
    assert not torch.equal(a["loss"]["estimates"], start)  # the same seed draws the same start; training moved it
    assert estimates[observed == 1].min() > 0.9
    losses = [h["train_loss"] for h in a["history"]]
    assert np.isfinite(losses).all() and losses[1] < losses[0], losses  # network and estimates fit together


def test_role_on_two_processes_matches_one(positive_only: Path, tmp_path: Path) -> None:
    """2 gloo ranks: the count penalty spans the global batch and estimate gradients are combined across ranks."""
    common = ["--train", "last", "--freeze-bn", "--max-steps", "4"]
    run_cli(*train_args(positive_only, tmp_path / "one", *common, loss="role", epochs=1))
    run_cli(*train_args(positive_only, tmp_path / "two", *common, "--nproc", "2", loss="role", epochs=1))
    a = torch.load(tmp_path / "one" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "two" / "last.pt", weights_only=True)
    torch.testing.assert_close(a["loss"]["estimates"], b["loss"]["estimates"], rtol=0, atol=1e-5)
    for key, value in a["model"].items():
        torch.testing.assert_close(value, b["model"][key], rtol=1e-3, atol=1e-4, msg=key)
