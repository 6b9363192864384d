"""How an operator command prints a refusal of the API: message, status, what is at fault, next."""

from __future__ import annotations

import grpc

from rating_client.errors import InvalidRequest, RatingRefused, Unavailable
from rating_service.cli.api_client import ApiRefusal


def test_a_refusal_names_its_status_each_field_and_the_advice_for_its_reason() -> None:
    error = InvalidRequest(
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
        "invalid request",
        {"reason": "must not be blank", "invoice_id": "is required"},
        {},
    )
    assert ApiRefusal(error, "127.0.0.1:50051", "fix it").message.splitlines() == [
        "invalid request",
        "  status: INVALID_ARGUMENT INVALID_ARGUMENT",
        "  field reason: must not be blank",
        "  field invoice_id: is required",
        "  next: fix it",
    ]


def test_a_failed_precondition_lists_what_failed_and_the_role_refusal_says_what_to_set() -> None:
    refused = RatingRefused(
        grpc.StatusCode.FAILED_PRECONDITION,
        "INSUFFICIENT_CREDIT",
        "account cannot cover transfer",
        {},
        {},
        ["available 100.00, needed 100.01"],
    )
    assert ApiRefusal(refused, "h:1", None).message.splitlines() == [
        "account cannot cover transfer",
        "  status: FAILED_PRECONDITION INSUFFICIENT_CREDIT",
        "  precondition: available 100.00, needed 100.01",
    ]
    denied = RatingRefused(grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_ALLOWED", "no", {}, {})
    assert (
        ApiRefusal(denied, "h:1", None)
        .message.splitlines()[-1]
        .startswith("  next: set RATING_API_KEY to a key of the tenant with a role")
    )


def test_a_server_out_of_reach_is_told_apart_from_one_that_answered_unavailable() -> None:
    # No rich status: the server was not reached at all.
    unreached = Unavailable(grpc.StatusCode.UNAVAILABLE, "", "connection refused", {}, {})
    assert ApiRefusal(unreached, "10.0.0.9:50051", None).message.splitlines()[-1] == (
        "  next: is `rating serve` (or `rating dev`) running at 10.0.0.9:50051?"
        " RATING_API_ADDRESS says where it listens"
    )
    # The server answered: its own reason and message stand, with no guess about the address.
    answered = Unavailable(
        grpc.StatusCode.UNAVAILABLE, "DEPENDENCY_UNAVAILABLE", "retry later", {}, {}
    )
    assert "10.0.0.9" not in ApiRefusal(answered, "10.0.0.9:50051", None).message
