"""oodserve training: data, models, methods, the training loop, evaluation and ONNX export (needs torch)."""
