"""`rating customers / contracts / credits`: the operator CLI, through a real server's API."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable

import pytest
from click.testing import CliRunner, Result

from rating_service.cli import main
from rating_service.core.auth import Role
from rating_service.runtime.server import RunningServer
from tests.conftest import TenantKeys
from tests.integration.billing import load_catalog
from tests.integration.cycles import api_env

Rating = Callable[..., Awaitable[Result]]


def as_key(server: RunningServer, token: str) -> Rating:
    """`rating ...` through the test's server, acting with this API key."""
    env = api_env(server, token)

    async def run(*args: str) -> Result:
        # In a thread: the CLI runs its own event loop, the server ours.
        return await asyncio.to_thread(CliRunner().invoke, main, list(args), env=env)

    return run


@pytest.fixture
async def rating(database_url: str, server: RunningServer, acme: TenantKeys) -> Rating:
    """`rating ...` as acme's admin, whose catalog is the test catalog (rate card `list`)."""
    await load_catalog(database_url, acme.tenant_id)
    return as_key(server, acme.tokens[Role.ADMIN])


async def ok(rating: Rating, *args: str) -> str:
    """The output of a command that must succeed."""
    result = await rating(*args)
    assert result.exit_code == 0, result.output
    return result.output


async def refused(rating: Rating, *args: str) -> str:
    """The output of a command that must fail as a click error (exit 1)."""
    result = await rating(*args)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: "), result.output
    return result.output


async def open_contract(rating: Rating, customer_id: str = "initech") -> str:
    """A customer and an evergreen contract on the `list` rate card; the contract id."""
    await ok(rating, "customers", "create", customer_id)
    created = await ok(
        rating,
        *("contracts", "create", "--customer", customer_id),
        *("--rate-card", "list", "--start", "2026-01-01T00:00:00Z"),
    )
    return created.strip()


def pools(shown: str) -> dict[str, str]:
    """`contracts show` output → reference → the pool's line."""
    lines = shown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("commitments:"))
    found = {}
    for line in lines[start + 1 :]:
        reference = re.search(r"\((\S+)\)$", line)
        assert reference is not None, line
        found[reference.group(1)] = line.strip()
    assert len(found) == int(lines[start].split()[1]), shown
    return found


async def test_customers_and_contracts_are_created_listed_and_shown(rating: Rating) -> None:
    created = await ok(rating, "customers", "create", "acme-1", "--name", "A1")
    assert created.strip() == "customer acme-1 (A1)"
    await ok(rating, "customers", "create", "acme-2")
    listed = await ok(rating, "customers", "list")
    assert listed.splitlines() == ["acme-1  A1", "acme-2  acme-2"]

    first = await ok(
        rating,
        *("contracts", "create", "--customer", "acme-1", "--rate-card"),
        *("list", "--start", "2026-01-15T00:00:00Z", "--end", "2026-03-01T02:00:00+05:00"),
        *("--spend-cap", "250.50", "--frequency", "quarterly"),
    )
    # 02:00 at +05:00 is 21:00 UTC the day before; the anchor is in UTC, so its day is the 28th.
    second = await ok(
        rating,
        *("contracts", "create", "--customer", "acme-1", "--rate-card"),
        *("list", "--start", "2026-03-01T02:00:00+05:00", "--overage-policy", "arrears"),
    )
    first_id, second_id = first.strip(), second.strip()
    assert re.fullmatch(r"ctr_\S+", first_id) and re.fullmatch(r"ctr_\S+", second_id)
    await ok(
        rating,
        *("contracts", "create", "--customer", "acme-2", "--rate-card"),
        "list",
    )

    of_acme_1 = await ok(rating, "contracts", "list", "--customer", "acme-1")
    assert of_acme_1.splitlines() == [
        f"{first_id}  acme-1  2026-01-15T00:00:00+00:00 – 2026-02-28T21:00:00+00:00  list  USD"
        "  active",
        f"{second_id}  acme-1  2026-02-28T21:00:00+00:00 – open  list  USD  active",
    ]
    everyone = await ok(rating, "contracts", "list")
    assert len(everyone.splitlines()) == 3

    shown = await ok(rating, "contracts", "show", first_id)
    assert "billing:          quarterly, from day 15 at 00:00:00 UTC" in shown
    assert "overage policy:   block" in shown
    assert "spend cap:        250.50 per period" in shown
    assert "commitments: 0" in shown
    later = await ok(rating, "contracts", "show", second_id)
    assert "from day 28 at 00:00:00 UTC" in later
    assert "overage policy:   arrears" in later
    assert "spend cap:        none" in later


async def test_grants_replay_top_ups_add_and_adjustments_never_overdraw(rating: Rating) -> None:
    contract_id = await open_contract(rating)
    grant = (
        *("credits", "grant", "--contract", contract_id),
        *("--amount", "100", "--grant-id", "welcome", "--memo", "welcome credit"),
        *("--scope", "calls", "--scope", "tokens", "--priority", "2"),
        *("--starts", "2026-02-01T00:00:00+01:00", "--expires", "2030-01-01T00:00:00Z"),
    )
    granted = await ok(rating, *grant)
    again = await ok(rating, *grant)
    assert granted.startswith("done: pool_") and again.startswith("replay: pool_")
    pool_id = granted.split()[1]
    assert again.split()[1] == pool_id
    once = pools(await ok(rating, "contracts", "show", contract_id))
    assert list(once) == ["grant:welcome"]
    mismatch = await refused(rating, *grant[:-2], "--expires", "2031-01-01T00:00:00Z")
    assert "'grant:welcome' was already used with a different request" in mismatch

    topped = await ok(
        rating,
        *("credits", "top-up", "--contract", contract_id),
        *("--amount", "50.25", "--top-up-id", "tu-1", "--cost-basis", "0.8"),
    )
    assert topped.startswith("done: pool_") and "(top_up:tu-1)" in topped

    before = await ok(rating, "contracts", "show", contract_id)
    overdraw = await refused(
        rating,
        *("credits", "adjust", "--contract", contract_id, "--pool", pool_id),
        *("--amount=-100.01", "--adjustment-id", "adj-1", "--reason", "refund"),
    )
    assert "insufficient credit" in overdraw
    assert "available 100.00, needed 100.01" in overdraw
    assert await ok(rating, "contracts", "show", contract_id) == before

    # The refused adjustment used up nothing, not even its id.
    adjusted = await ok(
        rating,
        *("credits", "adjust", "--contract", contract_id, "--pool", pool_id),
        *("--amount", "-40.5", "--adjustment-id", "adj-1", "--reason", "refund"),
    )
    assert adjusted.startswith(f"done: {pool_id}  credit  original 100  balance 59.5  pending 0")

    shown = pools(await ok(rating, "contracts", "show", contract_id))
    assert shown["grant:welcome"] == (
        f"{pool_id}  credit  original 100  balance 59.5  pending 0"
        "  starts 2026-01-31T23:00:00+00:00  expires 2030-01-01T00:00:00+00:00"
        "  scope calls,tokens  priority 2  cost basis 0  (grant:welcome)"
    )
    # Balances are the ledger's exact sums: the top-up is funded 40.200 paid + 10.050 discount.
    assert re.fullmatch(
        rf"{topped.split()[1]}  credit  original 50\.25  balance 50\.250  pending 0"
        r"  starts \S+  expires never  scope all products  priority 0  cost basis 0\.8"
        r"  \(top_up:tu-1\)",
        shown["top_up:tu-1"],
    )
    assert len(shown) == 2


async def test_bad_input_exits_1_naming_the_problem(
    rating: Rating, server: RunningServer, acme: TenantKeys, globex: TenantKeys
) -> None:
    await ok(rating, "customers", "create", "initech")
    create = ("contracts", "create", "--customer", "initech")

    unknown_card = await refused(rating, *create, "--rate-card", "gold")
    assert "'gold' is not a rate card of the catalog" in unknown_card
    naive = await refused(rating, *create, "--rate-card", "list", "--start", "2026-01-01T00:00")
    assert "--start '2026-01-01T00:00' has no UTC offset" in naive
    garbled = await refused(rating, *create, "--rate-card", "list", "--end", "next tuesday")
    assert "--end 'next tuesday' is not an ISO 8601 timestamp" in garbled
    nobody = await refused(
        rating,
        *("contracts", "create", "--customer", "nobody"),
        *("--rate-card", "list"),
    )
    assert "no customer 'nobody'" in nobody
    assert (await ok(rating, "contracts", "list")) == ""

    contract_id = (await ok(rating, *create, "--rate-card", "list")).strip()
    grant = ("credits", "grant", "--contract", contract_id, "--grant-id", "g")
    naive_expiry = await refused(rating, *grant, "--amount", "5", "--expires", "2027-01-01")
    assert "--expires '2027-01-01' has no UTC offset" in naive_expiry
    not_a_number = await refused(rating, *grant, "--amount", "five")
    assert "amount: 'five' is not a decimal number" in not_a_number
    out_of_scope = await refused(rating, *grant, "--amount", "5", "--scope", "images")
    assert "scope names products the catalog does not have: images" in out_of_scope
    no_contract = await refused(
        rating,
        *("credits", "top-up", "--contract", "ctr_missing"),
        *("--amount", "5", "--top-up-id", "t"),
    )
    assert "no contract 'ctr_missing'" in no_contract
    shown = await ok(rating, "contracts", "show", contract_id)
    assert "commitments: 0" in shown

    # A key of another tenant sees none of it, and cannot change it.
    other = as_key(server, globex.tokens[Role.ADMIN])
    assert await ok(other, "customers", "list") == ""
    assert await ok(other, "contracts", "list") == ""
    hidden = await refused(other, "contracts", "show", contract_id)
    assert f"Error: no contract {contract_id!r}" in hidden
    assert "status: NOT_FOUND CONTRACT_NOT_FOUND" in hidden
    elsewhere = await refused(other, *grant, "--amount", "5")
    assert f"no contract {contract_id!r}" in elsewhere
    # A rater key may read contracts, not grant credit: the role it needs is named.
    rater = await refused(as_key(server, acme.tokens[Role.RATER]), *grant, "--amount", "5")
    assert "this call needs the admin role" in rater
    assert "status: PERMISSION_DENIED ROLE_NOT_ALLOWED" in rater
    assert "commitments: 0" in await ok(rating, "contracts", "show", contract_id)
