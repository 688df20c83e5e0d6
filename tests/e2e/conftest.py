"""Fixtures of the browser tests: one ``genscope serve`` per test module, the owner's browser
and a fresh one (helpers in :mod:`tests.e2e.harness`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``genscope serve`` on a free port with a fresh data directory; stopped afterwards."""
    from tests.e2e.harness import start_server

    with start_server(tmp_path_factory.mktemp("genscope-data")) as base:
        yield base


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """The owner's browser (a fresh Chromium profile)."""
    from tests.e2e.harness import browser_session

    with browser_session() as driver:
        yield driver


@pytest.fixture
def fresh_browser() -> Iterator[Any]:
    """Another profile: no cookies, storage or token of the owner's."""
    from tests.e2e.harness import browser_session

    with browser_session("genscope-chrome-anon-") as driver:
        yield driver
