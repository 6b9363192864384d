"""The simulated gateway: deterministic by payment-method token, so every path can be tested.

Tokens:
- `pm_ok` (or any `pm_ok_…`): always succeeds;
- `pm_decline`: always declined (`card_declined`);
- `pm_insufficient_funds`: always declined (`insufficient_funds`);
- `pm_fail_<n>`: declined (`processing_error`) for the first n charges of a reference (an
  invoice), then succeeds: dunning's retries see it recover;
- `pm_timeout`: never answers in time (GatewayTimeout), after `timeout_seconds`;
- anything else: refused (UnknownPaymentMethod) before anything is charged, as a real
  gateway refuses a token it never issued; the key stays unused.

Like a real gateway it keeps its own books (table `simulated_charges`): a charge retried with
the same idempotency key answers the first outcome and charges nothing more.

Refunds go back to the charge's payment method and follow its token too: `pm_ok_refund_fails`
charges fine and has every refund declined (`refund_declined`); `pm_ok_refund_timeout` charges
fine and never answers a refund (GatewayTimeout, nothing refunded). A refund of an unknown or
declined charge, or beyond what is left of the charge, fails (`charge_not_refundable`). Its
books are `simulated_refunds`, keyed like the charges'.
"""

from __future__ import annotations

import asyncio
import hashlib
import re

import asyncpg

from rating_service.payments.gateway import (
    ChargeOutcome,
    ChargeRequest,
    GatewayTimeout,
    RefundOutcome,
    RefundRequest,
    UnknownPaymentMethod,
)

_FAIL_N = re.compile(r"pm_fail_(\d{1,3})")
_DECLINES = {
    "pm_decline": ("card_declined", "the card was declined"),
    "pm_insufficient_funds": ("insufficient_funds", "the card has insufficient funds"),
}


class SimulatedGateway:
    """A PaymentGateway whose answers follow from the payment-method token."""

    def __init__(
        self, pool: asyncpg.Pool, timeout_seconds: float = 0.2, latency_seconds: float = 0.0
    ) -> None:
        self._pool = pool
        self._timeout_seconds = timeout_seconds
        self._latency_seconds = latency_seconds

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        """Charge per the token's rule; a known idempotency key answers its first outcome."""
        if request.payment_method == "pm_timeout":
            await asyncio.sleep(self._timeout_seconds)
            raise GatewayTimeout(f"the gateway did not answer charge {request.idempotency_key!r}")
        if not _known(request.payment_method):
            raise UnknownPaymentMethod(f"no such payment method: {request.payment_method!r}")
        async with self._pool.acquire() as conn, conn.transaction():
            # One charge decision per payment method and reference at a time.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))",
                f"{request.payment_method}:{request.reference}",
            )
            known = await conn.fetchrow(
                "SELECT outcome, decline_code, charge_id FROM simulated_charges"
                " WHERE idempotency_key = $1",
                request.idempotency_key,
            )
            if known is not None:
                return _outcome(known["outcome"], known["decline_code"], known["charge_id"])
            earlier = await conn.fetchval(
                "SELECT count(*) FROM simulated_charges"
                " WHERE payment_method = $1 AND reference = $2",
                request.payment_method,
                request.reference,
            )
            decline = _decline_for(request.payment_method, int(earlier))
            charge_id = (
                "ch_sim_" + hashlib.sha256(request.idempotency_key.encode()).hexdigest()[:20]
            )
            await conn.execute(
                "INSERT INTO simulated_charges (idempotency_key, payment_method, reference,"
                " amount, currency, outcome, decline_code, charge_id)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                request.idempotency_key,
                request.payment_method,
                request.reference,
                request.amount,
                request.currency,
                "declined" if decline else "succeeded",
                decline,
                charge_id,
            )
        # The charge is made; its answer travels back (a crash now loses only the answer).
        await asyncio.sleep(self._latency_seconds)
        return _outcome("declined" if decline else "succeeded", decline, charge_id)

    async def refund(self, request: RefundRequest) -> RefundOutcome:
        """Refund per the charged token's rule; a known key answers its first outcome."""
        async with self._pool.acquire() as conn, conn.transaction():
            # One refund decision per charge at a time, so two never refund the same money.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))", f"refund:{request.charge_reference}"
            )
            known = await conn.fetchrow(
                "SELECT outcome, failure_code, refund_id FROM simulated_refunds"
                " WHERE idempotency_key = $1",
                request.idempotency_key,
            )
            if known is not None:
                return _refund_outcome(known["outcome"], known["failure_code"], known["refund_id"])
            charge = await conn.fetchrow(
                "SELECT payment_method, amount, outcome FROM simulated_charges"
                " WHERE charge_id = $1",
                request.charge_reference,
            )
            if charge is not None and charge["payment_method"] == "pm_ok_refund_timeout":
                await asyncio.sleep(self._timeout_seconds)
                raise GatewayTimeout(
                    f"the gateway did not answer refund {request.idempotency_key!r}"
                )
            refunded = await conn.fetchval(
                "SELECT coalesce(sum(amount), 0) FROM simulated_refunds"
                " WHERE charge_id = $1 AND outcome = 'succeeded'",
                request.charge_reference,
            )
            failure = None
            if (
                charge is None
                or charge["outcome"] != "succeeded"
                or refunded + request.amount > charge["amount"]
            ):
                failure = "charge_not_refundable"
            elif charge["payment_method"] == "pm_ok_refund_fails":
                failure = "refund_declined"
            refund_id = (
                "re_sim_" + hashlib.sha256(request.idempotency_key.encode()).hexdigest()[:20]
            )
            await conn.execute(
                "INSERT INTO simulated_refunds (idempotency_key, charge_id, reference, amount,"
                " currency, outcome, failure_code, refund_id)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                request.idempotency_key,
                request.charge_reference,
                request.reference,
                request.amount,
                request.currency,
                "failed" if failure else "succeeded",
                failure,
                refund_id,
            )
        await asyncio.sleep(self._latency_seconds)
        return _refund_outcome("failed" if failure else "succeeded", failure, refund_id)


def _known(token: str) -> bool:
    """True for the tokens this gateway issues (see the module's list)."""
    return (
        token == "pm_ok"
        or token.startswith("pm_ok_")
        or token in _DECLINES
        or _FAIL_N.fullmatch(token) is not None
    )


def _decline_for(token: str, earlier_charges: int) -> str | None:
    """The decline code for the next charge of this token and reference, or None to succeed."""
    if token == "pm_ok" or token.startswith("pm_ok_"):
        return None
    if token in _DECLINES:
        return _DECLINES[token][0]
    fail = _FAIL_N.fullmatch(token)
    assert fail is not None, "unknown tokens are refused before a charge is decided"
    return "processing_error" if earlier_charges < int(fail.group(1)) else None


def _outcome(outcome: str, decline_code: str | None, charge_id: str) -> ChargeOutcome:
    if outcome == "succeeded":
        return ChargeOutcome(True, gateway_reference=charge_id)
    messages = dict(_DECLINES.values())
    code = decline_code or "card_declined"
    return ChargeOutcome(
        False,
        gateway_reference=charge_id,
        decline_code=code,
        message=messages.get(code, code.replace("_", " ")),
    )


_REFUND_FAILURES = {
    "charge_not_refundable": "the charge is unknown, was declined, or has less left to refund",
    "refund_declined": "the card issuer declined the refund",
}


def _refund_outcome(outcome: str, failure_code: str | None, refund_id: str) -> RefundOutcome:
    if outcome == "succeeded":
        return RefundOutcome(True, gateway_reference=refund_id)
    code = failure_code or "refund_declined"
    return RefundOutcome(
        False,
        gateway_reference=refund_id,
        failure_code=code,
        message=_REFUND_FAILURES.get(code, code.replace("_", " ")),
    )
