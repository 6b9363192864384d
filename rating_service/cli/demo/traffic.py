"""The simulated services: what one of their requests uses, how often, rated through the API."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from rating_client import RatingClient, RatingError
from rating_service.cli.demo.state import DemoState


@dataclass(frozen=True)
class Usage:
    """One billable event of a request, as the service reports it."""

    event_type: str
    properties: Mapping[str, str]
    part: str
    """Tells the events of one request apart in their ids."""


def chat_completion(rng: random.Random) -> tuple[Usage, ...]:
    """A chat completion: its input tokens, then its output tokens."""
    model = rng.choice(("gpt-4o", "gpt-4o-mini", "gpt-4.1"))
    return (
        Usage(
            "llm.completion",
            {"model": model, "token_type": "input", "tokens": str(rng.randint(300, 3000))},
            "in",
        ),
        Usage(
            "llm.completion",
            {"model": model, "token_type": "output", "tokens": str(rng.randint(50, 800))},
            "out",
        ),
    )


def embedding_batch(rng: random.Random) -> tuple[Usage, ...]:
    """A batch of documents embedded."""
    return (Usage("embedding.created", {"tokens": str(rng.randint(20_000, 200_000))}, "emb"),)


def image_generation(rng: random.Random) -> tuple[Usage, ...]:
    """One image, mostly standard quality."""
    return (
        Usage("image.generated", {"quality": rng.choice(("standard", "standard", "hd"))}, "img"),
    )


@dataclass(frozen=True)
class ServiceProfile:
    """An internal service of the AI company: what one of its requests uses, and how often."""

    name: str
    requests_per_second: float
    usage: Callable[[random.Random], tuple[Usage, ...]]


SERVICES = (
    ServiceProfile("chat-api", 3.0, chat_completion),
    ServiceProfile("embeddings-batch", 1.0, embedding_batch),
    ServiceProfile("image-gen", 1.0, image_generation),
)
"""About eight RateAndDebit calls a second, some $0.07 a second across the customers."""


async def drive(
    client: RatingClient, profile: ServiceProfile, state: DemoState, run_id: str
) -> None:
    """One service's traffic: requests at random moments, each for a random customer."""
    rng = random.Random()
    stats = state.services[profile.name]
    pace = profile.requests_per_second * state.plan.traffic_scale
    for n in itertools.count(1):
        await asyncio.sleep(rng.expovariate(pace))
        account = rng.choice(state.accounts)
        for usage in profile.usage(rng):
            try:
                answer = await client.rate_and_debit(
                    event_id=f"{profile.name}-{run_id}-{n}-{usage.part}",
                    customer_id=account.customer_id,
                    event_type=usage.event_type,
                    properties=usage.properties,
                )
            except RatingError as refused:
                reason = refused.reason or refused.code.name
                stats.record(time.monotonic(), None, f"{account.customer.name}: {reason}")
                break  # the rest of a refused request is not sent
            stats.record(time.monotonic(), Decimal(answer.charge or "0"))
