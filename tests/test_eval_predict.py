"""`pumlc eval`, `pumlc predict`, and the demo, on a small trained checkpoint."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score

from pumlc_cli import load_prepared
from tests.helpers import TINY_MODEL, error_line, run_cli, train_args


@pytest.fixture(scope="module")
def trained(synth_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("eval") / "run"
    run_cli(*train_args(synth_prepared, run, loss="bce-known", epochs=2))
    return run


def test_eval_equals_metrics_from_its_saved_scores(trained: Path, synth_prepared: Path, tmp_path: Path) -> None:
    report_file, scores_file, plot = tmp_path / "r.json", tmp_path / "s.npz", tmp_path / "ap.png"
    done = run_cli(
        "eval",
        trained / "best.pt",
        "--json",
        report_file,
        "--save-scores",
        scores_file,
        "--plot",
        plot,
        "--voc11",
        "--device",
        "cpu",
        "--workers",
        "0",
    )
    assert "AP per class" in done.stdout
    report = json.loads(report_file.read_text())
    saved = np.load(scores_file)
    test = load_prepared(synth_prepared).split_data("test")
    assert report["n_images"] == len(test.images) == len(saved["images"])  # no test image dropped
    assert list(saved["images"]) == test.images
    np.testing.assert_array_equal(saved["targets"], test.truth)
    scores = saved[f"scores_{report['weights']}"]
    truth = test.truth == 1
    aps = [average_precision_score(truth[:, c], scores[:, c]) for c in range(truth.shape[1]) if truth[:, c].any()]
    assert report["mAP"] == pytest.approx(100 * np.mean(aps), abs=1e-4)
    pred = scores >= 0.5
    assert report["OF1"] == pytest.approx(100 * f1_score(truth.ravel(), pred.ravel(), zero_division=0), abs=1e-4)
    assert set(report["all_weights"]) == {report["weights"]}  # best.pt keeps the val-selected weights only
    assert set(report["per_class"]) == set(load_prepared(synth_prepared).classes)
    assert "mAP11" in report
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_sharded_over_two_processes_matches(trained: Path, tmp_path: Path) -> None:
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    common = ("--device", "cpu", "--workers", "0", "--split", "val", "--mask-unknown", "--threshold", "0.3")
    run_cli("eval", trained / "best.pt", "--json", one, *common)
    # every option reaches the torchrun children (they re-run the same command line)
    run_cli("eval", trained / "best.pt", "--json", two, *common, "--nproc", "2", "--batch-size", "7")
    a, b = json.loads(one.read_text()), json.loads(two.read_text())
    assert (b["split"], b["threshold"], b["targets"]) == ("val", 0.3, "observed labels, unknown ignored")
    assert (a["n_images"], a["CF1"], a["OF1"]) == (b["n_images"], pytest.approx(b["CF1"]), pytest.approx(b["OF1"]))
    assert a["mAP"] == pytest.approx(b["mAP"], abs=1e-4)
    assert a["per_class"] == pytest.approx(b["per_class"], abs=1e-4)


def test_predict_skips_a_corrupt_image(trained: Path, synth_prepared: Path, tmp_path: Path) -> None:
    prepared = load_prepared(synth_prepared)
    good = [prepared.image_path(p) for p in prepared.split_data("test").images[:3]]
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, path in enumerate(good):
        (folder / f"ok{i}.jpg").write_bytes(path.read_bytes())
    (folder / "broken.jpg").write_bytes(good[0].read_bytes()[:100])
    out = tmp_path / "pred.json"
    done = run_cli("predict", trained / "best.pt", folder, "--json", out, "--threshold", "0.3", "--device", "cpu")
    doc = json.loads(out.read_text())
    assert sorted(Path(p["image"]).name for p in doc["predictions"]) == ["ok0.jpg", "ok1.jpg", "ok2.jpg"]
    assert [Path(s["image"]).name for s in doc["skipped"]] == ["broken.jpg"]
    assert "broken.jpg" in done.stderr and "skipped" in done.stderr
    for row in doc["predictions"]:
        assert set(row["scores"]) == set(prepared.classes)
        assert row["labels"] == [
            c for c in sorted(row["scores"], key=lambda c: -row["scores"][c]) if row["scores"][c] >= 0.3
        ]
    csv_out = tmp_path / "pred.csv"
    run_cli("predict", trained / "best.pt", str(folder / "ok*.jpg"), "--csv", csv_out, "--device", "cpu")
    assert len(csv_out.read_text().strip().splitlines()) == 1 + 3


def test_best_pt_and_run_folder_store_the_val_thresholds(trained: Path, synth_prepared: Path, tmp_path: Path) -> None:
    """The record in best.pt equals RUN/thresholds.json and the choice re-made from best.pt's own val scores."""
    from pumlc_cli.evaluate.thresholds import choose_thresholds
    from pumlc_cli.runtime.checkpoint import load_checkpoint

    record = load_checkpoint(trained / "best.pt")["thresholds"]
    assert set(record) == {"global", "per_class", "min_positives", "chosen_on", "val_images"}
    assert record == json.loads((trained / "thresholds.json").read_text())
    val = load_prepared(synth_prepared).split_data("val")
    assert (record["chosen_on"], record["val_images"], record["min_positives"]) == ("val", len(val.images), 5)
    scores = tmp_path / "val.npz"
    run_cli("eval", trained, "--split", "val", "--mask-unknown", "--save-scores", scores, "--device", "cpu")
    saved = np.load(scores)
    again = choose_thresholds(saved[f"scores_{load_checkpoint(trained / 'best.pt')['weights']}"], val.observed, 5)
    assert again["global"] == pytest.approx(record["global"], abs=1e-5)
    assert again["per_class"] == pytest.approx(record["per_class"], abs=1e-5)


def test_eval_reports_f1_at_05_and_at_val_thresholds(trained: Path, synth_prepared: Path, tmp_path: Path) -> None:
    from pumlc_cli.runtime.checkpoint import load_checkpoint

    report_file, scores_file, per_class = tmp_path / "r.json", tmp_path / "s.npz", tmp_path / "pc.csv"
    done = run_cli(
        "eval", trained, "--json", report_file, "--save-scores", scores_file, "--per-class-csv", per_class,
        "--device", "cpu", "--workers", "0",
    )  # fmt: skip
    assert "at val thresholds" in done.stdout and "at 0.5" in done.stdout
    report = json.loads(report_file.read_text())
    cut = np.array(load_checkpoint(trained / "best.pt")["thresholds"]["per_class"])
    assert report["val_thresholds"]["per_class"] == pytest.approx(cut.tolist())
    saved = np.load(scores_file)
    scores, truth = saved[f"scores_{report['weights']}"], saved["targets"] == 1
    at_val = report["at_val_thresholds"]
    assert at_val["rule"].startswith("val thresholds")
    f1 = f1_score(truth.ravel(), (scores >= cut).ravel(), zero_division=0)
    assert at_val["OF1"] == pytest.approx(100 * f1, abs=1e-4)
    assert report["OF1"] == pytest.approx(100 * f1_score(truth.ravel(), (scores >= 0.5).ravel()), abs=1e-4)
    rows = list(csv.DictReader(per_class.open()))
    classes = load_prepared(synth_prepared).classes
    assert [r["class"] for r in rows] == classes
    for k, row in enumerate(rows):
        assert int(row["support"]) == truth[:, k].sum()
        assert float(row["threshold"]) == pytest.approx(cut[k], rel=1e-5)
        assert float(row["AP"]) == pytest.approx(report["per_class"][classes[k]], abs=1e-3)
        expect = f1_score(truth[:, k], scores[:, k] >= cut[k], zero_division=0)
        assert float(row["F1"]) == pytest.approx(100 * expect, abs=1e-3)


def test_old_checkpoint_without_thresholds(trained: Path, synth_prepared: Path, tmp_path: Path) -> None:
    from pumlc_cli.runtime.checkpoint import load_checkpoint, save_checkpoint

    payload = load_checkpoint(trained / "best.pt")
    del payload["thresholds"]
    save_checkpoint(tmp_path / "old.pt", payload)
    report_file = tmp_path / "r.json"
    done = run_cli("eval", tmp_path / "old.pt", "--json", report_file, "--device", "cpu", "--workers", "0")
    assert "no val thresholds in this checkpoint" in done.stdout
    assert json.loads(report_file.read_text())["at_val_thresholds"] is None
    image = load_prepared(synth_prepared).image_path(load_prepared(synth_prepared).split_data("test").images[0])
    out = tmp_path / "p.json"
    run_cli("predict", tmp_path / "old.pt", image, "--json", out, "--device", "cpu")
    doc = json.loads(out.read_text())
    assert doc["threshold"] == 0.5 and "no val thresholds in this checkpoint" in doc["rule"]


def test_predict_uses_val_thresholds_by_default(trained: Path, synth_prepared: Path, tmp_path: Path) -> None:
    from pumlc_cli.runtime.checkpoint import load_checkpoint

    prepared = load_prepared(synth_prepared)
    images = [prepared.image_path(p) for p in prepared.split_data("test").images[:8]]
    cut = dict(zip(prepared.classes, load_checkpoint(trained / "best.pt")["thresholds"]["per_class"], strict=True))
    out = tmp_path / "p.json"
    done = run_cli("predict", trained, *images, "--json", out, "--device", "cpu")
    doc = json.loads(out.read_text())
    assert doc["rule"].startswith("val thresholds") and "val thresholds" in done.stdout
    assert doc["thresholds"] == pytest.approx(cut)
    for row in doc["predictions"]:
        assert set(row["labels"]) == {c for c, s in row["scores"].items() if s >= cut[c] - 5e-7}
    run_cli("predict", trained, *images, "--json", out, "--force", "--threshold", "0.3", "--device", "cpu")
    doc = json.loads(out.read_text())
    assert doc["threshold"] == 0.3 and "--threshold" in doc["rule"]


@pytest.mark.parametrize(
    "args",
    [
        ("predict", "RUN", "x.jpg", "--threshold", "nan"),
        ("predict", "RUN", "x.jpg", "--threshold", "1.5"),
        ("eval", "RUN", "--threshold", "-0.1"),
        ("eval", "RUN", "--threshold", "nan"),
        ("eval", "RUN", "--per-class-csv", "RUN/best.pt"),
        ("train", "DATA", "--out", "NEW", "--threshold-min-positives", "-1"),
    ],
)
def test_threshold_options_hostile(trained: Path, synth_prepared: Path, tmp_path: Path, args: tuple) -> None:
    names = {"RUN": str(trained), "DATA": str(synth_prepared), "NEW": str(tmp_path / "new")}
    argv = [names.get(a, a).replace("RUN/", f"{trained}/") for a in args]
    # parser errors become one line in `pumlc_cli.cli.main`, which only a subprocess runs
    line = error_line(run_cli(*argv, check=False, subprocess_=args[0] != "train"))
    assert ("--threshold" in line) or ("--per-class-csv" in line), line
    assert not (tmp_path / "new").exists()


def test_predict_with_no_readable_image_fails(trained: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 nope")
    done = run_cli("predict", trained / "best.pt", bad, "--device", "cpu", check=False)
    assert done.returncode == 2 and "no readable image" in done.stderr
    missing = run_cli("predict", trained / "best.pt", tmp_path / "nothing.jpg", check=False)
    assert missing.returncode == 2 and "nothing.jpg" in missing.stderr


def test_demo_runs_end_to_end_small(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pumlc_cli.benchmarks.demo import audit_training_labels, print_comparison, run_demo

    results = run_demo(tmp_path / "demo", images=200, epochs=1, image_size=32, model=TINY_MODEL, workers=0)
    assert set(results) == {"pu", "bce-an"}
    print_comparison(results, "demo")
    out = capsys.readouterr().out
    assert "pu" in out and "bce-an" in out and "mAP" in out
    for rep in results.values():
        assert 0 <= rep["mAP"] <= 100 and rep["train_seconds"] > 0
    audit_training_labels(tmp_path / "demo", workers=0)  # the demo ends with an audit of its training labels
    assert "suspected missing positives" in capsys.readouterr().out
    assert (tmp_path / "demo" / "audit.csv").read_text().startswith("kind,rank,image")
