"""Which process this is, decided in one place: ``training.ranks`` reads torchrun's variables, nothing else does."""

from __future__ import annotations

from pathlib import Path

from training import ranks

REPO = Path(__file__).resolve().parents[2]


def test_without_torchrun_this_is_rank_0_of_1(monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert ranks.ranks() == ranks.Ranks(0, 0, 1) and ranks.is_main() and not ranks.under_torchrun()


def test_under_torchrun_rank_0_alone_is_the_main_process(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    assert ranks.ranks() == ranks.Ranks(3, 1, 4) and not ranks.is_main() and ranks.under_torchrun()
    monkeypatch.setenv("RANK", "0")
    assert ranks.is_main()


def test_no_other_module_reads_torchrun_s_variables():
    readers = [
        p.relative_to(REPO)
        for folder in ("training", "bench")
        for p in sorted((REPO / folder).rglob("*.py"))
        if any(f'"{v}"' in p.read_text() for v in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))
    ]
    assert readers == [Path("training/ranks.py")]
