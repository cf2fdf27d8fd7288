"""`Ledger.keep` / `Ledger.keep_error`: the hooks through which a ledger that keeps nothing
itself (a Ray worker's) hands each recorded call elsewhere, with `record`'s tagging intact."""

from __future__ import annotations

from saexplain.errors import ProviderRateLimitError, SpendCapReached
from saexplain.models import Usage
from saexplain.providers import CallRecord, Ledger, usage_tags


class Forwarding(Ledger):
    def __init__(self) -> None:
        super().__init__(None)
        self.sent: list[CallRecord | str] = []

    def keep(self, rec: CallRecord) -> None:
        self.sent.append(rec)

    def keep_error(self, error_type: str) -> None:
        self.sent.append(error_type)


def test_record_builds_the_tagged_record_and_hands_it_to_keep():
    ledger = Forwarding()
    usage = Usage(prompt_tokens=3, completion_tokens=1, cost_usd=0.2, calls=1)
    with usage_tags(run="r1"):
        rec = ledger.record("p", "m", usage)
    ledger.record_error(ProviderRateLimitError("slow down"))
    ledger.record_error(SpendCapReached("cap"))  # a refusal is no provider error: not kept
    assert ledger.sent == [rec, "ProviderRateLimitError"]
    assert rec.tags == (("run", "r1"),) and rec.usage == usage
    assert ledger.records == [] and ledger.spent_usd == 0.0  # kept elsewhere, not here


def test_the_default_keep_counts_and_persists(tmp_path):
    ledger = Ledger(path=tmp_path / "spend.json")
    ledger.record("p", "m", Usage(cost_usd=0.5, calls=1), {"latent": "a"})
    ledger.keep_error("Boom")
    assert ledger.where(latent="a").cost_usd == 0.5
    assert Ledger(path=tmp_path / "spend.json").spent_usd == 0.5  # on disk at once
    assert ledger.stats()["errors"] == {"Boom": 1}
