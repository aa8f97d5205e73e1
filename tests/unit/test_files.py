"""Files for charon and swanctl: where a renewed certificate lands, what the health check reads."""

from __future__ import annotations

import json
from pathlib import Path

import certfactory
import pytest
from certfactory import Chain

from ikev2_vpn.apply.files import CERTIFICATE_STATUS, write_configuration, write_credentials
from ikev2_vpn.state.credentials import ServerCredentials


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def acme_credentials(chain: Chain, key_path: Path) -> ServerCredentials:
    """As the ACME CA issues them: leaf and intermediate, no CA for users to import."""
    return ServerCredentials(
        leaf=chain.leaf.cert,
        intermediates=(chain.intermediate.cert,),
        key_pem=chain.leaf.key_pem(),
        key_path=key_path,
    )


@pytest.fixture
def swanctl(tmp_path: Path) -> Path:
    return tmp_path / "etc" / "swanctl"


def status(root: Path) -> dict[str, object]:
    loaded: dict[str, object] = json.loads((root / CERTIFICATE_STATUS.relative_to("/")).read_text())
    return loaded


def test_acme_certificate_is_written_with_its_chain(tmp_path: Path, swanctl: Path) -> None:
    chain = certfactory.le_like_chain()
    write_credentials(acme_credentials(chain, tmp_path / "data/acme/live/privkey.pem"), tmp_path)
    assert (swanctl / "x509" / "server.crt").read_bytes() == chain.leaf.cert_pem
    assert mode(swanctl / "x509" / "server.crt") == 0o644
    assert sorted(p.name for p in (swanctl / "x509ca").iterdir()) == ["ca-1.crt"]
    assert (swanctl / "x509ca" / "ca-1.crt").read_bytes() == chain.intermediate.cert_pem
    key = swanctl / "private" / "server.key"
    assert key.is_symlink()
    assert key.readlink() == tmp_path / "data/acme/live/privkey.pem"


def test_self_signed_credentials_put_the_own_ca_in_the_chain(tmp_path: Path, swanctl: Path) -> None:
    ca = certfactory.make_ca()
    leaf = certfactory.make_leaf(ca)
    credentials = ServerCredentials(
        leaf=leaf.cert,
        intermediates=(),
        key_pem=leaf.key_pem(),
        key_path=tmp_path / "data/pki/server.key",
        ca=ca.cert,
    )
    write_credentials(credentials, tmp_path)
    assert [p.name for p in (swanctl / "x509ca").iterdir()] == ["ca-1.crt"]
    assert (swanctl / "x509ca" / "ca-1.crt").read_bytes() == ca.cert_pem


def test_a_renewed_certificate_replaces_everything_of_the_old_one(
    tmp_path: Path, swanctl: Path
) -> None:
    """Fallback (self-signed, own CA) first, then the CA's certificate arrives."""
    old_ca = certfactory.make_ca("Old Root")
    old_leaf = certfactory.make_leaf(old_ca)
    old_intermediate = certfactory.make_ca("Old Sub", issuer=old_ca)
    write_credentials(
        ServerCredentials(
            leaf=old_leaf.cert,
            intermediates=(old_intermediate.cert,),
            key_pem=old_leaf.key_pem(),
            key_path=tmp_path / "data/pki/server.key",
            ca=old_ca.cert,
        ),
        tmp_path,
    )
    assert len(list((swanctl / "x509ca").iterdir())) == 2
    chain = certfactory.le_like_chain()
    write_credentials(acme_credentials(chain, tmp_path / "data/acme/live/privkey.pem"), tmp_path)
    assert (swanctl / "x509" / "server.crt").read_bytes() == chain.leaf.cert_pem
    assert [p.name for p in (swanctl / "x509ca").iterdir()] == ["ca-1.crt"]
    assert (swanctl / "x509ca" / "ca-1.crt").read_bytes() == chain.intermediate.cert_pem
    assert (
        swanctl / "private" / "server.key"
    ).readlink() == tmp_path / "data/acme/live/privkey.pem"
    assert status(tmp_path)["serial"] == f"{chain.leaf.cert.serial_number:x}"


def test_certificate_status_tells_the_health_check_what_is_served(tmp_path: Path) -> None:
    chain = certfactory.le_like_chain()
    write_credentials(acme_credentials(chain, tmp_path / "key.pem"), tmp_path)
    leaf = chain.leaf.cert
    assert status(tmp_path) == {
        "subject": "CN=vpn.example.com",
        "serial": f"{leaf.serial_number:x}",
        "not_before": leaf.not_valid_before_utc.timestamp(),
        "not_after": leaf.not_valid_after_utc.timestamp(),
    }
    assert mode(tmp_path / CERTIFICATE_STATUS.relative_to("/")) == 0o644


def test_write_configuration_writes_both_files_and_the_credentials(
    tmp_path: Path, swanctl: Path
) -> None:
    (tmp_path / "etc").mkdir()  # always there in the container
    chain = certfactory.le_like_chain()
    write_configuration(
        "charon {}\n",
        "connections {}\n",
        acme_credentials(chain, tmp_path / "key.pem"),
        root=tmp_path,
    )
    assert (tmp_path / "etc/strongswan.conf").read_text() == "charon {}\n"
    assert mode(tmp_path / "etc/strongswan.conf") == 0o644
    assert (swanctl / "swanctl.conf").read_text() == "connections {}\n"
    assert mode(swanctl / "swanctl.conf") == 0o600  # holds the users' password hashes
    assert (swanctl / "x509" / "server.crt").read_bytes() == chain.leaf.cert_pem
    assert status(tmp_path)["subject"] == "CN=vpn.example.com"
