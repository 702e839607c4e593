"""Paired significance tests of a method against a baseline, paired by case id (METHODS.md §7).

Both tests are two-sided: the paired t-test (``scipy.stats.ttest_rel``; the COPLE paper marks p < 0.05) and the
Wilcoxon signed-rank test (``scipy.stats.wilcoxon`` with its defaults: zero differences dropped, exact p-value for
small samples without ties). A pair is dropped when either value is NaN (e.g. HD95 with one empty mask); the number
of dropped pairs is reported, so that the same pairs enter both tests and both means.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class PairedTestResult:
    """Outcome of :func:`paired_tests`; differences are ``a - b`` (method minus baseline).

    Attributes:
        n_pairs: Pairs used (both values finite or ±inf, i.e. not NaN).
        n_dropped_nan: Pairs dropped because a value was NaN.
        n_unpaired: Case ids present in only one of the inputs (dropped; only with ``missing="drop"``).
        mean_a: Mean of ``a`` over the used pairs.
        mean_b: Mean of ``b`` over the used pairs.
        mean_difference: Mean of ``a - b`` over the used pairs.
        t_statistic: Paired t statistic (NaN with fewer than two pairs or zero variance of the differences).
        t_pvalue: Two-sided p-value of the paired t-test.
        wilcoxon_statistic: Wilcoxon signed-rank statistic (NaN without pairs).
        wilcoxon_pvalue: Two-sided p-value of the Wilcoxon test.
    """

    n_pairs: int
    n_dropped_nan: int
    n_unpaired: int
    mean_a: float
    mean_b: float
    mean_difference: float
    t_statistic: float
    t_pvalue: float
    wilcoxon_statistic: float
    wilcoxon_pvalue: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def paired_tests(
    a: Mapping[str, float], b: Mapping[str, float], *, missing: Literal["raise", "drop"] = "raise"
) -> PairedTestResult:
    """Paired t-test and Wilcoxon signed-rank test of per-case values ``a`` (method) vs ``b`` (baseline).

    Args:
        a: Case id → metric value of the method.
        b: Case id → metric value of the baseline.
        missing: ``"raise"``: every case id must be in both; ``"drop"``: ids present in only one are left out and
            counted in ``n_unpaired``.

    Returns:
        A :class:`PairedTestResult`.

    Raises:
        ValueError: With ``missing="raise"``, naming the case ids present in only one input; for a bad ``missing``.
    """
    if missing not in ("raise", "drop"):
        raise ValueError(f"missing must be 'raise' or 'drop', got {missing!r}.")
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    if (only_a or only_b) and missing == "raise":
        raise ValueError(
            f"cases are not paired: only in a: {only_a[:10]}, only in b: {only_b[:10]} "
            f"({len(only_a)} + {len(only_b)} ids); pass missing='drop' to leave them out."
        )
    ids = sorted(set(a) & set(b))
    xa = np.array([float(a[i]) for i in ids], dtype=np.float64)
    xb = np.array([float(b[i]) for i in ids], dtype=np.float64)
    keep = ~(np.isnan(xa) | np.isnan(xb))
    xa, xb = xa[keep], xb[keep]
    n = int(xa.size)
    nan = math.nan
    t_stat = t_p = w_stat = w_p = nan
    with warnings.catch_warnings():
        # Degenerate samples (n < 2, all differences equal) give NaN with a RuntimeWarning; NaN is the answer here.
        warnings.simplefilter("ignore", RuntimeWarning)
        if n >= 2:
            t = stats.ttest_rel(xa, xb)
            t_stat, t_p = float(t.statistic), float(t.pvalue)
        if n >= 1:
            try:
                w = stats.wilcoxon(xa, xb)
                w_stat, w_p = float(w.statistic), float(w.pvalue)
            except ValueError:  # scipy refuses some degenerate inputs; keep NaN
                pass
    return PairedTestResult(
        n_pairs=n,
        n_dropped_nan=int((~keep).sum()),
        n_unpaired=len(only_a) + len(only_b),
        mean_a=float(xa.mean()) if n else nan,
        mean_b=float(xb.mean()) if n else nan,
        mean_difference=float((xa - xb).mean()) if n else nan,
        t_statistic=t_stat,
        t_pvalue=t_p,
        wilcoxon_statistic=w_stat,
        wilcoxon_pvalue=w_p,
    )
