"""Plans for the render tests: a typical server, with the fields a test is about replaced."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from functools import cache
from typing import Any

import certfactory
from pydantic import SecretStr

from ikev2_vpn import render
from ikev2_vpn.probe.backend import BackendChoice
from ikev2_vpn.settings import Account, Backend, ProposalSet
from ikev2_vpn.state.credentials import ServerCredentials

USERSPACE = BackendChoice(Backend.USERSPACE, "the kernel cannot carry ESP", esp_gcm=True)
KERNEL = BackendChoice(Backend.KERNEL, "the kernel accepted a test ESP state", esp_gcm=True)


def account(name: str, password: str) -> Account:
    return Account(name=name, password=SecretStr(password), source="VPN_USERS")


@cache
def own_ca() -> ServerCredentials:
    """One self-signed CA and leaf for every plan that does not bring its own (RSA keys are
    slow to make)."""
    return certfactory.own_ca_credentials()


def make_plan(**fields: Any) -> render.Plan:
    """A typical server (no users, its own CA, userspace IPsec, one DNS server, compatible
    proposals, no static IPs, RADIUS or IPv6) with ``fields`` replaced."""
    typical = render.Plan(
        host="vpn.example.com",
        accounts=(),
        credentials=own_ca(),
        pool_v4=ipaddress.IPv4Network("10.10.10.0/24"),
        dns=(ipaddress.ip_address("198.51.100.53"),),
        backend=USERSPACE,
        proposals=ProposalSet.COMPATIBLE,
        log_level=1,
        egress_interface="eth0",
    )
    return replace(typical, **fields)
