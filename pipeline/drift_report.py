"""The drift report: one self-contained HTML file (plots inlined), and its figure and summary
as files to log with it. A function of the comparison (pipeline/drift.py) alone."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pipeline.drift import Drift, latency_quantiles
from pipeline.features import NUMERIC_FEATURES
from pipeline.reference import ReferenceProfile


def figure(drift: Drift, records: pd.DataFrame, profile: ReferenceProfile) -> Figure:
    """Each numeric feature's histogram, reference beside served, and the label mix."""
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    rows = drift.features.set_index("feature")
    for ax, feature in zip(axes.flat, NUMERIC_FEATURES, strict=False):
        reference, served = profile.values(feature), records[feature].to_numpy(float)
        edges = np.histogram_bin_edges(np.concatenate([reference, served]), bins=30)
        ax.hist(reference, edges, density=True, alpha=0.55, label=f"reference ({profile.split})")
        ax.hist(served, edges, density=True, alpha=0.55, label="served")
        row = rows.loc[feature]
        flag = "  DRIFT" if row["drifted"] else ""
        ax.set_title(f"{feature}: PSI {row['psi']:.3f}, KS {row['ks']:.3f}{flag}")
        ax.legend(fontsize=8)
    ax = axes.flat[-1]
    names = profile.class_names
    x = np.arange(len(names))
    served = np.asarray(drift.labels.served) / max(1, sum(drift.labels.served))
    ax.bar(x - 0.2, drift.labels.expected_share, 0.4, label="reference (predicted)")
    ax.bar(x + 0.2, served, 0.4, label="served")
    ax.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
    flag = "  DRIFT" if drift.labels.drifted else ""
    ax.set_title(f"predicted labels: chi-square p {drift.labels.p_value:.2g}{flag}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def summary(drift: Drift, context: dict) -> dict:
    """What the report says, as JSON: the verdict, every figure and the window."""
    return {
        **context,
        "drifted": drift.drifted,
        "drifted_features": drift.drifted_names(),
        "rule": drift.rule,
        "images": drift.images,
        "requests": drift.requests,
        "features": drift.features.to_dict(orient="records"),
        "labels": {
            "served": drift.labels.served,
            "expected_share": drift.labels.expected_share,
            "chi2": drift.labels.chi2,
            "p_value": drift.labels.p_value,
            "psi": drift.labels.psi,
            "drifted": drift.labels.drifted,
        },
    }


def inputs_table(records: pd.DataFrame) -> pd.DataFrame:
    """How the served files came in: their modes and sizes, resized or converted."""
    sizes = records["width"].astype(str) + "x" + records["height"].astype(str)
    table = (
        pd.DataFrame({"mode": records["mode"], "size": sizes})
        .value_counts()
        .rename("images")
        .reset_index()
    )
    return table.head(20)


def write_html(
    path: Path,
    drift: Drift,
    records: pd.DataFrame,
    profile: ReferenceProfile,
    context: dict,
    png: bytes,
) -> None:
    """The report, one HTML file with its figure (`png`) inlined."""
    image = base64.b64encode(png).decode()
    verdict = f"DRIFT in {', '.join(drift.drifted_names())}" if drift.drifted else "no drift found"
    colour = "#b3261e" if drift.drifted else "#1e7b34"
    labels = pd.DataFrame(
        {
            "class": profile.class_names,
            "reference share": drift.labels.expected_share,
            "served": drift.labels.served,
            "served share": np.round(np.asarray(drift.labels.served) / max(1, drift.images), 4),
        }
    )
    latency = latency_quantiles(records)
    facts = {
        **context,
        "images": drift.images,
        "requests": drift.requests,
        "resized": f"{records['resized'].astype(bool).mean():.1%}",
        "converted": f"{records['converted'].astype(bool).mean():.1%}",
        "latency p50 / p95 / p99 (ms)": " / ".join(f"{v:.1f}" for v in latency.values()),
    }
    rows = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
        for k, v in facts.items()
    )
    features = drift.features.round(4).to_html(index=False, classes="t")
    path.write_text(
        f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Drift report: {html.escape(str(context.get("model_tag", "")))}</title>
<style>body{{font:14px system-ui,sans-serif;margin:24px;max-width:1200px;color:#1d2330}}
h1{{font-size:20px}} .verdict{{color:{colour};font-size:18px;font-weight:600}}
table{{border-collapse:collapse;margin:8px 0 18px}} td,th{{border:1px solid #d9dee7;
padding:3px 8px;text-align:left}} img{{max-width:100%}}</style></head><body>
<h1>Drift report</h1>
<p class="verdict" id="verdict">{html.escape(verdict)}</p>
<p>Rule: {html.escape(drift.rule)}. Reference: the model's {html.escape(profile.split)} split,
{profile.images} images.</p>
<table>{rows}</table>
<h2>Features</h2>{features}
<h2>Predicted labels</h2>
<p>chi-square {drift.labels.chi2:.2f}, p-value {drift.labels.p_value:.3g},
PSI {drift.labels.psi:.3f}</p>{labels.to_html(index=False)}
<h2>Inputs</h2>{inputs_table(records).to_html(index=False)}
<img alt="reference and served distributions" src="data:image/png;base64,{image}">
</body></html>"""
    )


def write_files(
    folder: Path, drift: Drift, records: pd.DataFrame, profile: ReferenceProfile, context: dict
) -> dict[str, Path]:
    """The report, its summary as JSON and its figure, written into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {
        "report": folder / "drift_report.html",
        "summary": folder / "drift_summary.json",
        "figure": folder / "drift.png",
    }
    fig = figure(drift, records, profile)
    fig.savefig(out["figure"], dpi=90)
    plt.close(fig)
    write_html(out["report"], drift, records, profile, context, out["figure"].read_bytes())
    out["summary"].write_text(json.dumps(summary(drift, context), indent=2, default=str))
    return out
