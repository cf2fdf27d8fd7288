"""`saexplain estimate` samples latents from every coder of a run, not the first coder alone."""

from __future__ import annotations

from saexplain.estimate import spread_over_coders
from saexplain.models import LatentRecord, LatentRef, LatentStats


def record(coder: str, index: int) -> LatentRecord:
    return LatentRecord(
        latent=LatentRef(coder_id=coder, hook="h", index=index),
        stats=LatentStats(n_tokens=10, count=1),
    )


def test_the_sample_takes_coders_in_turn() -> None:
    records = [record("a", i) for i in range(5)] + [record("b", i) for i in range(2)]
    picked = [(r.latent.coder_id, r.latent.index) for r in spread_over_coders(records, 5)]
    assert picked == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2)]


def test_one_coder_keeps_the_run_order_and_a_large_n_takes_everything() -> None:
    records = [record("a", i) for i in (7, 3, 9)]
    assert spread_over_coders(records, 2) == records[:2]
    assert spread_over_coders(records, 10) == records
    assert spread_over_coders([], 3) == []
