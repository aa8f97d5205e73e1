"""render.plan(): where the settings, the machine's facts and the state under /data meet."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from planfactory import KERNEL, account, own_ca
from pydantic import SecretStr

from ikev2_vpn import render
from ikev2_vpn.fence import Gateway
from ikev2_vpn.probe import Machine
from ikev2_vpn.probe.identity import ServerIdentity
from ikev2_vpn.probe.network import Egress, EgressV6
from ikev2_vpn.settings import ProfilePasswords, ProposalSet, Settings, V6Egress
from ikev2_vpn.state.server import Certificate, ServerState

MACHINE = Machine(
    egress=Egress("eth1", ipaddress.IPv4Address("172.30.0.2"), ()),
    egress_v6=EgressV6("eth2", (), ()),
    backend=KERNEL,
    identity=ServerIdentity("vpn.example.net", "public address reported by a test"),
    gateways=(Gateway(ipaddress.ip_address("172.30.0.1"), "eth1"),),
    dialled=ipaddress.ip_address("203.0.113.9"),
)
DAVE_IP = ipaddress.IPv4Address("10.20.0.130")
STATE = ServerState(
    Certificate(own_ca()),
    (account("alice", "a pw"), account("dave", "d pw")),
    {"dave": DAVE_IP},
)


def test_every_setting_and_fact_reaches_the_plan(load: Callable[..., Settings]) -> None:
    settings = load(
        VPN_POOL_V4="10.20.0.0/24",
        VPN_POOL_V4_STATIC="10.20.0.128/26",
        VPN_DNS="9.9.9.9",
        VPN_PROPOSALS="modern",
        VPN_LOG_LEVEL="2",
        VPN_DPD_DELAY="45",
        VPN_CLIENT_ISOLATION="true",
        VPN_ALLOW_SERVER_ACCESS="true",
        VPN_ALLOW_LINK_LOCAL="true",
        VPN_POOL_V6="fd00:1::/112",
        VPN_POOL_V6_EGRESS="routed",
        VPN_PROFILE_PASSWORDS="omit",
        VPN_PROFILE_ALWAYS_ON="true",
        VPN_CLIENT_DENY="192.168.0.0/16",
        VPN_CLIENT_ALLOW="192.168.1.0/24",
    )
    assert render.plan(settings, MACHINE, STATE) == render.Plan(
        host="vpn.example.net",
        accounts=STATE.accounts,
        credentials=STATE.certificate.credentials,
        pool_v4=ipaddress.IPv4Network("10.20.0.0/24"),
        dns=(ipaddress.ip_address("9.9.9.9"),),
        backend=KERNEL,
        proposals=ProposalSet.MODERN,
        log_level=2,
        egress_interface="eth1",
        pool_v4_static=ipaddress.IPv4Network("10.20.0.128/26"),
        static=(render.StaticAddress("dave", DAVE_IP),),
        dpd_delay=45,
        client_isolation=True,
        allow_server_access=True,
        allow_link_local=True,
        gateways=MACHINE.gateways,
        dialled=ipaddress.ip_address("203.0.113.9"),
        client_deny=(ipaddress.ip_network("192.168.0.0/16"),),
        client_allow=(ipaddress.ip_network("192.168.1.0/24"),),
        radius=None,
        pool_v6=ipaddress.IPv6Network("fd00:1::/112"),
        pool_v6_egress=V6Egress.ROUTED,
        egress_interface_v6="eth2",
        profile_passwords=ProfilePasswords.OMIT,
        profile_always_on=True,
    )


def test_with_radius_the_server_identity_is_the_nas_identifier(
    load: Callable[..., Settings],
) -> None:
    settings = load(VPN_RADIUS_SERVERS="radius.example.net", VPN_RADIUS_SECRET="s3cret")
    machine = Machine(MACHINE.egress, None, KERNEL, MACHINE.identity)
    plan = render.plan(settings, machine, ServerState(Certificate(own_ca()), (), {}))
    assert plan.radius is not None
    assert plan.radius.nas_identifier == "vpn.example.net"
    assert plan.radius.secret == SecretStr("s3cret")
    assert plan.accounts == ()
    assert plan.egress_interface_v6 is None
