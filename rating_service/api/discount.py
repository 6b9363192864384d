"""DiscountService: coupons and contract discounts, converted between protos and dicts."""

from __future__ import annotations

from google.protobuf import json_format
from grpc import aio

from rating_client.gen.rating.v1 import discount_pb2, discount_pb2_grpc
from rating_service.api.edge import allow, current_caller
from rating_service.api.pages import Page
from rating_service.api.wire import timestamp
from rating_service.core.auth import Role
from rating_service.core.billing.discounts import Coupon, coupon_to_dict
from rating_service.core.errors import ViolationCollector
from rating_service.services.discount import DiscountAdmin
from rating_service.store.discount import StoredCoupon, StoredDiscount

READERS = (Role.ADMIN, Role.OPS, Role.RATER)

_SERVER_SET = ("redemptions", "created_at", "archived_at")
"""Coupon fields the server sets: ignored in CreateCoupon."""


class DiscountServicer(discount_pb2_grpc.DiscountServiceServicer):
    """Converts DiscountService messages to coupon and discount calls and back."""

    def __init__(self, admin: DiscountAdmin) -> None:
        self._admin = admin

    @allow(Role.ADMIN)
    async def CreateCoupon(
        self, request: discount_pb2.CreateCouponRequest, context: aio.ServicerContext
    ) -> discount_pb2.CreateCouponResponse:
        fields = json_format.MessageToDict(request, preserving_proto_field_name=True)
        coupon = fields.get("coupon")
        if isinstance(coupon, dict):
            for name in _SERVER_SET:
                coupon.pop(name, None)
        stored, replay = await self._admin.create_coupon(current_caller(), fields)
        return discount_pb2.CreateCouponResponse(coupon=coupon_message(stored), replay=replay)

    @allow(*READERS)
    async def GetCoupon(
        self, request: discount_pb2.GetCouponRequest, context: aio.ServicerContext
    ) -> discount_pb2.GetCouponResponse:
        found = await self._admin.coupon(current_caller(), request.coupon_id)
        return discount_pb2.GetCouponResponse(coupon=coupon_message(found))

    @allow(*READERS)
    async def ListCoupons(
        self, request: discount_pb2.ListCouponsRequest, context: aio.ServicerContext
    ) -> discount_pb2.ListCouponsResponse:
        violations = ViolationCollector()
        page = Page.read(request.page_size, request.page_token, (str,), violations)
        violations.raise_if_any()
        found = await self._admin.coupons(
            current_caller(),
            after=None if page.after is None else str(page.after[0]),
            limit=page.limit,
        )
        coupons, token = page.cut(found, lambda stored: (stored.coupon.coupon_id,))
        return discount_pb2.ListCouponsResponse(
            coupons=[coupon_message(c) for c in coupons], next_page_token=token
        )

    @allow(Role.ADMIN)
    async def ArchiveCoupon(
        self, request: discount_pb2.ArchiveCouponRequest, context: aio.ServicerContext
    ) -> discount_pb2.ArchiveCouponResponse:
        archived = await self._admin.archive_coupon(current_caller(), request.coupon_id)
        return discount_pb2.ArchiveCouponResponse(coupon=coupon_message(archived))

    @allow(Role.ADMIN)
    async def ApplyCoupon(
        self, request: discount_pb2.ApplyCouponRequest, context: aio.ServicerContext
    ) -> discount_pb2.ApplyCouponResponse:
        fields = json_format.MessageToDict(request, preserving_proto_field_name=True)
        applied = await self._admin.apply_coupon(current_caller(), fields)
        return discount_pb2.ApplyCouponResponse(
            discount=discount_message(applied.discount), replay=applied.replay
        )

    @allow(Role.ADMIN)
    async def RemoveDiscount(
        self, request: discount_pb2.RemoveDiscountRequest, context: aio.ServicerContext
    ) -> discount_pb2.RemoveDiscountResponse:
        removed = await self._admin.remove_discount(
            current_caller(), request.contract_id, request.discount_id
        )
        return discount_pb2.RemoveDiscountResponse(discount=discount_message(removed))

    @allow(*READERS)
    async def ListContractDiscounts(
        self, request: discount_pb2.ListContractDiscountsRequest, context: aio.ServicerContext
    ) -> discount_pb2.ListContractDiscountsResponse:
        violations = ViolationCollector()
        page = Page.read(request.page_size, request.page_token, (str,), violations)
        violations.raise_if_any()
        found = await self._admin.discounts(
            current_caller(),
            request.contract_id,
            after=None if page.after is None else str(page.after[0]),
            limit=page.limit,
        )
        discounts, token = page.cut(found, lambda stored: (stored.discount.discount_id,))
        return discount_pb2.ListContractDiscountsResponse(
            discounts=[discount_message(d) for d in discounts], next_page_token=token
        )


def _terms_message(coupon: Coupon) -> discount_pb2.Coupon:
    return json_format.ParseDict(coupon_to_dict(coupon), discount_pb2.Coupon())


def coupon_message(stored: StoredCoupon) -> discount_pb2.Coupon:
    """The wire form of a stored coupon: its terms, redemptions and moments."""
    message = _terms_message(stored.coupon)
    message.redemptions = stored.redemptions
    message.created_at.CopyFrom(timestamp(stored.created_at))
    if stored.archived_at is not None:
        message.archived_at.CopyFrom(timestamp(stored.archived_at))
    return message


def discount_message(stored: StoredDiscount) -> discount_pb2.Discount:
    """The wire form of a discount, with its coupon's terms as applied."""
    discount = stored.discount
    message = discount_pb2.Discount(
        discount_id=discount.discount_id,
        contract_id=discount.contract_id,
        coupon=_terms_message(discount.coupon),
        request_id=stored.request_id,
        applied_at=timestamp(discount.applied_at),
        starts_at=timestamp(discount.starts_at),
    )
    if discount.ends_before is not None:
        message.ends_before.CopyFrom(timestamp(discount.ends_before))
    if discount.removed_at is not None:
        message.removed_at.CopyFrom(timestamp(discount.removed_at))
    return message
