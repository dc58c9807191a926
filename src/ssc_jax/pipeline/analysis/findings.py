"""The paper's qualitative findings, checked on one run's numbers: each is a sentence with
the measured values and whether it holds here, decided on the interval of the compared
difference where the analysis has intervals (docs/statistics.md)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

HOLDS, DOES_NOT_HOLD, UNDECIDED = "holds", "does not hold", "undecided at this N"


class Finding(NamedTuple):
    """``holds``: the point estimates' reading; ``verdict``: ``HOLDS``, ``DOES_NOT_HOLD`` or,
    when the interval of the compared difference contains 0, ``UNDECIDED``."""

    claim: str
    holds: bool
    evidence: str
    verdict: str = ""


def decided(holds: bool, interval=None) -> str:
    """The verdict on a difference that should be > 0: from its (low, high) ``interval``
    when given, else from the point estimate's ``holds``."""
    if interval is None:
        return HOLDS if holds else DOES_NOT_HOLD
    low, high = (float(v) for v in interval)
    return HOLDS if low > 0 else DOES_NOT_HOLD if high < 0 else UNDECIDED


def _apart(a: float, b: float) -> tuple[str, str]:
    """``a`` and ``b`` to the fewest significant digits, 3 to 6, that tell them apart."""
    for digits in range(3, 7):
        left, right = f"{a:.{digits}g}", f"{b:.{digits}g}"
        if left != right:
            break
    return left, right


def modularity_grows(
    layers: list[str], modularity: np.ndarray, rise_interval: np.ndarray | None = None
) -> Finding:
    """Sec. 4.1: deeper layers separate the classes more (first vs. last layer, and trend),
    decided on ``rise_interval``, the (low, high) interval of last minus first, when given."""
    q = np.asarray(modularity, dtype=float)
    rising = int(np.sum(np.diff(q) > 0))
    first, last = _apart(q[0], q[-1])
    return Finding(
        "Modularity grows from the first analysed layer to the last (Sec. 4.1)",
        bool(q[-1] > q[0]),
        f"{layers[0]} {first} -> {layers[-1]} {last}; "
        f"{rising} of {len(q) - 1} steps between consecutive layers rise"
        + _interval_text("last - first", q[-1] - q[0], rise_interval),
        decided(bool(q[-1] > q[0]), rise_interval),
    )


def labels_agree(table1: dict[str, float], layer: str) -> Finding:
    """Sec. 6.2 / Table 1: the last layer's SSC labels agree with most predictions."""
    agreement = table1["agreement"]
    return Finding(
        "The last analysed layer's SSC labels agree with the network's predictions for most "
        "inputs (Table 1)",
        bool(agreement > 0.5),
        f"{layer}: agreement {agreement:.1%}, SSC-label accuracy "
        f"{table1['ssc_label_accuracy']:.1%}, network accuracy {table1['network_accuracy']:.1%}",
    )


def bottom_up_convergence(layers: list[str], to_final: np.ndarray, name: str) -> Finding:
    """Sec. 4.2: shallow layers reach their final state earlier than deep ones, read as the
    mean CKA to the final epoch (over the epochs before it) falling with depth."""
    mean = np.asarray(to_final, dtype=float)[:-1].mean(axis=0)
    rank = np.argsort(np.argsort(mean))
    rho = float(np.corrcoef(np.arange(len(mean)), rank)[0, 1]) if np.ptp(rank) > 0 else 0.0
    first, last = _apart(mean[0], mean[-1])
    return Finding(
        f"Shallow layers converge before deep ones ({name} to the final epoch, Sec. 4.2)",
        bool(mean[0] > mean[-1] and rho < 0),
        f"mean {name} to final over the earlier epochs: {layers[0]} {first}, "
        f"{layers[-1]} {last}; rank correlation with depth {rho:.2f}",
    )


def linear_converges_faster(ssc_to_final: np.ndarray, linear_to_final: np.ndarray) -> Finding:
    """Sec. 4.3: linear CKA approaches the final state faster than SSC-CKA."""
    ssc = float(np.mean(np.asarray(ssc_to_final)[:-1]))
    linear = float(np.mean(np.asarray(linear_to_final)[:-1]))
    linear_text, ssc_text = _apart(linear, ssc)
    return Finding(
        "Linear CKA reaches the final state faster than SSC-CKA (Sec. 4.3)",
        bool(linear > ssc),
        f"mean over layers and earlier epochs: linear CKA {linear_text}, SSC-CKA {ssc_text}",
    )


def _interval_text(name: str, value: float, interval) -> str:
    """ "; name value [low, high]" for a difference with an interval, else ""."""
    if interval is None:
        return ""
    low, high = (float(v) for v in interval)
    return f"; {name} {value:.3g} [{low:.3g}, {high:.3g}]"


def verdict_of(finding: Finding) -> str:
    """The finding's verdict: decided on its interval where it has one, else on ``holds``."""
    return finding.verdict or decided(finding.holds)


def as_rows(findings: list[Finding]) -> list[list]:
    """Report-table rows: claim, verdict, evidence."""
    return [[f.claim, verdict_of(f), f.evidence] for f in findings]


def as_json(findings: list[Finding]) -> list[dict]:
    return [{**f._asdict(), "verdict": verdict_of(f)} for f in findings]
