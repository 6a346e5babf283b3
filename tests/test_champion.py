"""The champion rule, on hand-made runs: one definition for the registry query and the report."""

from __future__ import annotations

import pandas as pd

from pipeline.champion import CHAMPION_ALIAS, CHAMPION_RULE, ORDER_BY, champion_uri, rank_runs


def runs(*rows: tuple[str, float, int]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"tags.model": m, "metrics.best_val_accuracy": acc, "metrics.model_params": params}
            for m, acc, params in rows
        ]
    )


def test_highest_validation_accuracy_wins():
    ranked = rank_runs(runs(("lenet", 0.91, 60_000), ("vgg", 0.94, 800_000), ("nin", 0.93, 1)))
    assert ranked["tags.model"].tolist() == ["vgg", "nin", "lenet"]


def test_a_tie_goes_to_the_model_with_fewer_parameters():
    ranked = rank_runs(runs(("vgg", 0.94, 800_000), ("resnet", 0.94, 270_000)))
    assert ranked["tags.model"].tolist() == ["resnet", "vgg"]


def test_the_store_is_asked_for_the_same_rule():
    assert ORDER_BY == ["metrics.best_val_accuracy DESC", "metrics.model_params ASC"]
    assert [metric for metric, _ in CHAMPION_RULE] == ["best_val_accuracy", "model_params"]


def test_the_champion_uri_uses_the_alias():
    assert champion_uri("cnn-classifier") == f"models:/cnn-classifier@{CHAMPION_ALIAS}"
