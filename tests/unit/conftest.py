"""Fixtures shared by the unit tests. Plans come from :mod:`planfactory`, certificates from
:mod:`certfactory` (helper modules: ``tests/unit`` is on pytest's ``pythonpath``)."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from ikev2_vpn.settings import Settings, load_settings


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No VPN_* or ACME_* variable of the machine running the tests reaches the settings
    (a module uses it with ``pytestmark = pytest.mark.usefixtures("clean_environment")``)."""
    for name in list(os.environ):
        if name.upper().startswith(("VPN_", "ACME_")):
            monkeypatch.delenv(name)


@pytest.fixture
def load(monkeypatch: pytest.MonkeyPatch, clean_environment: None) -> Callable[..., Settings]:
    """``load(VPN_X="...")``: set the given variables, then validate the environment."""

    def _load(**env: str) -> Settings:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return load_settings()

    return _load
