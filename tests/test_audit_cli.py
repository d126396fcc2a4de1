"""`pumlc audit` and `pumlc relabel` on a small trained checkpoint: reports, round-trip, folds, bad input."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pumlc_cli import load_prepared
from pumlc_cli.audit.folds import assign_folds, plan_folds, write_fold_data
from tests.helpers import run_cli, train_args

FAST = ("--device", "cpu", "--workers", "0")


@pytest.fixture(scope="module")
def trained(synth_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("audit") / "run"
    run_cli(*train_args(synth_prepared, run, loss="pu", epochs=1))
    return run


@pytest.fixture(scope="module")
def audited(trained: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("audit-out")
    done = run_cli("audit", trained, "--csv", out / "a.csv", "--json", out / "a.json", "--plot", out / "a.png", *FAST)
    assert "suspected missing positives" in done.stdout and "per class" in done.stdout
    return out, json.loads((out / "a.json").read_text())


def test_audit_report_lists_candidates_in_rank_order(audited, synth_prepared: Path) -> None:
    out, report = audited
    prepared = load_prepared(synth_prepared)
    train = prepared.split_data("train")
    assert report["n_images"] == len(train.images)
    assert [r["class"] for r in report["per_class"]] == prepared.classes
    rows = list(csv.DictReader((out / "a.csv").open()))
    assert len(rows) == len(report["suggestions"]) > 0
    where = {img: i for i, img in enumerate(train.images)}
    col = {c: j for j, c in enumerate(prepared.classes)}
    for kind in ("missing", "wrong"):
        mine = [r for r in rows if r["kind"] == kind]
        assert [int(r["rank"]) for r in mine] == list(range(1, len(mine) + 1))  # contiguous after the floor
        scores = [float(r["score"]) for r in mine]
        assert scores == sorted(scores, reverse=True) and all(0 < x < 1 for x in scores)
        for r in mine:
            obs = train.observed[where[r["image"]], col[r["class"]]]
            assert int(r["observed"]) == obs and (obs == 1) == (kind == "wrong")
            assert float(r["score"]) >= report["floor"]
    # --partial 0.5 hid labels, so the truth check is there, with k = 100, 1000 and 10% of the hidden positives.
    hidden = int(((train.truth == 1) & (train.observed != 1)).sum())
    assert report["truth"]["missing"]["relevant"] == hidden
    assert {int(k) for k in report["truth"]["missing"]["at"]} == {100, 1000, max(1, round(0.1 * hidden))}
    assert 0.0 <= report["truth"]["missing"]["ap"] <= 1.0
    assert (out / "a.png").read_bytes()[:4] == b"\x89PNG"


def test_relabel_round_trip(audited, synth_prepared: Path, tmp_path: Path) -> None:
    out, report = audited
    # c estimated (a lower bound) and in-sample: the CSV says so on every row, and relabel refuses unless --force
    assert report["label_frequency"] == "estimated" and report["scores_upper_bounds"] and report["in_sample"]
    rows = list(csv.DictReader((out / "a.csv").open()))
    assert {(r["in_sample"], r["label_frequency"]) for r in rows} == {("1", "estimated")}
    new = tmp_path / "relabelled"
    args = ("relabel", synth_prepared, "--from", out / "a.csv", "--out", new, "--accept-top", "25")
    untrusted = "of 25 accepted scores, 25 are in-sample (score out of fold: `pumlc audit --folds K`); 25 are upper"
    line = _one_line(run_cli(*args, "--min-precision", "0", check=False))
    assert line.startswith(f"pumlc: error: {untrusted}") and line.endswith("pass --force to write anyway")
    assert not new.exists()
    done = run_cli(*args, "--min-precision", "0", "--force")
    assert [x for x in done.stderr.splitlines() if x.strip()] == [done.stderr.strip()]
    assert done.stderr.startswith(f"warning: written anyway (--force): {untrusted}")
    old, fresh = load_prepared(synth_prepared), load_prepared(new)
    accepted = [s for s in report["suggestions"] if s["kind"] == "missing"][:25]
    before, after = old.split_data("train"), fresh.split_data("train")
    col = {c: j for j, c in enumerate(old.classes)}
    expected = before.observed.copy()
    for s in accepted:
        expected[before.images.index(s["image"]), col[s["class"]]] = 1
    np.testing.assert_array_equal(after.observed, expected)
    np.testing.assert_array_equal(after.truth, before.truth)
    for split in ("val", "test"):  # only suggestions of the audited split; the test split is untouched
        assert old.split_data(split).images == fresh.split_data(split).images
        np.testing.assert_array_equal(old.split_data(split).observed, fresh.split_data(split).observed)
    step = fresh.manifest["corruptions"][-1]
    assert step["step"] == "relabel" and step["accepted"] == 25 and step["score_warning"].startswith(untrusted)
    assert f"pumlc: error: {step['forced_past']}" == line
    expected = sum(s["score"] for s in accepted)
    assert step["expected_precision"] == pytest.approx(expected / 25, abs=1e-4)
    assert f"expected right {expected:.1f} of 25" in done.stdout and "25 positive(s) added, 0 removed" in done.stdout
    assert step["audit_sha256"] == hashlib.sha256((out / "a.csv").read_bytes()).hexdigest()
    assert sum(c["added_positives"] for c in step["per_class"].values()) == 25
    stats = json.loads(run_cli("stats", new, "--json", "-").stdout)
    old_stats = json.loads(run_cli("stats", synth_prepared, "--json", "-").stdout)
    gained = sum(r["observed_positives"] for r in stats["per_class"]) - sum(
        r["observed_positives"] for r in old_stats["per_class"]
    )
    assert gained == 25 and stats["corruptions"][-1] == "relabel"


def test_folds_are_disjoint_and_cover_the_split(synth_prepared: Path, tmp_path: Path) -> None:
    fold = assign_folds(101, 4, seed=3)
    assert sorted(np.bincount(fold).tolist()) == [25, 25, 25, 26]
    assert not np.array_equal(fold, assign_folds(101, 4, seed=4))
    prepared = load_prepared(synth_prepared)
    plan = plan_folds(prepared, tmp_path / "folds", 3, seed=0)
    train = set(prepared.split_data("train").images)
    held_out = []
    for k in range(3):
        write_fold_data(prepared, plan, k)
        kept = set(load_prepared(plan.data(k)).split_data("train").images)
        held_out.append(train - kept)
        assert kept <= train
        assert load_prepared(plan.data(k)).split_data("val").images == prepared.split_data("val").images
    assert set().union(*held_out) == train
    assert sum(len(h) for h in held_out) == len(train)  # disjoint


def test_cross_fitted_audit_is_resumable(trained: Path, tmp_path: Path) -> None:
    folds = tmp_path / "folds"
    first = tmp_path / "one.json"
    run_cli("audit", trained, "--folds", "2", "--folds-dir", folds, "--json", first, *FAST)
    stamps = [(folds / f"fold{k}" / "run" / "best.pt").stat().st_mtime_ns for k in range(2)]
    second = tmp_path / "two.json"
    run_cli("audit", trained, "--folds", "2", "--folds-dir", folds, "--json", second, *FAST)
    assert [(folds / f"fold{k}" / "run" / "best.pt").stat().st_mtime_ns for k in range(2)] == stamps
    a, b = json.loads(first.read_text()), json.loads(second.read_text())
    assert a["suggestions"] == b["suggestions"] and a["folds"] == 2
    refused = run_cli("audit", trained, "--folds", "3", "--folds-dir", folds, *FAST, check=False)
    assert refused.returncode == 2 and "another --folds-dir" in refused.stderr


def _one_line(done) -> str:
    assert done.returncode == 2
    lines = [x for x in done.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("pumlc: error: "), done.stderr
    return lines[0]


def test_bad_input_gives_one_line_and_writes_nothing(audited, trained, synth_prepared, tmp_path: Path) -> None:
    out, _ = audited
    other = tmp_path / "other"
    (tmp_path / "img").mkdir()
    for name in ("a", "b", "c"):
        Image.new("RGB", (8, 8)).save(tmp_path / "img" / f"{name}.jpg")
    (tmp_path / "train.csv").write_text("image,labels\na.jpg,cat\nb.jpg,dog\nc.jpg,cat dog\n")
    run_cli("prepare", "csv", "--train", tmp_path / "train.csv", "--images", tmp_path / "img", "--out", other)
    line = _one_line(run_cli("audit", trained, "--data", other, "--json", tmp_path / "x.json", *FAST, check=False))
    assert "classes" in line and not (tmp_path / "x.json").exists()

    rows = list(csv.DictReader((out / "a.csv").open()))
    for field, value, expect in (("image", "nowhere.jpg", "not in the train split"), ("class", "unicorn", "class")):
        bad = tmp_path / f"bad-{field}.csv"
        with bad.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows([rows[0], {**rows[1], field: value}])
        new = tmp_path / f"new-{field}"
        args = ("relabel", synth_prepared, "--from", bad, "--out", new, "--accept-top", "5")
        line = _one_line(run_cli(*args, check=False))
        assert "line 3" in line and expect in line and not new.exists()


def test_audit_sharded_over_two_processes_matches(trained: Path, audited, tmp_path: Path) -> None:
    _, single = audited
    two = tmp_path / "two.json"
    run_cli("audit", trained, "--nproc", "2", "--json", two, *FAST, subprocess_=True)
    sharded = json.loads(two.read_text())
    assert sharded["n_images"] == single["n_images"]
    one = {(s["kind"], s["image"], s["class"]): s["prob"] for s in single["suggestions"]}
    both = {(s["kind"], s["image"], s["class"]): s["prob"] for s in sharded["suggestions"]}
    common = set(one) & set(both)  # a score on the --floor may land either side of it by rounding
    assert len(common) >= 0.99 * max(len(one), len(both)) > 0
    assert max(abs(one[k] - both[k]) for k in common) < 1e-4  # every image scored once, by the same weights


def _missing_rows(prepared_dir: Path, score: float, limit: int | None = None) -> list[dict]:
    """Audit-CSV rows calling every train entry not observed positive a missing positive with `score`."""
    prepared = load_prepared(prepared_dir)
    train = prepared.split_data("train")
    rows, cols = np.nonzero(train.observed != 1)
    out = []
    for rank, (i, j) in enumerate(zip(rows[:limit], cols[:limit], strict=True), start=1):
        out.append(
            {"kind": "missing", "rank": rank, "image": train.images[i], "split": "train",
             "class": prepared.classes[j], "score": score, "prob": 0.5, "observed": int(train.observed[i, j])}
        )  # fmt: skip
    return out


def _write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_relabel_refuses_changes_past_the_bounds_unless_forced(synth_prepared: Path, tmp_path: Path) -> None:
    observed = int(sum((load_prepared(synth_prepared).split_data(s).observed == 1).sum() for s in ("train", "val")))
    flood = _write_csv(tmp_path / "flood.csv", _missing_rows(synth_prepared, 0.95))  # every unlabelled entry
    new = tmp_path / "new"
    line = _one_line(
        run_cli("relabel", synth_prepared, "--from", flood, "--out", new, "--min-score", "0.8", check=False)
    )
    assert f"to a dataset observing {observed}" in line and "--force" in line and not new.exists()
    # scores of 0.6: fine for the default floor of 0.5, not for --min-precision 0.7
    few = _write_csv(tmp_path / "few.csv", _missing_rows(synth_prepared, 0.6, limit=10))
    args = ("relabel", synth_prepared, "--from", few, "--out", new, "--min-score", "0.5")
    line = _one_line(run_cli(*args, "--min-precision", "0.7", check=False))
    assert "expected precision 60.0% is below --min-precision 70%" in line and not new.exists()
    run_cli(*args, "--min-precision", "0.7", "--force")
    step = load_prepared(new).manifest["corruptions"][-1]
    assert step["expected_precision"] == pytest.approx(0.6) and "below --min-precision" in step["forced_past"]
    done = run_cli(*args, "--out", tmp_path / "plain")  # the default floor 0.5 accepts them
    assert load_prepared(tmp_path / "plain").manifest["corruptions"][-1]["forced_past"] is None
    assert "warning" not in done.stderr  # a CSV without in_sample / label_frequency columns: no claim either way


def test_relabel_refuses_in_sample_scores_and_upper_bounds_unless_forced(synth_prepared: Path, tmp_path: Path) -> None:
    rows = _missing_rows(synth_prepared, 0.9, limit=10)
    basis = ["given"] * 7 + ["estimated"] * 3
    marked = [{**r, "in_sample": int(3 <= i < 5), "label_frequency": basis[i]} for i, r in enumerate(rows)]
    path = _write_csv(tmp_path / "marked.csv", marked)
    args = ("relabel", synth_prepared, "--from", path)
    line = _one_line(run_cli(*args, "--out", tmp_path / "a", "--accept-top", "10", check=False))
    assert line.startswith("pumlc: error: of 10 accepted scores, 2 are in-sample") and "; 3 are upper bounds" in line
    assert not (tmp_path / "a").exists()
    line = _one_line(run_cli(*args, "--out", tmp_path / "a", "--accept-top", "7", check=False))
    assert "2 are in-sample" in line and "upper bounds" not in line and not (tmp_path / "a").exists()
    done = run_cli(*args, "--out", tmp_path / "b", "--accept-top", "3")  # out of fold, c given: trusted, no warning
    assert (
        done.stderr.strip() == "" and load_prepared(tmp_path / "b").manifest["corruptions"][-1]["forced_past"] is None
    )
    done = run_cli(*args, "--out", tmp_path / "c", "--accept-top", "7", "--force")
    step = load_prepared(tmp_path / "c").manifest["corruptions"][-1]
    assert step["forced_past"] in done.stderr and step["score_warning"].startswith("of 7 accepted scores, 2 are in-s")


def test_relabel_refuses_an_empty_selection(synth_prepared: Path, tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "few.csv", _missing_rows(synth_prepared, 0.6, limit=5))
    args = ("relabel", synth_prepared, "--from", path, "--out", tmp_path / "new", "--min-score", "0.8")
    line = _one_line(run_cli(*args, check=False))
    assert line.startswith("pumlc: error: no suggestion passes the selection") and not (tmp_path / "new").exists()


@pytest.mark.parametrize(
    "args",
    [
        ("relabel", "{data}", "--from", "{csv}", "--out", "{out}", "--min-score", "1.5"),
        ("relabel", "{data}", "--from", "{csv}", "--out", "{out}", "--min-score", "0.8", "--min-precision", "-0.1"),
        ("relabel", "{data}", "--from", "{csv}", "--out", "{out}", "--min-score", "0.8", "--min-precision", "x"),
        ("audit", "{run}", "--label-frequency", "0", "--device", "cpu"),
        ("audit", "{run}", "--label-frequency", "1.2", "--device", "cpu"),
    ],
)
def test_new_options_out_of_range_give_one_line(args, audited, trained, synth_prepared, tmp_path: Path) -> None:
    out, _ = audited
    fill = {"data": synth_prepared, "csv": out / "a.csv", "out": tmp_path / "new", "run": trained}
    argv = (a.format(**{k: str(v) for k, v in fill.items()}) for a in args)
    line = _one_line(run_cli(*argv, check=False, subprocess_=True))  # parser errors: `pumlc_cli.cli.main`'s line
    assert "--min-score" in line or "--min-precision" in line or "--label-frequency" in line
    assert not (tmp_path / "new").exists()
