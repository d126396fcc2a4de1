"""How good are audits? pumlc's audit vs cleanlab, on the same out-of-fold probabilities, on several settings.

On the bundled synth data with a known share of positives hidden (`--drop-positives`, negatives stripped: the PU
input), K-fold cross-fitting gives out-of-fold probabilities from a `pu` model and from a `bce-an` model (the same
`pumlc_cli.audit.folds` code `pumlc audit --folds` runs). Each probability matrix is then scored by
- pumlc's audit (`pumlc_cli.audit.scores.audit_scores`), with the label frequency estimated from the scores, and
  given (`--label-frequency`: the share of positives the corruption left observed, which a user would know from a
  checked sample), and
- cleanlab 2.9 (`cleanlab.multilabel_classification`): `get_label_quality_scores_per_class` (self-confidence,
  lowest quality first) and `find_multilabel_issues_per_class` (confident learning: flagged entries first, each
  group by quality); as a probability that an unlabelled entry is a missing positive, its self-confidence gives p,
  the model's own score.
Against the truth the corruption kept: precision@k and recall@k of the ranking of the non-positive entries (k ∈
{10% of the hidden positives, 100, 1000}), average precision, the scores' reliability (expected calibration error
over 10 bins; the share right among suggestions scored ≥ 0.8 and ≥ 0.9) and the error of each method's per-class
missing-rate estimate (cleanlab's: flagged entries / (observed + flagged) positives).

Two scales: `small` (600 images at 32 px, 6 epochs: weak models, the hidden positives' ranking AP 17–26%) and
`large` (1,500 images at 64 px, 12 epochs: stronger models, AP 59–65%, where some positives of a class score
above its negatives and the label frequency can be estimated). A setting takes 1.5 (small) to 5–11 (large)
minutes on 2 busy cores; folds already trained are reused.

    python bench/audit.py                                  # small, held-out settings 0.4:0 and 0.5:3
    python bench/audit.py --setting 0.4:1 --setting 0.6:2  # small, the settings the method was chosen on
    python bench/audit.py --scale large                    # large, held-out settings 0.5:20 and 0.4:21
    python bench/audit.py --scale large --setting 0.5:12 --setting 0.4:13  # large, tuning settings
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from pumlc_cli import load_prepared
from pumlc_cli.audit.folds import ScoreOptions, plan_folds, score_folds, train_folds
from pumlc_cli.audit.scores import audit_scores, default_ks, ranking_quality, reliability
from pumlc_cli.benchmarks.runner import pumlc
from pumlc_cli.commands.train import parse_train_args

METHODS = ("pu", "bce-an")
# images, image size, epochs, and the held-out settings (not used to choose the method) of each scale
SCALES = {"small": (600, 32, 6, ["0.4:0", "0.5:3"]), "large": (1500, 64, 12, ["0.5:20", "0.4:21"])}


def out_of_fold(prepared, root: Path, method: str, folds: int, train_args: str, seed: int) -> np.ndarray:
    from pumlc_cli.runtime import dist

    plan = plan_folds(prepared, root / method, folds, seed=seed)
    template = parse_train_args(["FOLD-DATA", "--out", "FOLD-RUN", "--loss", method, *shlex.split(train_args)])
    train_folds(prepared, plan, template)
    info = dist.setup("cpu")
    return score_folds(prepared, plan, info, ScoreOptions(batch_size=64, workers=0, amp="none"))


def cleanlab_rankings(probs: np.ndarray, observed: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """cleanlab's two orders of the non-positive entries, and its implied missing-positive count per class."""
    import warnings

    from cleanlab.multilabel_classification import filter as cl_filter
    from cleanlab.multilabel_classification import rank as cl_rank

    labels = [np.flatnonzero(row == 1).tolist() for row in observed]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quality = cl_rank.get_label_quality_scores_per_class(labels, probs)
        issues = cl_filter.find_multilabel_issues_per_class(labels, probs)
    rows, cols = np.nonzero(observed != 1)
    q = quality[rows, cols]
    flagged = issues[rows, cols]
    by_quality = np.lexsort((cols, rows, q))
    by_issue = np.lexsort((cols, rows, q, ~flagged))
    flagged_per_class = (issues & (observed != 1)).sum(axis=0)
    return {
        "cleanlab self-confidence": (rows[by_quality], cols[by_quality], None),
        "cleanlab confident learning": (rows[by_issue], cols[by_issue], flagged_per_class),
    }


def score_ranking(rows, cols, truth, observed, hidden_total: int) -> dict:
    known = truth[rows, cols] != 0
    hits = truth[rows[known], cols[known]] == 1
    return ranking_quality(hits, default_ks(hidden_total), hidden_total)


def rate_mae(est_missing: np.ndarray, truth: np.ndarray, observed: np.ndarray) -> float:
    pos = truth == 1
    n_true = pos.sum(axis=0)
    true_rate = (pos & (observed != 1)).sum(axis=0) / np.maximum(n_true, 1)
    obs = (observed == 1).sum(axis=0)
    est_rate = est_missing / np.maximum(obs + est_missing, 1e-9)
    keep = n_true > 0
    return float(np.mean(np.abs(est_rate - true_rate)[keep]))


def setting_rows(args, hide: float, seed: int) -> tuple[list[dict], dict]:
    """Every ranking's figures on one setting (hidden share, seed); the folds are trained once and kept."""
    synth = args.out / f"synth-{args.images}-{args.image_size}px"
    tag = f"{args.images}-{args.image_size}px-{args.epochs}ep-hide{hide:g}-seed{seed}"
    prepared_dir = args.out / f"prepared-{args.images}-{args.image_size}px-hide{hide:g}-seed{seed}"
    if not (synth / "annotations" / "instances_val2014.json").is_file():
        pumlc("synth", str(synth), "--images", str(args.images), "--image-size", str(args.image_size), "--force")
    if not (prepared_dir / "manifest.json").is_file():
        pumlc("prepare", "coco", "--root", str(synth), "--out", str(prepared_dir), "--drop-positives",
              str(hide), "--strip-negatives", "--seed", str(seed))  # fmt: skip
    prepared = load_prepared(prepared_dir)
    train = prepared.split_data("train")
    truth, observed = train.truth, train.observed
    hidden = int(((truth == 1) & (observed != 1)).sum())
    cand = observed != 1
    right = truth[cand] == 1
    size = args.image_size
    train_args = (
        f"--model test_resnet --no-pretrained --epochs {args.epochs} --batch-size 32 --lr 3e-3 --image-size {size} "
        f"--scale-size {size + size // 8} --train all --workers 0 --device cpu --seed {seed}"
    )
    rows: list[dict] = []
    for method in METHODS:
        folds_root = args.out / f"folds-{tag}"
        probs = out_of_fold(prepared, folds_root, method, args.folds, train_args, seed)
        np.save(args.out / f"oof-{method}-{tag}.npy", probs)  # to re-rank without training
        # the share of positives the corruption left observed: what --label-frequency would be told
        known = float((observed == 1).sum() / (truth == 1).sum())
        for label, freq in (("pumlc audit", None), ("pumlc audit, c given", known)):
            result = audit_scores(probs, observed, freq)
            r, c = result.ranking("missing")
            est = np.array([e.est_missing if np.isfinite(e.est_missing) else 0.0 for e in result.classes])
            rows.append(
                {
                    "ranking": label,
                    "probabilities": method,
                    **score_ranking(r, c, truth, observed, hidden),
                    "reliability": reliability(result.suspicion[cand], right),
                    "rate_mae": rate_mae(est, truth, observed),
                    "c": float(np.nanmean([e.label_frequency for e in result.classes])),
                    "c_basis": result.label_frequency,
                }
            )
        for name, (r, c, flagged) in cleanlab_rankings(probs, observed).items():
            row = {"ranking": name, "probabilities": method, **score_ranking(r, c, truth, observed, hidden)}
            # cleanlab's score of an unlabelled entry is its self-confidence 1 − p: its probability of a missing
            # positive is the model's p
            row["reliability"] = reliability(probs[cand], right)
            row["rate_mae"] = rate_mae(flagged.astype(float), truth, observed) if flagged is not None else None
            rows.append(row)
    info = {
        "hidden": hidden,
        "positives": int((truth == 1).sum()),
        "images": len(train),
        "ks": default_ks(hidden),
        "c_true": float((observed == 1).sum() / (truth == 1).sum()),
    }
    return rows, info


def print_setting(console: Console, hide: float, seed: int, rows: list[dict], info: dict, folds: int) -> None:
    ks = info["ks"]
    table = Table(
        title=f"--hide {hide:g} --seed {seed}: {info['hidden']} of {info['positives']} positives hidden in the train "
        f"split ({info['images']} images, {folds}-fold out-of-fold probabilities; true c {info['c_true']:.2f})",
        header_style="bold",
    )
    cols = ("ranking", "probs", *(f"P@{k}" for k in ks), "R@1000", "AP", "ECE", "n≥.8", "P≥.8", "n≥.9", "P≥.9")
    for col in (*cols, "rate MAE", "c"):
        table.add_column(col, justify="left" if col in {"ranking", "probs"} else "right")
    for row in rows:
        at, rel = row["at"], row["reliability"]
        above = [rel["above"][cut] for cut in ("0.8", "0.9")]
        table.add_row(
            row["ranking"],
            row["probabilities"],
            *(_pct(at[str(k)]["precision"]) for k in ks),
            _pct(at["1000"]["recall"]),
            _pct(row["ap"]),
            _pct(rel["ece"]),
            str(above[0]["n"]),
            _pct(above[0]["precision"]),
            str(above[1]["n"]),
            _pct(above[1]["precision"]),
            _pct(row["rate_mae"]),
            _c(row),
        )
    console.print(table)


def _c(row: dict) -> str:
    """The mean label frequency pumlc's audit used (estimated or given)."""
    return f"{row['c']:.2f}" if "c" in row else "-"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench_out/audit"))
    parser.add_argument(
        "--scale", choices=sorted(SCALES), default="small", help="images, size, epochs and default settings"
    )
    parser.add_argument("--images", type=int, help="synth images (train + test; default: the scale's)")
    parser.add_argument("--image-size", type=int, help="default: the scale's")
    parser.add_argument(
        "--setting",
        action="append",
        metavar="HIDE:SEED",
        help="share of positives hidden (--drop-positives) and the seed of the hiding, folds and training; "
        "repeatable (default: the scale's held-out settings, which the method was not chosen on)",
    )
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--epochs", type=int, help="default: the scale's")
    args = parser.parse_args()
    images, size, epochs, held_out = SCALES[args.scale]
    args.images = args.images or images
    args.image_size = args.image_size or size
    args.epochs = args.epochs or epochs
    import torch

    # Tiny models: one thread is as fast, and two threads per process stall badly on a busy shared machine.
    torch.set_num_threads(1)
    start = time.perf_counter()
    console = Console(width=160)
    record: dict = {"args": {**vars(args), "out": str(args.out)}, "settings": []}
    for setting in args.setting or held_out:
        hide, seed = float(setting.split(":")[0]), int(setting.split(":")[1])
        rows, info = setting_rows(args, hide, seed)
        print_setting(console, hide, seed, rows, info, args.folds)
        record["settings"].append({"hide": hide, "seed": seed, **info, "rows": rows})
    console.print(
        "numbers in %; ECE: expected calibration error of the scores of the entries not observed positive (10 "
        "bins); n≥.8, P≥.8: suggestions scored ≥ 0.8 and the share of them that are hidden positives; rate MAE: "
        "per-class missing-rate error; c: the mean label frequency used (the true one is in each title)"
    )
    console.print(f"total {time.perf_counter() - start:.0f} s; written to {args.out / 'audit.json'}")
    (args.out / "audit.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
