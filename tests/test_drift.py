"""Monitoring's parts on hand-made data: the features, the reference profile, the drift rule,
the log reader and its one-line refusals, the bounded log and the capped pixel samples. The
whole chain on a real server and real shifts: tests/test_monitoring.py."""

from __future__ import annotations

import datetime as dt
import json
import logging
import logging.config
import math

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from pipeline.config import MonitorConfig, load_config, sweep_key
from pipeline.drift import compare, label_drift, psi
from pipeline.errors import ConfigError, PipelineError
from pipeline.features import MONITOR_NAME, NEAR_WHITE, answer_features, pixel_features
from pipeline.monitor_log import IMAGE_COLUMNS, parse_since, read_log
from pipeline.reference import ReferenceError, ReferenceProfile, build_profile
from tests.helpers import garments

CLASSES = ("a", "b", "c")


def test_pixel_features_of_black_white_and_half_images():
    images = np.zeros((3, 4, 4, 1), np.uint8)
    images[1] = 255
    images[2, :2] = NEAR_WHITE  # the top half at the threshold: near-white
    features = pixel_features(images)
    np.testing.assert_allclose(features["pixel_mean"], [0, 255, NEAR_WHITE / 2])
    np.testing.assert_allclose(features["pixel_std"], [0, 0, NEAR_WHITE / 2])
    np.testing.assert_allclose(features["near_white"], [0, 1, 0.5])


def test_near_white_of_colour_images_is_by_the_mean_of_the_channels():
    image = np.zeros((1, 2, 1, 3), np.uint8)
    image[0, 0] = (255, 255, 255)
    image[0, 1] = (255, 255, 0)  # yellow: mean 170, not near-white
    assert pixel_features(image)["near_white"].tolist() == [0.5]


def test_answer_features_entropy_is_zero_when_sure_and_log_k_when_not():
    probs = np.array([[1.0, 0, 0], [1 / 3, 1 / 3, 1 / 3], [0.2, 0.7, 0.1]])
    answer = answer_features(probs)
    assert answer["label"].tolist() == [0, 0, 1]
    np.testing.assert_allclose(answer["confidence"], [1.0, 1 / 3, 0.7])
    np.testing.assert_allclose(answer["entropy"][:2], [0.0, math.log(3)], atol=1e-9)


def _probs(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, (count, len(CLASSES)))
    return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


@pytest.fixture
def profile() -> ReferenceProfile:
    images = garments(600, seed=1)
    labels = np.random.default_rng(2).integers(0, 3, 600)
    return build_profile(images, labels, _probs(600, 3), CLASSES)


def test_the_profile_survives_its_file_and_holds_what_monitoring_compares(profile, tmp_path):
    again = ReferenceProfile.load(profile.save(tmp_path / "p.json"))
    assert again == profile
    assert set(profile.features) == {
        "pixel_mean",
        "pixel_std",
        "near_white",
        "confidence",
        "entropy",
    }
    assert profile.images == 600 and len(profile.features["pixel_mean"]) == 600
    assert sum(profile.class_prior) == pytest.approx(1) == sum(profile.predicted_prior)
    assert sum(profile.confidence_histogram.counts) == 600
    assert np.asarray(profile.confusion_matrix).sum() == 600


def test_a_large_split_keeps_a_seeded_sample_of_its_features(monkeypatch):
    from pipeline import reference

    monkeypatch.setattr(reference, "MAX_IMAGES", 100)
    images, labels = garments(300), np.zeros(300, np.int64)
    first = build_profile(images, labels, _probs(300, 0), CLASSES)
    assert first.images == 300 and len(first.features["entropy"]) == 100
    assert first == build_profile(images, labels, _probs(300, 0), CLASSES)


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "no reference profile at"),
        ("{not json", "is unreadable"),
        (json.dumps({"format": 99}), "is not of format 1"),
        (json.dumps({"format": 1, "split": "validation"}), "lacks a field"),
    ],
)
def test_a_profile_that_cannot_be_used_is_refused_in_one_line(tmp_path, content, says):
    path = tmp_path / "profile.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ReferenceError, match=says) as refused:
        ReferenceProfile.load(path)
    assert "\n" not in str(refused.value)


def test_psi_is_near_zero_for_the_same_distribution_and_large_for_a_shift():
    rng = np.random.default_rng(0)
    reference = rng.normal(0, 1, 5000)
    assert psi(reference, rng.normal(0, 1, 2000)) < 0.02
    assert 0.05 < psi(reference, rng.normal(0.3, 1, 2000)) < 0.2
    assert psi(reference, rng.normal(2, 1, 2000)) > 1.0
    # Ties (a feature that is often exactly 0) collapse bins instead of breaking them.
    tied = np.where(rng.random(5000) < 0.6, 0.0, rng.random(5000))
    assert psi(tied, tied[:2000]) < 0.02


def test_the_label_mix_is_judged_by_chi_square_against_the_predicted_mix(profile):
    config = MonitorConfig()
    expected = np.asarray(profile.predicted_prior)
    same = pd.Series(np.repeat(CLASSES, np.round(expected * 900).astype(int)))
    assert not label_drift(same, profile, config).drifted
    skewed = pd.Series(["a"] * 800 + ["b"] * 100)
    verdict = label_drift(skewed, profile, config)
    assert verdict.drifted and verdict.p_value < 1e-6 and verdict.served == [800, 100, 0]
    with pytest.raises(PipelineError, match="not a class of this model"):
        label_drift(pd.Series(["a", "zebra"]), profile, config)


def _records(images: np.ndarray, probs: np.ndarray) -> pd.DataFrame:
    answer = answer_features(probs)
    return pd.DataFrame(
        {
            **pixel_features(images),
            "confidence": answer["confidence"],
            "entropy": answer["entropy"],
            "label": [CLASSES[i] for i in answer["label"]],
            "request": np.arange(len(images)) // 4,
        }
    )


def test_held_out_images_of_the_same_kind_do_not_drift_and_inverted_ones_do(profile):
    config = MonitorConfig()
    images, probs = garments(400, seed=7), _probs(400, 8)
    calm = compare(_records(images, probs), profile, config)
    assert not calm.drifted, calm.features
    assert calm.images == 400 and calm.requests == 100
    shifted = compare(_records(255 - images, probs), profile, config)
    assert {"pixel_mean", "near_white"} <= set(shifted.drifted_names())
    assert "confidence" not in shifted.drifted_names()  # the same answers


def test_a_confident_models_answers_as_logged_do_not_drift_from_its_profile():
    """A good model's confidence is mostly above 0.99: profiled and logged with the same
    rounding (pipeline/features.py, DIGITS), its held-out answers find no drift."""
    from pipeline.features import DIGITS, NUMERIC_FEATURES, rounded

    def sure(count: int, seed: int) -> np.ndarray:  # the top class boosted far above the rest
        rng = np.random.default_rng(seed)
        logits = rng.normal(0, 1, (count, 3))
        logits[np.arange(count), rng.integers(0, 3, count)] += rng.exponential(9, count)
        return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)

    images, probs = garments(3000, seed=4), sure(3000, 5)
    profile = build_profile(images[:2000], np.zeros(2000, np.int64), probs[:2000], CLASSES)
    served = _records(images[2000:], probs[2000:])
    for name in NUMERIC_FEATURES:  # as the service logs them
        served[name] = rounded(name, served[name].to_numpy())
    assert np.median(profile.values("confidence")) > 0.99
    drift = compare(served, profile, MonitorConfig())
    assert not drift.drifted, drift.drifted_names()
    # What the shared rounding guards against: the profile kept to one more digit.
    finer = np.round(probs[:2000].max(axis=1), DIGITS["confidence"] + 1)
    assert psi(finer, served["confidence"].to_numpy()) > 0.2


def test_parse_since_takes_durations_and_dates_and_refuses_the_rest_in_one_line():
    now = dt.datetime(2026, 12, 7, 12, 0)
    assert parse_since("30m", now) == dt.datetime(2026, 12, 7, 11, 30)
    assert parse_since("2d", now) == dt.datetime(2026, 12, 5, 12, 0)
    assert parse_since("2026-12-01T08:00") == dt.datetime(2026, 12, 1, 8, 0)
    assert parse_since(None) is None
    with pytest.raises(PipelineError, match="neither a duration") as refused:
        parse_since("yesterday")
    assert "\n" not in str(refused.value)


def _record(tag: str = "m:1", when: str = "2026-12-07T10:00:00", images: int = 1) -> dict:
    """A record as serving/monitoring.py writes it: one request of `images` images."""
    row = {"model_tag": tag, "request": ["r1"], "answered": [when], "latency_ms": [1.5]}
    row["images"] = [images]
    row.update({column: [0.0] * images for column in IMAGE_COLUMNS})
    row.update(mode=["L"] * images, label=["a"] * images)
    return row


def _write_log(folder, lines: list[str], name: str = "data.1.log"):
    data = folder / MONITOR_NAME / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / name).write_text("".join(line + "\n" for line in lines))
    return data / name


def test_the_log_reader_keeps_one_model_in_one_window(tmp_path):
    _write_log(
        tmp_path,
        [
            json.dumps(_record("m:1", "2026-12-07T09:00:00")),
            json.dumps(_record("m:1", "2026-12-07T11:00:00")),
            json.dumps(_record("m:2", "2026-12-07T11:30:00")),
        ],
    )
    _write_log(tmp_path, [json.dumps(_record("m:1", "2026-12-07T12:00:00", 3))], "data.1.log.1")
    served = read_log(tmp_path, "m:1", dt.datetime(2026, 12, 7, 10, 0))
    assert len(served.records) == 4 and served.other_models == {"m:2": 1}
    assert len(served.files) == 2
    assert served.records["latency_ms"].tolist() == [1.5] * 4


@pytest.mark.parametrize(
    ("lines", "tag", "since", "says"),
    [
        (None, "m:1", None, "no monitoring log in"),
        ([], "m:1", None, "holds no records yet"),
        (["{cut short"], "m:1", None, "line 1 is not a monitoring record: not JSON"),
        ([json.dumps({"a": 1})], "m:1", None, "line 1 is not a monitoring record: lacks"),
        (
            [json.dumps({**_record(images=2), "label": ["a"]})],
            "m:1",
            None,
            "per-image lists do not hold the 2 images",
        ),
        (
            [json.dumps(_record("m:1"))],
            "m:2",
            None,
            "no records of m:2 in this window, only of m:1",
        ),
        ([json.dumps(_record("m:1"))], "m:1", dt.datetime(2027, 1, 1), "no records since"),
    ],
)
def test_a_log_that_cannot_be_compared_is_refused_in_one_line(tmp_path, lines, tag, since, says):
    if lines is not None:
        _write_log(tmp_path, lines)
    with pytest.raises(PipelineError, match=says) as refused:
        read_log(tmp_path, tag, since)
    assert "\n" not in str(refused.value)


def test_bad_lines_stop_the_reader_unless_it_is_told_to_skip_them_and_nothing_is_lost(tmp_path):
    path = _write_log(tmp_path, [json.dumps(_record()), "garbage", json.dumps(_record())])
    before = path.read_bytes()
    with pytest.raises(PipelineError, match="line 2 is not a monitoring record"):
        read_log(tmp_path, "m:1")
    served = read_log(tmp_path, "m:1", skip_bad_lines=True)
    assert len(served.records) == 2 and served.bad_lines == 1
    assert path.read_bytes() == before


def test_the_monitor_section_is_checked_and_changes_no_sweep_key():
    assert load_config(None, ["monitor.psi_threshold=0.3"]).monitor.psi_threshold == 0.3
    assert sweep_key(load_config(None, ["monitor.min_images=50"])) == sweep_key(load_config())
    assert not any(key.startswith("monitor.") for key in load_config().flat())
    for override, key in (
        ("monitor.psi_threshold=0", "monitor.psi_threshold"),
        ("monitor.label_p_value=2", "monitor.label_p_value"),
        ("monitor.min_images=3", "monitor.min_images"),
    ):
        with pytest.raises(ConfigError, match=key):
            load_config(None, [override])


def _handler_config(tmp_path, max_bytes: int) -> dict:
    """serving/monitoring_log.yaml as BentoML fills it in, with a smaller file size."""
    from serving.monitoring import LOG_CONFIG

    text = LOG_CONFIG.read_text().format(
        data_filename=tmp_path / "data.1.log", schema_filename=tmp_path / "schema.1.log"
    )
    config = yaml.safe_load(text)
    config["handlers"]["bentoml_monitor_data"]["maxBytes"] = max_bytes
    return config


def test_the_log_rotates_and_stays_within_its_files(tmp_path):
    config = _handler_config(tmp_path, 2000)
    backups = config["handlers"]["bentoml_monitor_data"]["backupCount"]
    logging.config.dictConfig(config)
    logger = logging.getLogger("bentoml_monitor_data")
    try:
        for i in range(2000):
            logger.info({"image": i, "label": "a"})
    finally:
        for handler in list(logger.handlers):
            handler.close()
            logger.removeHandler(handler)
    files = sorted(tmp_path.glob("data.1.log*"))
    assert len(files) == backups + 1
    # A file rotates once it has reached the size: it may hold one record beyond it.
    assert all(f.stat().st_size <= 2000 + 64 for f in files)
    last = json.loads(files[0].read_text().splitlines()[-1])
    assert last["image"] == 1999


def test_a_full_disk_drops_records_and_warns_once(tmp_path, caplog):
    from serving import monitoring

    (tmp_path / "data.1.log").symlink_to("/dev/full")
    logging.config.dictConfig(_handler_config(tmp_path, 2000))
    logger = logging.getLogger("bentoml_monitor_data")
    before = monitoring._failed_writes[0]
    monitoring._warned.clear()
    try:
        with caplog.at_level(logging.WARNING, logger="serving.monitoring"):
            for i in range(5):
                logger.info({"image": i})  # raises nothing
        assert monitoring._failed_writes[0] - before == 5
    finally:
        for handler in list(logger.handlers):
            handler.close()  # nor does closing a file whose last records cannot be written
            logger.removeHandler(handler)
    warnings = [r for r in caplog.records if r.name == "serving.monitoring"]
    assert len(warnings) == 1 and "No space left" in warnings[0].getMessage()


def test_pixel_samples_are_a_capped_ring_of_the_newest_images(tmp_path):
    from pipeline.preprocess import ImageShape
    from serving.monitoring import PixelSamples

    images = garments(10)
    samples = PixelSamples(tmp_path, ImageShape(28, 28, 1), rate=1.0, budget_bytes=3 * 28 * 28)
    names = samples.maybe_write(images)
    assert len(set(names)) == 3 and len(list(tmp_path.iterdir())) == 3
    newest = np.asarray(Image.open(tmp_path / names[-1]))
    np.testing.assert_array_equal(newest, images[-1, ..., 0])
    none = PixelSamples(tmp_path / "none", ImageShape(28, 28, 1), rate=0.0)
    assert none.maybe_write(images) == [""] * 10 and not (tmp_path / "none").exists()
