"""Measurement in onnxruntime: inputs, latency (CPU, CUDA), output fidelity, sweeps."""
