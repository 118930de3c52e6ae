"""Checkpoint -> one self-describing, calibrated ONNX file (``exporter``), and the graph's input-domain guard
(``domain_guard``), quantized to int8 on request (``quantize``). It reads checkpoints (``training.run.checkpoint``)
and measures with ``training.evaluation``, never the training loop. ``python -m training.export`` is the command
(``exporter.main``)."""

from .exporter import Deployable, export_checkpoint, to_onnx

__all__ = ["Deployable", "export_checkpoint", "to_onnx"]
