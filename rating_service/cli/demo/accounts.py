"""Opening the demo customers through the API: customer, contract and welcome credit each."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import json_format

from rating_client import RatingClient
from rating_client.gen.rating.v1 import contract_pb2
from rating_service.cli.demo.plan import CUSTOMERS, contract_terms
from rating_service.cli.demo.state import DemoAccount, DemoState, Note, ServiceStats
from rating_service.cli.demo.traffic import SERVICES
from rating_service.cli.demo.view import money


async def open_accounts(client: RatingClient, state: DemoState, run_id: str, note: Note) -> None:
    """Open each demo customer's contract with a free credit, through the API."""
    plan = state.plan
    start = datetime.now(UTC).replace(microsecond=0)
    for customer in CUSTOMERS:
        customer_id = f"{customer.name}-{run_id}"
        await client.call(
            client.contracts.CreateCustomer,
            contract_pb2.CreateCustomerRequest(
                customer_id=customer_id, name=f"{customer.name.title()} (demo)"
            ),
        )
        terms = contract_terms(customer, customer_id, plan, start)
        reply = await client.call(
            client.contracts.CreateContract,
            contract_pb2.CreateContractRequest(
                contract=json_format.ParseDict(terms, contract_pb2.Contract())
            ),
        )
        contract_id = reply.contract.contract_id
        await client.idempotent(
            client.contracts.AddCommitment,
            contract_pb2.AddCommitmentRequest(
                grant_id=f"welcome-{customer_id}",
                contract_id=contract_id,
                kind="credit",
                amount=str(plan.starting_credit),
                memo="rating dev --demo: welcome credit",
            ),
        )
        state.accounts.append(
            DemoAccount(customer, customer_id, contract_id, customer.payment_method)
        )
        note(
            "contract",
            f"{customer.name}: contract {contract_id} opened, "
            f"{money(plan.starting_credit)} free credit, pays with {customer.payment_method}",
        )
    for profile in SERVICES:
        state.services[profile.name] = ServiceStats(profile.name)
