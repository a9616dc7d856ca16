"""Fixtures of the integration tier: the scored world of test_scoring.py and test_drift.py."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.integration.scored_world import World, build_world, world_environment

if TYPE_CHECKING:
    from collections.abc import Iterator

    from include.mlops.core.settings import Settings


@pytest.fixture(scope="session")
def scored_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """The simulated world with a champion and scored days (built once, whichever module asks first)."""
    return build_world(tmp_path_factory)


@pytest.fixture(scope="module")
def world_settings(scored_world: World) -> Iterator[Settings]:
    """The process settings pointed at the shared world for this module."""
    with world_environment(scored_world) as s:
        yield s
