"""Shared fixtures. The suite runs in strict mode: an error inside cutscope raises."""

from __future__ import annotations

import os
import sys

import pytest

os.environ["CUTSCOPE_STRICT"] = "1"
os.environ.pop("CUTSCOPE_NAME", None)
os.environ.pop("CUTSCOPE_PARENT", None)
os.environ.pop("CUTSCOPE_DB", None)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # tests/ helpers: `import pgserver`


@pytest.fixture
def db_path(tmp_path):
    """A path for a fresh SQLite store."""
    return str(tmp_path / "trace.db")


@pytest.fixture
def db_url(db_path):
    """A URL for a fresh SQLite store."""
    return "sqlite:///" + db_path


@pytest.fixture(autouse=True)
def _no_tracer_leaks():
    """Every test leaves no tracer running (a leak would trace the next test)."""
    yield
    from cutscope.tracer import active

    t = active()
    if t is not None:
        import cutscope

        cutscope.stop()
        pytest.fail("test left a cutscope tracer running")


@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL server on loopback for this test session (see tests/pgserver.py)."""
    import pgserver

    srv = pgserver.Server()
    try:
        srv.start()
    except pgserver.Unavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI: {exc}")
        pytest.skip(f"PostgreSQL not available: {exc}")
    yield srv
    srv.stop()


@pytest.fixture
def pg_url(pg_server, request):
    """A URL for a fresh, empty PostgreSQL database on the session's server."""
    import re
    import secrets

    name = "t_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:40] + "_" + secrets.token_hex(3)
    return pg_server.fresh_url(name)


@pytest.fixture(scope="module")
def net(request):
    """Simulated hosts (tests/hosts.py), as many as the module's ``HOSTS``, with a
    PostgreSQL server on host 0: ``(hosts, pg)``; skipped, saying why, where they
    cannot be made."""
    from hosts import Hosts, Postgres, Unavailable

    hosts = Hosts(request.module.HOSTS)
    try:
        hosts.start()
    except Unavailable as exc:
        pytest.skip(f"no simulated hosts here: {exc}")
    pg = Postgres(hosts, 0)
    try:
        pg.start()
    except Unavailable as exc:
        hosts.stop()
        pytest.skip(f"no PostgreSQL on the simulated hosts: {exc}")
    try:
        yield hosts, pg
    finally:
        pg.stop()
        hosts.stop()
