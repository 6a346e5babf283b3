"""The serving choices (the measured alternatives and the observability switches): each
defaults to what the service runs, takes the others, and refuses anything else in one line.
What the observability switches do is shown on real servers (test_service.py)."""

from __future__ import annotations

import pytest

from serving import settings


@pytest.mark.parametrize(
    ("variable", "field", "default", "others", "refusal"),
    [
        ("SERVING_BATCH_NORM", "batch_norm", "folded", ("fused", "keras"), "folded, fused, keras"),
        ("SERVING_MODEL_CALL", "model_call", "traced", ("keras",), "traced, keras"),
        ("SERVING_TRACING", "tracing", "off", ("on",), "on, off"),
        ("SERVING_ACCESS_LOG", "access_log", "on", ("off",), "on, off"),
    ],
)
def test_a_choice_setting_defaults_takes_the_others_or_refuses_in_one_line(
    monkeypatch, variable, field, default, others, refusal
):
    monkeypatch.delenv(variable, raising=False)
    assert getattr(settings.load(), field) == default
    for other in others:
        monkeypatch.setenv(variable, other)
        assert getattr(settings.load(), field) == other
    monkeypatch.setenv(variable, "tensorrt")
    with pytest.raises(SystemExit, match=f"{variable} must be one of {refusal}"):
        settings.load()


def test_the_switches_become_bentoml_service_options(monkeypatch):
    from serving import observability

    monkeypatch.delenv("SERVING_TRACING", raising=False)
    monkeypatch.delenv("SERVING_ACCESS_LOG", raising=False)
    assert observability.service_config(settings.load()) == {"tracing": {"excluded_urls": [".*"]}}
    monkeypatch.setenv("SERVING_TRACING", "on")
    monkeypatch.setenv("SERVING_ACCESS_LOG", "off")
    assert observability.service_config(settings.load()) == {
        "logging": {"access": {"enabled": False}}
    }
