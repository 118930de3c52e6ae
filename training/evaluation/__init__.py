"""Measuring models: OOD sets (``ood_sets``), checkpoints and files scored alike (``scorers``), the metrics
(``ood_metrics``), the evaluation command and its report (``evaluate``, ``report``, ``python -m
training.evaluation``), the choice between trained candidates (``selection``) and between a method's scores
(``score_choice``)."""
