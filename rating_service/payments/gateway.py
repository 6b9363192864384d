"""The payment gateway interface every gateway (Stripe, Adyen, the simulated one) implements:
charges of saved payment methods, and refunds of those charges."""

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


@dataclass(frozen=True, slots=True)
class RefundRequest:
    """One refund of (part of) an earlier charge: the same `idempotency_key` is refunded once.

    `charge_reference` is the gateway's id of the charge refunded (its `gateway_reference`);
    `reference` names what is refunded (a credit note id).
    """

    idempotency_key: str
    charge_reference: str
    amount: Decimal
    currency: str
    reference: str


@dataclass(frozen=True, slots=True)
class RefundOutcome:
    """A refund's answer: succeeded with the gateway's refund id, or failed with a code."""

    succeeded: bool
    gateway_reference: str = ""
    failure_code: str = ""
    message: str = ""


class GatewayTimeout(Exception):
    """The gateway did not answer in time: the outcome is unknown, so retry with the same key."""


class UnknownPaymentMethod(Exception):
    """The gateway refused the charge: it knows no such payment method, and charged nothing.

    Not a decline: the saved token is wrong (our data, not the customer's card), so dunning the
    customer would not help. Fix the contract's payment method, then retry under the same key.
    """

    code = "payment_method_unknown"


class PaymentGateway(Protocol):
    """Charges saved payment methods and refunds charges, each idempotently by key."""

    async def charge(self, request: ChargeRequest) -> ChargeOutcome:
        """Charge the payment method; a retry with the same key returns the first outcome.

        Raises GatewayTimeout when no answer came, UnknownPaymentMethod when it was refused.
        """
        ...

    async def refund(self, request: RefundRequest) -> RefundOutcome:
        """Refund part or all of a charge; a retry with the same key returns the first outcome.

        Raises GatewayTimeout when no answer came (the outcome is unknown).
        """
        ...
