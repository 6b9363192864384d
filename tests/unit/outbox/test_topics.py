"""The outbox topics: defined once, each with its payload, and what a dunning failure announces."""

from __future__ import annotations

import ast
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rating_service.core.billing.dunning import StandingChange
from rating_service.core.contracts.contract import ContractStatus
from rating_service.outbox.topics import (
    NOTIFICATION_TOPICS,
    PAYLOAD_TYPES,
    PaymentFailure,
    StatusChange,
    Topic,
)

ROOT = Path(__file__).resolve().parents[3]
PACKAGE = ROOT / "rating_service"
TOPICS_MODULE = PACKAGE / "outbox" / "topics.py"

NOT_TOPICS = {
    # The contract's auto-recharge settings, a field of its definition and of the demo's terms.
    ("rating_service/core/contracts/contract.py", "auto_recharge"),
    ("rating_service/cli/demo/plan.py", "auto_recharge"),
    # The demo feed's kind of line, which alerts share with other events' kinds.
    ("rating_service/cli/demo/view.py", "alert"),
}
"""Strings that spell a topic's value but mean something else where they are written."""

DAY = timedelta(days=1)
FAILED_AT = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


def _strings(tree: ast.AST) -> list[str]:
    """The string constants of a module, docstrings (bare string statements) left out."""
    bare = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in bare
    ]


def _spells(text: str, topic: Topic) -> bool:
    """The topic itself, a dedupe key made of it, or it quoted in SQL."""
    return text == topic.value or text.startswith(f"{topic.value}:") or f"'{topic.value}'" in text


@pytest.mark.parametrize(
    "path",
    sorted(p for p in PACKAGE.rglob("*.py") if p != TOPICS_MODULE),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_no_module_but_topics_spells_a_topic(path: Path) -> None:
    relative = str(path.relative_to(ROOT))
    spelled = {
        (relative, topic.value)
        for text in _strings(ast.parse(path.read_text()))
        for topic in Topic
        if _spells(text, topic)
    }
    assert spelled <= NOT_TOPICS, "use rating_service.outbox.topics.Topic"


def test_every_topic_has_its_payload() -> None:
    assert set(PAYLOAD_TYPES) == set(Topic)
    assert all(topic.payload_type is PAYLOAD_TYPES[topic] for topic in Topic)


def test_the_notifications_are_the_topics_webhook_receivers_know() -> None:
    # Stored in endpoints' subscriptions and listed in that order when one is refused.
    assert [str(topic) for topic in NOTIFICATION_TOPICS] == [
        "alert",
        "invoice.issued",
        "payment.failed",
        "contract.suspended",
        "contract.reinstated",
        "expiry.warning",
        "credit.expired",
        "renewal.upcoming",
        "contract.renewed",
        "contract.ended",
        "recharge.succeeded",
        "recharge.failed",
        "auto_recharge.disabled",
        "credit_note.issued",
        "refund.succeeded",
        "refund.failed",
    ]
    starters = {Topic.CONTRACT_CREATED, Topic.COMMITMENT_ADDED, Topic.AUTO_RECHARGE}
    assert {topic for topic in Topic if not topic.is_notification} == starters


def test_the_outbox_imports_only_the_standard_library_asyncpg_and_the_core() -> None:
    allowed = ("rating_service.core", "rating_service.outbox", "asyncpg")
    for path in (PACKAGE / "outbox").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.partition(".")[0]
                assert top in sys.stdlib_module_names or name.startswith(allowed), (path, name)


def test_a_failure_is_announced_once_per_invoice_and_attempt() -> None:
    failure = PaymentFailure(
        "t1", "inv_1", "ctr_1", 2, "card_declined", "declined", FAILED_AT, FAILED_AT + 3 * DAY
    )
    assert failure.dedupe_key == "payment.failed:t1:inv_1:2"
    assert failure.payload() == {
        "invoice_id": "inv_1",
        "contract_id": "ctr_1",
        "attempt": 2,
        "decline_code": "card_declined",
        "message": "declined",
        "failed_at": "2026-03-01T09:30:00+00:00",
        "next_retry_at": "2026-03-04T09:30:00+00:00",
    }
    last = PaymentFailure("t1", "inv_1", "ctr_1", 5, "card_declined", "", FAILED_AT, None)
    assert last.payload()["next_retry_at"] is None


def test_a_suspension_is_announced_once_per_contract_and_invoice() -> None:
    change = StatusChange(Topic.CONTRACT_SUSPENDED, "t1", "ctr_1", "inv_1", FAILED_AT)
    assert change.dedupe_key == "contract.suspended:t1:ctr_1:inv_1"
    assert change.payload() == {
        "contract_id": "ctr_1",
        "invoice_id": "inv_1",
        "at": "2026-03-01T09:30:00+00:00",
    }


@pytest.mark.parametrize(
    ("was", "becomes", "topic"),
    [
        (ContractStatus.ACTIVE, ContractStatus.SUSPENDED, Topic.CONTRACT_SUSPENDED),
        (ContractStatus.SUSPENDED, ContractStatus.ACTIVE, Topic.CONTRACT_REINSTATED),
    ],
)
def test_a_standing_change_is_announced_on_its_topic(
    was: ContractStatus, becomes: ContractStatus, topic: Topic
) -> None:
    decided = StandingChange("t1", "ctr_1", "inv_1", was, becomes, FAILED_AT)
    assert StatusChange.announcing(decided) == StatusChange(
        topic, "t1", "ctr_1", "inv_1", FAILED_AT
    )
