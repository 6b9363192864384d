"""The payment gateway interface every gateway (Stripe, Adyen, the simulated one) implements."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ChargeRequest:
    """One charge: the same `idempotency_key` always means the same charge, charged once.

    `reference` names what is paid for (an invoice id); gateways show it to the customer.
    """

    idempotency_key: str
    payment_method: str
    amount: Decimal
    currency: str
    reference: str


@dataclass(frozen=True, slots=True)
class ChargeOutcome:
    """A charge's answer: succeeded with the gateway's charge id, or declined with a code."""

    succeeded: bool
    gateway_reference: str = ""
    decline_code: str = ""
    message: str = ""


class GatewayTimeout(Exception):
    """The gateway did not answer in time: the outcome is unknown, so retry with the same key."""


class PaymentGateway(Protocol):
    """Charges saved payment methods, idempotently by key."""

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        """Charge the payment method; a retry with the same key returns the first outcome."""
        ...
