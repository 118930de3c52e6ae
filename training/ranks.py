"""Which process this is. torchrun sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; without them this process
is the only one, rank 0 of 1. This module is their one reader, so every "rank 0 alone writes this" decision
(logs, checkpoints, the export, a data set's download) asks the same question the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that logs, checkpoints, exports and downloads for all of them."""
        return self.rank == 0


def under_torchrun() -> bool:
    return "RANK" in os.environ


def ranks() -> Ranks:
    if not under_torchrun():
        return Ranks()
    return Ranks(*(int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE")))


def is_main() -> bool:
    return ranks().main
