"""A bundle's Triton python-backend models in a real Triton server (nvidia-pytriton's tritonserver),
queried with tritonclient over HTTP and gRPC; and batch invariance on real sentences through both servers."""

from __future__ import annotations

import random
import threading
import time

import numpy as np
import pytest
from serving_bundles import make_bundle, make_real_bundle
from test_serving import Server, run_concurrently

from distilprune.export.serving import runtime
from distilprune.export.serving.triton_local import LocalTriton

MODELS = ["tiny-text", "tiny-tokenize", "tiny-postprocess"]


def _text_input(client_module, texts: list[str]):
    tensor = client_module.InferInput("TEXT", [len(texts), 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=np.object_))
    return tensor


def _ask(client_module, client, texts: list[str]) -> list[dict]:
    result = client.infer("tiny-text", [_text_input(client_module, texts)])
    labels, scores = result.as_numpy("LABEL").reshape(-1), result.as_numpy("SCORES")
    truncated = result.as_numpy("TRUNCATED").reshape(-1)
    return [{"label": label.decode(), "scores": row, "truncated": bool(cut)}
            for label, row, cut in zip(labels, scores, truncated)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    bundle = make_bundle(tmp_path_factory.mktemp("triton"))
    with LocalTriton(bundle / "triton", MODELS, log=bundle.parent / "tritonserver.log") as server:
        yield bundle, server


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_text_model_answers_the_parity_texts(tiny, protocol):
    import json

    bundle, server = tiny
    if protocol == "http":
        import tritonclient.http as module

        client = module.InferenceServerClient(server.http_url)
    else:
        import tritonclient.grpc as module

        client = module.InferenceServerClient(server.grpc_url)
    assert client.is_model_ready("tiny-text")
    parity = json.loads((bundle / "parity.json").read_text())
    answers = _ask(module, client, parity["texts"])
    expected = runtime.softmax(np.asarray(parity["models"]["fp32"]["logits"], dtype=np.float32))
    labels = runtime.BundleRuntime(bundle, load_model=False).labels
    assert [a["label"] for a in answers] == [labels[i] for i in parity["models"]["fp32"]["argmax"]]
    assert np.abs(np.stack([a["scores"] for a in answers]) - expected).max() < 1e-4
    assert answers[0]["truncated"] is False
    assert _ask(module, client, [" ".join(["movie"] * 40)])[0]["truncated"] is True


def test_ensemble_steps_in_the_server_give_the_text_model_answer(tiny):
    import tritonclient.http as module

    bundle, server = tiny
    client = module.InferenceServerClient(server.http_url)
    texts = ["good movie", "awful dull plot w3 w4"]
    tokens = client.infer("tiny-tokenize", [_text_input(module, texts)])
    ids, mask = tokens.as_numpy("input_ids"), tokens.as_numpy("attention_mask")
    assert ids.shape == (2, 16) and mask.sum(axis=1).tolist() == [4, 7]  # [CLS] words [SEP], padded to the window
    engine = runtime.BundleRuntime(bundle, threads=1)  # stands in for the ONNX Runtime backend step
    logits = engine.infer(runtime.Encoded(ids, mask, [False, False]))
    logits_in = module.InferInput("logits", list(logits.shape), "FP32")
    logits_in.set_data_from_numpy(logits)
    cut = module.InferInput("TRUNCATED", [2, 1], "BOOL")
    cut.set_data_from_numpy(tokens.as_numpy("TRUNCATED"))
    post = client.infer("tiny-postprocess", [logits_in, cut])
    direct = _ask(module, client, texts)
    assert [x.decode() for x in post.as_numpy("LABEL").reshape(-1)] == [a["label"] for a in direct]
    assert np.abs(post.as_numpy("SCORES") - np.stack([a["scores"] for a in direct])).max() < 1e-5


# --------------------------------------------------------------------------------------------
# batch invariance on real review sentences, through both real servers


@pytest.fixture(scope="module")
def real_sentences() -> list[str]:
    from distilprune.config import DataConfig
    from distilprune.data import load_data

    return list(load_data(DataConfig()).test.texts)[:200]


@pytest.fixture(scope="module")
def real_bundle(tmp_path_factory, real_sentences):
    return make_real_bundle(tmp_path_factory.mktemp("real-bundle"), real_sentences)


def _random_batches(texts: list[str], seed: int) -> list[list[str]]:
    rng, batches, start = random.Random(seed), [], 0
    shuffled = texts[:]
    rng.shuffle(shuffled)
    while start < len(shuffled):
        size = rng.randint(1, 32)
        batches.append(shuffled[start : start + size])
        start += size
    return batches


def _assert_same(alone: dict[str, dict], batched: dict[str, dict]) -> None:
    assert batched.keys() == alone.keys()
    for text, answer in alone.items():
        assert batched[text]["label"] == answer["label"], text
        assert np.abs(np.asarray(batched[text]["scores"]) - np.asarray(answer["scores"])).max() <= 1e-5, text


def test_reference_server_is_batch_invariant_on_real_sentences(real_bundle, real_sentences):
    server = Server(real_bundle, "--max-batch", "32", "--max-delay-ms", "10")
    server.wait_ready()
    try:
        def scores(prediction):
            return [prediction["scores"][k] for k in sorted(prediction["scores"])]

        alone = {}
        for text in real_sentences:  # one text per request, one request at a time
            status, body = server.predict([text])
            assert status == 200
            alone[text] = {"label": body["predictions"][0]["label"], "scores": scores(body["predictions"][0])}
        batched: dict[str, dict] = {}

        def send(batch):
            status, body = server.predict(batch)
            assert status == 200
            batched.update({t: {"label": p["label"], "scores": scores(p)} for t, p in zip(batch, body["predictions"])})

        run_concurrently(send, _random_batches(real_sentences, seed=1))
        _assert_same(alone, batched)
    finally:
        assert server.stop()


def test_triton_text_model_is_batch_invariant_on_real_sentences(real_bundle, real_sentences):
    import tritonclient.grpc as module

    with LocalTriton(real_bundle / "triton", ["tiny-text"], log=real_bundle.parent / "tritonserver.log") as server:
        client = module.InferenceServerClient(server.grpc_url)
        alone = {t: _ask(module, client, [t])[0] for t in real_sentences}
        batched: dict[str, dict] = {}

        def send(batch):
            own = module.InferenceServerClient(server.grpc_url)
            batched.update(zip(batch, _ask(module, own, batch)))

        run_concurrently(send, _random_batches(real_sentences, seed=2))
        _assert_same(alone, batched)


def test_sigterm_drains_requests_in_flight(real_bundle, real_sentences):
    """SIGTERM while six requests of 32 long texts each are queued or in the model: all are answered."""
    server = Server(real_bundle, "--max-batch", "32", "--max-delay-ms", "5")
    server.wait_ready()
    long_texts = [" ".join(real_sentences[i : i + 6]) for i in range(32)]
    results = []

    def send():
        results.append(server.predict(long_texts)[0])

    threads = [threading.Thread(target=send) for _ in range(6)]
    for t in threads:
        t.start()
    time.sleep(0.2)  # each model call takes a few hundred ms: most requests are still waiting
    assert server.process.poll() is None
    assert server.stop()
    for t in threads:
        t.join()
    assert results == [200] * 6
