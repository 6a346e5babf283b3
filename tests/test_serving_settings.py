"""The eleven `SERVING_*` settings (serving/settings.py): defaults, what each takes, and a one-line
refusal of anything else. What they do is shown on real servers (test_service.py)."""

from __future__ import annotations

import dataclasses

import pytest

from serving import settings
from serving.http import tracing


def test_there_are_eleven_settings_with_the_documented_defaults():
    assert len(settings.ENV) == 11
    loaded = settings.load({})
    assert loaded == settings.Settings()
    assert loaded.model_tag == "cnn-classifier:latest" and loaded.api_token is None
    assert not loaded.tracing and not loaded.gpu and loaded.views == "model"
    assert loaded.max_bytes_in_flight == 2 * loaded.max_request_bytes
    assert loaded.pixel_samples == 0.0


def test_every_setting_is_documented_in_the_service_readme():
    from pipeline import paths

    table = (paths.PROJECT_ROOT / "serving" / "SERVICE.md").read_text()
    for variable in settings.ENV.values():
        assert f"`{variable}`" in table, variable


@pytest.mark.parametrize(
    ("variable", "raw", "field", "value"),
    [
        ("SERVING_MODEL", "cnn-classifier-run:abc", "model_tag", "cnn-classifier-run:abc"),
        ("SERVING_API_TOKEN", "s3cret", "api_token", "s3cret"),
        ("SERVING_GPU", "1", "gpu", True),
        ("SERVING_MAX_BATCH_SIZE", "8", "max_batch_size", 8),
        ("SERVING_MAX_QUEUED_IMAGES", "512", "max_queued_images", 512),
        ("SERVING_VIEWS", "one", "views", "one"),
        ("SERVING_TRACING", "on", "tracing", True),
        ("SERVING_MAX_IMAGES", "5", "max_images", 5),
        ("SERVING_MAX_REQUEST_BYTES", "1000", "max_request_bytes", 1000),
        ("SERVING_HEADER_TIMEOUT_S", "2.5", "header_timeout_s", 2.5),
        ("SERVING_PIXEL_SAMPLES", "0.05", "pixel_samples", 0.05),
        ("SERVING_PIXEL_SAMPLES", "1", "pixel_samples", 1.0),
    ],
)
def test_each_setting_takes_its_values(variable, raw, field, value):
    loaded = settings.load({variable: raw})
    assert getattr(loaded, field) == value
    others = {f.name for f in dataclasses.fields(loaded)} - {field}
    assert all(getattr(loaded, f) == getattr(settings.Settings(), f) for f in others)


@pytest.mark.parametrize(
    ("variable", "raw", "says"),
    [
        ("SERVING_GPU", "yes", "must be 0 or 1"),
        ("SERVING_MAX_QUEUED_IMAGES", "lots", "must be a whole number of at least 1"),
        ("SERVING_TRACING", "1", "must be on or off"),
        ("SERVING_VIEWS", "ten", "must be one of model, flip, one"),
        ("SERVING_MAX_BATCH_SIZE", "0", "must be a whole number of at least 1"),
        ("SERVING_MAX_IMAGES", "-3", "must be a whole number of at least 1"),
        ("SERVING_MAX_REQUEST_BYTES", "64MB", "must be a whole number of at least 1"),
        ("SERVING_HEADER_TIMEOUT_S", "inf", "must be a positive number of seconds"),
        ("SERVING_HEADER_TIMEOUT_S", "soon", "must be a positive number of seconds"),
        ("SERVING_PIXEL_SAMPLES", "1.5", "must be a fraction from 0 to 1"),
        ("SERVING_PIXEL_SAMPLES", "some", "must be a fraction from 0 to 1"),
        ("SERVING_PIXEL_SAMPLES", "nan", "must be a fraction from 0 to 1"),
    ],
)
def test_a_bad_value_stops_with_one_line_naming_the_variable_and_the_value(variable, raw, says):
    with pytest.raises(SystemExit) as stop:
        settings.load({variable: raw})
    message = str(stop.value)
    assert "\n" not in message and message.startswith(variable) and says in message
    assert repr(raw) in message


def test_tracing_off_excludes_every_url_from_bentoml_tracing():
    assert tracing.service_config(False) == {"tracing": {"excluded_urls": [".*"]}}
    assert tracing.service_config(True) == {}


def test_an_unknown_keras_backend_stops_the_service_in_one_line():
    from serving.settings import check_keras_backend

    for fine in ({}, {"KERAS_BACKEND": "jax"}, {"KERAS_BACKEND": "tensorflow"}):
        check_keras_backend(fine)
    with pytest.raises(SystemExit) as stop:
        check_keras_backend({"KERAS_BACKEND": "torch"})
    assert "KERAS_BACKEND=torch" in str(stop.value) and "\n" not in str(stop.value)
