"""ONNX export, INT8 quantization, verification, latency and reports."""
