"""Post-hoc OOD scores for any classifier: the classifier's graph found (``graph``), wrapped with its input
convention and any pretrained feature network (``sources``, ``parts``), scores fitted on in-distribution images
(``images``, ``scores``), one chosen (``choice``), compiled into the graph and calibrated (``wrap``); ``cli`` is
``python -m training.posthoc``."""
