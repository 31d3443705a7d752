"""Triton python-backend model, last step of the ensemble: ``logits`` -> ``LABEL``, ``SCORE``, ``SCORES``.

The same post-processing as the text model and the reference HTTP server (the serving runtime
copied beside this file).
"""

from pathlib import Path

# First: the runtime (copied beside this file) makes PYTHONPATH importable in Triton's stub.
from serving_runtime import BundleRuntime, Encoded

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        self.runtime = BundleRuntime(Path(args["model_repository"]) / args["model_version"], load_model=False, load_tokenizer=False)

    def execute(self, requests):
        responses = []
        for request in requests:
            logits = pb_utils.get_input_tensor_by_name(request, "logits").as_numpy()
            truncated = pb_utils.get_input_tensor_by_name(request, "TRUNCATED").as_numpy().reshape(-1)
            rows = self.runtime.postprocess(logits, Encoded(None, None, [bool(t) for t in truncated]), [])
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("LABEL", np.array([[p["label"].encode("utf-8")] for p in rows], dtype=np.object_)),
                pb_utils.Tensor("SCORE", np.array([[p["score"]] for p in rows], dtype=np.float32)),
                pb_utils.Tensor("SCORES", np.array([[p["scores"][label] for label in self.runtime.labels]
                                                    for p in rows], dtype=np.float32))]))
        return responses
