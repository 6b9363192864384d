"""The collector's tuning for long-running processes: freeze startup's objects, scan less."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from rating_service.runtime.garbage import collect_garbage_less_often


@pytest.fixture
def restored() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored")
def test_startup_objects_are_frozen_and_young_scans_made_rare() -> None:
    gc.set_threshold(700, 10, 10)
    collect_garbage_less_often(50_000)
    assert gc.get_threshold() == (50_000, 10, 10)
    assert gc.get_freeze_count() > 0


@pytest.mark.usefixtures("restored")
def test_zero_keeps_pythons_defaults() -> None:
    gc.set_threshold(700, 10, 10)
    collect_garbage_less_often(0)
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == 0
