from __future__ import annotations

from training import toy2d


def test_acet_is_less_confident_than_plain_far_from_the_two_moons(tmp_path):
    png = tmp_path / "moons.png"
    far = toy2d.main(["--out", str(png), "--runs", str(tmp_path / "runs"), "--epochs", "12"])
    assert far["ACET"] < far["plain"]
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
