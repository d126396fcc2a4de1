"""`pumlc stats`: numbers against hand-computed tables, JSON output, sorting, truth-only data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from pumlc_cli.cli import app
from pumlc_cli.data.prepared import LabelStore, write_prepared
from pumlc_cli.data.stats import label_stats, sort_rows
from pumlc_cli.errors import PumlcError

TRUTH = np.array([[1, -1, 1], [1, 1, -1], [-1, -1, -1], [1, -1, 0]], dtype=np.int8)
OBSERVED = np.array([[1, 1, 0], [-1, 0, -1], [0, -1, 1], [1, -1, 0]], dtype=np.int8)
CLASSES = ["a", "b", "c"]


def test_label_stats_hand_computed():
    s = label_stats(TRUTH, OBSERVED, CLASSES)
    summary = s["summary"]
    assert summary["images"] == 4 and summary["classes"] == 3
    assert summary["label_cardinality"] == pytest.approx(5 / 4)
    assert summary["label_density"] == pytest.approx(5 / 12)
    assert summary["observed_cardinality"] == pytest.approx(1.0)
    assert summary["observed_positive_share"] == pytest.approx(4 / 12)
    assert summary["observed_negative_share"] == pytest.approx(4 / 12)
    assert summary["observed_unknown_share"] == pytest.approx(4 / 12)
    assert summary["truth_unknown_entries"] == 1
    assert summary["false_negatives"] == 1 and summary["false_positives"] == 2
    assert summary["hidden_positives"] == 2 and summary["hidden_negatives"] == 1  # (3, c) is unknown in truth too
    assert summary["truth_equals_observed"] is False
    assert summary["observed_positive_recall"] == pytest.approx(2 / 5)
    a, b, c = s["per_class"]
    assert a == {
        "index": 0,
        "class": "a",
        "true_positives": 3,
        "observed_positives": 2,
        "hidden_positives": 0,
        "hidden_negatives": 1,
        "false_negatives": 1,
        "fn_rate": pytest.approx(1 / 3),
        "false_positives": 0,
        "fp_rate": 0.0,
        "unknown_share": 0.25,
        "precision": 1.0,
        "recall": pytest.approx(2 / 3),
    }
    assert (b["true_positives"], b["observed_positives"], b["false_negatives"], b["false_positives"]) == (1, 1, 0, 1)
    assert (b["hidden_positives"], c["hidden_positives"], c["hidden_negatives"]) == (1, 1, 0)
    assert b["fn_rate"] == 0.0 and b["fp_rate"] == pytest.approx(1 / 3)
    assert b["unknown_share"] == 0.25 and b["precision"] == 0.0
    assert c["fp_rate"] == 0.5 and c["unknown_share"] == 0.5 and c["precision"] == 0.0
    assert s["histogram"] == {"truth": {"0": 1, "1": 1, "2": 2}, "observed": {"0": 1, "1": 2, "2": 1}}


def test_undefined_ratios_and_sorting():
    truth = np.array([[-1, 1], [-1, 1]], np.int8)
    observed = np.array([[-1, 0], [-1, 1]], np.int8)
    rows = label_stats(truth, observed, ["x", "y"])["per_class"]
    assert rows[0]["fn_rate"] is None and rows[0]["precision"] is None
    assert [r["class"] for r in sort_rows(rows, "positives")] == ["y", "x"]
    assert [r["class"] for r in sort_rows(rows, "precision")] == ["y", "x"]  # None last
    assert [r["class"] for r in sort_rows(rows, "name")] == ["x", "y"]
    assert [r["class"] for r in sort_rows(rows, "hidden")] == ["y", "x"]  # y's hidden positive


def _write(path, truth, observed, split):
    images = [f"{i}.jpg" for i in range(len(truth))]
    manifest = {"classes": CLASSES, "image_root": str(path.parent), "corruptions": [{"step": "noise"}]}
    write_prepared(path, LabelStore.from_dense(images, np.array(split), truth, observed), manifest)


def test_stats_cli_json_and_tables(tmp_path):
    truth = np.concatenate([TRUTH, TRUTH[:2]])
    observed = np.concatenate([OBSERVED, TRUTH[:2]])
    (tmp_path / "data").mkdir()
    _write(tmp_path / "data" / "p", truth, observed, ["train"] * 4 + ["test"] * 2)  # images: data/, report: beside
    result = CliRunner().invoke(
        app, ["stats", str(tmp_path / "data" / "p"), "--json", str(tmp_path / "s.json"), "--sort", "fp"]
    )
    assert result.exit_code == 0, result.output
    assert "per class" in result.output and "positives per image" in result.output
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["summary"]["images_per_split"] == {"train": 4, "val": 0, "test": 2}
    assert data["summary"]["images"] == 4 and data["summary"]["false_negatives"] == 1
    assert [r["class"] for r in data["per_class"]] == ["c", "b", "a"]
    # the test split: truth equals observed
    result = CliRunner().invoke(app, ["stats", str(tmp_path / "data" / "p"), "--split", "test", "--json", "-"])
    data = json.loads(result.output)
    assert data["summary"]["truth_equals_observed"] is True and data["summary"]["images"] == 2
    result = CliRunner().invoke(app, ["stats", str(tmp_path / "data" / "p"), "--split", "all", "--json", "-"])
    assert json.loads(result.output)["summary"]["images"] == 6


def test_stats_on_csv_data_truth_only(tmp_path):
    (tmp_path / "train.csv").write_text("image,labels\na.jpg,dog\nb.jpg,cat dog\nc.jpg,\nd.jpg,cat\n")
    (tmp_path / "img").mkdir()
    for name in "abcd":
        (tmp_path / "img" / f"{name}.jpg").write_bytes(b"listed, never opened by prepare or stats")
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "prepare",
            "csv",
            "--train",
            str(tmp_path / "train.csv"),
            "--images",
            str(tmp_path / "img"),
            "--out",
            str(tmp_path / "p"),
            "--val-fraction",
            "0",
        ],
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["stats", str(tmp_path / "p")])
    assert res.exit_code == 0, res.output
    assert "truth equals observed" in res.output
    res = runner.invoke(app, ["stats", str(tmp_path / "p"), "--json", "-"])
    data = json.loads(res.output)
    assert data["summary"]["label_cardinality"] == 1.0 and data["histogram"]["truth"] == {
        "0": 1,
        "1": 2,
        "2": 1,
    }
    assert all(r["fn_rate"] == 0 and r["precision"] == 1.0 for r in data["per_class"])


def test_stats_on_synth(synth_prepared):
    res = CliRunner().invoke(app, ["stats", str(synth_prepared), "--json", "-"])
    data = json.loads(res.output)
    assert data["summary"]["observed_unknown_share"] == pytest.approx(0.5, abs=0.05)
    assert data["corruptions"] == ["partial"]


@pytest.mark.parametrize("args,message", [(["--split", "dev"], "--split"), (["--sort", "size"], "--sort")])
def test_stats_bad_options(tmp_path, args, message):
    _write(tmp_path / "p", TRUTH, OBSERVED, ["train"] * 4)
    res = CliRunner().invoke(app, ["stats", str(tmp_path / "p"), *args])
    assert res.exit_code == 2 and message in res.output  # the parser checks the choices


def test_stats_missing_folder(tmp_path):
    res = CliRunner().invoke(app, ["stats", str(tmp_path / "nope")])
    assert isinstance(res.exception, PumlcError) and "prepared folder not found" in str(res.exception)
