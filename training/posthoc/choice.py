"""Which score, from which source: the candidates, fitted, scored in numpy, and ``auto``'s pick.

A candidate is one component (``score@source``) or several combined by Fisher's method. ``auto`` measures each
single component's AUROC (in-distribution calibration images against the outliers the user names and the
procedural noise families), then the Fisher pair of the best classifier-side and the best pretrained-side
component, and keeps the best mean AUROC; a pair must beat the best single by 0.002 to be taken (it costs a second
network). The sets an evaluation reports are never among them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..evaluation import ood_metrics
from . import parts, scores
from .sources import LOGITS, OWN, OWN_SCORE

PAIR_MARGIN = 0.002


@dataclass(frozen=True)
class Candidate:
    components: tuple[tuple[str, str], ...]  # (score, source)

    @property
    def label(self) -> str:
        return "+".join(s if src in (LOGITS, OWN, OWN_SCORE) else f"{s}@{src}" for s, src in self.components)

    @classmethod
    def parse(cls, spec: str) -> Candidate:
        """``energy``, ``knn`` (own features), ``own``, ``knn@efficientnet-lite0``; several joined by ``+``."""
        out = []
        for part in spec.split("+"):
            name, _, source = part.partition("@")
            if name not in scores.SCORES:
                raise ValueError(f"unknown score {name!r}; choose from {', '.join(scores.SCORES)} or auto")
            cls_ = scores.SCORES[name]
            default = OWN_SCORE if name == "own" else (OWN if cls_.needs_features else LOGITS)
            out.append((name, source or default))
        return cls(tuple(out))


def candidates(available: set[str], has_head: bool) -> list[Candidate]:
    """Every single component the classifier and the sources allow."""
    out = [Candidate(((s, LOGITS),)) for s in ("msp", "max-logit", "energy", "gen")]
    if OWN in available:
        out += [Candidate(((s, OWN),)) for s in ("mahalanobis", "mahalanobis-normed", "knn")]
        out += [Candidate(((s, OWN),)) for s in ("react", "vim") if has_head]
    if OWN_SCORE in available:
        out.append(Candidate((("own", OWN_SCORE),)))
    for source in sorted(available - {OWN, OWN_SCORE, LOGITS}):
        out += [Candidate(((s, source),)) for s in scores.FEATURE_ONLY]
    return out


class Fitted:
    """Scores fitted on the fit part's arrays; computes any candidate's scores on other arrays."""

    def __init__(self, fit: dict[str, np.ndarray], labels: np.ndarray, head):
        self.fit, self.labels, self.head, self.done = fit, labels, head, {}

    def score(self, component: tuple[str, str]) -> scores.Score:
        if component not in self.done:
            name, source = component
            s = scores.SCORES[name]()
            s.fit(self._inputs(self.fit, source, fitting=True))
            self.done[component] = s
        return self.done[component]

    def _inputs(self, arrays, source, fitting=False) -> scores.Inputs:
        return scores.Inputs(
            logits=arrays[LOGITS],
            features=None if source == LOGITS else arrays[source],
            labels=self.labels if fitting else None,
            head=self.head if source == OWN else None,
        )

    def component_scores(self, component, arrays, chunk: int = 1000) -> np.ndarray:
        s, source = self.score(component), component[1]
        n = len(arrays[LOGITS])
        sliced = [{k: v[i : i + chunk] for k, v in arrays.items()} for i in range(0, n, chunk)]
        return np.concatenate([s.numpy(self._inputs(a, source)) for a in sliced])

    def candidate_scores(self, cand: Candidate, arrays, reference) -> np.ndarray:
        per = [self.component_scores(c, arrays) for c in cand.components]
        if len(per) == 1:
            return per[0]
        return parts.fisher_numpy(per, [self.component_scores(c, reference) for c in cand.components])

    def components(self, cand: Candidate, reference) -> list[parts.Component]:
        table = len(cand.components) > 1
        return [
            parts.Component(self.score(c), c[1], self.component_scores(c, reference) if table else None)
            for c in cand.components
        ]


def measure(fitted: Fitted, cand: Candidate, id_arrays, outlier_arrays: dict, reference) -> dict[str, float]:
    """AUROC of in-distribution (positive) against each outlier set, for one candidate."""
    id_scores = fitted.candidate_scores(cand, id_arrays, reference)
    return {
        name: ood_metrics.auroc(-id_scores, -fitted.candidate_scores(cand, arr, reference))
        for name, arr in outlier_arrays.items()
    }


def auto(fitted: Fitted, pool: list[Candidate], id_arrays, outlier_arrays, reference) -> tuple[Candidate, dict]:
    """The best candidate by mean AUROC, and every measured candidate's mean AUROC."""
    means = {c: float(np.mean(list(measure(fitted, c, id_arrays, outlier_arrays, reference).values()))) for c in pool}
    own_side = [c for c in pool if c.components[0][1] in (LOGITS, OWN, OWN_SCORE)]
    other = [c for c in pool if c not in own_side]
    best = max(means, key=means.get)
    if own_side and other:
        pair = Candidate(max(own_side, key=means.get).components + max(other, key=means.get).components)
        means[pair] = float(np.mean(list(measure(fitted, pair, id_arrays, outlier_arrays, reference).values())))
        if means[pair] > means[best] + PAIR_MARGIN:
            best = pair
    return best, {c.label: means[c] for c in sorted(means, key=means.get, reverse=True)}
