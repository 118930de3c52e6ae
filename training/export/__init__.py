"""Checkpoint -> one self-describing, calibrated ONNX file (``exporter``), and the graph's input-domain guard
(``domain_guard``). ``python -m training.export`` is the command (``exporter.main``)."""

from .exporter import Deployable, export_checkpoint, to_onnx

__all__ = ["Deployable", "export_checkpoint", "to_onnx"]
