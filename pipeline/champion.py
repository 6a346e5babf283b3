"""The champion rule and alias, defined once for the registry query, promotion and the report.

The rule: the highest best-epoch validation accuracy wins; ties go to the model with fewer
parameters. The test set plays no part in the choice.
"""

from __future__ import annotations

import pandas as pd

#: The registry alias of the model `make serve` and `pipeline predict` use.
CHAMPION_ALIAS = "champion"
#: The champion rule as (metric, ascending) pairs, most important first: the highest
#: best-epoch validation accuracy; ties go to fewer parameters.
CHAMPION_RULE = (("best_val_accuracy", False), ("model_params", True))
#: The rule as an MLflow `search_runs` order.
ORDER_BY = [f"metrics.{metric} {'ASC' if up else 'DESC'}" for metric, up in CHAMPION_RULE]


def champion_uri(registered_model: str) -> str:
    """The `models:/` URI of the registered champion."""
    return f"models:/{registered_model}@{CHAMPION_ALIAS}"


def rank_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """`mlflow.search_runs` rows, best first by the champion rule (what `select_best` asks the
    store for)."""
    return runs.sort_values(
        [f"metrics.{metric}" for metric, _ in CHAMPION_RULE],
        ascending=[up for _, up in CHAMPION_RULE],
        kind="stable",
    )
