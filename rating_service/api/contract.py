"""ContractService: customers, contracts and commitments, converted between protos and dicts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from google.protobuf import json_format
from grpc import aio

from rating_client.gen.rating.v1 import contract_pb2, contract_pb2_grpc
from rating_service.api.edge import allow, current_caller
from rating_service.api.pages import Page, Position
from rating_service.api.wire import timestamp
from rating_service.core.auth import Role
from rating_service.core.contracts.amendments import Amendment
from rating_service.core.contracts.contract import (
    Contract,
    Customer,
    amendment_to_dict,
    contract_to_dict,
)
from rating_service.core.errors import InvalidArgument, ViolationCollector
from rating_service.core.money import format_decimal
from rating_service.ops.actions import OperatorActions
from rating_service.services.contract import Amended, ContractAdmin, Outcome
from rating_service.store.contract import Commitment, ContractPosition

READERS = (Role.ADMIN, Role.OPS, Role.RATER)


class ContractServicer(contract_pb2_grpc.ContractServiceServicer):
    """Converts ContractService messages to contract-administration calls and back."""

    def __init__(self, admin: ContractAdmin, actions: OperatorActions) -> None:
        self._admin = admin
        self._actions = actions

    @allow(Role.ADMIN)
    async def CreateCustomer(
        self, request: contract_pb2.CreateCustomerRequest, context: aio.ServicerContext
    ) -> contract_pb2.CreateCustomerResponse:
        created = await self._admin.create_customer(current_caller(), _fields(request))
        return contract_pb2.CreateCustomerResponse(customer=customer_message(created))

    @allow(*READERS)
    async def GetCustomer(
        self, request: contract_pb2.GetCustomerRequest, context: aio.ServicerContext
    ) -> contract_pb2.GetCustomerResponse:
        found = await self._admin.customer(current_caller(), request.customer_id)
        return contract_pb2.GetCustomerResponse(customer=customer_message(found))

    @allow(*READERS)
    async def ListCustomers(
        self, request: contract_pb2.ListCustomersRequest, context: aio.ServicerContext
    ) -> contract_pb2.ListCustomersResponse:
        violations = ViolationCollector()
        page = Page.read(request.page_size, request.page_token, (str,), violations)
        violations.raise_if_any()
        found = await self._admin.customers(
            current_caller(),
            after=None if page.after is None else str(page.after[0]),
            limit=page.limit,
        )
        customers, token = page.cut(found, lambda customer: (customer.customer_id,))
        return contract_pb2.ListCustomersResponse(
            customers=[customer_message(c) for c in customers], next_page_token=token
        )

    @allow(Role.ADMIN)
    async def CreateContract(
        self, request: contract_pb2.CreateContractRequest, context: aio.ServicerContext
    ) -> contract_pb2.CreateContractResponse:
        created = await self._admin.create_contract(current_caller(), _fields(request.contract))
        return contract_pb2.CreateContractResponse(contract=contract_message(created))

    @allow(*READERS)
    async def GetContract(
        self, request: contract_pb2.GetContractRequest, context: aio.ServicerContext
    ) -> contract_pb2.GetContractResponse:
        contract, commitments = await self._admin.contract(current_caller(), request.contract_id)
        return contract_pb2.GetContractResponse(
            contract=contract_message(contract),
            commitments=[commitment_message(c) for c in commitments],
        )

    @allow(*READERS)
    async def ListContracts(
        self, request: contract_pb2.ListContractsRequest, context: aio.ServicerContext
    ) -> contract_pb2.ListContractsResponse:
        violations = ViolationCollector()
        page = Page.read(request.page_size, request.page_token, (str, datetime, str), violations)
        violations.raise_if_any()
        found = await self._admin.contracts(
            current_caller(),
            request.customer_id or None,
            after=None if page.after is None else _contract_position(page.after),
            limit=page.limit,
        )
        contracts, token = page.cut(found, lambda c: (c.customer_id, c.term_start, c.contract_id))
        return contract_pb2.ListContractsResponse(
            contracts=[contract_message(c) for c in contracts], next_page_token=token
        )

    @allow(Role.ADMIN)
    async def AddCommitment(
        self, request: contract_pb2.AddCommitmentRequest, context: aio.ServicerContext
    ) -> contract_pb2.AddCommitmentResponse:
        outcome = await self._admin.add_commitment(current_caller(), _fields(request))
        return contract_pb2.AddCommitmentResponse(**_outcome_fields(outcome))

    @allow(Role.ADMIN)
    async def TopUp(
        self, request: contract_pb2.TopUpRequest, context: aio.ServicerContext
    ) -> contract_pb2.TopUpResponse:
        outcome = await self._admin.top_up(current_caller(), _fields(request))
        return contract_pb2.TopUpResponse(**_outcome_fields(outcome))

    @allow(Role.ADMIN)
    async def AdjustBalance(
        self, request: contract_pb2.AdjustBalanceRequest, context: aio.ServicerContext
    ) -> contract_pb2.AdjustBalanceResponse:
        outcome = await self._admin.adjust_balance(current_caller(), _fields(request))
        return contract_pb2.AdjustBalanceResponse(**_outcome_fields(outcome))

    @allow(Role.ADMIN)
    async def SetPaymentMethod(
        self, request: contract_pb2.SetPaymentMethodRequest, context: aio.ServicerContext
    ) -> contract_pb2.SetPaymentMethodResponse:
        _require_contract_id(request.contract_id)
        changed = await self._actions.set_payment_method(
            current_caller(), request.contract_id, request.payment_method
        )
        return contract_pb2.SetPaymentMethodResponse(
            contract=contract_message(changed.contract), retried_invoice_ids=changed.retried
        )

    @allow(Role.ADMIN)
    async def CancelContract(
        self, request: contract_pb2.CancelContractRequest, context: aio.ServicerContext
    ) -> contract_pb2.CancelContractResponse:
        _require_contract_id(request.contract_id)
        await self._actions.cancel_contract(current_caller(), request.contract_id)
        return contract_pb2.CancelContractResponse()

    @allow(Role.ADMIN, Role.OPS)
    async def BillNow(
        self, request: contract_pb2.BillNowRequest, context: aio.ServicerContext
    ) -> contract_pb2.BillNowResponse:
        _require_contract_id(request.contract_id)
        await self._actions.bill_now(current_caller(), request.contract_id)
        return contract_pb2.BillNowResponse()

    @allow(Role.ADMIN)
    async def AmendContract(
        self, request: contract_pb2.AmendContractRequest, context: aio.ServicerContext
    ) -> contract_pb2.AmendContractResponse:
        amended = await self._admin.amend_contract(current_caller(), _fields(request))
        return contract_pb2.AmendContractResponse(**_amended_fields(amended))

    @allow(Role.ADMIN)
    async def SetSeats(
        self, request: contract_pb2.SetSeatsRequest, context: aio.ServicerContext
    ) -> contract_pb2.SetSeatsResponse:
        amended = await self._admin.set_seats(current_caller(), _fields(request))
        return contract_pb2.SetSeatsResponse(**_amended_fields(amended))


def _amended_fields(amended: Amended) -> dict[str, Any]:
    return {
        "contract": contract_message(amended.contract),
        "amendment": amendment_message(amended.amendment),
        "replay": amended.replay,
    }


def amendment_message(amendment: Amendment) -> contract_pb2.ContractAmendment:
    """The wire form of an amendment (without the request's fingerprint)."""
    return json_format.ParseDict(_public(amendment), contract_pb2.ContractAmendment())


def _public(amendment: Amendment) -> dict[str, object]:
    """An amendment's dict form less its request's fingerprint (the server's own business)."""
    fields = amendment_to_dict(amendment)
    fields.pop("fingerprint", None)
    return fields


def _fields(message: Any) -> dict[str, object]:
    # Field names as declared, so the core's violation paths name the request's fields.
    fields: dict[str, object] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return fields


def _outcome_fields(outcome: Outcome) -> dict[str, Any]:
    return {"commitment": commitment_message(outcome.commitment), "replay": outcome.replay}


def customer_message(customer: Customer) -> contract_pb2.Customer:
    """The wire form of a customer."""
    return contract_pb2.Customer(customer_id=customer.customer_id, name=customer.name)


def contract_message(contract: Contract) -> contract_pb2.Contract:
    """The wire form of a contract: its dict form, less the tenant (always the caller's)."""
    fields = contract_to_dict(contract)
    del fields["tenant_id"]
    if contract.amendments:
        fields["amendments"] = [_public(a) for a in contract.amendments]
    return json_format.ParseDict(fields, contract_pb2.Contract())


def commitment_message(commitment: Commitment) -> contract_pb2.Commitment:
    """The wire form of a commitment's pool."""
    pool = commitment.pool
    message = contract_pb2.Commitment(
        pool_id=pool.pool_id,
        contract_id=pool.contract_id,
        reference=commitment.reference,
        kind=pool.kind.value,
        priority=pool.priority,
        cost_basis=format_decimal(pool.cost_basis),
        scope=sorted(pool.scope or ()),
        starts_at=timestamp(pool.starts_at),
        amount=format_decimal(pool.original_amount),
        balance=format_decimal(pool.balance),
        pending=format_decimal(pool.pending),
    )
    if pool.expires_at is not None:
        message.expires_at.CopyFrom(timestamp(pool.expires_at))
    return message


def _contract_position(position: Position) -> ContractPosition:
    """The contract position a page token names (its shape was checked by `Page.read`)."""
    customer_id, term_start, contract_id = position
    assert isinstance(term_start, datetime)
    return (str(customer_id), term_start, str(contract_id))


def _require_contract_id(contract_id: str) -> None:
    if not contract_id:
        raise InvalidArgument.of_field("contract_id", "is required")
