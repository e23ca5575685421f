"""Shared fixtures: real Mosquitto processes, SQLite files and throwaway PostgreSQL databases.

Nothing here is mocked. PostgreSQL is reached through ``REMON_TEST_PG_URL`` (``./dev.sh test``
sets it after installing/starting the server); a missing server fails the test loudly instead of
skipping it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, settings

from remon.brokers import MosquittoProcess

if TYPE_CHECKING:
    from playwright.sync_api import Browser

# CI explores a fixed sequence of examples (derandomize): a property that fails there fails on
# every run and can be reproduced, instead of turning a merge red at random. Development runs
# (the dev profile) keep drawing new examples, and a failure they find becomes a fix or an
# explicit @example.
settings.register_profile(
    "ci",
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile("dev", max_examples=100, deadline=None, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

DEFAULT_PG_URL = "postgresql+psycopg://postgres@/postgres?host=/var/run/postgresql"


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoProcess]:
    """One Mosquitto for the session (tests that restart a broker make their own)."""
    with MosquittoProcess(tmp_path_factory.mktemp("mosquitto")) as broker:
        yield broker


@pytest.fixture
def fresh_mosquitto(tmp_path: Path) -> Iterator[MosquittoProcess]:
    with MosquittoProcess(tmp_path / "mosquitto") as broker:
        yield broker


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'remon.db'}"


def _pg_admin_url() -> str:
    return os.environ.get("REMON_TEST_PG_URL", DEFAULT_PG_URL)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test; dropped afterwards."""
    import sqlalchemy as sa

    admin_url = _pg_admin_url()
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"remon_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {admin_url} ({exc.orig}); run the tests with "
            "./dev.sh test, which installs and starts it"
        )
    url = sa.make_url(admin_url).set(database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, driven by Playwright (one per test module)."""
    from playwright.sync_api import sync_playwright

    from remon.screenshots import CHROMIUM, launch_chromium

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: ./dev.sh test installs chromium"
    with sync_playwright() as pw:
        b = launch_chromium(pw)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Run a storage test against both SQLite and PostgreSQL."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))
