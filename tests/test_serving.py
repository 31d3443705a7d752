"""Serving a bundle: the runtime, the serving files, and the reference HTTP server on a free port."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, VOCAB
from serving_bundles import TEXTS, make_bundle

from distilprune.export.serving import package, runtime
from distilprune.export.serving.triton_local import free_port


@pytest.fixture(scope="module")
def served_bundle(tmp_path_factory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("serving"))


def test_runtime_tokenizes_like_the_export_and_reproduces_the_parity_logits(served_bundle):
    parity = json.loads((served_bundle / "parity.json").read_text())
    engine = runtime.BundleRuntime(served_bundle, threads=1)
    encoded = engine.encode(parity["texts"])
    assert encoded.input_ids.tolist() == parity["inputs"]["input_ids"]
    assert encoded.attention_mask.tolist() == parity["inputs"]["attention_mask"]
    logits = engine.infer(encoded)
    assert np.abs(logits - np.asarray(parity["models"]["fp32"]["logits"])).max() < 1e-4
    predictions = engine.predict(parity["texts"])
    assert [p["label_id"] for p in predictions] == parity["models"]["fp32"]["argmax"]
    for p in predictions:
        assert abs(sum(p["scores"].values()) - 1) < 1e-5 and p["score"] == max(p["scores"].values())


def test_runtime_flags_truncation_at_the_window(served_bundle):
    engine = runtime.BundleRuntime(served_bundle, threads=1)
    long_text = " ".join(["movie"] * 40)  # 40 words > 16 tokens
    encoded = engine.encode(["good movie", long_text])
    assert encoded.truncated == [False, True]
    assert encoded.input_ids.shape == (2, 16) and encoded.attention_mask[1].sum() == 16
    assert engine.encode(["good"], pad_to=16).input_ids.shape == (1, 16)


@pytest.mark.parametrize("payload, status, words", [
    ([1, 2], 400, 'JSON object with a "texts" field'),
    ({"text": ["a"]}, 400, '"texts" field'),
    ({"texts": 5}, 400, "must be a list of strings"),
    ({"texts": []}, 400, "is empty"),
    ({"texts": ["a", 3]}, 400, '"texts"[1] is int'),
    ({"texts": ["a"] * 9}, 413, "at most 8"),
])
def test_bad_requests_are_named(payload, status, words):
    with pytest.raises(runtime.RequestError) as caught:
        runtime.parse_texts(payload, max_texts=8)
    assert caught.value.status == status and words in str(caught.value)


def test_manifest_check_refuses_a_changed_bundle(served_bundle, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(served_bundle, copy)
    assert runtime.check_manifest(copy) > 10
    (copy / "serving_runtime.py").write_text("# changed\n")
    with pytest.raises(runtime.BundleError, match=r"serving_runtime.py \(sha256 differs"):
        runtime.check_manifest(copy)


def test_serving_files_and_triton_configs_parse(served_bundle):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    serving = json.loads((served_bundle / "serving.json").read_text())
    assert serving["batched_model"] == "model.onnx" and serving["task"] == "sequence_classification"
    configs = {}
    for name in ("tiny-text", "tiny-tokenize", "tiny-postprocess", "tiny-ensemble", "tiny"):
        configs[name] = text_format.Parse((served_bundle / "triton" / name / "config.pbtxt").read_text(),
                                          model_config_pb2.ModelConfig())
    text = configs["tiny-text"]
    assert text.backend == "python" and text.max_batch_size == 8
    assert list(text.dynamic_batching.preferred_batch_size) == [4, 8]
    assert [i.data_type for i in text.input] == [model_config_pb2.TYPE_STRING]
    assert [o.name for o in text.output] == ["LABEL", "SCORE", "SCORES", "TRUNCATED"]
    assert text.model_warmup[0].inputs["TEXT"].input_data_file == "text"
    assert [w.batch_size for w in text.model_warmup] == [1, 8]  # one text, then the largest call
    assert (served_bundle / "triton" / "tiny-text" / "warmup" / "text").read_bytes() == b"\x12\x00\x00\x00a warm-up sentence"
    version = served_bundle / "triton" / "tiny-text" / "1"
    assert {"model.py", "serving_runtime.py", "model.onnx", "tokenizer.json", "input_spec.json", "serving.json"} <= \
           {p.name for p in version.iterdir()}
    steps = [s.model_name for s in configs["tiny-ensemble"].ensemble_scheduling.step]
    assert steps == ["tiny-tokenize", "tiny", "tiny-postprocess"]
    assert list(configs["tiny-tokenize"].output[0].dims) == [16]  # padded to the window


def test_grid_settings_prefer_the_batch_sizes_that_pay_off():
    cells = [{"batch_size": 1, "seq_len": 128, "p50": 2.0}, {"batch_size": 8, "seq_len": 128, "p50": 12.0},
             {"batch_size": 32, "seq_len": 128, "p50": 80.0}, {"batch_size": 8, "seq_len": 32, "p50": 1.0}]
    settings = package.settings_from_grid(cells, threads=2, cpus=8)
    # 12/8 = 1.5 ms per text beats 2.0 at batch 1; 80/32 = 2.5 does not
    assert settings == {"preferred": [8], "max_batch_size": 32, "instances": 4, "threads": 2}


# --------------------------------------------------------------------------------------------
# the reference HTTP server, as a process on a free port


def run_concurrently(send, batches: list) -> list:
    """``send(batch)`` for every batch at once, one thread each; an exception in any thread is raised here."""
    with ThreadPoolExecutor(max_workers=len(batches)) as pool:
        return list(pool.map(send, batches))


class Server:
    """``distilprune serve`` in a child process; ``request`` sends one HTTP request to it."""

    def __init__(self, bundle: Path, *args: str):
        self.port = free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "distilprune.train.cli", "serve", str(bundle), "--port", str(self.port),
             "--threads", "1", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited {self.process.returncode}: {self.process.stderr.read()[-2000:]}")
            try:
                if self.request("GET", "/v1/health/ready")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError("server not ready in time")

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, dict | str]:
        import http.client

        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        connection.request(method, path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        data = response.read().decode()
        connection.close()
        try:
            return response.status, json.loads(data)
        except ValueError:
            return response.status, data

    def predict(self, texts) -> tuple[int, dict]:
        return self.request("POST", "/v1/predict", json.dumps({"texts": texts}).encode())

    def stop(self) -> bool:
        """SIGTERM; True when the server drained and ended by that signal or with 0, without a traceback."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=60)
        return code in (0, -signal.SIGTERM) and "Traceback" not in self.process.stderr.read()


@pytest.fixture(scope="module")
def server(served_bundle):
    running = Server(served_bundle, "--max-batch", "8", "--max-delay-ms", "20")
    running.wait_ready()
    yield running
    assert running.stop()


def test_server_predicts_metadata_and_health(server, served_bundle):
    status, body = server.predict(TEXTS)
    assert status == 200 and body["model"] == "model.onnx"
    expected = runtime.BundleRuntime(served_bundle, threads=1).predict(TEXTS)
    assert [p["label"] for p in body["predictions"]] == [p["label"] for p in expected]
    assert server.request("GET", "/v1/health/live")[0] == 200
    status, meta = server.request("GET", "/v1/metadata")
    assert status == 200 and meta["task"] == "sequence_classification" and meta["max_seq_len"] == 16
    assert meta["max_batch"] == 8 and meta["manifest_files_checked"] > 10


@pytest.mark.parametrize("body, status, words", [
    (b"{not json", 400, "not valid JSON"),
    (b'{"text": ["a"]}', 400, '"texts" field'),
    (b'{"texts": [1]}', 400, "not a string"),
    (b'{"texts": []}', 400, "is empty"),
    (json.dumps({"texts": ["a"] * 9}).encode(), 413, "at most 8"),
])
def test_server_answers_bad_requests_with_4xx_and_one_line(server, body, status, words):
    code, answer = server.request("POST", "/v1/predict", body)
    assert code == status and words in answer["error"] and "\n" not in answer["error"]


def test_server_says_when_a_text_was_truncated(server):
    status, body = server.predict(["good movie", " ".join(["movie"] * 40)])
    assert status == 200 and [p["truncated"] for p in body["predictions"]] == [False, True]


def test_server_batches_concurrent_requests_and_answers_each_alone(server, served_bundle):
    engine = runtime.BundleRuntime(served_bundle, threads=1)
    rng = random.Random(0)
    texts = [" ".join(rng.choice(VOCAB[5:]) for _ in range(rng.randint(1, 12))) for _ in range(40)]
    alone = {t: engine.predict([t])[0] for t in texts}
    answers: dict[str, dict] = {}

    def send(chunk):
        status, body = server.predict(chunk)
        assert status == 200
        answers.update(zip(chunk, body["predictions"]))

    chunks, start = [], 0
    while start < len(texts):
        size = rng.randint(1, 4)
        chunks.append(texts[start : start + size])
        start += size
    run_concurrently(send, chunks)
    for text in texts:
        assert answers[text]["label"] == alone[text]["label"]
        assert abs(answers[text]["score"] - alone[text]["score"]) <= 1e-5
    _, metrics = server.request("GET", "/metrics")
    batches = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines()
               if line.startswith("distilprune_batch_texts_")}
    assert batches["distilprune_batch_texts_count"] < len(chunks) + 2  # several requests shared model calls
    assert 'distilprune_requests_total{status="200"}' in metrics and "distilprune_queue_texts" in metrics


def test_server_refuses_a_tampered_bundle(served_bundle, tmp_path):
    import shutil

    copy = tmp_path / "tampered"
    shutil.copytree(served_bundle, copy)
    data = bytearray((copy / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(data))
    result = subprocess.run([sys.executable, "-m", "distilprune.train.cli", "serve", str(copy)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "model.onnx (sha256 differs from the manifest)" in result.stderr and "Traceback" not in result.stderr
