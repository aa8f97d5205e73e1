"""`ikev2-vpn users`: each change lands in the store, in charon (a fake VICI session here),
in users.conf and in the profiles; environment users are refused with one clear line."""

from __future__ import annotations

import ipaddress
import json
import multiprocessing
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from ikev2_vpn import render
from ikev2_vpn.run.users_live import (
    LiveUsers,
    ServerFacts,
    UsersError,
    read_facts,
    sessions_of,
)
from ikev2_vpn.settings import Settings
from ikev2_vpn.state.users import STORE_NAME, Origin, load_store, nt_hash

HOST = "vpn.example.test"
FACTS = ServerFacts(host=HOST, esp_gcm=True, ca_pem=None)
STATIC = ipaddress.IPv4Address("10.10.10.200")


class FakeVici:
    """Records what charon was told; ``sas`` is what list-sas answers."""

    def __init__(self, sas: list[dict[str, Any]] | None = None) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.sas = sas or []

    def load_shared(self, secret: dict[str, Any]) -> None:
        self.calls.append(("load-shared", secret))

    def unload_shared(self, identifier: dict[str, Any]) -> None:
        self.calls.append(("unload-shared", identifier))

    def load_pool(self, pool: dict[str, Any]) -> None:
        self.calls.append(("load-pool", pool))

    def unload_pool(self, pool_name: dict[str, Any]) -> None:
        self.calls.append(("unload-pool", pool_name))

    def load_conn(self, conn: dict[str, Any]) -> None:
        self.calls.append(("load-conn", conn))

    def unload_conn(self, name: dict[str, Any]) -> None:
        self.calls.append(("unload-conn", name))

    def list_sas(self, filters: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        yield from self.sas

    def terminate(self, sa: dict[str, Any]) -> Iterable[dict[str, Any]]:
        self.calls.append(("terminate", sa["ike-id"]))
        return iter(())

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


def sa(ike_id: int, remote_id: str, eap_id: str | None = None) -> dict[str, Any]:
    entry = {"uniqueid": str(ike_id).encode(), "remote-id": remote_id.encode()}
    if eap_id is not None:
        entry["remote-eap-id"] = eap_id.encode()
    return {f"conn-{ike_id}": entry}


@pytest.fixture(autouse=True)
def no_outside_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith(("VPN_", "ACME_")):
            monkeypatch.delenv(name)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def vici() -> FakeVici:
    return FakeVici(
        [sa(1, "198.51.100.7", "alice"), sa(2, "198.51.100.8", "bob"), sa(3, "bob"), sa(4, "x")]
    )


class Written:
    def __init__(self) -> None:
        self.text = ""

    def __call__(self, text: str) -> None:
        self.text = text


@pytest.fixture
def conf() -> Written:
    return Written()


def live(data_dir: Path, vici: FakeVici, conf: Written, **settings: Any) -> LiveUsers:
    defaults: dict[str, Any] = {"users": "alice:Alice-pw", "pool_v4_static": "10.10.10.192/26"}
    return LiveUsers(
        Settings(**{**defaults, **settings}),
        FACTS,
        lambda: vici,
        data_dir=data_dir,
        write_conf=conf,
    )


@pytest.fixture
def users(data_dir: Path, vici: FakeVici, conf: Written) -> LiveUsers:
    return live(data_dir, vici, conf)


def stored(data_dir: Path) -> dict[str, Any]:
    content: dict[str, Any] = json.loads((data_dir / STORE_NAME).read_text())
    return content


# --- add ---------------------------------------------------------------------------------------


def test_add_stores_loads_renders_and_writes_profiles(
    users: LiveUsers, vici: FakeVici, conf: Written, data_dir: Path
) -> None:
    assert users.add("bob", SecretStr("Bob-pw ü")) is None
    assert stored(data_dir)["users"]["bob"] == {"password": "Bob-pw ü", "origin": "managed"}
    assert vici.calls == [
        (
            "load-shared",
            {
                "id": render.secret_id("bob"),
                "type": "NTLM",
                "data": nt_hash(SecretStr("Bob-pw ü")),
                "owners": ["bob"],
            },
        )
    ]
    assert "id = bob" in conf.text and "id = alice" in conf.text
    assert "Bob-pw" not in conf.text
    assert (data_dir / "clients" / "bob" / "README.txt").exists()


def test_add_without_a_password_generates_one(users: LiveUsers, data_dir: Path) -> None:
    generated = users.add("carol", None)
    assert generated is not None and len(generated.get_secret_value()) >= 16
    assert stored(data_dir)["users"]["carol"]["password"] == generated.get_secret_value()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("alice", "user 'alice' already exists (declared in VPN_USERS)"),
        ("bad/name", "user name 'bad/name' is not allowed"),
    ],
)
def test_add_refuses_taken_and_bad_names(users: LiveUsers, name: str, message: str) -> None:
    with pytest.raises(UsersError, match=re.escape(message)):
        users.add(name, SecretStr("pw"))


def test_add_refuses_a_name_twice_and_an_empty_password(users: LiveUsers) -> None:
    users.add("bob", SecretStr("pw"))
    with pytest.raises(UsersError, match="already exists; change its password with"):
        users.add("bob", SecretStr("other"))
    with pytest.raises(UsersError, match="the password is empty"):
        users.add("carol", SecretStr(""))


# --- remove, passwd: the user's sessions end, nobody else's --------------------------------------


def test_sessions_are_found_by_eap_identity_else_ike_identity(vici: FakeVici) -> None:
    assert sessions_of(vici, "bob") == ["2", "3"]
    assert sessions_of(vici, "alice") == ["1"]
    assert sessions_of(vici, "nobody") == []


def test_remove_forgets_the_secret_then_ends_only_that_users_sessions(
    users: LiveUsers, vici: FakeVici, conf: Written, data_dir: Path
) -> None:
    users.add("bob", SecretStr("pw"))
    vici.calls.clear()
    assert users.remove("bob") == 2
    assert vici.calls == [
        ("unload-shared", {"id": render.secret_id("bob")}),
        ("terminate", "2"),
        ("terminate", "3"),
    ]
    assert "bob" not in stored(data_dir)["users"]
    assert "id = bob" not in conf.text
    assert not (data_dir / "clients" / "bob").exists()


def test_passwd_replaces_the_secret_and_ends_the_sessions(
    users: LiveUsers, vici: FakeVici, data_dir: Path
) -> None:
    users.add("bob", SecretStr("old"))
    vici.calls.clear()
    assert users.passwd("bob", SecretStr("new")) is None
    assert vici.calls[0][0] == "load-shared"
    assert vici.calls[0][1]["data"] == nt_hash(SecretStr("new"))
    assert vici.calls[1:] == [("terminate", "2"), ("terminate", "3")]
    assert stored(data_dir)["users"]["bob"]["password"] == "new"


@pytest.mark.parametrize(
    ("action", "words"), [("remove", "to remove it"), ("passwd", "to change the password of it")]
)
def test_environment_users_stay_the_environments(
    users: LiveUsers, vici: FakeVici, action: str, words: str
) -> None:
    with pytest.raises(UsersError) as caught:
        if action == "remove":
            users.remove("alice")
        else:
            users.passwd("alice", SecretStr("new"))
    message = str(caught.value)
    assert message == (
        f"user 'alice' is declared in VPN_USERS, which stays authoritative; {words}, "
        "change VPN_USERS and restart the container"
    )
    assert vici.calls == []


def test_unknown_users_and_the_last_account_are_refused(
    data_dir: Path, vici: FakeVici, conf: Written
) -> None:
    users = live(data_dir, vici, conf, users=())
    with pytest.raises(UsersError, match="there is no user 'nobody'"):
        users.remove("nobody")
    users.add("only", SecretStr("pw"))
    with pytest.raises(UsersError, match="'only' is the only account"):
        users.remove("only")


# --- static IPs ----------------------------------------------------------------------------------


def test_static_ip_loads_a_pool_and_a_connection_for_the_user(
    users: LiveUsers, vici: FakeVici, conf: Written, data_dir: Path
) -> None:
    users.add("bob", SecretStr("pw"))
    vici.calls.clear()
    assert users.static_ip("bob", STATIC) == 2  # bob logs in again to get it
    static = render.StaticAddress("bob", STATIC)
    assert vici.calls[0] == (
        "load-pool",
        {static.pool: {"addrs": "10.10.10.200/32", "dns": ["1.1.1.1", "1.0.0.1"]}},
    )
    name, conn = vici.calls[1]
    assert name == "load-conn"
    assert conn[static.connection]["remote"] == {"auth": "eap-mschapv2", "eap_id": "bob"}
    assert conn[static.connection]["pools"] == [static.pool]
    assert vici.calls[2:] == [("terminate", "2"), ("terminate", "3")]
    assert stored(data_dir)["static_ips"] == {"bob": "10.10.10.200"}
    assert f"{static.connection} {{" in conf.text and "addrs = 10.10.10.200/32" in conf.text


def test_static_ip_change_and_removal_unload_the_old_pool(
    users: LiveUsers, vici: FakeVici, data_dir: Path
) -> None:
    users.static_ip("alice", STATIC)  # environment users may have one too
    vici.calls.clear()
    users.static_ip("alice", STATIC + 1)
    assert vici.names() == ["load-pool", "load-conn", "terminate", "unload-pool"]
    assert vici.calls[-1] == ("unload-pool", {"name": "static-10-10-10-200"})
    vici.calls.clear()
    users.static_ip("alice", None)
    assert vici.calls == [
        ("unload-conn", {"name": "static-alice"}),
        ("terminate", "1"),
        ("unload-pool", {"name": "static-10-10-10-201"}),
    ]
    assert stored(data_dir)["static_ips"] == {}
    vici.calls.clear()
    assert users.static_ip("alice", None) == 0  # nothing to do
    assert vici.calls == []


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("10.10.10.5", "10.10.10.5 is not in VPN_POOL_V4_STATIC (10.10.10.192/26); choose an"),
        ("10.10.10.255", "is the network or broadcast address of VPN_POOL_V4"),
    ],
)
def test_static_ip_outside_the_block_is_refused(
    users: LiveUsers, address: str, message: str
) -> None:
    with pytest.raises(UsersError, match=re.escape(message)):
        users.static_ip("alice", ipaddress.IPv4Address(address))


def test_static_ip_needs_the_block_a_user_and_a_free_address(
    users: LiveUsers, data_dir: Path, vici: FakeVici, conf: Written
) -> None:
    users.add("bob", SecretStr("pw"))
    users.static_ip("bob", STATIC)
    with pytest.raises(UsersError, match=r"10\.10\.10\.200 is already the static IP of 'bob'"):
        users.static_ip("alice", STATIC)
    with pytest.raises(UsersError, match="there is no user 'nobody'"):
        users.static_ip("nobody", STATIC + 2)
    without_block = live(data_dir, vici, conf, pool_v4_static=None)
    with pytest.raises(UsersError, match=r"VPN_POOL_V4_STATIC is not set.*and restart"):
        without_block.static_ip("alice", STATIC)


def test_removing_a_static_user_unloads_its_connection_and_pool(
    users: LiveUsers, vici: FakeVici, data_dir: Path
) -> None:
    users.add("bob", SecretStr("pw"))
    users.static_ip("bob", STATIC)
    vici.calls.clear()
    users.remove("bob")
    assert vici.names() == ["unload-shared", "unload-conn", "terminate", "terminate", "unload-pool"]
    assert load_store(data_dir).static_ips == {}


# --- list, facts, charon away --------------------------------------------------------------------


def test_list_shows_origin_and_static_ip_never_passwords(users: LiveUsers) -> None:
    users.add("bob", SecretStr("Bob-pw"))
    users.static_ip("bob", STATIC)
    views = users.list()
    assert [(v.name, v.origin, v.static_ip) for v in views] == [
        ("alice", Origin.ENV, None),
        ("bob", Origin.MANAGED, STATIC),
    ]
    assert "Bob-pw" not in repr(views) and "Alice-pw" not in repr(views)


def test_missing_facts_mean_the_server_is_not_running(tmp_path: Path) -> None:
    with pytest.raises(UsersError, match="the server is not running yet"):
        read_facts(tmp_path / "server.json")


def test_a_change_is_kept_when_charon_does_not_answer(
    data_dir: Path, conf: Written, vici: FakeVici
) -> None:
    def refuse() -> FakeVici:
        raise ConnectionRefusedError("no socket")

    users = LiveUsers(Settings(users="alice:pw"), FACTS, refuse, data_dir=data_dir, write_conf=conf)
    with pytest.raises(UsersError, match=r"saved in .*charon does not answer.*restart"):
        users.add("bob", SecretStr("pw"))
    assert "bob" in stored(data_dir)["users"]


# --- concurrency: real processes, one store ------------------------------------------------------


def _add_in_process(data_dir: Path, name: str) -> None:
    users = LiveUsers(
        Settings(users="alice:pw"),
        FACTS,
        FakeVici,
        data_dir=data_dir,
        write_conf=lambda text: None,
    )
    users.add(name, SecretStr(f"pw-{name}"))


def test_parallel_adds_all_land(data_dir: Path) -> None:
    context = multiprocessing.get_context("fork")
    names = [f"user{n}" for n in range(10)]
    workers = [context.Process(target=_add_in_process, args=(data_dir, name)) for name in names]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    content = stored(data_dir)
    assert sorted(content["users"]) == sorted(names)
    assert all(content["users"][n]["password"] == f"pw-{n}" for n in names)
    assert sorted(p.name for p in (data_dir / "clients").iterdir()) == sorted(names)


def test_a_static_ip_set_while_running_keeps_the_servers_split_tunnel(
    data_dir: Path, vici: FakeVici, conf: Written
) -> None:
    """The user's own connection, loaded by `ikev2-vpn users static-ip`, tunnels what the
    server's does: VPN_SPLIT_NETS and the DNS servers, not everything."""
    users = live(data_dir, vici, conf, split_nets="10.20.0.0/16")
    users.add("bob", SecretStr("pw"))
    vici.calls.clear()
    users.static_ip("bob", STATIC)
    name, conn = vici.calls[1]
    assert name == "load-conn"
    child = conn[render.StaticAddress("bob", STATIC).connection]["children"]
    assert [c["local_ts"] for c in child.values()] == [["10.20.0.0/16", "1.1.1.1/32", "1.0.0.1/32"]]


# --- disable and enable ------------------------------------------------------------------------


def test_disable_unloads_the_secret_ends_the_sessions_and_keeps_the_account(
    users: LiveUsers, vici: FakeVici, conf: Written, data_dir: Path
) -> None:
    users.add("bob", SecretStr("pw"))
    users.static_ip("bob", STATIC)
    vici.calls.clear()
    assert users.disable("bob") == 2
    assert vici.names() == ["unload-shared", "unload-conn", "terminate", "terminate", "unload-pool"]
    assert stored(data_dir)["users"]["bob"]["disabled"] is True
    assert "id = bob" not in conf.text
    assert (data_dir / "clients" / "bob").is_dir()  # profiles stay for the day it is enabled
    views = {view.name: view for view in users.list()}
    assert views["bob"].disabled
    assert views["bob"].static_ip == STATIC
    assert users.disable("bob") == 0  # twice: nothing more to do


def test_enable_loads_the_secret_and_the_static_ip_again(
    users: LiveUsers, vici: FakeVici, conf: Written, data_dir: Path
) -> None:
    users.add("bob", SecretStr("pw"))
    users.static_ip("bob", STATIC)
    users.disable("bob")
    vici.calls.clear()
    users.enable("bob")
    assert vici.names() == ["load-pool", "load-conn", "load-shared"]
    assert vici.calls[-1][1]["data"] == nt_hash(SecretStr("pw"))
    assert "disabled" not in stored(data_dir)["users"]["bob"]
    assert "id = bob" in conf.text
    assert not {view.name: view for view in users.list()}["bob"].disabled


def test_a_disabled_user_keeps_out_of_charon_through_a_new_password(
    users: LiveUsers, vici: FakeVici, data_dir: Path
) -> None:
    users.add("bob", SecretStr("pw"))
    users.disable("bob")
    vici.calls.clear()
    users.passwd("bob", SecretStr("new"))
    assert "load-shared" not in vici.names()
    assert stored(data_dir)["users"]["bob"]["disabled"] is True
    with pytest.raises(UsersError, match="'bob' is disabled; enable it first"):
        users.static_ip("bob", STATIC)


def test_disable_refuses_environment_users_and_the_last_account(
    data_dir: Path, vici: FakeVici, conf: Written
) -> None:
    users = live(data_dir, vici, conf)
    with pytest.raises(UsersError, match=r"declared in VPN_USERS.* to disable it"):
        users.disable("alice")
    alone = live(data_dir, vici, conf, users=())
    alone.add("bob", SecretStr("pw"))
    with pytest.raises(UsersError, match="only account that can log in"):
        alone.disable("bob")
