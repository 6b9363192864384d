"""Catalog documents as YAML files: numbers read exactly (never as floats), written back stably."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml


class _ExactLoader(yaml.SafeLoader):
    """SafeLoader that reads `0.0000025` as Decimal and leaves timestamps as ISO-8601 text."""


def _exact_number(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Decimal:
    return Decimal(loader.construct_scalar(node).replace("_", ""))


_ExactLoader.add_constructor("tag:yaml.org,2002:float", _exact_number)
# Timestamps stay text: the catalog parses them itself and insists on an explicit UTC offset.
_ExactLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_catalog_text(text: str) -> dict[str, Any]:
    """Parse a catalog document from YAML text."""
    document = yaml.load(text, Loader=_ExactLoader)
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ValueError("a catalog file must be a mapping with products and rate_cards")
    return document


def read_catalog_file(path: Path) -> dict[str, Any]:
    """Parse a catalog YAML file."""
    return load_catalog_text(path.read_text())


def dump_catalog(document: dict[str, object]) -> str:
    """YAML for a catalog document; decimals are already strings, so they stay exact."""
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)
