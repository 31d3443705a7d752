"""Triton python-backend model, first step of the ensemble: ``TEXT`` -> ``input_ids``, ``attention_mask``.

For teams that run the ONNX Runtime backend: this model tokenizes with the bundle's tokenizer (the
serving runtime copied beside it), padded to the model's window so every batch row has one shape,
and the ensemble passes the ids to the ONNX Runtime model and its logits to the post-processing model.
"""

from pathlib import Path

# First: the runtime (copied beside this file) makes PYTHONPATH importable in Triton's stub.
from serving_runtime import BundleRuntime

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        self.runtime = BundleRuntime(Path(args["model_repository"]) / args["model_version"], load_model=False)

    def execute(self, requests):
        responses = []
        for request in requests:
            raw = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
            try:
                texts = [item.decode("utf-8") if isinstance(item, bytes) else str(item) for item in raw]
            except UnicodeDecodeError as error:
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(f"TEXT is not UTF-8 ({error}); send UTF-8 encoded strings.")))
                continue
            encoded = self.runtime.encode(texts, pad_to=self.runtime.max_seq_len)
            responses.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("input_ids", encoded.input_ids),
                pb_utils.Tensor("attention_mask", encoded.attention_mask),
                pb_utils.Tensor("TRUNCATED", np.array(encoded.truncated, dtype=np.bool_).reshape(-1, 1))]))
        return responses
