"""Features and entitlements: the three kinds, their dict forms, and a card that grants them."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from rating_service.core.errors import InvalidArgument
from rating_service.core.pricing.catalog import catalog_from_document
from rating_service.core.pricing.features import (
    Feature,
    FeatureKind,
    entitlement,
    feature_from_dict,
    feature_to_dict,
)
from rating_service.core.pricing.rate_card import rate_card_from_dict, rate_card_to_dict

D = Decimal
PERIOD = (datetime(2025, 1, 1, tzinfo=UTC), datetime(2025, 2, 1, tzinfo=UTC))
IMAGES = Feature(FeatureKind.METERED, limit=D(1000), product_key="images")


@pytest.mark.parametrize(
    ("feature", "used", "allowed", "remaining"),
    [
        (Feature(FeatureKind.BOOLEAN), None, True, None),
        (Feature(FeatureKind.BOOLEAN, enabled=False), None, False, None),
        (Feature(FeatureKind.LIMIT, limit=D(20)), None, True, D(20)),
        (Feature(FeatureKind.LIMIT, limit=D(0)), None, False, D(0)),
        (IMAGES, D(0), True, D(1000)),
        (IMAGES, D("999.5"), True, D("0.5")),
        (IMAGES, D(1000), False, D(0)),
        (IMAGES, D(1200), False, D(0)),  # over (usage is not refused): nothing left
        (None, None, False, None),
    ],
)
def test_what_each_kind_entitles(
    feature: Feature | None, used: Decimal | None, allowed: bool, remaining: Decimal | None
) -> None:
    found = entitlement("f", feature, used, PERIOD)
    assert (found.allowed, found.remaining) == (allowed, remaining)


@pytest.mark.parametrize(
    "data",
    [
        {"kind": "boolean", "enabled": False},
        {"kind": "limit", "limit": "20"},
        {"kind": "metered", "product_key": "images", "limit": "1000"},
    ],
)
def test_features_read_back_from_their_dict_form(data: dict[str, object]) -> None:
    assert feature_to_dict(feature_from_dict(data)) == data


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"kind": "toggle"}, "kind"),
        ({"kind": "limit"}, "limit"),
        ({"kind": "limit", "limit": "-1"}, "limit"),
        ({"kind": "metered", "limit": "5"}, "product_key"),
        ({"kind": "boolean", "limit": "5"}, "limit"),
        ({"kind": "boolean", "enabled": "yes"}, "enabled"),
        ({"kind": "boolean", "quota": 1}, "quota"),
    ],
)
def test_bad_features_name_their_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        feature_from_dict(data, "features.x")
    assert f"features.x.{field}" in {v.field for v in refused.value.violations}


CARD = {
    "key": "list",
    "version": 1,
    "effective_from": "2025-01-01T00:00:00+00:00",
    "effective_until": None,
    "pricing_unit": "USD",
    "prices": {"images": {"model": "per_unit", "unit_price": "0.04"}},
    "features": {"hd-images": {"kind": "metered", "product_key": "images", "limit": "1000"}},
}


def test_a_rate_card_grants_features_and_the_catalog_checks_their_products() -> None:
    card = rate_card_from_dict(CARD)
    assert card.features == {"hd-images": IMAGES}
    assert rate_card_to_dict(card) == CARD
    products = [{"key": "images", "meter": {"event_type": "image"}}]
    assert catalog_from_document({"products": products, "rate_cards": [CARD]})
    wrong = {**CARD, "features": {"x": {"kind": "metered", "product_key": "audio", "limit": "1"}}}
    with pytest.raises(InvalidArgument) as refused:
        catalog_from_document({"products": products, "rate_cards": [wrong]})
    assert any("features.x.product_key" in v.field for v in refused.value.violations)
