"""The input-domain guard's constants: an input with a pixel more than ``DOMAIN_TOLERANCE`` outside [0, 1]
is not an image, and the graph's guard (``training.export.domain_guard``) gives it ``OUT_OF_DOMAIN_SCORE``
whatever the network says (docs/model-format.md)."""

from __future__ import annotations

import numpy as np

DOMAIN_TOLERANCE = 1.0 / 255.0  # one 8-bit level of slack
OUT_OF_DOMAIN_SCORE = float(np.finfo(np.float32).max)  # above any threshold
