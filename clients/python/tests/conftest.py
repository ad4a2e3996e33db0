"""The client against a real Paddock server and real machines.

PADDOCK_URL and PADDOCK_TOKEN name the server and a user; PADDOCK_OTHER_TOKEN another user (for the
test of someone else's reservation); PADDOCK_TEST_SPEC a spec at least two machines match (default
``static-host``). The machines must take files in their login's home. Paddock's own test
(test/clients/python.test.ts) starts a server on two static hosts and runs these with it.
"""

from __future__ import annotations

import os

import pytest

from paddock import Paddock


@pytest.fixture(scope="session")
def url() -> str:
    value = os.environ.get("PADDOCK_URL")
    if not value or not os.environ.get("PADDOCK_TOKEN"):
        pytest.fail("set PADDOCK_URL and PADDOCK_TOKEN to run against a server")
    return value


@pytest.fixture(scope="session")
def client(url: str) -> Paddock:
    return Paddock()


@pytest.fixture(scope="session")
def other(url: str) -> Paddock:
    token = os.environ.get("PADDOCK_OTHER_TOKEN")
    if not token:
        pytest.fail("set PADDOCK_OTHER_TOKEN (another user's token)")
    return Paddock(url, token)


@pytest.fixture(scope="session")
def spec() -> str:
    return os.environ.get("PADDOCK_TEST_SPEC", "static-host")
