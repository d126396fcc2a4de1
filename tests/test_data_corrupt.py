"""Corruptions: rates within sampling error, the HCP mask identity, order, determinism, bad values."""

from __future__ import annotations

import numpy as np
import pytest

from pumlc_cli.data.corrupt import CorruptionSpec, apply_corruptions, hcp_partial_mask
from pumlc_cli.data.splits import carve_validation
from pumlc_cli.errors import PumlcError

N, C = 3000, 12
CLASSES = [f"c{j}" for j in range(C)]


@pytest.fixture(scope="module")
def truth() -> np.ndarray:
    rng = np.random.default_rng(123)
    t = np.where(rng.random((N, C)) < 0.3, 1, -1).astype(np.int8)
    t[rng.random((N, C)) < 0.02] = 0  # a few unknown truth entries (VOC difficult-only)
    return t


def within(observed_rate: float, p: float, n: int, sigmas: float = 5.0) -> bool:
    return abs(observed_rate - p) <= sigmas * np.sqrt(p * (1 - p) / n) + 1e-12


def test_hcp_mask_identity(truth):
    np.random.seed(0)
    expected = np.random.random((N, C)) < 0.3
    np.random.seed(99)  # global state is not used nor disturbed
    state = np.random.get_state()[1].copy()
    obs, records = apply_corruptions(truth, CorruptionSpec(partial=0.3), 0, CLASSES)
    np.testing.assert_array_equal(np.random.get_state()[1], state)
    np.testing.assert_array_equal(obs != 0, expected & (truth != 0))
    np.testing.assert_array_equal(obs[expected], truth[expected])
    assert (obs[~expected] == 0).all()
    assert records == [
        {
            "step": "partial",
            "p": 0.3,
            "seed": 0,
            "rng": records[0]["rng"],
            "shape": [N, C],
            "known_entries": int(expected.sum()),
        }
    ]
    np.testing.assert_array_equal(hcp_partial_mask(N, C, 0.3, 0), expected)


def test_noise_rates(truth):
    obs, records = apply_corruptions(truth, CorruptionSpec(noise_fn=0.2, noise_fp=0.05), 7, CLASSES)
    pos, neg = truth == 1, truth == -1
    assert within((obs[pos] == -1).mean(), 0.2, pos.sum())
    assert within((obs[neg] == 1).mean(), 0.05, neg.sum())
    assert (obs[truth == 0] == 0).all()
    assert records[0]["step"] == "noise" and records[0]["seed"] == 7
    assert records[0]["positives_to_negative"] == int((pos & (obs == -1)).sum())


def test_noise_file_per_class(truth, tmp_path):
    f = tmp_path / "noise.csv"
    f.write_text("class,fn,fp\nc0,0.5,\nc1,,0.3\n")
    obs, records = apply_corruptions(truth, CorruptionSpec(noise_fn=0.1, noise_file=f), 0, CLASSES)
    pos, neg = truth == 1, truth == -1
    fn = [(obs[:, j][pos[:, j]] == -1).mean() for j in range(C)]
    fp = [(obs[:, j][neg[:, j]] == 1).mean() for j in range(C)]
    assert within(fn[0], 0.5, pos[:, 0].sum()) and within(fn[1], 0.1, pos[:, 1].sum())
    assert within(fp[1], 0.3, neg[:, 1].sum()) and fp[0] == 0 and fp[2] == 0
    assert records[0]["per_class"] == {"c0": {"fn": 0.5}, "c1": {"fp": 0.3}}
    assert len(records[0]["per_class_file"]["sha256"]) == 64


@pytest.mark.parametrize(
    "content,message",
    [
        ("class,fn\nzebra,0.1\n", "noise.csv:2: unknown class name 'zebra'"),
        ("class,fn\nc0,2\n", "outside"),
        ("a,b\n", "header"),
    ],
)
def test_noise_file_bad(truth, tmp_path, content, message):
    f = tmp_path / "noise.csv"
    f.write_text(content)
    with pytest.raises(PumlcError, match=message):
        apply_corruptions(truth, CorruptionSpec(noise_file=f), 0, CLASSES)


def test_single_positive(truth):
    obs, _ = apply_corruptions(truth, CorruptionSpec(single_positive=True), 3, CLASSES)
    has = (truth == 1).any(axis=1)
    assert ((obs == 1).sum(axis=1) == has.astype(int)).all()
    assert (truth[obs == 1] == 1).all()
    assert set(np.unique(obs)) <= {0, 1}
    # the kept positive is uniform among an image's positives: per-class share of kept ~ share of positives
    kept = (obs == 1).sum(axis=0) / has.sum()
    expected = ((truth == 1) / np.maximum((truth == 1).sum(axis=1, keepdims=True), 1)).sum(axis=0) / has.sum()
    np.testing.assert_allclose(kept, expected, atol=0.03)


def test_drop_positives_and_strip(truth):
    obs, records = apply_corruptions(truth, CorruptionSpec(drop_positives=0.4, strip_negatives=True), 1, CLASSES)
    pos = truth == 1
    assert within((obs[pos] == 0).mean(), 0.4, pos.sum())
    assert set(np.unique(obs)) == {0, 1}
    assert [r["step"] for r in records] == ["drop_positives", "strip_negatives"]


def test_order_noise_then_partial_then_strip(truth):
    spec = CorruptionSpec(noise_fn=0.3, noise_fp=0.1, partial=0.5, strip_negatives=True)
    obs, records = apply_corruptions(truth, spec, 0, CLASSES)
    assert [r["step"] for r in records] == ["noise", "partial", "strip_negatives"]
    noisy, _ = apply_corruptions(truth, CorruptionSpec(noise_fn=0.3, noise_fp=0.1), 0, CLASSES)
    mask = hcp_partial_mask(N, C, 0.5, 0)
    expected = np.where(mask, noisy, 0)
    expected[expected == -1] = 0
    np.testing.assert_array_equal(obs, expected)
    # injected false positives survive stripping; negatives do not
    assert ((truth == -1) & (obs == 1)).any() and not (obs == -1).any()


def test_deterministic_and_independent_streams(truth):
    a, _ = apply_corruptions(truth, CorruptionSpec(noise_fn=0.2, drop_positives=0.3), 5, CLASSES)
    b, _ = apply_corruptions(truth, CorruptionSpec(noise_fn=0.2, drop_positives=0.3), 5, CLASSES)
    c, _ = apply_corruptions(truth, CorruptionSpec(noise_fn=0.2, drop_positives=0.3), 6, CLASSES)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # the noise draw does not depend on which hiding step follows
    n1, _ = apply_corruptions(truth, CorruptionSpec(noise_fn=0.2, partial=1.0), 5, CLASSES)
    n2, _ = apply_corruptions(truth, CorruptionSpec(noise_fn=0.2), 5, CLASSES)
    np.testing.assert_array_equal(n1, n2)


@pytest.mark.parametrize(
    "spec,message",
    [
        (CorruptionSpec(partial=1.5), r"--partial must be within \[0, 1\], got 1.5"),
        (CorruptionSpec(noise_fn=-0.1), "--noise-fn must be within"),
        (CorruptionSpec(drop_positives=2.0), "--drop-positives must be within"),
        (CorruptionSpec(partial=0.5, single_positive=True), "mutually exclusive"),
        (CorruptionSpec(single_positive=True, drop_positives=0.1), "mutually exclusive"),
    ],
)
def test_bad_specs(truth, spec, message):
    with pytest.raises(PumlcError, match=message):
        apply_corruptions(truth, spec, 0, CLASSES)


def test_bad_seed(truth):
    with pytest.raises(PumlcError, match="--seed"):
        apply_corruptions(truth, CorruptionSpec(), -1, CLASSES)


def test_validation_carve_out():
    is_val, record = carve_validation(1000, 0.1, 0)
    assert is_val.sum() == 100 and record["n_val"] == 100
    again, _ = carve_validation(1000, 0.1, 0)
    np.testing.assert_array_equal(is_val, again)
    assert not np.array_equal(is_val, carve_validation(1000, 0.1, 1)[0])
    assert carve_validation(10, 0.0, 0)[0].sum() == 0
    assert carve_validation(5, 0.01, 0)[0].sum() == 1  # a requested val split is never empty
    with pytest.raises(PumlcError, match="--val-fraction"):
        carve_validation(10, 1.0, 0)
