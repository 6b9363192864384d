"""Matrix pricing: a price per combination of dimension values, usage tracked per cell."""

from __future__ import annotations

from decimal import Decimal

import pytest

from rating_service.core.errors import InvalidArgument
from rating_service.core.pricing import (
    FlatFee,
    Graduated,
    Matrix,
    MatrixCell,
    Percentage,
    PerUnit,
    Tier,
    incremental_charge,
    usage_cell,
)

D = Decimal

LLM = Matrix(
    ("model", "token_type"),
    (
        MatrixCell(("gpt-4o", "input"), PerUnit(D("0.0000025"))),
        MatrixCell(("gpt-4o", "output"), PerUnit(D("0.00001"))),
        # the first million mini input tokens at 0.15/M, then 0.10/M
        MatrixCell(
            ("gpt-4o-mini", "input"),
            Graduated((Tier(D(1_000_000), D("0.00000015")), Tier(None, D("0.0000001")))),
        ),
    ),
)


@pytest.mark.parametrize(
    ("dimensions", "before", "quantity", "charge"),
    [
        ({"model": "gpt-4o", "token_type": "input"}, "0", "1000", "0.0025"),  # 1000×0.0000025
        ({"model": "gpt-4o", "token_type": "output"}, "0", "1000", "0.01"),  # 1000×0.00001
        # the cell's own period-to-date decides the tier: 999 000 used, 2000 more
        # = 1000×0.00000015 + 1000×0.0000001 = 0.00015 + 0.0001
        ({"model": "gpt-4o-mini", "token_type": "input"}, "999000", "2000", "0.00025"),
        # extra properties are ignored, only the matrix dimensions select the cell
        ({"model": "gpt-4o", "token_type": "input", "region": "eu"}, "5", "4", "0.00001"),
    ],
)
def test_matrix_charges_price_the_selected_cell(
    dimensions: dict[str, str], before: str, quantity: str, charge: str
) -> None:
    priced = incremental_charge(LLM, D(before), D(quantity), dimensions)
    assert priced.amount == D(charge)
    cell = usage_cell(LLM, dimensions)
    assert all(line.cell == cell for line in priced.lines)


def test_usage_cell_is_the_tracking_key() -> None:
    assert usage_cell(LLM, {"token_type": "output", "model": "gpt-4o"}) == ("gpt-4o", "output")
    assert usage_cell(PerUnit(D(1)), {"model": "x"}) == ()


def test_an_unknown_combination_is_an_error_naming_the_values() -> None:
    with pytest.raises(InvalidArgument) as error:
        incremental_charge(LLM, D(0), D(1), {"model": "gpt-4o-mini", "token_type": "output"})
    assert error.value.reason == "UNPRICED_DIMENSIONS"
    assert [v.field for v in error.value.violations] == ["dimensions"]
    assert "model='gpt-4o-mini', token_type='output'" in error.value.message


def test_a_missing_dimension_is_an_error_naming_it() -> None:
    with pytest.raises(InvalidArgument) as error:
        incremental_charge(LLM, D(0), D(1), {"model": "gpt-4o"})
    assert [v.field for v in error.value.violations] == ["dimensions.token_type"]


def test_period_total_sums_the_cells_with_labelled_lines() -> None:
    total = LLM.period_total(
        {
            ("gpt-4o", "input"): D(1_000_000),  # 1M × 0.0000025 = 2.5
            ("gpt-4o", "output"): D(100_000),  # 100k × 0.00001 = 1
            ("gpt-4o-mini", "input"): [D(600_000), D(600_000)],  # 1M×0.15/M + 200k×0.10/M = 0.17
        }
    )
    assert total.amount == D("3.67")
    assert {line.cell for line in total.lines} == {
        ("gpt-4o", "input"),
        ("gpt-4o", "output"),
        ("gpt-4o-mini", "input"),
    }


def test_percentage_and_flat_fee_cells() -> None:
    deals = Matrix(
        ("segment",),
        (
            MatrixCell(("enterprise",), Percentage(D("0.1"))),
            MatrixCell(("smb",), Percentage(D("0.2"), D(1))),
            MatrixCell(("platform",), FlatFee(D(100))),
        ),
    )
    # 0.1 × 500 = 50
    assert incremental_charge(deals, D(9999), D(500), {"segment": "enterprise"}).amount == D(50)
    # 0.2 × 10 + 1 = 3
    assert incremental_charge(deals, D(0), D(10), {"segment": "smb"}).amount == D(3)
    assert incremental_charge(deals, D(0), D(10), {"segment": "platform"}).amount == D(0)
    # period: enterprise events 500 and 100 (50 + 10), smb event 10 (3), platform fee 100
    total = deals.period_total(
        {("enterprise",): [D(500), D(100)], ("smb",): D(10), ("platform",): D(0)}
    )
    assert total.amount == D(163)


@pytest.mark.parametrize(
    ("dimensions", "cells", "fields"),
    [
        ((), (MatrixCell((), PerUnit(D(1))),), ["dimensions"]),
        (("model", "model"), (MatrixCell(("a", "b"), PerUnit(D(1))),), ["dimensions[1]"]),
        (("model",), (), ["cells"]),
        (("model",), (MatrixCell(("a", "input"), PerUnit(D(1))),), ["cells[0].values"]),
        (("model",), (MatrixCell(("",), PerUnit(D(1))),), ["cells[0].values"]),
        (
            ("model",),
            (MatrixCell(("a",), PerUnit(D(1))), MatrixCell(("a",), PerUnit(D(2)))),
            ["cells[1].values"],  # the same combination priced twice
        ),
        (
            ("model",),
            (MatrixCell(("a",), Matrix(("x",), (MatrixCell(("y",), PerUnit(D(1))),))),),  # type: ignore[arg-type]
            ["cells[0].price"],  # no matrix inside a matrix
        ),
    ],
)
def test_invalid_matrices_name_the_field(
    dimensions: tuple[str, ...], cells: tuple[MatrixCell, ...], fields: list[str]
) -> None:
    with pytest.raises(InvalidArgument) as error:
        Matrix(dimensions, cells)
    assert [v.field for v in error.value.violations] == fields
