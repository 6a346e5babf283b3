"""The BentoML service: a real `bentoml serve` of the built bento on 127.0.0.1, real HTTP."""

from __future__ import annotations

import ast
import concurrent.futures
import contextlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from PIL import Image

from bench.health_probe import large_png
from pipeline import paths
from tests.helpers import SHARED_MODULES, png, quick_overrides, serving, tool

pytestmark = pytest.mark.slow
BENTOML = tool("bentoml")
TOKEN = "test-token-4f1c"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_REQUEST_BYTES = 4 * 1024 * 1024


def build_bento(bentofile: str, env: dict[str, str]) -> tuple[str, Path]:
    proc = subprocess.run(
        [BENTOML, "build", "-f", bentofile, "--output", "tag"],
        cwd=paths.PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    tag = proc.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    name, version = tag.split(":")
    return tag, Path(os.environ["BENTOML_HOME"]) / "bentos" / name / version


@pytest.fixture(scope="session")
def bento(sweep):
    """The CPU bento built from bentofile.yaml with the champion in the test BentoML store."""
    return build_bento("bentofile.yaml", dict(os.environ))


@pytest.fixture(scope="session")
def server_tmp(session_dir) -> Path:
    """The server's temporary directory, where BentoML would put uploaded files."""
    path = session_dir / "server-tmp"
    path.mkdir()
    return path


#: The test servers' small limits, so that over-limit cases are cheap to send.
SMALL_LIMITS = {
    "SERVING_MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES),
    "SERVING_HEADER_TIMEOUT_S": "3",
}


#: BentoML's tracing configured to sample every request: with SERVING_TRACING=off (the
#: default) no span is made all the same.
SAMPLE_EVERY_REQUEST = {
    "BENTOML_CONFIG_OVERRIDES": json.dumps(
        {"services": {"cnn_classifier": {"tracing": {"sample_rate": 1.0}}}}
    )
}
#: The same, with BentoML's access log off (its own setting, serving/SERVICE.md).
ACCESS_LOG_OFF_AND_SAMPLE_EVERY_REQUEST = {
    "BENTOML_CONFIG_OVERRIDES": json.dumps(
        {
            "services": {
                "cnn_classifier": {
                    "tracing": {"sample_rate": 1.0},
                    "logging": {"access": {"enabled": False}},
                }
            }
        }
    )
}


@pytest.fixture(scope="session")
def server(bento, session_dir, server_tmp):
    """The built bento served with auth on, small limits, and BentoML told to trace."""
    env = {
        "SERVING_API_TOKEN": TOKEN,
        **SMALL_LIMITS,
        **SAMPLE_EVERY_REQUEST,
        "TMPDIR": str(server_tmp),
    }
    with serving(bento[0], env, session_dir / "serve.log") as url:
        yield url


@pytest.fixture(scope="session")
def client(server):
    with httpx.Client(base_url=server, headers=AUTH, timeout=60) as c:
        yield c


@pytest.fixture(scope="session")
def local_probs(sweep, test_images):
    """What the champion itself says about the test images, outside the service."""
    import bentoml
    import keras

    model = keras.saving.load_model(
        bentoml.models.get(sweep["promotion"].bento_tag).path_of("model.keras"), safe_mode=True
    )
    logits = model.predict(test_images[0].astype(np.float32), verbose=0)
    return np.asarray(keras.ops.softmax(logits, axis=-1))


def assert_matches(result: list[dict], probs: np.ndarray, class_names: list[str], k: int):
    """`result` is the documented response (index, top: label, probability) of `probs`."""
    assert len(result) == len(probs)
    assert [item["index"] for item in result] == list(range(len(probs)))
    for item, p in zip(result, probs, strict=True):
        assert set(item) == {"index", "top"}
        assert all(set(label) == {"label", "probability"} for label in item["top"])
        order = np.argsort(-p)[:k]
        assert [t["label"] for t in item["top"]] == [class_names[i] for i in order]
        np.testing.assert_allclose([t["probability"] for t in item["top"]], p[order], atol=1e-5)


# --- happy paths ---------------------------------------------------------------------------------


def test_health_and_docs_are_open(server):
    for path in ("/", "/healthz", "/readyz", "/livez", "/metrics", "/docs.json"):
        assert httpx.get(server + path, timeout=10).status_code == 200, path


def test_metadata_names_the_champion(client, sweep):
    info = client.post("/metadata").json()
    assert info["run_id"] == sweep["promotion"].run_id
    assert info["architecture"] == sweep["promotion"].model
    assert info["input_shape"] == [28, 28, 1]
    assert info["class_names"][9] == "Ankle boot"
    assert info["test_accuracy"] == pytest.approx(sweep["promotion"].test_accuracy)
    assert info["precision"] == sweep["config"].train.precision == "float32"
    assert 0 < info["test_macro_f1"] <= 1
    # The quick sweep's model answers with one view; the zoo's would say true.
    assert info["test_time_flip"] is sweep["config"].augment.test_flip is False
    assert info["test_time_views"] == info["served_views"] == 1
    assert info["served_test_accuracy"] == info["test_accuracy"]
    # The quick sweep trains without batch norm.
    assert (info["folded_batch_norm_layers"], info["fused_batch_norm_layers"]) == (0, 0)
    assert info["event_loop"] == "uvloop"
    assert info["tracing"] == "off" and info["max_batch_size"] == 256


def test_classify_files_equals_the_local_model(client, test_images, local_probs):
    images, _ = test_images
    files = [("images", (f"{i}.png", png(images[i, ..., 0]), "image/png")) for i in range(8)]
    response = client.post("/classify", files=files, data={"k": "4"})
    assert response.status_code == 200, response.text
    names = client.post("/metadata").json()["class_names"]
    assert_matches(response.json(), local_probs[:8], names, k=4)


def test_uploads_are_never_written_to_disk(client, test_images, server_tmp):
    """BentoML writes `Path` fields to a `bentoml-request-*` temp dir; `UploadedFile` must not."""
    files = [
        ("images", (f"{i}.png", png(test_images[0][i, ..., 0]), "image/png")) for i in range(3)
    ]
    assert client.post("/classify", files=files).status_code == 200
    assert not list(server_tmp.glob("bentoml-request-*"))


def test_classify_with_bentoml_client(server, test_images, local_probs, tmp_path):
    import bentoml

    images, _ = test_images
    paths_ = []
    for i in range(3):
        paths_.append(tmp_path / f"{i}.png")
        paths_[-1].write_bytes(png(images[i, ..., 0]))
    with bentoml.SyncHTTPClient(server, token=TOKEN) as bento_client:
        result = bento_client.classify(images=paths_, k=2)
        names = bento_client.metadata()["class_names"]
    assert_matches(result, local_probs[:3], names, k=2)


def test_raw_body_and_rgb_jpeg(client, test_images, local_probs):
    images, _ = test_images
    response = client.post(
        "/classify_image", content=png(images[0, ..., 0]), headers={"Content-Type": "image/png"}
    )
    assert response.status_code == 200, response.text
    names = client.post("/metadata").json()["class_names"]
    assert_matches(response.json(), local_probs[:1], names, k=3)
    rgb = np.repeat(images[1], 3, axis=-1)
    big = np.asarray(Image.fromarray(rgb).resize((280, 280), Image.Resampling.NEAREST))
    jpeg = client.post(
        "/classify_image", content=png(big, "JPEG"), headers={"Content-Type": "image/jpeg"}
    )
    assert jpeg.status_code == 200
    assert jpeg.json()[0]["top"][0]["label"] == names[int(local_probs[1].argmax())]


def _browser():
    """Headless Debian chromium driven by Selenium, or a skip saying what to install; CI sets
    REQUIRE_BROWSER=1 (.ci/run installs both), and there a missing browser fails instead."""
    import shutil

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        reason = "needs Debian's chromium and chromium-driver (apt-get install both)"
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,900"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(driver), options=options)


def test_demo_page_in_a_real_browser(server, client, test_images, tmp_path):
    """/ui in headless chromium: with the token typed in, the model card loads; an uploaded
    PNG and a bundled example each show the top label `/classify` gives for the same bytes;
    a corrupt file shows the service's 400 and its reason. Screenshot: test-artifacts/ui.png."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    def top_label_of(data: bytes) -> str:
        files = [("images", ("image.png", data, "image/png"))]
        return client.post("/classify", files=files).json()[0]["top"][0]["label"]

    def shown(browser, wait) -> str:
        label = (By.ID, "top-label")
        wait.until(lambda b: b.find_element(*label).get_attribute("data-state") == "done")
        return browser.find_element(By.ID, "top-label").text

    images, _ = test_images
    upload = tmp_path / "upload.png"
    upload.write_bytes(png(images[3, ..., 0]))
    corrupt = tmp_path / "corrupt.png"
    whole = png(images[4, ..., 0])
    corrupt.write_bytes(whole[: len(whole) // 2])  # a PNG cut short
    browser = _browser()
    try:
        wait = WebDriverWait(browser, 30)
        browser.get(f"{server}/ui/")
        browser.find_element(By.ID, "token").send_keys(TOKEN, Keys.TAB)
        wait.until(lambda b: "test accuracy" in b.find_element(By.ID, "subtitle").text)
        card = browser.find_element(By.ID, "card").text
        info = client.post("/metadata").json()
        assert info["run_id"] in card and info["architecture"] in card
        backend_row = next(line for line in card.splitlines() if line.startswith("backend"))
        assert info["backend"] in backend_row and info["served_backend"] in backend_row
        served = f"{100 * info['served_test_accuracy']:.2f}%"
        assert served in browser.find_element(By.ID, "subtitle").text and served in card

        browser.find_element(By.ID, "file").send_keys(str(upload))
        assert shown(browser, wait) == top_label_of(upload.read_bytes())
        bars = browser.find_elements(By.CSS_SELECTOR, "#bars .bar")
        assert len(bars) == 5

        examples = browser.find_elements(By.CSS_SELECTOR, "#examples .example")
        assert len(examples) == 10, "one bundled test image per class"
        listed = httpx.get(f"{server}/ui/examples.json").json()
        browser.execute_script("document.getElementById('top-label').dataset.state = 'idle'")
        examples[7].click()
        example_bytes = httpx.get(f"{server}/ui/{listed[7]['file']}").content
        assert shown(browser, wait) == top_label_of(example_bytes)
        assert httpx.get(f"{server}/ui/confusion_matrix.png").headers["content-type"] == "image/png"

        browser.find_element(By.ID, "file").send_keys(str(upload))
        shown(browser, wait)
        artifacts = paths.PROJECT_ROOT / "test-artifacts"
        artifacts.mkdir(exist_ok=True)
        browser.save_screenshot(str(artifacts / "ui.png"))

        browser.find_element(By.ID, "file").send_keys(str(corrupt))
        wait.until(lambda b: b.find_element(By.ID, "error").is_displayed())
        error = browser.find_element(By.ID, "error").text
        files = [("images", ("corrupt.png", corrupt.read_bytes(), "image/png"))]
        refused = client.post("/classify", files=files)
        assert refused.status_code == 400
        assert error == f"400: {refused.json()[0]['error']}"
    finally:
        browser.quit()


def test_classify_array_equals_the_local_model(client, test_images, local_probs):
    images, _ = test_images
    response = client.post("/classify_array", json={"pixels": images[:5].tolist(), "k": 1})
    assert response.status_code == 200, response.text
    names = client.post("/metadata").json()["class_names"]
    assert_matches(response.json(), local_probs[:5], names, k=1)
    squeezed = client.post("/classify_array", json={"pixels": images[:2, ..., 0].tolist()})
    assert squeezed.status_code == 200


def npy(array: np.ndarray, **kwargs) -> dict:
    """`array` as a `.npy` upload in the field `array`, as httpx sends files."""
    buffer = io.BytesIO()
    np.save(buffer, array, **kwargs)
    return {"files": [("array", ("batch.npy", buffer.getvalue(), "application/octet-stream"))]}


def test_classify_npy_equals_the_local_model(client, test_images, local_probs):
    images, _ = test_images
    names = client.post("/metadata").json()["class_names"]
    response = client.post("/classify_npy", **npy(images[:5]), data={"k": "2"})
    assert response.status_code == 200, response.text
    assert_matches(response.json(), local_probs[:5], names, k=2)
    # float32 N x H x W in Fortran order: the same answers.
    floats = np.asfortranarray(images[:5, ..., 0].astype(np.float32))
    again = client.post("/classify_npy", **npy(floats), data={"k": "2"})
    assert again.json() == response.json()


# --- bad input -----------------------------------------------------------------------------------


JSON = {"Content-Type": "application/json"}


def pixels_with(value) -> list:
    """A valid 1 x 28 x 28 x 1 pixel list, except for one element: `value`."""
    pixels = np.zeros((1, 28, 28, 1), dtype=int).tolist()
    pixels[0][5][5][0] = value
    return pixels


def _bad_requests(images: np.ndarray) -> list[tuple[str, dict, int, str]]:
    good = png(images[0, ..., 0])
    bomb = png(np.zeros((7000, 6000), dtype=np.uint8))  # 42 Mpx > the 40 Mpx limit
    gif = png(images[0, ..., 0], "GIF")
    one = lambda data, name="a.png": {"files": [("images", (name, data, "image/png"))]}  # noqa: E731
    return [
        ("/classify", one(b"this is not an image"), 415, "not an image"),
        ("/classify", one(good[:150]), 400, "corrupt or truncated PNG"),
        ("/classify", one(b""), 400, "empty"),
        ("/classify", one(gif, "a.gif"), 415, "unsupported image format GIF"),
        ("/classify", one(bomb), 413, "more than the limit of 40000000"),
        ("/classify", one(good + b"\0" * MAX_REQUEST_BYTES), 413, "exceeds"),
        (
            "/classify",
            {"files": [("images", (f"{i}.png", good, "image/png")) for i in range(65)]},
            413,
            "65 images in one request; the limit is 64",
        ),
        ("/classify", {"data": {"k": "3"}}, 400, "Field required"),
        ("/classify", {**one(good), "data": {"k": "0"}}, 422, "k must be between 1 and 10"),
        ("/classify", {**one(good), "data": {"k": "11"}}, 422, "k must be between 1 and 10"),
        (
            "/classify",
            {"files": [*one(good)["files"], ("k", ("k.png", good, "image/png"))]},
            400,
            "holds binary data",
        ),
        (
            "/classify",
            {
                "content": good,
                "headers": {"Content-Type": "multipart/form-data; boundary=nothere"},
            },
            400,
            "malformed multipart/form-data body",
        ),
        (
            "/classify_image",
            {"content": b"\x00\x01", "headers": {"Content-Type": "image/png"}},
            415,
            "not an image",
        ),
        (
            "/classify_image",
            {"content": b"", "headers": {"Content-Type": "image/png"}},
            400,
            "the request body is empty",
        ),
        (
            "/classify_image",
            {"content": b"x" * (MAX_REQUEST_BYTES + 1), "headers": {"Content-Type": "image/png"}},
            413,
            "exceeds",
        ),
        ("/classify_array", {"json": {"pixels": [[1, 2], [3]]}}, 422, "rectangular"),
        ("/classify_array", {"json": {"pixels": [[["a"] * 28] * 28]}}, 422, "numbers"),
        (
            "/classify_array",
            {"json": {"pixels": np.zeros((2, 32, 32, 3)).tolist()}},
            422,
            "must have shape N x 28 x 28 x 1, got 2 x 32 x 32 x 3",
        ),
        (
            "/classify_array",
            {"json": {"pixels": np.full((1, 28, 28, 1), 300).tolist()}},
            422,
            "in [0, 255]",
        ),
        (
            "/classify_array",
            {"content": b'{"pixels": [[[NaN]]]}', "headers": {"Content-Type": "application/json"}},
            None,
            "",
        ),
        ("/classify_array", {"json": {"pixels": []}}, 422, "must have shape"),
        # Values NumPy would take as numbers: strings, booleans, integers too big for a float.
        ("/classify_array", {"json": {"pixels": pixels_with("12")}}, 422, "no strings, booleans"),
        ("/classify_array", {"json": {"pixels": pixels_with(True)}}, 422, "no strings, booleans"),
        ("/classify_array", {"json": {"pixels": pixels_with(None)}}, 422, "no strings, booleans"),
        (
            "/classify_array",
            {"content": b'{"pixels": [[[' + b"9" * 401 + b"]]]}", "headers": JSON},
            422,
            "no strings, booleans",
        ),
        # Text where files belong is never fetched as a URL.
        ("/classify", {"data": {"images": "http://127.0.0.1:9/x.png"}}, 400, "URLs are not"),
        ("/classify", {"data": {"images": "just text"}}, 400, "file field holds text"),
        (
            "/classify",
            {"content": b'"http://127.0.0.1:9/x.png"', "headers": JSON},
            400,
            "an object",
        ),
        # Pathological JSON in a text field.
        ("/classify", {**one(good), "data": {"k": "[" * 20_000 + "]" * 20_000}}, 400, "nested"),
        ("/classify", {**one(good), "data": {"k": "9" * 5000}}, 400, "too many digits"),
        # BentoML's pickle input would run code from the request: refused.
        (
            "/classify_array",
            {
                "content": b"\x80\x04K\x01.",
                "headers": {"Content-Type": "application/vnd.bentoml+pickle"},
            },
            415,
            "not allowed",
        ),
        ("/classify_array", {"json": {"wrong": 1}}, 400, "Field required"),
        ("/classify_npy", npy(np.zeros(3)) | {"data": {"k": "0"}}, 422, "k must be between"),
        ("/classify_npy", {"files": [("array", ("a.npy", b"not npy", "x/y"))]}, 400, "not a NumPy"),
        ("/classify_npy", npy(np.array([None], dtype=object), allow_pickle=True), 422, "object"),
        ("/classify_npy", npy(np.zeros((65, 28, 28, 1), np.uint8)), 413, "65 images"),
        ("/classify_npy", npy(np.full((1, 28, 28), 256, np.uint16)), 422, "in [0, 255]"),
        ("/classify_npy", {"data": {"k": "3"}}, 400, "Field required"),
        ("/classify_array", {"files": [("pixels", ("p.png", good, "image/png"))]}, 400, "binary"),
    ]


def _assert_bad_inputs_get_4xx(client: httpx.Client, test_images) -> None:
    images, _ = test_images
    good = {"files": [("images", ("ok.png", png(images[0, ..., 0]), "image/png"))]}
    for route, kwargs, status, message in _bad_requests(images):
        response = client.post(route, **kwargs)
        if status is None:  # NaN in JSON: refused as invalid, the exact code is the parser's
            assert 400 <= response.status_code < 500, (route, response.status_code)
        else:
            assert response.status_code == status, (route, message, response.text[:300])
            body = response.json()
            text = str(body)
            assert message in text, (route, text[:300])
        assert client.post("/classify", **good).status_code == 200


def test_bad_inputs_get_4xx_with_a_reason_and_the_server_keeps_serving(client, test_images):
    _assert_bad_inputs_get_4xx(client, test_images)


def test_a_chunked_body_over_the_limit_is_refused_as_it_arrives(server):
    """No Content-Length to judge by: the server counts the body as it comes and answers 413
    long before the client has sent it all, instead of buffering it first."""
    import select
    import socket
    from urllib.parse import urlsplit

    where = urlsplit(server)
    chunk = b"\x00" * 65536
    sent = 0
    with socket.create_connection((where.hostname, where.port), timeout=30) as sock:
        sock.sendall(
            b"POST /classify_image HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n"
            + f"Authorization: Bearer {TOKEN}\r\n".encode()
            + b"Transfer-Encoding: chunked\r\n\r\n"
        )
        answer = b""
        while sent < 16 * MAX_REQUEST_BYTES:
            if select.select([sock], [], [], 0)[0]:
                break  # the server answered
            try:
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                break  # it closed the connection after answering
            sent += len(chunk)
        with contextlib.suppress(OSError):
            while b"]" not in answer:
                more = sock.recv(65536)
                if not more:
                    break
                answer += more
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"request body exceeds" in answer
    # Refused while the body was still coming (loopback buffers hold a few MiB in flight); the
    # previous middleware read all 16x the limit and answered nothing before.
    assert sent < 4 * MAX_REQUEST_BYTES, sent


def _log_lines_with(log: Path, text: str, timeout_s: float = 10) -> list[str]:
    """The server log's lines holding `text`, waited for: the log is written as it goes."""
    deadline = time.monotonic() + timeout_s
    while True:
        lines = [line for line in log.read_text().splitlines() if text in line]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.2)


def _request_id(response: httpx.Response) -> str:
    request_id = response.headers["x-bentoml-request-id"]
    assert re.fullmatch("[0-9a-f]{16}", request_id), request_id
    return request_id


def test_without_tracing_each_response_names_a_request_id_its_log_lines_carry(client, session_dir):
    """Tracing is off by default: although BentoML is configured to sample every request,
    no span is made (`sampled=0`). Each response still names its own request id, and the
    access log line of that request carries it."""
    ids = [_request_id(client.post("/metadata")) for _ in range(3)]
    assert len(set(ids)) == 3
    for request_id in ids:
        (line,) = _log_lines_with(session_dir / "serve.log", f"span={request_id},")
        assert "path=/metadata" in line and "status=200" in line
        assert "sampled=0" in line


def test_token_is_required(server):
    files = {"images": ("a.png", b"x", "image/png")}
    assert httpx.post(f"{server}/classify", files=files).status_code == 401
    wrong = httpx.post(f"{server}/classify", files=files, headers={"Authorization": "Bearer no"})
    assert wrong.status_code == 401
    assert "bearer token" in wrong.text


# --- batching and load ---------------------------------------------------------------------------


def _metric_samples(server: str) -> list:
    """Every sample on the service's `/metrics`, parsed by prometheus_client."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{server}/metrics", timeout=10).text
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def _histogram(server: str, name: str) -> dict[float, float]:
    """Cumulative counts by upper bound (`le`) of one histogram on the service's `/metrics`."""
    buckets: dict[float, float] = {}
    for sample in _metric_samples(server):
        if sample.name == f"{name}_bucket":
            le = float(sample.labels["le"])
            buckets[le] = buckets.get(le, 0.0) + sample.value
    return buckets


def _batch_histogram(server: str) -> tuple[float, float]:
    """(model calls, model calls that served a single request) from the service's histogram."""
    buckets = _histogram(server, "cnn_model_batch_requests")
    return buckets.get(float("inf"), 0.0), buckets.get(1.0, 0.0)


def test_worker_keeps_its_startup_objects_out_of_garbage_collections(server):
    """serving/heap.py: without it a full collection walks ~450,000 objects (~290 ms here)."""
    frozen = [s.value for s in _metric_samples(server) if s.name == "cnn_gc_frozen_objects"]
    assert frozen and min(frozen) > 100_000, frozen


def test_a_burst_is_batched_without_5xx_and_a_lone_request_after_it_waits_for_nothing(
    server, client, test_images
):
    """64 clients for 10 s, then 20 requests one at a time: those run one per model call, each
    at once (the eager batcher keeps no wait window learned under load; BentoML's CORK did)."""
    images, _ = test_images
    bodies = [png(images[i, ..., 0]) for i in range(16)]
    before_count, before_ones = _batch_histogram(server)
    statuses: list[int] = []
    stop_at = time.time() + 10

    def worker(i: int) -> list[int]:
        seen = []
        with httpx.Client(base_url=server, headers=AUTH, timeout=60) as c:
            while time.time() < stop_at:
                files = [("images", ("a.png", bodies[i % 16], "image/png"))]
                seen.append(c.post("/classify", files=files).status_code)
        return seen

    with concurrent.futures.ThreadPoolExecutor(64) as pool:
        for seen in pool.map(worker, range(64)):
            statuses.extend(seen)
    count, ones = _batch_histogram(server)
    assert len(statuses) >= 64
    assert not [s for s in statuses if s >= 500], sorted(set(statuses))
    assert set(statuses) == {200}
    batches, single = count - before_count, ones - before_ones
    assert batches > 0
    assert batches - single > 0, "no batch merged more than one request"
    assert batches < len(statuses)  # fewer model calls than requests

    calls_before, single_before = _batch_histogram(server)
    waits_before = _histogram(server, "cnn_model_queue_wait_seconds")
    for i in range(20):
        files = [("images", ("a.png", bodies[i % 16], "image/png"))]
        assert client.post("/classify", files=files).status_code == 200
    calls, single = _batch_histogram(server)
    waits = _histogram(server, "cnn_model_queue_wait_seconds")
    assert (calls - calls_before, single - single_before) == (20, 20)
    assert waits[float("inf")] - waits_before[float("inf")] == 20
    assert waits[0.01] - waits_before[0.01] == 20, "a lone request waited over 10 ms"


# --- further servers ------------------------------------------------------------------------
# Each `bentoml serve` empties BentoML's Prometheus folder (BENTOML_HOME/prometheus_multiproc_dir)
# when it starts, so the session server's /metrics lose their history: these tests come after
# every test that reads the session server's histograms.


def test_bad_inputs_without_a_token_configured_get_the_same_4xx(bento, session_dir, test_images):
    """The same hostile cases against the bento served with no API token: the token check
    must not be what stands between a bad request and a 5xx."""
    env = {**SMALL_LIMITS, "SERVING_API_TOKEN": ""}
    with (
        serving(bento[0], env, session_dir / "serve-open.log") as url,
        httpx.Client(base_url=url, timeout=60) as open_client,
    ):
        _assert_bad_inputs_get_4xx(open_client, test_images)


def health_checks_during_flood(
    url: str, headers: dict, clients: int = 16
) -> tuple[list[float], set[int]]:
    """`/livez` and `/readyz` latencies (ms), probed from a process of its own while `clients`
    large images are decoded at once, and the statuses the images got."""
    from urllib.parse import urlsplit

    from bench.health_probe import HealthProbe

    files = [("images", ("big.png", large_png(), "image/png"))]
    with (
        HealthProbe(urlsplit(url).port) as probe,
        httpx.Client(base_url=url, headers=headers, timeout=120) as flood,
        concurrent.futures.ThreadPoolExecutor(clients) as pool,
    ):
        sent = [pool.submit(flood.post, "/classify", files=files) for _ in range(clients)]
        statuses = {f.result().status_code for f in sent}
    assert not probe.errors, probe.errors[:3]
    assert len(probe.latencies_ms) >= 20, "the flood ended before the probe had started"
    return probe.latencies_ms, statuses


def _server_processes(url: str, marker: str) -> list:
    """The processes under the `bentoml serve` of `url` whose command line holds `marker`:
    `spawn_main` for the decoding processes (serving/decoding.py), the worker's module name
    for the service worker."""
    import psutil

    port = url.rsplit(":", 1)[1]
    for process in psutil.process_iter(["cmdline"]):
        if {"serve", "--port", port} <= set(process.info["cmdline"] or []):
            return [
                child
                for child in process.children(recursive=True)
                if marker in " ".join(child.cmdline())
            ]
    raise AssertionError(f"no `bentoml serve` on port {port}")


def _decoding_processes(url: str) -> list:
    return _server_processes(url, "spawn_main")


def test_health_checks_are_answered_while_large_images_are_decoded(server):
    """Large images decode in a process of their own, so the event loop keeps answering
    `/livez` and `/readyz` (`make bench WHAT=faults` measures the worst health check against
    a variant that decodes every image on the loop); this bound only catches a return to
    decoding on the loop."""
    latencies, statuses = health_checks_during_flood(server, AUTH)
    assert statuses == {200}
    assert max(latencies) < 500, f"a health check took {max(latencies):.0f} ms during the flood"
    assert _decoding_processes(server), "no decoding process under the server"


def test_a_killed_decoding_process_is_replaced_and_the_image_still_answered(server, client):
    """The decoding process dies (here: SIGKILL; in life, a decoder crash or the OOM killer):
    the next large image starts a new one and is answered, and small images never noticed."""
    files = [("images", ("big.png", large_png(), "image/png"))]
    assert client.post("/classify", files=files).status_code == 200
    before = _decoding_processes(server)
    for process in before:
        process.kill()
    answer = client.post("/classify", files=files)
    assert answer.status_code == 200, answer.text
    after = _decoding_processes(server)
    assert after and not {p.pid for p in after} & {p.pid for p in before}


def _read_until_closed(sock) -> bytes:
    answer = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(4096):
            answer += chunk
    return answer


def test_connections_that_never_finish_their_headers_are_closed(server, client):
    """Slowloris: a silent connection is closed after the header timeout (3 s on the test
    server); one that trickles header lines gets 408 with the reason; a slow body is not cut
    by it; and the server keeps serving."""
    import socket
    from urllib.parse import urlsplit

    where = (urlsplit(server).hostname, urlsplit(server).port)
    start = time.perf_counter()
    with socket.create_connection(where, timeout=30) as silent:
        assert _read_until_closed(silent) == b""
    assert 2.5 < time.perf_counter() - start < 10

    start = time.perf_counter()
    with socket.create_connection(where, timeout=30) as trickle:
        trickle.sendall(b"POST /classify HTTP/1.1\r\nHost: test\r\n")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for i in range(20):  # a header line a second, for longer than the timeout
                time.sleep(1)
                trickle.sendall(f"X-Slow-{i}: 1\r\n".encode())
        answer = _read_until_closed(trickle)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    assert b"request headers not received in time" in answer
    assert time.perf_counter() - start < 10

    body = json.dumps({"pixels": [[[0] * 28] * 28]}).encode()
    with socket.create_connection(where, timeout=30) as slow_body:
        slow_body.sendall(
            b"POST /classify_array HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {TOKEN}\r\nContent-Length: {len(body)}\r\n".encode()
            + b"Connection: close\r\n\r\n"
        )
        time.sleep(4)  # past the header timeout: headers were complete, so it does not apply
        slow_body.sendall(body)
        answer = _read_until_closed(slow_body)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]

    # Pipelined requests, the second sent before the first is answered, are both answered,
    # and the connection, idle afterwards, is closed (by the header or keep-alive timeout).
    with socket.create_connection(where, timeout=30) as pipelined:
        pipelined.sendall(b"GET /livez HTTP/1.1\r\nHost: test\r\n\r\n" * 2)
        time.sleep(1)
        start = time.perf_counter()
        answer = _read_until_closed(pipelined)
    assert answer.count(b"HTTP/1.1 200") == 2, answer[:500]
    assert 1.5 < time.perf_counter() - start < 10
    assert client.get("/livez").status_code == 200


def test_requests_past_the_bytes_in_flight_budget_get_503_before_they_are_read(server, client):
    """Requests whose bodies are still arriving hold their bytes of the budget (twice the
    request limit: 8 MiB on the test server); a third one that would pass it gets 503 with
    Retry-After at once, unread, and is admitted once the first two are gone."""
    import socket
    from urllib.parse import urlsplit

    where = (urlsplit(server).hostname, urlsplit(server).port)
    third = b" " * (3 * 1024 * 1024)
    headers = {"Content-Type": "application/json"}
    with contextlib.ExitStack() as held:
        for _ in range(2):
            holder = held.enter_context(socket.create_connection(where, timeout=30))
            head = (
                "POST /classify_array HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                f"Authorization: Bearer {TOKEN}\r\nContent-Length: {MAX_REQUEST_BYTES}\r\n\r\n"
            )
            holder.sendall(head.encode() + b" " * 65536)
        time.sleep(0.5)
        busy = client.post("/classify_array", content=third, headers=headers)
        assert busy.status_code == 503, busy.text
        assert busy.headers["retry-after"] == "1"
        assert "bytes of requests in flight" in busy.json()[0]["error"]
    time.sleep(0.5)
    admitted = client.post("/classify_array", content=third, headers=headers)
    assert admitted.status_code == 400  # past the guard: BentoML finds no JSON in it


@pytest.fixture(scope="module")
def small_queue_server(bento, session_dir):
    """A server whose queue holds 512 images, one image per model call (so a 64-image request
    keeps the model busy while others arrive), BentoML's tracing on and sampling every request,
    and its access log turned off through BentoML's own configuration."""
    env = {
        "SERVING_MAX_QUEUED_IMAGES": "512",
        "SERVING_MAX_BATCH_SIZE": "1",
        "SERVING_API_TOKEN": "",
        "SERVING_TRACING": "on",
        **ACCESS_LOG_OFF_AND_SAMPLE_EVERY_REQUEST,
    }
    with serving(bento[0], env, session_dir / "serve-small-queue.log") as url:
        yield url


def test_a_full_queue_answers_503_with_retry_after_and_the_reason(small_queue_server, test_images):
    """24 concurrent 64-image requests, three times what the queue holds: those that find it
    full get 503 at once with Retry-After and why; all others are answered. They go as `.npy`
    files, read in microseconds, so that they reach the queue together: as JSON, parsing
    paced them to what one image per model call drains, and none was shed in one CI run."""
    images, _ = test_images
    body = npy(np.concatenate([images, images])[:64])

    def send(_: int) -> httpx.Response:
        return httpx.post(f"{small_queue_server}/classify_npy", **body, timeout=60)

    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        responses = list(pool.map(send, range(24)))
    statuses = [r.status_code for r in responses]
    shed = [r for r in responses if r.status_code == 503]
    assert set(statuses) == {200, 503}, statuses
    assert shed[0].headers["retry-after"] == "1"
    assert "queue is full" in shed[0].json()[0]["error"]
    assert send(0).status_code == 200  # and it serves again once the queue drains


def _counter(server: str, name: str, **labels: str) -> float:
    """The sum of a counter's samples on `/metrics` whose labels include `labels`."""
    return sum(
        sample.value
        for sample in _metric_samples(server)
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def _raw_request(url: str, path: str, **content) -> bytes:
    """The bytes of an HTTP/1.1 POST as httpx would send them, to write to a socket."""
    request = httpx.Request("POST", f"{url}{path}", **content)
    head = "".join(f"{k}: {v}\r\n" for k, v in request.headers.items())
    return f"POST {path} HTTP/1.1\r\n{head}\r\n".encode() + request.read()


def _status(sock: socket.socket) -> int:
    """The status code of the response that `sock` receives."""
    head = b""
    while b"\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            return 0
        head += chunk
    return int(head.split(b" ", 2)[1])


def test_a_client_that_hangs_up_leaves_the_queue_and_its_images_are_never_computed(
    small_queue_server, test_images
):
    """serving/http/lifetime.py: 7 clients queue 448 images (one per model call, 0.4 s of work
    here); an eighth queues 64 behind them and hangs up. Its request is cancelled and recorded
    as 499, the model never computes its images, and the others are answered. uvicorn alone
    would have kept it queued and computed all 512."""
    images, _ = test_images
    url = small_queue_server
    host, port = url.removeprefix("http://").split(":")
    request = _raw_request(url, "/classify_npy", **npy(np.concatenate([images, images])[:64]))
    computed = "cnn_model_batch_images_sum"
    abandoned = {"endpoint": "/classify_npy", "http_response_code": "499"}
    before = _counter(url, computed)
    abandoned_before = _counter(url, "bentoml_service_request_total", **abandoned)
    holders = [socket.create_connection((host, int(port)), timeout=60) for _ in range(7)]
    try:
        for holder in holders:  # written before the leaver's, so queued before it
            holder.sendall(request)
        with socket.create_connection((host, int(port)), timeout=10) as leaver:
            leaver.sendall(request)
            time.sleep(0.03)  # read and queued behind the others
        statuses = [_status(holder) for holder in holders]
    finally:
        for holder in holders:
            holder.close()
    assert statuses == [200] * 7
    deadline = time.time() + 10
    while time.time() < deadline:
        gone = _counter(url, "bentoml_service_request_total", **abandoned) - abandoned_before
        if gone:
            break
        time.sleep(0.1)
    assert gone == 1, "the request of the client that hung up was not cancelled"
    assert _counter(url, computed) - before < 8 * 64, "the model computed its images anyway"
    assert httpx.post(f"{url}/classify_npy", **npy(images), timeout=60).status_code == 200


def test_tracing_on_keeps_bentoml_spans_and_the_access_log_can_be_turned_off(
    small_queue_server, session_dir
):
    """With SERVING_TRACING=on BentoML's own tracing makes the spans it is configured to
    sample (`sampled=1`), and the request id is the span's. BentoML's `logging.access.enabled`
    off: a request leaves no access line, only the error line of a refused request."""
    refused = httpx.post(f"{small_queue_server}/classify_npy", files=npy(np.zeros(3))["files"])
    assert refused.status_code == 422
    request_id = _request_id(refused)
    (line,) = _log_lines_with(session_dir / "serve-small-queue.log", f"span={request_id},")
    assert "Exception on /classify_npy" in line and "sampled=1" in line
    served = httpx.post(f"{small_queue_server}/metadata", timeout=30)
    assert served.status_code == 200
    assert not _log_lines_with(
        session_dir / "serve-small-queue.log", f"span={_request_id(served)},", timeout_s=2
    )
    assert not _log_lines_with(session_dir / "serve-small-queue.log", "path=/", timeout_s=0)


@pytest.fixture(scope="module")
def ten_view_model(session_dir):
    """A quick LeNet run with the flip, shifts (10 views at test time) and batch norm, packaged
    into the test BentoML store under its own name: the session sweep's champion has one view
    and no batch norm."""
    import mlflow
    from mlflow.tracking import MlflowClient

    from pipeline.config import load_config
    from pipeline.selection import package_run
    from pipeline.sweep import train

    store = session_dir / "mlflow-views"
    store.mkdir()
    overrides = quick_overrides(
        store,
        "models=[lenet]",
        "augment.test_flip=true",
        "augment.test_shift=1",
        "model.batch_norm=true",
        "tracking.promote=false",
    )
    previous = mlflow.get_tracking_uri()
    try:
        result = train(load_config(paths.CONFIG_DIR / "quick.yaml", overrides))
        run = MlflowClient().get_run(result.runs[0].run_id)
        tag = package_run(run, "cnn-test-ten-views")
    finally:
        mlflow.set_tracking_uri(previous)  # the session sweep's store, for the tests after
    return run, tag


def test_a_server_told_to_answers_with_fewer_views_than_its_model(
    ten_view_model, session_dir, test_images
):
    """`SERVING_VIEWS=flip` on a 10-view model: the same network, answering with the image and
    its mirror only, and /metadata says so with the accuracy the run measured for that."""
    import bentoml
    import keras

    from pipeline.scoring import softmax
    from pipeline.tta import FLIP_ONLY_METRIC, base_model, flip_averaged
    from serving.model import choose_thread_pools, usable_cpus

    run, tag = ten_view_model
    images = test_images[0][:8]
    env = {"SERVING_MODEL": tag, "SERVING_VIEWS": "flip", "SERVING_API_TOKEN": ""}
    with serving("serving.service:Classifier", env, session_dir / "serve-views.log") as url:
        info = httpx.post(f"{url}/metadata", timeout=30).json()
        body = {"pixels": images.tolist(), "k": 10}
        answer = httpx.post(f"{url}/classify_array", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    assert (info["test_time_views"], info["served_views"]) == (10, 2)
    assert info["served_test_accuracy"] == pytest.approx(run.data.metrics[FLIP_ONLY_METRIC])
    assert info["test_accuracy"] == pytest.approx(run.data.metrics["test_accuracy"])
    # The thread pools any averaged model gets (serving/model.py), as TensorFlow reads them
    # back; on 2 cores, (1, 2).
    pools = choose_thread_pools(multi_view=True, gpu=False, cpus=usable_cpus())
    assert (info["intra_op_threads"], info["inter_op_threads"]) == (pools.intra_op, pools.inter_op)

    model = keras.saving.load_model(
        bentoml.models.get(tag).path_of("model.keras"), safe_mode=True, compile=False
    )
    pixels = images.astype(np.float32)
    # The server folds LeNet's batch norm into the convolution or dense layer before it
    # (pipeline/batch_norm.py), the reference computes it in Keras' own ops: the same answers.
    layers = model._flatten_layers(include_self=False, recursive=True)
    assert info["folded_batch_norm_layers"] == sum(
        isinstance(layer, keras.layers.BatchNormalization) for layer in layers
    )
    assert info["folded_batch_norm_layers"] > 0
    assert info["fused_batch_norm_layers"] == 0  # each follows a conv or dense layer
    flip = softmax(np.asarray(flip_averaged(base_model(model))(pixels)))
    assert_matches(answer.json(), flip, info["class_names"], k=10)
    # ... which is not what the 10-view model says, so the setting is what took effect.
    assert not np.allclose(flip, softmax(np.asarray(model(pixels))), atol=1e-4)


def project_modules_missing_from(src: Path, entry: str) -> set[str]:
    """The project modules that `entry` imports, directly or not, and that `src` lacks.

    The test server can import the project from its editable install too, so only this check
    shows that the bento's `include` list is complete for a container.
    """
    missing, seen, todo = set(), set(), [entry]
    while todo:
        for node in ast.walk(ast.parse((src / todo.pop()).read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            else:
                continue
            for name in set(names) - seen:
                seen.add(name)
                parts = Path(*name.split("."))
                for file in (parts.with_suffix(".py"), parts / "__init__.py"):
                    if (paths.PROJECT_ROOT / file).is_file():  # a module of this project
                        if (src / file).is_file():
                            todo.append(str(file))
                        else:
                            missing.add(name)
    return missing


def _readme_commands() -> list[str]:
    """The shell lines of the README's service block (continuations joined), as a user
    copies them, minus `make serve` itself."""
    readme = (paths.PROJECT_ROOT / "README.md").read_text()
    block = readme.split("## The prediction service", 1)[1].split("```bash\n", 1)[1]
    block = block.split("```", 1)[0].replace("\\\n", " ")
    lines = [line.split("  #", 1)[0].strip() for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith("make ")]


def test_the_readme_commands_answer_as_it_says(server, tmp_path, test_images):
    """Each curl of the README's service section, run as written (plus the token the test
    server wants, and its port), answers 200 with labels; the shoe is a real test image."""
    Image.fromarray(test_images[0][0, ..., 0]).save(tmp_path / "shoe.png")
    commands = _readme_commands()
    assert sum("curl" in c for c in commands) == 5, commands
    port = server.rsplit(":", 1)[1]
    for command in commands:
        command = command.replace("127.0.0.1:3000", f"127.0.0.1:{port}")
        command = command.replace("curl ", f"curl -sS -H 'Authorization: Bearer {TOKEN}' ")
        done = subprocess.run(
            command,
            shell=True,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PATH": f"{paths.BIN_DIR}:{os.environ['PATH']}"},
        )
        assert done.returncode == 0, (command, done.stderr)
        if "curl" in command:
            answer = json.loads(done.stdout)
            assert "error" not in json.dumps(answer), (command, answer)
            if "/metadata" in command:
                assert answer["class_names"][9] == "Ankle boot"
            else:
                assert answer[0]["top"][0]["label"] in answer_labels(), (command, answer)


def answer_labels() -> set[str]:
    from pipeline.data import BUILT_IN

    return set(BUILT_IN["fashion_mnist"].class_names)


def _make(target: str) -> subprocess.CompletedProcess:
    """`make -s TARGET` in the project, as a user runs it (the test BentoML store)."""
    command = ["make", "--no-print-directory", "-s", target]
    return subprocess.run(
        command, cwd=paths.PROJECT_ROOT, capture_output=True, text=True, timeout=300
    )


def test_make_bento_prints_its_tag_and_make_next_what_to_do(sweep):
    """The end of `make train`: the bento's tag in the project's words, not BentoML's banner,
    then the next steps."""
    built = _make("bento")
    assert built.returncode == 0, built.stderr[-2000:]
    (line,) = built.stdout.strip().splitlines()
    assert re.fullmatch(r"bento: cnn_classifier:\w+ \(make containerize builds its image\)", line)
    assert "BentoCloud" not in built.stdout + built.stderr
    following = _make("next").stdout
    for step in ("make ui", "make serve", "curl -F images=@shoe.png", "make results"):
        assert step in following


def test_bento_and_dockerfile(bento):
    _, path = bento
    dockerfile = (path / "env" / "docker" / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in dockerfile
    assert "EXPOSE 3000" in dockerfile
    assert "ENTRYPOINT" in dockerfile and "entrypoint.sh" in dockerfile
    requirements = (path / "env" / "python" / "requirements.txt").read_text()
    assert "tensorflow==2.21.0" in requirements and "keras==3.15.1" in requirements
    assert not re.search(r"^(matplotlib|mlflow|scikit-learn)==", requirements, re.M)
    assert project_modules_missing_from(path / "src", "serving/service.py") == set()
    # Serving ships no training code: of pipeline/, only the modules shared with training.
    shipped = {str(p.relative_to(path / "src")) for p in (path / "src" / "pipeline").glob("*.py")}
    assert shipped == SHARED_MODULES


def test_the_bento_service_loads_without_mlflow_scikit_learn_or_training_modules(bento):
    """The bento's own copy of the service and of the model loader its workers import, from
    its folder alone, with MLflow, scikit-learn and matplotlib made unimportable (as in the
    bento's image, whose requirements lack them; Keras imports the latter two where they are
    installed): both import, and reach only the shared modules of pipeline/."""
    _, path = bento
    probe = textwrap.dedent(
        """
        import importlib.abc, sys
        class Absent(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in ("mlflow", "sklearn", "matplotlib"):
                    raise ImportError(f"{name} is not in the bento")
        sys.meta_path.insert(0, Absent())
        import serving.service, serving.model
        print(sorted(m for m in sys.modules if m.split(".")[0] == "pipeline"))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=path / "src",
        env={**os.environ, "PYTHONPATH": str(path / "src")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = set(ast.literal_eval(proc.stdout.strip().splitlines()[-1]))
    shared = {"pipeline." + Path(p).stem for p in SHARED_MODULES} - {"pipeline.__init__"}
    assert loaded == {"pipeline", *shared}
    manifest = yaml.safe_load((path / "bento.yaml").read_text())
    services = {s["name"]: s for s in manifest["services"]}
    assert services["cnn_classifier"]["models"][0]["tag"].startswith("cnn-classifier:")


def test_gpu_bento_serves_on_jax_with_cuda_wheels_and_asks_for_a_gpu(sweep):
    """The GPU bento runs Keras on JAX: jax[cuda12] brings CUDA as wheels, so there is no CUDA
    base image and no TensorFlow in it."""
    _, path = build_bento("bentofile.gpu.yaml", {**os.environ, "SERVING_GPU": "1"})
    dockerfile = (path / "env" / "docker" / "Dockerfile").read_text()
    assert not re.search(r"^FROM nvidia/cuda", dockerfile, re.M)
    requirements = (path / "env" / "python" / "requirements.txt").read_text()
    assert "jax-cuda12-plugin==0.10.2" in requirements and "nvidia-cudnn-cu12" in requirements
    assert "tensorflow" not in requirements
    manifest = yaml.safe_load((path / "bento.yaml").read_text())
    services = {s["name"]: s for s in manifest["services"]}
    assert services["cnn_classifier"]["config"]["resources"] == {"gpu": 1}
    for name, value in (("SERVING_GPU", "1"), ("KERAS_BACKEND", "jax")):
        assert {"name": name, "value": value, "stage": "all"} in manifest["envs"]


def test_a_killed_worker_is_replaced_and_its_decoding_process_goes_with_it(server, test_images):
    """Last, since it restarts the session server's worker. SIGKILL to the worker (the OOM
    killer's way): BentoML's arbiter starts another on the same socket, a request sent
    meanwhile waits in the socket's queue and is answered, and the dead worker's decoding
    process exits instead of living on (bench/faults.py measures this during a burst)."""
    import psutil

    (worker,) = _server_processes(server, "_bentoml_impl.worker.service")
    decoders = [p for p in worker.children() if "spawn_main" in " ".join(p.cmdline())]
    assert decoders
    worker.kill()
    files = [("images", ("a.png", png(test_images[0][0, ..., 0]), "image/png"))]
    answer = httpx.post(f"{server}/classify", files=files, headers=AUTH, timeout=120)
    assert answer.status_code == 200, answer.text
    _, still_running = psutil.wait_procs(decoders, timeout=5)
    assert not still_running, "the killed worker's decoding process lives on"
