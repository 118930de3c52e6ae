"""The served models: the model directory and its version policy (directory), one model file opened,
checked and warmed up (runtime, loading), what is served under which name and version (registry),
keeping that equal to the directory (sync), and model management in Triton's sense (management:
index, load, unload on request).

A served model is wired to the pipeline (its batcher and verdicts); it never imports the HTTP layer.
"""
