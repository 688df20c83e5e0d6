"""Fixtures of the dashboard tests: the engine's reports, generated once per session."""

from __future__ import annotations

import pytest

from tests.frontend import samples


@pytest.fixture(scope="session", autouse=True)
def engine_reports_folder(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Real engine reports of tiny models (:mod:`tests.frontend.reports`), generated on first
    use into the session's tmp dir and read back from there by :mod:`tests.frontend.samples`."""
    samples.use_folder(tmp_path_factory.mktemp("engine-reports"))
