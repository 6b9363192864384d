"""A calling service that has only rating_client installed: one debit, then two refusals.

tests/integration/api/test_client_alone.py runs it with the python of a virtualenv holding the
client distribution alone (`python -I calling_service.py TARGET API_KEY CUSTOMER_ID`); it prints
what it saw as JSON for the test to judge, so it imports nothing but the client and the stdlib.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import rating_client
from rating_client import InsufficientCredit, InvalidRequest, RatingClient


async def calls(target: str, api_key: str, customer_id: str) -> dict[str, Any]:
    """Rate 150 large-model tokens, then ask for more than is left, then send an unknown type."""
    seen: dict[str, Any] = {"client_file": rating_client.__file__}
    async with RatingClient(target, api_key, timeout_seconds=10) as rating:
        answer = await rating.rate_and_debit(
            event_id="alone-1",
            customer_id=customer_id,
            event_type="llm.completion",
            properties={"tokens": "150", "model": "large"},
        )
        seen["charge"] = answer.charge
        seen["draws"] = [[draw.pool_id, draw.amount] for draw in answer.draws]
        try:
            await rating.rate_and_debit(
                event_id="alone-2",
                customer_id=customer_id,
                event_type="llm.completion",
                properties={"tokens": "1000", "model": "large"},
            )
        except InsufficientCredit as refused:
            seen["insufficient_credit"] = [
                type(refused).__module__,
                refused.code.name,
                refused.reason,
            ]
        try:
            await rating.rate_and_debit(
                event_id="alone-3", customer_id=customer_id, event_type="nope", properties={}
            )
        except InvalidRequest as invalid:
            seen["invalid_request"] = [type(invalid).__module__, invalid.code.name]
            seen["invalid_fields"] = sorted(invalid.fields)
        balances = await rating.balances(customer_id)
        seen["remaining"] = [[pool.pool_id, pool.remaining] for pool in balances.pools]
    return seen


if __name__ == "__main__":
    target, api_key, customer_id = sys.argv[1:]
    print(json.dumps(asyncio.run(calls(target, api_key, customer_id))))
