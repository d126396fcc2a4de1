"""Evaluation speed on a COCO-val-sized score matrix (40,504 images x 80 classes), checked against sklearn.

Goal: mAP + F1 in <= 0.1 s, equal to scikit-learn's macro AP to 1e-9. Scores are float32 (what a
model's sigmoid returns); the float64 timing is printed too. Labels are random with ~2.9 positives per
image, as in COCO. Times are the best of several repeats (the machine may be shared).

Run: .venv/bin/python bench/eval.py
"""

from __future__ import annotations

import time

import numpy as np
from sklearn.metrics import average_precision_score

from pumlc_cli.evaluate.metrics import average_precision, multilabel_metrics, threshold_metrics

N_IMAGES, N_CLASSES, POSITIVES_PER_IMAGE, REPEATS = 40_504, 80, 2.9, 7


def best_time(fn, repeats: int = REPEATS) -> tuple[float, float]:
    """(best, median) wall time in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), float(np.median(times))


def main() -> None:
    rng = np.random.default_rng(0)
    targets = np.where(rng.random((N_IMAGES, N_CLASSES)) < POSITIVES_PER_IMAGE / N_CLASSES, 1, -1)
    targets = targets.astype(np.int8)
    # Informative but imperfect scores, so the AP values are not all ~prevalence.
    logits = rng.normal(size=targets.shape) + 1.5 * (targets == 1)
    scores32 = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)

    print(f"score matrix {N_IMAGES} x {N_CLASSES}, {(targets == 1).sum() / N_IMAGES:.2f} positives/image")
    start = time.perf_counter()
    ref = np.array([average_precision_score(targets[:, c] == 1, scores32[:, c]) for c in range(N_CLASSES)])
    sk_time = time.perf_counter() - start
    ours = average_precision(scores32, targets)
    diff = float(np.max(np.abs(ours - ref)))
    print(f"sklearn macro AP: {100 * ref.mean():.6f}  ({sk_time:.3f} s, one pass)")
    print(f"pumlc   mAP     : {100 * ours.mean():.6f}  max |AP - sklearn AP| = {diff:.2e}")

    timings = {}
    for name, scores in (("float32", scores32), ("float64", scores32.astype(np.float64))):
        ap_f1 = best_time(lambda s=scores: (average_precision(s, targets), threshold_metrics(s, targets)))
        timings[name] = ap_f1
        full = best_time(lambda s=scores: multilabel_metrics(s, targets))
        print(
            f"{name}: mAP + F1 {ap_f1[0] * 1e3:6.1f} ms (median {ap_f1[1] * 1e3:.1f})   "
            f"all metrics incl. top-3 {full[0] * 1e3:6.1f} ms (median {full[1] * 1e3:.1f})"
        )
    ok = diff <= 1e-9 and timings["float32"][0] <= 0.1
    print("PASS" if ok else "FAIL", "(goal: float32 mAP + F1 <= 0.1 s and AP within 1e-9 of sklearn)")


if __name__ == "__main__":
    main()
