"""Seeded label corruptions of the training labels, applied in one fixed, documented order.

Order (each step sees the previous step's output; all act on the whole training file in annotation order,
before the validation split is carved out):

1. label noise -- `noise_fn`: a true positive is annotated negative with probability R; `noise_fp`: a true
   negative is annotated positive with probability R; a noise file sets per-class rates (overriding the global
   ones for the classes it names). Unknown truth entries (VOC difficult-only) stay unknown.
2. hiding labels, at most one of:
   - `partial` P: each (image, class) entry stays known with probability P, positives and negatives alike
     (HCP-MLR-PL / PU-MLC protocol); the mask is `np.random.seed(seed); np.random.random((N, C)) < P`,
     reproduced with a private `RandomState(seed)` so global numpy state is untouched;
   - `single_positive`: one observed positive per image is kept (uniformly at random), everything else becomes
     unknown (Cole et al. 2021); images without an observed positive become all unknown;
   - `drop_positives` R: each observed positive becomes unknown with probability R; negatives are kept.
3. `strip_negatives`: every observed negative becomes unknown (the positive-unlabeled input of PU-MLC).

Sources whose absent labels are unknown (Open Images) are corrupted entry by entry (`apply_entry_corruptions`):
the same steps and order over the stated labels only, one draw per entry, `partial` from its own stream too.

Steps other than `partial` draw from their own generator `numpy.random.default_rng([seed, stream])` (streams
below) so that adding or removing one step never shifts another's randomness. Every applied step returns a
record (parameters, seed, generator, realised counts) that goes into the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pumlc_cli.data.readers import csv_rows, read_source, sha256_bytes
from pumlc_cli.errors import PumlcError
from pumlc_cli.inputs import input_file

STREAMS = {"noise": 1, "single_positive": 2, "drop_positives": 3, "val_split": 4, "partial_entries": 5}
MAX_SEED = 2**32 - 1


def step_rng(seed: int, step: str) -> np.random.Generator:
    """The generator of one step: independent of every other step's."""
    return np.random.default_rng([seed, STREAMS[step]])


def rng_description(step: str) -> str:
    return f"numpy.random.default_rng([seed, {STREAMS[step]}])"


def check_rate(name: str, value: float | None) -> None:
    if value is not None and not (0.0 <= value <= 1.0):
        raise PumlcError(f"{name} must be within [0, 1], got {value}")


def check_seed(seed: int) -> None:
    if not (0 <= seed <= MAX_SEED):
        raise PumlcError(f"--seed must be an integer within [0, {MAX_SEED}], got {seed}")


@dataclass
class CorruptionSpec:
    """What to do to the training labels; `None`/False/0 means the step is skipped."""

    noise_fn: float = 0.0
    noise_fp: float = 0.0
    noise_file: Path | None = None
    partial: float | None = None
    single_positive: bool = False
    drop_positives: float | None = None
    strip_negatives: bool = False

    def validate(self) -> None:
        check_rate("--noise-fn", self.noise_fn)
        check_rate("--noise-fp", self.noise_fp)
        check_rate("--partial", self.partial)
        check_rate("--drop-positives", self.drop_positives)
        chosen = [
            name
            for name, on in (
                ("--partial", self.partial is not None),
                ("--single-positive", self.single_positive),
                ("--drop-positives", self.drop_positives is not None),
            )
            if on
        ]
        if len(chosen) > 1:
            raise PumlcError(f"{' and '.join(chosen)} are mutually exclusive: choose one way of hiding labels")
        if self.noise_file is not None:
            input_file(self.noise_file, "noise file")


def read_noise_file(path: Path, classes: list[str]) -> tuple[dict[str, dict[str, float]], str]:
    """Per-class rates from a CSV with header `class,fn,fp` (either rate column may be absent or blank).

    Returns ({class: {"fn": r, "fp": r}} for the rates given, sha256 of the file).
    """
    data = read_source(path, "noise file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise PumlcError(f"{path}: not a UTF-8 text file") from None
    reader = csv_rows(text, path)
    header = [h.strip().lower() for h in next(reader, [])]
    if "class" not in header or not ({"fn", "fp"} & set(header)):
        raise PumlcError(f"{path}: header must be 'class,fn,fp' (fn or fp may be left out)")
    known = set(classes)
    rates: dict[str, dict[str, float]] = {}
    for line_no, rec in enumerate(reader, start=2):
        if not rec or all(not f.strip() for f in rec):
            continue
        row = dict(zip(header, (f.strip() for f in rec), strict=False))
        name = row.get("class", "")
        if name not in known:
            raise PumlcError(f"{path}:{line_no}: unknown class name {name!r}")
        if name in rates:
            raise PumlcError(f"{path}:{line_no}: class {name!r} is listed twice")
        entry = {}
        for key in ("fn", "fp"):
            raw = row.get(key, "")
            if raw == "":
                continue
            try:
                value = float(raw)
            except ValueError:
                raise PumlcError(f"{path}:{line_no}: {key} rate {raw!r} is not a number") from None
            if not 0.0 <= value <= 1.0:
                raise PumlcError(f"{path}:{line_no}: {key} rate {value} is outside [0, 1]")
            entry[key] = value
        rates[name] = entry
    return rates, sha256_bytes(data)


def add_noise(
    labels: np.ndarray, fn: np.ndarray, fp: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, int, int]:
    """Flip positives to negatives with per-class probability `fn`, negatives to positives with `fp`."""
    u = rng.random(labels.shape)
    to_neg = (labels == 1) & (u < fn[None, :])
    to_pos = (labels == -1) & (u < fp[None, :])
    out = labels.copy()
    out[to_neg] = -1
    out[to_pos] = 1
    return out, int(to_neg.sum()), int(to_pos.sum())


def hcp_partial_mask(n: int, c: int, p: float, seed: int) -> np.ndarray:
    """Known-entry mask identical to `np.random.seed(seed); np.random.random((n, c)) < p`."""
    return np.random.RandomState(seed).random_sample((n, c)) < p


def keep_single_positive(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One uniformly chosen observed positive per image; every other entry unknown."""
    keys = rng.random(labels.shape)
    pos = labels == 1
    keys[~pos] = -1.0
    choice = keys.argmax(axis=1)
    has = pos.any(axis=1)
    out = np.zeros_like(labels)
    out[np.flatnonzero(has), choice[has]] = 1
    return out


def apply_corruptions(
    truth: np.ndarray, spec: CorruptionSpec, seed: int, classes: list[str]
) -> tuple[np.ndarray, list[dict]]:
    """Observed labels for `truth` (the whole training file) and the ordered list of step records."""
    spec.validate()
    check_seed(seed)
    n, c = truth.shape
    obs = truth.astype(np.int8, copy=True)
    records: list[dict] = []

    fn, fp, per_class, file_hash = _class_rates(spec, classes)
    if spec.noise_fn or spec.noise_fp or per_class:
        obs, flipped_pos, flipped_neg = add_noise(obs, fn, fp, step_rng(seed, "noise"))
        records.append(
            {
                "step": "noise",
                "fn": spec.noise_fn,
                "fp": spec.noise_fp,
                "per_class_file": None
                if spec.noise_file is None
                else {"path": str(Path(spec.noise_file).resolve()), "sha256": file_hash},
                "per_class": per_class,
                "seed": seed,
                "rng": rng_description("noise"),
                "positives_to_negative": flipped_pos,
                "negatives_to_positive": flipped_neg,
            }
        )

    if spec.partial is not None:
        mask = hcp_partial_mask(n, c, spec.partial, seed)
        obs[~mask] = 0
        records.append(
            {
                "step": "partial",
                "p": spec.partial,
                "seed": seed,
                "rng": "np.random.seed(seed); np.random.random((N, C)) < p  (HCP-MLR-PL / PU-MLC mask)",
                "shape": [n, c],
                "known_entries": int(mask.sum()),
            }
        )
    elif spec.single_positive:
        before = int((obs == 1).sum())
        obs = keep_single_positive(obs, step_rng(seed, "single_positive"))
        records.append(
            {
                "step": "single_positive",
                "seed": seed,
                "rng": rng_description("single_positive"),
                "positives_before": before,
                "positives_kept": int((obs == 1).sum()),
            }
        )
    elif spec.drop_positives is not None:
        u = step_rng(seed, "drop_positives").random(obs.shape)
        drop = (obs == 1) & (u < spec.drop_positives)
        obs[drop] = 0
        records.append(
            {
                "step": "drop_positives",
                "r": spec.drop_positives,
                "seed": seed,
                "rng": rng_description("drop_positives"),
                "positives_dropped": int(drop.sum()),
            }
        )

    if spec.strip_negatives:
        neg = obs == -1
        obs[neg] = 0
        records.append({"step": "strip_negatives", "negatives_stripped": int(neg.sum())})
    return obs, records


def _class_rates(spec: CorruptionSpec, classes: list[str]) -> tuple[np.ndarray, np.ndarray, dict, str | None]:
    """Per-class fn/fp rates: the global ones, overridden by the noise file's."""
    per_class: dict[str, dict[str, float]] = {}
    file_hash = None
    if spec.noise_file is not None:
        per_class, file_hash = read_noise_file(Path(spec.noise_file), classes)
    fn = np.full(len(classes), spec.noise_fn, dtype=np.float64)
    fp = np.full(len(classes), spec.noise_fp, dtype=np.float64)
    index = {name: i for i, name in enumerate(classes)}
    for name, entry in per_class.items():
        fn[index[name]] = entry.get("fn", spec.noise_fn)
        fp[index[name]] = entry.get("fp", spec.noise_fp)
    return fn, fp, per_class, file_hash


def apply_entry_corruptions(
    entries, spec: CorruptionSpec, seed: int, classes: list[str]
) -> tuple[np.ndarray, list[dict]]:
    """Observed labels of the stated entries (`pumlc_cli.data.entries.Entries`, sorted by image) after the steps of
    the module docstring, and their records. Absent entries stay absent (unknown): memory grows with the entries."""
    spec.validate()
    check_seed(seed)
    obs = entries.observed.astype(np.int8, copy=True)
    n = len(obs)
    records: list[dict] = []
    if spec.noise_fn or spec.noise_fp or spec.noise_file is not None:
        fn, fp, per_class, file_hash = _class_rates(spec, classes)
        u = step_rng(seed, "noise").random(n)
        to_neg = (obs == 1) & (u < fn[entries.cls])
        to_pos = (obs == -1) & (u < fp[entries.cls])
        obs[to_neg], obs[to_pos] = -1, 1
        records.append(
            {
                "step": "noise",
                "fn": spec.noise_fn,
                "fp": spec.noise_fp,
                "per_class_file": None
                if spec.noise_file is None
                else {"path": str(Path(spec.noise_file).resolve()), "sha256": file_hash},
                "per_class": per_class,
                "seed": seed,
                "rng": rng_description("noise") + ", one draw per stated entry",
                "positives_to_negative": int(to_neg.sum()),
                "negatives_to_positive": int(to_pos.sum()),
            }
        )
    if spec.partial is not None:
        hide = (obs != 0) & ~(step_rng(seed, "partial_entries").random(n) < spec.partial)
        obs[hide] = 0
        records.append(
            {
                "step": "partial",
                "p": spec.partial,
                "seed": seed,
                "rng": rng_description("partial_entries") + ", one draw per stated entry",
                "entries_hidden": int(hide.sum()),
            }
        )
    elif spec.single_positive:
        pos = np.flatnonzero(obs == 1)
        before = len(pos)
        keys = step_rng(seed, "single_positive").random(n)[pos]
        order = np.lexsort((-keys, entries.image[pos]))  # per image, the highest key first
        first = np.ones(len(order), dtype=bool)
        first[1:] = entries.image[pos][order][1:] != entries.image[pos][order][:-1]
        kept = pos[order[first]]
        obs[:] = 0
        obs[kept] = 1
        records.append(
            {
                "step": "single_positive",
                "seed": seed,
                "rng": rng_description("single_positive") + ", one draw per stated entry",
                "positives_before": before,
                "positives_kept": len(kept),
            }
        )
    elif spec.drop_positives is not None:
        drop = (obs == 1) & (step_rng(seed, "drop_positives").random(n) < spec.drop_positives)
        obs[drop] = 0
        records.append(
            {
                "step": "drop_positives",
                "r": spec.drop_positives,
                "seed": seed,
                "rng": rng_description("drop_positives") + ", one draw per stated entry",
                "positives_dropped": int(drop.sum()),
            }
        )
    if spec.strip_negatives:
        neg = obs == -1
        obs[neg] = 0
        records.append({"step": "strip_negatives", "negatives_stripped": int(neg.sum())})
    return obs, records
