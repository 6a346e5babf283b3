"""Drift, measured: the served images and answers against the model's reference profile.

The rule, stated once (and in every report):
- a numeric feature (pipeline/features.py) drifts when its population stability index (PSI)
  over the reference's deciles reaches `monitor.psi_threshold`; the two-sample
  Kolmogorov-Smirnov statistic and p-value (scipy) are reported beside it;
- the predicted-label mix drifts when scipy's chi-square goodness-of-fit test against the mix
  the model predicted on its validation split gives p < `monitor.label_p_value`;
- the window has drifted when any of them has.
The input facts (resized, converted, modes) and latencies are reported, not judged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from pipeline.config import MonitorConfig
from pipeline.errors import PipelineError
from pipeline.features import NUMERIC_FEATURES
from pipeline.reference import ReferenceProfile

#: Bins of the PSI: the reference's deciles.
PSI_BINS = 10
#: Added to every bin's share, so an empty bin does not make the PSI infinite.
PSI_FLOOR = 1e-4


def psi(reference: np.ndarray, served: np.ndarray, bins: int = PSI_BINS) -> float:
    """Population stability index of `served` against `reference`, over the reference's
    quantile bins: sum over bins of (s - r) * ln(s / r) of the two shares."""
    inner = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    r = np.bincount(np.searchsorted(inner, reference, side="right"), minlength=len(inner) + 1)
    s = np.bincount(np.searchsorted(inner, served, side="right"), minlength=len(inner) + 1)
    r = r / r.sum() + PSI_FLOOR
    s = s / s.sum() + PSI_FLOOR
    return float(np.sum((s - r) * np.log(s / r)))


@dataclass(frozen=True)
class LabelDrift:
    served: list[int]
    expected_share: list[float]
    chi2: float
    p_value: float
    psi: float
    drifted: bool


@dataclass(frozen=True)
class Drift:
    #: One row per numeric feature: reference and served mean, psi, ks, ks_p, drifted.
    features: pd.DataFrame
    labels: LabelDrift
    images: int
    requests: int
    rule: str

    @property
    def drifted(self) -> bool:
        return bool(self.features["drifted"].any() or self.labels.drifted)

    def drifted_names(self) -> list[str]:
        names = list(self.features.loc[self.features["drifted"], "feature"])
        return names + (["label mix"] if self.labels.drifted else [])


def latency_quantiles(records: pd.DataFrame) -> dict[float, float]:
    """The p50, p95 and p99 of the requests' latencies (ms), each request counted once."""
    latency = records.drop_duplicates("request")["latency_ms"]
    return {q: float(latency.quantile(q)) for q in (0.5, 0.95, 0.99)}


def label_drift(
    served_labels: pd.Series, profile: ReferenceProfile, config: MonitorConfig
) -> LabelDrift:
    """Chi-square of the served top-1 labels against the reference's predicted mix, smoothed
    by half an image per class so that a class the model never predicted there can appear."""
    names = profile.class_names
    index = {name: i for i, name in enumerate(names)}
    counts = np.zeros(len(names), dtype=np.int64)
    for label, n in served_labels.value_counts().items():
        if label not in index:
            raise PipelineError(
                f"the log has answers labelled {label!r}, not a class of this model "
                f"({', '.join(names)}): were they served by another model?"
            )
        counts[index[label]] += n
    reference = np.asarray(profile.predicted_prior) * profile.images + 0.5
    expected = reference / reference.sum()
    total = counts.sum()
    chi2, p_value = stats.chisquare(counts, expected * total)
    shares = counts / total + PSI_FLOOR
    label_psi = float(np.sum((shares - expected) * np.log(shares / expected)))
    return LabelDrift(
        served=counts.tolist(),
        expected_share=[round(float(e), 6) for e in expected],
        chi2=float(chi2),
        p_value=float(p_value),
        psi=label_psi,
        drifted=bool(p_value < config.label_p_value),
    )


def compare(records: pd.DataFrame, profile: ReferenceProfile, config: MonitorConfig) -> Drift:
    """The drift of `records` (pipeline/monitor_log.py) from `profile`, by the rule above."""
    rows = []
    for feature in NUMERIC_FEATURES:
        reference = profile.values(feature)
        served = records[feature].to_numpy(dtype=np.float64)
        ks = stats.ks_2samp(reference, served)
        value = psi(reference, served)
        rows.append(
            {
                "feature": feature,
                "reference_mean": float(reference.mean()),
                "served_mean": float(served.mean()),
                "psi": value,
                "ks": float(ks.statistic),
                "ks_p": float(ks.pvalue),
                "drifted": value >= config.psi_threshold,
            }
        )
    return Drift(
        features=pd.DataFrame(rows),
        labels=label_drift(records["label"], profile, config),
        images=len(records),
        requests=int(records["request"].nunique()),
        rule=(
            f"a feature drifts when PSI >= {config.psi_threshold}; the label mix when the "
            f"chi-square p-value < {config.label_p_value}"
        ),
    )
