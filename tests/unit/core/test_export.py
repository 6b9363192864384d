"""Where a continuous export puts each rated event: its UTC hour's partition, its batch's file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from rating_service.core.export import COLUMNS, ExportKind, by_partition, partition_path

PLUS_TWO = timezone(timedelta(hours=2))


@pytest.mark.parametrize(
    ("event_time", "batch", "path"),
    [
        # The last microsecond of an hour stays in it; the next one starts the next hour.
        (
            datetime(2026, 11, 30, 9, 59, 59, 999999, UTC),
            1,
            "dt=2026-11-30/hour=09/part-0000000001",
        ),
        (datetime(2026, 11, 30, 10, 0, 0, 0, UTC), 1, "dt=2026-11-30/hour=10/part-0000000001"),
        # Midnight turns the day; the batch number names the file.
        (datetime(2026, 12, 1, 0, 0, tzinfo=UTC), 42, "dt=2026-12-01/hour=00/part-0000000042"),
        # 01:30 at +02:00 is 23:30 UTC the day before: partitions are UTC.
        (datetime(2026, 12, 1, 1, 30, tzinfo=PLUS_TWO), 7, "dt=2026-11-30/hour=23/part-0000000007"),
    ],
)
def test_an_event_goes_to_its_utc_hour_and_its_batch(
    event_time: datetime, batch: int, path: str
) -> None:
    assert partition_path(event_time, batch) == f"{path}.parquet"


def test_a_batch_is_split_by_hour_keeping_the_rows_order() -> None:
    at = datetime(2026, 11, 30, 9, 30, tzinfo=UTC)
    rows = [("a", at), ("b", at + timedelta(hours=1)), ("c", at + timedelta(minutes=29))]
    assert by_partition(rows, 3, 1) == {
        "dt=2026-11-30/hour=09/part-0000000003.parquet": [rows[0], rows[2]],
        "dt=2026-11-30/hour=10/part-0000000003.parquet": [rows[1]],
    }


def test_every_kind_has_columns_with_unique_names() -> None:
    for kind in ExportKind:
        names = [column.name for column in COLUMNS[kind]]
        assert len(names) == len(set(names)) > 0
