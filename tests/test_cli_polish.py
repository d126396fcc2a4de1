"""What a user reads: help and tables that fit 80 columns, `--json -`, run folders, COCO 2017, slim best.pt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

from pumlc_cli.cli import app
from pumlc_cli.errors import PumlcError
from tests.helpers import run_cli, train_args

COMMANDS = [
    [],
    ["synth"],
    ["prepare"],
    ["prepare", "coco"],
    ["prepare", "voc"],
    ["prepare", "csv"],
    ["stats"],
    ["train"],
    ["eval"],
    ["compare"],
    ["predict"],
    ["export"],
    ["audit"],
    ["relabel"],
]


def _click_command(path: list[str]):
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return command


def _fits(text: str, width: int = 80) -> None:
    """Every line fits and nothing was cut with an ellipsis."""
    too_wide = [line for line in text.splitlines() if len(line) > width]
    assert not too_wide, too_wide[:3]
    assert "…" not in text


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "pumlc")
def test_help_at_80_columns_names_every_option_whole(path: list[str]) -> None:
    result = CliRunner().invoke(app, [*path, "-h"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    text = result.stdout
    _fits(text)
    for param in _click_command(path).params:
        for name in [*getattr(param, "opts", []), *getattr(param, "secondary_opts", [])]:
            if name.startswith("-"):
                assert name in text, name
    for noise in ("<bool>", "<str>", "{"):
        assert noise not in text, noise
    if path and path != ["prepare"]:
        assert "Examples:" in text and f"pumlc {' '.join(path)} " in text


def test_train_help_shows_the_loss_choices() -> None:
    from pumlc_cli.losses import LOSS_NAMES

    text = CliRunner().invoke(app, ["train", "-h"], env={"COLUMNS": "80"}).stdout
    block = text[text.index("--loss") :]
    for name in LOSS_NAMES:
        assert name in block, name


def test_version_and_workflow_order() -> None:
    from pumlc_cli.data.prepared import toolkit_version

    done = run_cli("--version")
    assert done.stdout.strip() == f"pumlc {toolkit_version()}"
    text = CliRunner().invoke(app, ["-h"], env={"COLUMNS": "80"}).stdout
    commands = text[text.index("Commands") :]
    workflow = ("synth", "prepare", "stats", "train", "eval", "predict", "export", "audit", "relabel")
    order = [commands.index(f" {name} ") for name in workflow]
    assert order == sorted(order)
    assert "--install-completion" in text


def test_prepare_without_a_format_names_them() -> None:
    result = CliRunner().invoke(app, ["prepare"], env={"COLUMNS": "80"})
    for fmt in ("coco", "voc", "csv", "openimages"):
        assert f"pumlc prepare {fmt} --" in result.output
    with pytest.raises(PumlcError, match=r"coco\|voc\|csv\|openimages --partial 0.3"):
        raise CliRunner().invoke(app, ["prepare", "--partial", "0.3"]).exception


def test_coco_2017_root_and_missing_equals_partial(shared_dir: Path, tmp_path: Path) -> None:
    root = shared_dir / "data" / "coco128"
    done = run_cli("prepare", "coco", "--root", root, "--out", tmp_path / "m", "--missing", "0.7")
    assert "COCO 2017" in done.stdout and "instances_train2017.json" in done.stdout
    assert "no test split" in done.stdout and "--split val" in done.stdout
    run_cli("prepare", "coco", "--root", root, "--out", tmp_path / "p", "--partial", "0.3")
    missing, partial = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("m", "p"))
    assert missing["corruptions"] == partial["corruptions"] and missing["corruptions"][0]["p"] == 0.3
    assert (tmp_path / "m" / "labels.parquet").read_bytes() == (tmp_path / "p" / "labels.parquet").read_bytes()
    assert missing["counts"]["test"] == 0 and missing["counts"]["train"] + missing["counts"]["val"] == 128
    assert missing["image_root"] == str((root / "train2017").resolve())


def test_choices_are_checked_by_the_parser(tmp_path: Path) -> None:
    bad_policy = ["prepare", "coco", "--out", tmp_path / "o", "--empty-images", "maybe"]
    for args in (bad_policy, ["stats", tmp_path, "--sort", "size"]):
        result = CliRunner().invoke(app, [str(a) for a in args])
        assert result.exit_code == 2 and "Invalid value" in result.output
    assert not (tmp_path / "o").exists()


def test_stats_tables_fit_80_columns(shared_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "coco128"
    run_cli("prepare", "coco", "--root", shared_dir / "data" / "coco128", "--out", out, "--missing", "0.7")
    numbers = json.loads(run_cli("stats", out, "--json", "-").stdout)
    text = run_cli("stats", out).stdout
    _fits(text)
    hidden = numbers["summary"]["observed_unknown_share"]
    assert "unknown (hidden + and −)" in text and f"{100 * hidden:.1f}%" in text
    per_class = text[text.index("per class (") : text.index("positives per image (")]
    rows = {line.split()[0]: line for line in per_class.splitlines() if line.strip()[:1].isdigit()}
    for row in numbers["per_class"]:
        line = rows[str(row["index"])]
        assert row["class"] in line and f" {row['true_positives']} " in line  # whole names, whole numbers
    classes = run_cli("stats", out, "--classes").stdout
    _fits(classes)
    listed = json.loads(run_cli("stats", out, "--classes", "--json", "-").stdout)["classes"]
    assert len(listed) == 80 and all(r["class"] in classes for r in listed)
    assert [r["train"] for r in listed] == [r["true_positives"] for r in numbers["per_class"]]


@pytest.fixture(scope="module")
def one_epoch(synth_prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One epoch: best.pt and last.pt then hold the same epoch, so their evaluations must agree."""
    run = tmp_path_factory.mktemp("polish") / "run"
    run_cli(*train_args(synth_prepared, run, loss="bce-known", epochs=1))
    return run


def test_best_pt_is_slim_and_evaluates_like_last_pt(one_epoch: Path) -> None:
    best, last = one_epoch / "best.pt", one_epoch / "last.pt"
    assert best.stat().st_size < last.stat().st_size / 2
    slim = torch.load(best, weights_only=True)
    assert "optimizer" not in slim and "ema" not in slim and slim["weights"] in {"regular", "ema"}
    flags = ("--device", "cpu", "--workers", "0", "--json", "-")
    from_best = json.loads(run_cli("eval", one_epoch, *flags).stdout)  # a run folder means its best.pt
    from_last = json.loads(run_cli("eval", last, "--weights", slim["weights"], *flags).stdout)
    assert from_best["checkpoint"] == str(best) and set(from_best["all_weights"]) == {slim["weights"]}
    assert set(from_last["all_weights"]) == {"regular", "ema"}
    for key in ("mAP", "CF1", "OF1", "per_class", "top3"):
        assert from_best[key] == from_last[key], key


def test_eval_and_predict_print_80_column_tables_and_json_to_stdout(
    one_epoch: Path, synth_prepared: Path, tmp_path: Path
) -> None:
    from pumlc_cli import load_prepared

    done = run_cli("eval", one_epoch / "last.pt", "--device", "cpu", "--workers", "0")
    _fits(done.stdout)
    assert "targets: true labels of the test split" in done.stdout
    piped = run_cli("eval", one_epoch, "--device", "cpu", "--workers", "0", "--json", "-")
    assert json.loads(piped.stdout)["split"] == "test" and "AP per class" in piped.stderr

    prepared = load_prepared(synth_prepared)
    images = [str(prepared.image_path(p)) for p in prepared.split_data("test").images[:4]]
    table = run_cli("predict", one_epoch, *images, "--device", "cpu")
    _fits(table.stdout)
    doc = json.loads(run_cli("predict", one_epoch, *images, "--top-k", "2", "--json", "-", "--device", "cpu").stdout)
    assert [p["image"] for p in doc["predictions"]] == images and all(len(p["labels"]) == 2 for p in doc["predictions"])
    for row in doc["predictions"]:
        assert row["labels"] == sorted(row["scores"], key=lambda c: -row["scores"][c])[:2]
    csv_text = run_cli("predict", one_epoch, *images, "--csv", "-", "--device", "cpu").stdout
    assert csv_text.splitlines()[0].startswith("image,labels,") and len(csv_text.strip().splitlines()) == 5
    assert not Path("-").exists()


def test_eval_without_a_test_split_suggests_val(one_epoch: Path, synth_root: Path, tmp_path: Path) -> None:
    no_test = tmp_path / "no-test"
    ann = synth_root / "annotations" / "instances_train2014.json"
    done = run_cli("prepare", "coco", "--train-ann", ann, "--out", no_test)
    assert "no test split" in done.stdout
    failed = run_cli("eval", one_epoch, "--data", no_test, "--device", "cpu", check=False)
    assert failed.returncode == 2 and "evaluate with --split val" in failed.stderr


def test_resume_of_a_finished_run_says_so(one_epoch: Path, synth_prepared: Path) -> None:
    stamp = (one_epoch / "last.pt").stat().st_mtime_ns
    done = run_cli("train", synth_prepared, "--out", one_epoch, "--resume")
    assert "nothing to resume" in done.stderr
    assert (one_epoch / "last.pt").stat().st_mtime_ns == stamp


def test_resume_extends_a_finished_run_within_its_schedule(
    synth_prepared: Path, one_epoch: Path, tmp_path: Path
) -> None:
    whole, extended = tmp_path / "whole", tmp_path / "extended"
    run_cli(*train_args(synth_prepared, whole, "--schedule-epochs", "2", loss="bce-known", epochs=2))
    run_cli(*train_args(synth_prepared, extended, "--schedule-epochs", "2", loss="bce-known", epochs=1))
    run_cli("train", synth_prepared, "--out", extended, "--resume", "--epochs", "2")
    a, b = (torch.load(run / "last.pt", weights_only=True) for run in (whole, extended))
    assert b["epoch"] == 2 and json.loads((extended / "config.json").read_text())["epochs"] == 2
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=1e-6, msg=key)
    refused = run_cli("train", synth_prepared, "--out", one_epoch, "--resume", "--epochs", "2", check=False)
    assert refused.returncode == 2 and "schedule ends at epoch 1" in refused.stderr
