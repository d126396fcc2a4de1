"""Open Images at scale: `pumlc prepare openimages` (labels only) against a bare `pyarrow.csv` read of the files.

The label files are generated (no download), seeded, in the official V7 layout: `oidv7-class-descriptions.csv`
(20,638 classes), `oidv7-classes-trainable.txt` (9,605 of them), and `oidv7-{train,val,test}-annotations-human-
imagelabels.csv` (`ImageID,Source,LabelName,Confidence`), split like the real 9.18M images (98.2% train, 0.45%
validation, 1.37% test). Each image has about 6.5 human-verified labels, about half of them positive, on classes
drawn from a Zipf-like distribution (about 9 in 10 on trainable classes). Files are written once under --work and
reused while their stamp (seed, size, generator version) matches.

Measured at each size, in this run:
  (a) wall time of `pumlc prepare openimages --images-optional` as a child process <= 3x that of a child process
      that only imports pyarrow and reads the three label CSVs (`pyarrow.csv.read_csv`);
  (b) peak RSS of the prepare <= 3x the decoded Arrow size of the label CSVs (`table.nbytes`), and growing
      linearly: from the smallest to the largest size, RSS per label added <= 1.1x RSS per label at the smallest;
  (c) the prepared folder on disk (labels, image list, manifest) <= the label CSVs' size;
  (d) dense targets of a 64-image batch over 9,605 classes, from the prepared sparse store, <= 1 ms (median);
and once: masked mAP over 9,605 classes on 125,436 simulated test images (~6.5 verified labels each, scores only
at the verified entries), timed, checked against scikit-learn on a sample of classes, its peak memory <= 10% of
the dense 125,436 x 9,605 float32 score matrix it never builds. Each figure is extrapolated to 9M images.

    python bench/openimages_scale.py [--sizes 1000000,4000000] [--work bench_out] [--seed 0] [--repeat 1]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv

GENERATOR_VERSION = 1
N_CLASSES, N_TRAINABLE = 20_638, 9_605
# Real split sizes of Open Images V7 (images with image-level labels), used as proportions.
REAL_SPLITS = {"train": 9_011_219, "validation": 41_620, "test": 125_436}
FILES = {
    "train": "oidv7-train-annotations-human-imagelabels.csv",
    "validation": "oidv7-val-annotations-human-imagelabels.csv",
    "test": "oidv7-test-annotations-human-imagelabels.csv",
}
DESCRIPTIONS, TRAINABLE = "oidv7-class-descriptions.csv", "oidv7-classes-trainable.txt"
HEADER = b"ImageID,Source,LabelName,Confidence\n"
LABELS_PER_IMAGE = 6.5
EXTRA_DRAW = 0.11  # drawn labels per image above LABELS_PER_IMAGE, lost to duplicate (image, class) pairs
CHUNK = 500_000  # images generated and written at a time: bounds the generator's memory
TARGET_IMAGES = 9_000_000


def split_sizes(n_images: int) -> dict[str, int]:
    """Images per split, in the real proportions; the train split takes the rounding."""
    total = sum(REAL_SPLITS.values())
    val = round(n_images * REAL_SPLITS["validation"] / total)
    test = round(n_images * REAL_SPLITS["test"] / total)
    return {"train": n_images - val - test, "validation": val, "test": test}


def class_table(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(MIDs, trainable class indices, class draw probabilities): Zipf-like, ~90% of mass on trainable classes."""
    rng = np.random.default_rng([seed, 0])
    alphabet = np.array(list("0123456789bcdfghjklmnpqrstvwxyz_"))
    # /m/0 + 4 or 5 characters, unique, like real MIDs (/m/01g317, /m/0hz4q)
    mids: list[str] = []
    seen: set[str] = set()
    while len(mids) < N_CLASSES:
        mid = "/m/0" + "".join(rng.choice(alphabet, size=int(rng.integers(4, 6))))
        if mid not in seen:
            seen.add(mid)
            mids.append(mid)
    trainable = np.sort(rng.choice(N_CLASSES, size=N_TRAINABLE, replace=False))
    is_trainable = np.zeros(N_CLASSES, dtype=bool)
    is_trainable[trainable] = True
    weights = np.empty(N_CLASSES)
    for mask, mass in ((is_trainable, 0.9), (~is_trainable, 0.1)):
        k = int(mask.sum())
        w = 1.0 / (np.arange(k) + 3.0)  # rank-frequency ~ 1/rank, rank order random among the classes
        weights[np.flatnonzero(mask)[rng.permutation(k)]] = mass * w / w.sum()
    return np.array(mids, dtype=object), trainable, weights / weights.sum()


def hex_ids(rng: np.random.Generator, n: int) -> pa.Array:
    """`n` unique 64-bit ImageIDs as 16 lower-case hex digits (the official format), sorted."""
    ids = np.unique(rng.integers(0, 2**63, size=n, dtype=np.int64))
    while len(ids) < n:
        ids = np.unique(np.r_[ids, rng.integers(0, 2**63, size=n - len(ids), dtype=np.int64)])
    nibbles = (ids[:, None] >> np.arange(60, -1, -4, dtype=np.int64)[None, :]) & 0xF
    digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)[nibbles]
    return pa.array(np.ascontiguousarray(digits).view("S16").ravel()).cast(pa.string())


def write_labels(path: Path, ids: pa.Array, mids: pa.Array, probs: np.ndarray, rng: np.random.Generator) -> int:
    """The human-verified labels of `ids` (sorted by ImageID, then class), in CHUNK-image pieces; rows written."""
    sources = pa.array(["verification", "crowdsource-verification"])
    cdf = np.cumsum(probs)
    rows = 0
    with path.open("wb") as fh:
        fh.write(HEADER)
        options = pcsv.WriteOptions(include_header=False, quoting_style="none")
        schema = pa.schema([("ImageID", pa.string()), ("Source", pa.string()), ("LabelName", pa.string()),
                            ("Confidence", pa.int8())])  # fmt: skip
        with pcsv.CSVWriter(fh, schema, write_options=options) as writer:
            for start in range(0, len(ids), CHUNK):
                n = min(CHUNK, len(ids) - start)
                per_image = 1 + rng.poisson(LABELS_PER_IMAGE + EXTRA_DRAW - 1, size=n)
                image = np.repeat(np.arange(n, dtype=np.int64), per_image)
                cls = np.minimum(np.searchsorted(cdf, rng.random(len(image)), side="right"), len(cdf) - 1)
                key = np.unique(image * len(cdf) + cls)  # sorted by image, then class; duplicates dropped
                image, cls = key // len(cdf), key % len(cdf)
                confidence = (rng.random(len(key)) < 0.5).astype(np.int8)
                source = (rng.random(len(key)) < 0.12).astype(np.int32)
                table = pa.table(
                    [ids.slice(start, n).take(image), sources.take(source), mids.take(cls), confidence],
                    schema=schema,
                )
                writer.write_table(table)
                rows += len(key)
    return rows


def generate(root: Path, n_images: int, seed: int) -> dict:
    """Write (or reuse) an Open Images label root of `n_images`; returns its stamp."""
    stamp_path = root / "generated.json"
    want = {"generator": GENERATOR_VERSION, "seed": seed, "images": n_images}
    if stamp_path.exists():
        stamp = json.loads(stamp_path.read_text())
        if {k: stamp.get(k) for k in want} == want:
            return stamp
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    mids, trainable, probs = class_table(seed)
    names = [f"Class {k}" for k in range(N_CLASSES)]
    desc_lines = "".join(f"{m},{d}\n" for m, d in zip(mids, names, strict=True))
    (root / DESCRIPTIONS).write_text("LabelName,DisplayName\n" + desc_lines, encoding="utf-8")
    (root / TRAINABLE).write_text("".join(f"{m}\n" for m in mids[trainable]), encoding="utf-8")
    mid_array = pa.array(list(mids), pa.string())
    rows = {}
    for k, (split, n) in enumerate(split_sizes(n_images).items()):
        rng = np.random.default_rng([seed, n_images, k + 1])
        rows[split] = write_labels(root / FILES[split], hex_ids(rng, n), mid_array, probs, rng)
    stamp = {**want, "splits": split_sizes(n_images), "rows": rows}
    tmp = stamp_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(stamp))
    tmp.rename(stamp_path)  # last: a half-written root has no stamp and is regenerated
    return stamp


def run_child(argv: list[str], log: Path, poll_s: float = 0.02) -> tuple[float, int, int]:
    """Run `argv` as a child process: (wall seconds, peak RSS bytes, exit code); its output goes to `log`.

    The peak is the child's own VmHWM, polled from /proc: its rusage `ru_maxrss` would not do, because Linux
    carries the high-water mark of the memory image that `exec` replaced (this process's, shared by vfork) into it.
    """
    peak = 0
    with log.open("wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        status = Path(f"/proc/{proc.pid}/status")
        while proc.poll() is None:
            with contextlib.suppress(OSError):
                for line in status.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peak = max(peak, int(line.split()[1]) * 1024)
            time.sleep(poll_s)
        wall = time.perf_counter() - t0
    return wall, peak, proc.returncode


BARE_READ = """
import json, sys, time
import pyarrow.csv as pcsv
t0 = time.perf_counter()
tables = [pcsv.read_csv(p) for p in sys.argv[1:]]
print(json.dumps({"read_s": time.perf_counter() - t0, "nbytes": sum(t.nbytes for t in tables),
                  "rows": sum(t.num_rows for t in tables)}))
"""


def bare_read(root: Path, log: Path) -> dict:
    """The baseline: a fresh Python that imports pyarrow and reads the three label CSVs."""
    argv = [sys.executable, "-c", BARE_READ, *(str(root / name) for name in FILES.values())]
    wall, rss, code = run_child(argv, log)
    if code != 0:
        raise SystemExit(f"bare read failed ({code}), see {log}")
    return {"wall_s": wall, "rss": rss, **json.loads(log.read_text().splitlines()[-1])}


def prepare(root: Path, out: Path, log: Path) -> dict:
    """`pumlc prepare openimages --images-optional` as a child process."""
    argv = [sys.executable, "-m", "pumlc_cli", "prepare", "openimages", "--root", str(root), "--out", str(out)]
    wall, rss, code = run_child([*argv, "--images-optional", "--force"], log)
    if code != 0:
        raise SystemExit(f"pumlc prepare openimages failed ({code}):\n{log.read_text()[-3000:]}")
    disk = sum(path.stat().st_size for path in out.iterdir())
    return {"wall_s": wall, "rss": rss, "disk": disk}


def batch_targets(prepared: Path, seed: int, batches: int = 2000) -> tuple[float, float, tuple[int, int]]:
    """(median, best) seconds to assemble one 64 x C dense target batch from the train split's sparse entries."""
    from pumlc_cli.data.datasets import dense_targets
    from pumlc_cli.data.prepared import load_prepared

    entries = load_prepared(prepared).split_entries("train")
    rng = np.random.default_rng(seed)
    n = len(entries.indptr) - 1
    times = []
    for _ in range(batches):
        rows = rng.integers(0, n, size=64)
        t0 = time.perf_counter()
        targets = dense_targets(entries.indptr, entries.classes, entries.observed, rows, entries.num_classes)
        times.append(time.perf_counter() - t0)
    # the assembled batch holds exactly the stored entries of its rows
    stored = int(sum(entries.indptr[r + 1] - entries.indptr[r] for r in rows))
    assert int((targets != 0).sum()) <= stored and targets.shape == (64, entries.num_classes)
    return float(np.median(times)), float(min(times)), targets.shape


def masked_map(seed: int) -> dict:
    """Masked mAP on a simulated Open Images test split: timed, checked against sklearn, peak memory traced."""
    from sklearn.metrics import average_precision_score

    from pumlc_cli.evaluate.metrics import masked_average_precision

    rng = np.random.default_rng([seed, 99])
    n_images = REAL_SPLITS["test"]
    _, trainable, probs = class_table(seed)
    p = probs[trainable] / probs[trainable].sum()
    per_image = 1 + rng.poisson(LABELS_PER_IMAGE + EXTRA_DRAW - 1, size=n_images)
    image = np.repeat(np.arange(n_images, dtype=np.int64), per_image)
    cls = np.minimum(np.searchsorted(np.cumsum(p), rng.random(len(image)), side="right"), N_TRAINABLE - 1)
    key = np.unique(image * N_TRAINABLE + cls)
    classes = (key % N_TRAINABLE).astype(np.int32)
    targets = np.where(rng.random(len(key)) < 0.5, 1, -1).astype(np.int8)
    scores = (1 / (1 + np.exp(-(rng.normal(size=len(key)) + 1.5 * (targets == 1))))).astype(np.float32)

    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        ap = masked_average_precision(classes, targets, scores, N_TRAINABLE)
        times.append(time.perf_counter() - t0)
    tracemalloc.start()
    masked_average_precision(classes, targets, scores, N_TRAINABLE)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()

    both = np.flatnonzero(np.bincount(classes[targets == 1], minlength=N_TRAINABLE) > 0)
    sample = rng.choice(both, size=min(50, len(both)), replace=False)
    ref = np.array([average_precision_score(targets[classes == c] == 1, scores[classes == c]) for c in sample])
    return {
        "entries": len(key),
        "images": n_images,
        "seconds": min(times),
        "map": 100 * float(np.nanmean(ap)),
        "classes_with_ap": int(np.isfinite(ap).sum()),
        "max_diff": float(np.max(np.abs(ap[sample] - ref))),
        "peak": peak,
        "dense": n_images * N_TRAINABLE * 4,
    }


def runs(results: list[dict]) -> str:
    return ", ".join(f"{r['wall_s']:.2f}" for r in results)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def extrapolate(sizes: list[int], values: list[float], at: int = TARGET_IMAGES) -> float:
    """Linear through the smallest and largest size (one size: proportional)."""
    if len(sizes) == 1:
        return values[0] * at / sizes[0]
    slope = (values[-1] - values[0]) / (sizes[-1] - sizes[0])
    return values[0] + slope * (at - sizes[0])


def measure(n: int, work: Path, args: argparse.Namespace) -> dict:
    """Generate (or reuse) the files of `n` images, run both sides `args.repeat` times, print (a)-(d)."""
    root = work / f"oi-{n}-seed{args.seed}"
    t0 = time.perf_counter()
    stamp = generate(root, n, args.seed)
    csv_bytes = sum((root / name).stat().st_size for name in FILES.values())
    rows = sum(stamp["rows"].values())
    print(
        f"\n== {n:,} images ({stamp['splits']['train']:,} train / {stamp['splits']['validation']:,} val / "
        f"{stamp['splits']['test']:,} test): {rows:,} human labels ({rows / n:.2f}/image), "
        f"label CSVs {csv_bytes / 1e6:,.0f} MB; files ready in {time.perf_counter() - t0:.1f}s"
    )
    # interleaved repeats, best wall time of each side: drift in the shared machine's load hits both alike
    bases, preps = [], []
    prepared = work / f"prepared-{n}"
    for _ in range(args.repeat):
        bases.append(bare_read(root, work / f"bare-{n}.log"))
        if not args.generate_only:
            preps.append(prepare(root, prepared, work / f"prepare-{n}.log"))
    base = min(bases, key=lambda b: b["wall_s"])
    assert base["rows"] == rows, (base["rows"], rows)
    print(
        f"bare pyarrow.csv.read_csv: {base['wall_s']:.2f}s process ({base['read_s']:.2f}s in read_csv), "
        f"Arrow nbytes {base['nbytes'] / 1e6:,.0f} MB, peak RSS {base['rss'] / 1e6:,.0f} MB  (runs: {runs(bases)})"
    )
    result = {"n": n, "rows": rows, "csv": csv_bytes, "base": base, "ok": True}
    if args.generate_only:
        return result
    prep = {**min(preps, key=lambda p: p["wall_s"]), "rss": max(p["rss"] for p in preps)}
    ratio_t, ratio_m = prep["wall_s"] / base["wall_s"], prep["rss"] / base["nbytes"]
    ok_t, ok_m, ok_d = ratio_t <= 3, ratio_m <= 3, prep["disk"] <= csv_bytes
    print(
        f"(a) pumlc prepare openimages: {prep['wall_s']:.2f}s process = {ratio_t:.2f}x bare read "
        f"({prep['wall_s'] / base['read_s']:.2f}x read_csv alone; runs: {runs(preps)})   goal <= 3x  {verdict(ok_t)}"
    )
    print(
        f"(b) prepare peak RSS {prep['rss'] / 1e6:,.0f} MB = {ratio_m:.2f}x Arrow nbytes   goal <= 3x  {verdict(ok_m)}"
    )
    print(
        f"(c) prepared folder on disk {prep['disk'] / 1e6:,.1f} MB = {prep['disk'] / csv_bytes:.3f}x the CSVs   "
        f"goal <= 1x  {verdict(ok_d)}"
    )
    med, best, shape = batch_targets(prepared, args.seed)
    ok_b = med <= 1e-3
    print(
        f"(d) dense targets {shape[0]} x {shape[1]:,} from the sparse store: median {med * 1e3:.3f} ms "
        f"(best {best * 1e3:.3f})   goal <= 1 ms  {verdict(ok_b)}"
    )
    return {**result, "prep": prep, "ok": ok_t and ok_m and ok_d and ok_b}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000000,4000000", help="comma-separated image counts (all splits)")
    parser.add_argument("--work", type=Path, default=Path("bench_out"), help="generated files and prepared folders")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each side per size (best wall time counts)")
    parser.add_argument("--generate-only", action="store_true", help="write the label files and the baseline only")
    args = parser.parse_args()
    work = args.work / "openimages_scale"
    work.mkdir(parents=True, exist_ok=True)

    results = [measure(n, work, args) for n in sorted(int(s) for s in args.sizes.split(","))]
    ok = all(r["ok"] for r in results)
    ns = [r["n"] for r in results]
    print(f"\n== extrapolation to {TARGET_IMAGES:,} images (linear through {', '.join(f'{n:,}' for n in ns)})")
    csv9 = extrapolate(ns, [r["csv"] for r in results])
    rows9 = extrapolate(ns, [r["rows"] for r in results])
    print(f"label CSVs {csv9 / 1e9:.2f} GB, {rows9 / 1e6:.1f}M labels; bare read "
          f"{extrapolate(ns, [r['base']['wall_s'] for r in results]):.1f}s, Arrow nbytes "
          f"{extrapolate(ns, [r['base']['nbytes'] for r in results]) / 1e9:.2f} GB")  # fmt: skip
    if "prep" in results[0]:
        rss = [r["prep"]["rss"] for r in results]
        if len(results) > 1:
            marginal = (rss[-1] - rss[0]) / (results[-1]["rows"] - results[0]["rows"])
            at_first = rss[0] / results[0]["rows"]
            ok_lin = marginal <= 1.1 * at_first
            ok &= ok_lin
            print(
                f"(b) RSS growth: {marginal:.0f} B per added label vs {at_first:.0f} B per label at "
                f"{ns[0]:,}   goal <= 1.1x  {verdict(ok_lin)}"
            )
        print(
            f"pumlc prepare openimages at 9M: {extrapolate(ns, [r['prep']['wall_s'] for r in results]):.0f}s, "
            f"peak RSS {extrapolate(ns, rss) / 1e9:.2f} GB, prepared folder "
            f"{extrapolate(ns, [r['prep']['disk'] for r in results]) / 1e9:.2f} GB on disk"
        )
        m = masked_map(args.seed)
        ok_mem = m["peak"] <= 0.1 * m["dense"] and m["max_diff"] <= 1e-9
        ok &= ok_mem
        print(
            f"masked mAP over {N_TRAINABLE:,} classes, {m['images']:,} test images, {m['entries']:,} verified "
            f"entries: {m['seconds']:.2f}s, mAP {m['map']:.2f} ({m['classes_with_ap']:,} classes with a positive), "
            f"max |AP - sklearn| {m['max_diff']:.1e} on 50 classes; peak memory {m['peak'] / 1e6:.0f} MB vs "
            f"{m['dense'] / 1e9:.1f} GB dense scores   goal <= 10% and equal to sklearn  {verdict(ok_mem)}"
        )
    print("\nALL PASS" if ok else "\nSOME FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
