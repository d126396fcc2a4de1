"""`pumlc eval`, `pumlc predict`, and the demo, on a small trained checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score

from pumlc_cli import load_prepared
from tests.helpers import TINY_MODEL, run_cli, train_args


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
