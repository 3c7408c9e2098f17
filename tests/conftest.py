"""Test guards and shared fixtures.

An autouse guard fails any test that opens a connection or sends a datagram to an address
outside loopback: tests talk only to servers they start themselves (STYLE.md 9).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _check_address(address: Any) -> None:
    if isinstance(address, (str, bytes)):  # unix socket path
        return
    host = address[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise AssertionError(f"test tried to reach {host!r} by name") from None
    if not ip.is_loopback and not ip.is_unspecified:
        raise AssertionError(f"test tried to reach {host}: only loopback is allowed")


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_sendto = socket.socket.sendto

    def connect(self: socket.socket, address: Any) -> None:
        _check_address(address)
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        _check_address(address)
        return real_connect_ex(self, address)

    def sendto(self: socket.socket, data: bytes, *args: Any) -> int:
        _check_address(args[-1])
        return real_sendto(self, data, *args)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket.socket, "sendto", sendto)
    yield


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


# Conformance suites record each case here; the totals are printed at the end of the run.
_CONFORMANCE: dict[str, list[int]] = {}
_DIFFERENCES: dict[str, str] = {}  # suite -> where its expected differences are explained


def record_conformance(suite: str, passed: bool, *, differences_explained_in: str = "") -> None:
    """Count one case of ``suite``. ``differences_explained_in``: the suite is compared with
    another implementation, and a case that differs is an expected, explained difference
    (its test asserts the explanation), not a failure; the summary says so and where."""
    counts = _CONFORMANCE.setdefault(suite, [0, 0])
    counts[0 if passed else 1] += 1
    if differences_explained_in:
        _DIFFERENCES[suite] = differences_explained_in


def conformance_lines() -> list[str]:
    lines = [
        "(a case that does not match fails its own test, unless its line says the difference "
        "is expected)"
    ]
    for suite, (passed, failed) in sorted(_CONFORMANCE.items()):
        line = f"{suite}: {passed} of {passed + failed} cases passed"
        if suite in _DIFFERENCES:
            line = (
                f"{suite}: {passed} of {passed + failed} cases agree; the other {failed} are "
                f"expected differences, each explained in {_DIFFERENCES[suite]} (not failures)"
            )
        lines.append(line)
    return lines


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _CONFORMANCE:
        return
    terminalreporter.section("conformance suites")
    for line in conformance_lines():
        terminalreporter.write_line(line)


# -- the report store on both engines (tests/test_reports_*.py) -----------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """A real PostgreSQL server for the session (tests/pgserver.py); skipped when PostgreSQL
    is not installed, except under CI, where .ci/run installs it."""
    import os

    from tests.pgserver import PostgresServer, postgres_bin

    if postgres_bin() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL is not installed (.ci/run installs it)")
        pytest.skip("PostgreSQL is not installed")
    with PostgresServer() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty report store on each engine."""
    if request.param == "sqlite":
        return str(tmp_path / "reports.sqlite")
    server = request.getfixturevalue("postgres_server")
    return str(server.new_database())
