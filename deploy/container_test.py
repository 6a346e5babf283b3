"""`make container-test`: run the bento's image and check that it answers like `bentoml serve`.

Builds the image first if it is missing (`make containerize`). The container and a
`bentoml serve` of the same bento on the host, with the environment the image sets (the GPU
bento's Keras backend), each get the same real Fashion-MNIST PNGs:
labels and probabilities must agree, and so must the model card and the 400 (with its reason)
for a PNG cut short. The container is removed at the end, whatever happened.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import httpx
import numpy as np

from bench.processes import ServerProcess, free_port
from bench.serving import as_pngs, fashion_test_images
from pipeline import paths

BENTOML = str(paths.BIN_DIR / "bentoml")
CONTAINERIZE = str(paths.PROJECT_ROOT / "deploy/container/containerize.sh")


def engine() -> list[str]:
    """The command that runs containers here: Docker where an engine answers, else Podman."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "info"], capture_output=True).returncode == 0:
        return [docker]
    podman = shutil.which("podman")
    if podman:
        conf = paths.PROJECT_ROOT / "deploy/container/containers.conf"
        os.environ.setdefault("CONTAINERS_CONF", str(conf))
        return [podman]
    raise SystemExit("container-test: no Docker engine or Podman here (apt-get install podman)")


def bento_envs(tag: str) -> dict[str, str]:
    """The environment the bento's image sets (bentofile `envs`: the GPU bento's
    KERAS_BACKEND=jax among them), for the reference server on the host to match."""
    from pathlib import Path

    import yaml

    path = subprocess.check_output([BENTOML, "get", tag, "-o", "path"], text=True).strip()
    manifest = yaml.safe_load((Path(path) / "bento.yaml").read_text())
    return {env["name"]: str(env["value"]) for env in manifest.get("envs") or []}


def image_of(tag: str) -> str:
    info = json.loads(subprocess.check_output([BENTOML, "get", tag, "-o", "json"], text=True))
    return f"{info['name']}:{info['version']}"


def ensure_image(run: list[str], tag: str) -> str:
    image = image_of(tag)
    if subprocess.run([*run, "image", "inspect", image], capture_output=True).returncode != 0:
        print(f"{image} is not built yet: building it (make containerize)", flush=True)
        subprocess.run([CONTAINERIZE, tag], check=True, stdout=subprocess.DEVNULL)
    return image


def wait_ready(url: str, seconds: float) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit(f"container-test: the container was not ready within {seconds:.0f} s")


def answers(url: str, pngs: list[bytes]) -> dict:
    """What a server says to the checks: classify, the raw-body route, the card, a bad PNG."""
    with httpx.Client(base_url=url, timeout=60) as client:
        files = [("images", (f"{i}.png", data, "image/png")) for i, data in enumerate(pngs)]
        classify = client.post("/classify", files=files, data={"k": "3"})
        raw = client.post("/classify_image", content=pngs[0], headers={"Content-Type": "image/png"})
        cut = pngs[1][: len(pngs[1]) // 2]
        bad = client.post("/classify", files=[("images", ("cut.png", cut, "image/png"))])
        card = client.post("/metadata", json={}).json()
    assert classify.status_code == raw.status_code == 200, (classify.text, raw.text)
    return {
        "classify": classify.json(),
        "raw": raw.json(),
        "bad": (bad.status_code, bad.json()[0]["error"]),
        "card": {k: card[k] for k in ("model_tag", "run_id", "registry_version", "class_names")},
    }


def same_predictions(ours: list[dict], theirs: list[dict]) -> bool:
    for a, b in zip(ours, theirs, strict=True):
        if [t["label"] for t in a["top"]] != [t["label"] for t in b["top"]]:
            return False
        probs_a = [t["probability"] for t in a["top"]]
        probs_b = [t["probability"] for t in b["top"]]
        if not np.allclose(probs_a, probs_b, atol=1e-5):
            return False
    return True


def main(tag: str) -> None:
    run = engine()
    image = ensure_image(run, tag)
    port = free_port()
    name = f"cnn-container-test-{port}"
    options = ["--runtime", "runc"] if run[0].endswith("podman") else []
    pngs = as_pngs(fashion_test_images(8))
    subprocess.run(
        [*run, "run", "-d", *options, "--name", name, "-p", f"127.0.0.1:{port}:3000", image],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    reference = None
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, 300)
        print(f"{image} is ready on {url}", flush=True)
        container = answers(url, pngs)
        reference = ServerProcess(
            [BENTOML, "serve", tag, "--host", "127.0.0.1", "--port", "{port}"],
            {**bento_envs(tag), "SERVING_API_TOKEN": ""},
            "/readyz",
        )
        host = answers(reference.url, pngs)
    finally:
        subprocess.run([*run, "rm", "-f", name], capture_output=True)
        if reference is not None:
            reference.stop()
    checks = {
        "8 PNGs through /classify: labels and probabilities": same_predictions(
            container["classify"], host["classify"]
        ),
        "one PNG as the raw body of /classify_image": same_predictions(
            container["raw"], host["raw"]
        ),
        "the model card": container["card"] == host["card"],
        "a PNG cut short: 400 and the same reason": container["bad"] == host["bad"]
        and container["bad"][0] == 400,
    }
    for check, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {check}")
    print(f"container {name} removed")
    if not all(checks.values()):
        raise SystemExit(1)
    print(f"{image} answers like `bentoml serve {tag}`")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "cnn_classifier:latest")
