"""Triton python-backend model: text in, label and scores out (the bundle's serving runtime inside).

Inputs ``TEXT`` (TYPE_STRING, one text per batch row); outputs ``LABEL`` (TYPE_STRING), ``SCORE``
(probability of that label), ``SCORES`` (every label's probability, in ``labels.txt`` order) and
``TRUNCATED`` (the text was longer than the model's window and was cut). Dynamic batching hands
several requests to one ``execute``: their texts are tokenized together and run in one model call;
the model named in ``serving.json`` gives each text the same answer whatever it is batched with.
"""

import json
from pathlib import Path

# First: the runtime (copied beside this file) makes PYTHONPATH importable in Triton's stub.
from serving_runtime import BundleRuntime

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402


def _threads(config: dict) -> int | None:
    value = config.get("parameters", {}).get("threads", {}).get("string_value", "")
    return int(value) if value.strip().isdigit() and int(value) > 0 else None


def _texts(request) -> list[str]:
    raw = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
    return [item.decode("utf-8") if isinstance(item, bytes) else str(item) for item in raw]


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        version_dir = Path(args["model_repository"]) / args["model_version"]
        self.runtime = BundleRuntime(version_dir, threads=_threads(config))

    def execute(self, requests):
        texts, counts, errors = [], [], {}
        for index, request in enumerate(requests):
            try:
                decoded = _texts(request)
            except UnicodeDecodeError as error:
                errors[index] = f"TEXT is not UTF-8 ({error}); send UTF-8 encoded strings."
                decoded = []
            texts += decoded
            counts.append(len(decoded))
        predictions = self.runtime.predict(texts) if texts else []
        responses, start = [], 0
        for index, count in enumerate(counts):
            if index in errors:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(errors[index])))
                continue
            rows = predictions[start : start + count]
            start += count
            labels = np.array([[p["label"].encode("utf-8")] for p in rows], dtype=np.object_)
            score = np.array([[p["score"]] for p in rows], dtype=np.float32)
            scores = np.array([[p["scores"][label] for label in self.runtime.labels] for p in rows], dtype=np.float32)
            truncated = np.array([[p["truncated"]] for p in rows], dtype=np.bool_)
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("LABEL", labels), pb_utils.Tensor("SCORE", score),
                pb_utils.Tensor("SCORES", scores), pb_utils.Tensor("TRUNCATED", truncated)]))
        return responses
