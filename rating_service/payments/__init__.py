"""Payment collection: the gateway interface and the built-in simulated gateway."""

from rating_service.payments.gateway import (
    ChargeOutcome,
    ChargeRequest,
    GatewayTimeout,
    PaymentGateway,
    RefundOutcome,
    RefundRequest,
    UnknownPaymentMethod,
)
from rating_service.payments.simulated import SimulatedGateway

__all__ = [
    "ChargeOutcome",
    "ChargeRequest",
    "GatewayTimeout",
    "PaymentGateway",
    "RefundOutcome",
    "RefundRequest",
    "SimulatedGateway",
    "UnknownPaymentMethod",
]
