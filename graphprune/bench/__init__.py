"""onnxruntime latency measurement."""
