"""BraTS label conversions, region encoding/decoding and the two-pass merge on hand-made arrays."""

from __future__ import annotations

import numpy as np
import pytest

from nnunet_ext.inference import (
    brats_to_nnunet_labels,
    decode_brats_regions,
    encode_brats_regions,
    merge_two_pass,
    nnunet_to_brats_labels,
)

BRATS = np.array([[0, 1, 2, 4], [4, 2, 1, 0]])
NNUNET = np.array([[0, 2, 1, 3], [3, 1, 2, 0]])


def test_label_conversion_by_hand():
    np.testing.assert_array_equal(brats_to_nnunet_labels(BRATS), NNUNET)
    np.testing.assert_array_equal(nnunet_to_brats_labels(NNUNET), BRATS)
    assert brats_to_nnunet_labels(BRATS).dtype == np.uint8


def test_bad_label_values_name_the_other_convention():
    with pytest.raises(ValueError, match=r"\[3\].*'nnunet' convention"):
        brats_to_nnunet_labels(NNUNET)
    with pytest.raises(ValueError, match=r"\[4\].*'brats' convention"):
        nnunet_to_brats_labels(BRATS)


def test_encode_regions_by_hand():
    wt, tc, et = encode_brats_regions(NNUNET[0])  # labels 0, NCR, edema, ET
    assert wt.tolist() == [False, True, True, True]
    assert tc.tolist() == [False, True, False, True]
    assert et.tolist() == [False, False, False, True]
    np.testing.assert_array_equal(encode_brats_regions(BRATS, "brats"), encode_brats_regions(NNUNET))


@pytest.mark.parametrize("method", ["nnunet", "open_brats"])
def test_decode_inverts_encode(method):
    np.testing.assert_array_equal(decode_brats_regions(encode_brats_regions(NNUNET), method=method), NNUNET)
    np.testing.assert_array_equal(
        decode_brats_regions(encode_brats_regions(BRATS, "brats"), method=method, convention="brats"), BRATS
    )


def test_decode_thresholds_probabilities_and_methods_differ_only_on_et_without_tc():
    # columns: ET & ~TC & WT | ET & ~WT | TC & ~WT | at threshold (0.5 is not > 0.5) | nested ET
    probs = np.array(
        [
            [0.9, 0.1, 0.2, 0.5, 0.9],  # WT
            [0.2, 0.1, 0.8, 0.5, 0.9],  # TC
            [0.7, 0.6, 0.1, 0.5, 0.6],  # ET
        ]
    )
    assert decode_brats_regions(probs).tolist() == [3, 3, 2, 0, 3]
    assert decode_brats_regions(probs, method="open_brats").tolist() == [1, 3, 2, 0, 3]
    assert decode_brats_regions(probs, method="open_brats", convention="brats").tolist() == [2, 4, 1, 0, 4]
    assert decode_brats_regions(probs, threshold=0.4).tolist() == [3, 3, 2, 3, 3]
    with pytest.raises(ValueError, match=r"shape \(3, \.\.\.\)"):
        decode_brats_regions(probs[:2])
    with pytest.raises(ValueError, match="method"):
        decode_brats_regions(probs, method="brats")


# A \ B       bg  ed  NCR  ET   (nnU-Net labels 0, 1, 2, 3)
MERGE_TABLE = [
    [0, 1, 0, 0],  # A bg: B decides bg/edema only
    [0, 1, 1, 1],  # A edema
    [2, 2, 2, 2],  # A NCR/NET: never changed
    [3, 3, 3, 3],  # A ET: never changed
]


def test_merge_table_by_hand():
    a = np.repeat(np.arange(4), 4).reshape(4, 4)
    b = np.tile(np.arange(4), 4).reshape(4, 4)
    np.testing.assert_array_equal(merge_two_pass(a, b), MERGE_TABLE)
    brats = nnunet_to_brats_labels
    np.testing.assert_array_equal(merge_two_pass(brats(a), brats(b), convention="brats"), brats(np.array(MERGE_TABLE)))


def test_merge_identities():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, size=(3, 5, 5)).astype(np.uint8)
    b = rng.integers(0, 4, size=(3, 5, 5)).astype(np.uint8)
    np.testing.assert_array_equal(merge_two_pass(a, a), a)
    merged = merge_two_pass(a, b)
    core = a >= 2
    np.testing.assert_array_equal(merged[core], a[core])
    assert merged.dtype == a.dtype and not np.shares_memory(merged, a)


def test_merge_errors():
    a = np.zeros((2, 2), dtype=np.uint8)
    with pytest.raises(ValueError, match="same shape"):
        merge_two_pass(a, np.zeros((2, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="label map B has label values \\[4\\]"):
        merge_two_pass(a, np.full((2, 2), 4))
    with pytest.raises(ValueError, match="convention must be"):
        merge_two_pass(a, a, convention="BraTS")
