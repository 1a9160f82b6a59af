"""The generator as an MLflow model: logged by the `generator_model` catalog entry, loaded as a pyfunc
model, and answered over HTTP by a real `mlflow models serve` on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from uvit_pipeline.sampling.pipeline import UViTGenerator
from uvit_pipeline.serving import GeneratorModelDataset, decode_image

from .sampling.test_pipeline import CLASS_KWARGS, _export

NAMES = ["red", "green", "blue", "cyan"]


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """A tiny class model logged into a fresh sqlite store through the catalog dataset."""
    root = tmp_path_factory.mktemp("serving")
    checkpoint = _export(root / "ckpt", CLASS_KWARGS, data={"kind": "pixels"})
    uri = f"sqlite:///{root / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("serving", artifact_location=str(root / "mlruns"))
    dataset = GeneratorModelDataset(name="generator")
    spec = {"checkpoint": str(checkpoint), "class_names": NAMES, "defaults": {"steps": 3}}
    try:
        with mlflow.start_run(experiment_id=experiment) as run:
            dataset.save(spec)
        model = dataset.load()
    finally:
        mlflow.set_tracking_uri(previous)
    direct = UViTGenerator.from_pretrained(checkpoint, class_names=NAMES, device="cpu")
    return {"uri": uri, "run_id": run.info.run_id, "model": model, "direct": direct, "root": root}


def test_logged_model_answers_a_dataframe_with_the_generators_images(logged):
    frame = pd.DataFrame({"class": ["green", "3"], "seed": [4, 5]})
    out = logged["model"].predict(frame)
    assert list(out.columns) == ["condition", "seed", "image"] and len(out) == 2
    assert out["condition"].tolist() == ["green", "3"]
    for i, (cls, seed) in enumerate([("green", 4), (3, 5)]):
        want = logged["direct"]([cls], steps=3, seed=seed)[0]
        np.testing.assert_array_equal(np.asarray(decode_image(out["image"][i])), np.asarray(want))
    with pytest.raises(Exception, match="needs a `class` value"):
        logged["model"].predict(pd.DataFrame({"prompt": ["a red circle"]}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict, timeout: float) -> dict:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_mlflow_models_serve_answers_a_request_with_images(logged):
    port = _free_port()
    bin_dir = str(Path(sys.executable).parent)  # `mlflow` and `uvicorn` of this environment
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": logged["uri"],
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    command = [
        os.path.join(bin_dir, "mlflow"), "models", "serve", "-m",
        f"runs:/{logged['run_id']}/generator", "--env-manager", "local",
        "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip
    log = open(logged["root"] / "serve.log", "wb")  # noqa: SIM115 - closed below
    server = subprocess.Popen(command, env=env, stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (logged["root"] / "serve.log").read_text()[-2000:]
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the model server did not start in 120 s"
                time.sleep(0.5)
        body = {"dataframe_split": {"columns": ["class", "seed"], "data": [["blue", 7]]}}
        answer = _post(f"http://127.0.0.1:{port}/invocations", body, timeout=60)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()
    (row,) = answer["predictions"]
    assert row["condition"] == "blue" and row["seed"] == 7
    image = decode_image(row["image"])
    want = logged["direct"](["blue"], steps=3, seed=7)[0]
    np.testing.assert_array_equal(np.asarray(image), np.asarray(want))


def test_the_model_exists_once_the_experiment_holds_one(logged):
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(logged["uri"])
    try:
        assert GeneratorModelDataset(name="generator", experiment="serving").exists()
        assert not GeneratorModelDataset(name="other", experiment="serving").exists()
        assert not GeneratorModelDataset(name="generator", experiment="nowhere").exists()
    finally:
        mlflow.set_tracking_uri(previous)
