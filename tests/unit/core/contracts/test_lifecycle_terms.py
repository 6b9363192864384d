"""Auto-recharge, renewal and dunning terms: dict forms, defaults, validation, rollover."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from rating_service.core.contracts import contract_from_dict, contract_to_dict
from rating_service.core.contracts.lifecycle import DEFAULT_DUNNING, Renewal
from rating_service.core.errors import InvalidArgument
from tests.unit.core.contracts.test_dict_forms import CONTRACT

D = Decimal

TERMS = {
    **CONTRACT,
    "auto_recharge": {
        "threshold": "10",
        "amount": "50",
        "enabled": True,
        "max_attempts": 2,
        "retry_seconds": 60,
    },
    "renewal": {
        "auto_renew": True,
        "commitments": [
            {"kind": "prepaid_commit", "amount": "1000", "cost_basis": "1", "priority": 0}
        ],
        "rollover_percent": "50",
        "rollover_cap": "200",
        "notice_seconds": 3600,
    },
    "dunning_retry_seconds": [1, 2, 3],
}


def test_lifecycle_terms_round_trip() -> None:
    contract = contract_from_dict(TERMS)
    assert contract_to_dict(contract) == TERMS
    assert contract.auto_recharge is not None and contract.auto_recharge.amount == D(50)
    assert contract.dunning == tuple(timedelta(seconds=n) for n in (1, 2, 3))


def test_absent_terms_mean_no_auto_recharge_no_renewal_and_the_default_dunning() -> None:
    contract = contract_from_dict(CONTRACT)
    assert (contract.auto_recharge, contract.renewal) == (None, None)
    assert contract.dunning == DEFAULT_DUNNING
    assert [step.days for step in DEFAULT_DUNNING] == [1, 3, 5, 7]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"auto_recharge": {"threshold": "10", "amount": "0"}}, "auto_recharge.amount"),
        ({"auto_recharge": {"threshold": "-1", "amount": "5"}}, "auto_recharge.threshold"),
        ({"renewal": {"rollover_percent": "150"}}, "renewal.rollover_percent"),
        (
            {"renewal": {"commitments": [{"kind": "postpaid_commit", "amount": "5"}]}},
            "renewal.commitments[0].kind",
        ),
        ({"dunning_retry_seconds": [1, 0]}, "dunning_retry_seconds[1]"),
    ],
)
def test_bad_terms_name_their_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        contract_from_dict({**CONTRACT, **change})
    assert field in {v.field for v in refused.value.violations}


@pytest.mark.parametrize(
    ("percent", "cap", "unused", "carried"),
    [
        ("100", None, "300", "300"),
        ("50", None, "300", "150"),
        ("50", "100", "300", "100"),
        ("0", None, "300", "0"),
        ("100", "500", "0", "0"),
    ],
)
def test_rollover_takes_the_percent_then_the_cap(
    percent: str, cap: str | None, unused: str, carried: str
) -> None:
    terms = Renewal(rollover_percent=D(percent), rollover_cap=None if cap is None else D(cap))
    assert terms.rollover(D(unused)) == D(carried)
