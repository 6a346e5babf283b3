"""The serving choices that exist only to measure an alternative: each defaults to what the
service runs, takes the other, and refuses anything else in one line."""

from __future__ import annotations

import pytest

from serving import settings


@pytest.mark.parametrize(
    ("variable", "field", "default", "other", "refusal"),
    [
        ("SERVING_BATCH_NORM", "batch_norm", "fused", "keras", "fused, keras"),
        ("SERVING_MODEL_CALL", "model_call", "traced", "keras", "traced, keras"),
    ],
)
def test_a_choice_setting_defaults_takes_the_other_or_refuses_in_one_line(
    monkeypatch, variable, field, default, other, refusal
):
    monkeypatch.delenv(variable, raising=False)
    assert getattr(settings.load(), field) == default
    monkeypatch.setenv(variable, other)
    assert getattr(settings.load(), field) == other
    monkeypatch.setenv(variable, "tensorrt")
    with pytest.raises(SystemExit, match=f"{variable} must be one of {refusal}"):
        settings.load()
