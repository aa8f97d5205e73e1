"""Pebble, the test ACME server: its configuration, HTTPS certificates and log reading."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from ikev2_vpn_lab.pebble import (
    DEFAULT_VALIDITY_S,
    DOCKERFILE,
    ENVIRONMENT,
    Pebble,
    count_orders,
    issued_serials,
    make_tls_material,
    pebble_config,
)

ALIAS = "acme.example.test"

# Lines as Pebble 2.6 prints them for one account, one order and its certificate.
LOG = """\
Pebble 2025/06/01 12:00:00 Starting Pebble ACME server
Pebble 2025/06/01 12:00:00 Using certificate validity period of 36 seconds
Pebble 2025/06/01 12:00:01 POST /sign-me-up -> calling handler()
Pebble 2025/06/01 12:00:01 There are now 1 accounts in memory
Pebble 2025/06/01 12:00:01 POST /order-plz -> calling handler()
Pebble 2025/06/01 12:00:01 There are now 1 authorizations in the db
Pebble 2025/06/01 12:00:01 Added order "GsiFePSINQ" to the db
Pebble 2025/06/01 12:00:01 There are now 1 orders in the db
Pebble 2025/06/01 12:00:01 Attempting to validate w/ HTTP: http://vpn.example.test:80/.well-known/acme-challenge/T
Pebble 2025/06/01 12:00:02 Order GsiFePSINQ is fully authorized. Processing finalization
Pebble 2025/06/01 12:00:02 Issued certificate serial 4BEA52505455ac51 for order GsiFePSINQ
"""


def test_config_listens_for_acme_and_management_and_validates_on_port_80() -> None:
    config = pebble_config()["pebble"]
    assert config["listenAddress"] == "0.0.0.0:14000"
    assert config["managementListenAddress"] == "0.0.0.0:15000"
    assert config["httpPort"] == 80
    assert config["certificateValidityPeriod"] == DEFAULT_VALIDITY_S == 90 * 24 * 3600
    assert config["externalAccountBindingRequired"] is False
    assert config["certificate"].startswith("/") and config["privateKey"].startswith("/")
    json.dumps(config)  # what is written into the container


def test_short_lifetimes_for_renewal_tests() -> None:
    assert pebble_config(36)["pebble"]["certificateValidityPeriod"] == 36
    with pytest.raises(ValueError, match="positive"):
        pebble_config(0)


def test_environment_makes_runs_repeatable() -> None:
    assert ENVIRONMENT == {
        "PEBBLE_VA_NOSLEEP": "1",
        "PEBBLE_WFE_NONCEREJECT": "0",
        "PEBBLE_AUTHZREUSE": "0",
    }


def test_image_is_debian_pebble_with_curl_on_the_given_base() -> None:
    assert "FROM ${BASE_IMAGE}" in DOCKERFILE
    assert "--no-install-recommends curl pebble" in DOCKERFILE
    assert 'ENTRYPOINT ["pebble"]' in DOCKERFILE


def test_tls_certificate_names_the_alias_and_chains_to_a_ca() -> None:
    now = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    tls = make_tls_material(ALIAS, now=now)
    ca = x509.load_pem_x509_certificate(tls.ca_pem)
    leaf = x509.load_pem_x509_certificate(tls.cert_pem)

    leaf.verify_directly_issued_by(ca)
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [ALIAS]
    assert leaf.not_valid_before_utc < now < leaf.not_valid_after_utc
    assert ca.not_valid_before_utc < now < ca.not_valid_after_utc

    ca_constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert ca_constraints.critical and ca_constraints.value.ca
    assert ca_constraints.value.path_length == 0
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    leaf_constraints = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert leaf_constraints.critical and not leaf_constraints.value.ca
    usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.SERVER_AUTH]
    # Strict verifiers (Python 3.13's default context) want the key identifiers linked.
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest


def test_tls_key_belongs_to_the_certificate_and_is_fresh_each_time() -> None:
    tls = make_tls_material(ALIAS)
    key = serialization.load_pem_private_key(tls.key_pem, password=None)
    leaf = x509.load_pem_x509_certificate(tls.cert_pem)
    assert key.public_key() == leaf.public_key()
    assert make_tls_material(ALIAS).ca_pem != tls.ca_pem


def test_orders_and_issued_certificates_are_read_from_the_log() -> None:
    assert count_orders(LOG) == 1
    assert count_orders(LOG + LOG.replace("GsiF", "Abcd")) == 2
    assert issued_serials(LOG) == ["4bea52505455ac51"]
    # Requests that did not create an order, and a failed validation, count for nothing.
    rejected = (
        "Pebble 2025/06/01 12:00:01 POST /order-plz -> calling handler()\n"
        "Pebble 2025/06/01 12:00:01 authz X set INVALID by completed challenge Y\n"
    )
    assert count_orders(rejected) == 0
    assert issued_serials(rejected) == []


def test_urls_use_the_alias() -> None:
    pebble = Pebble(container=None, alias=ALIAS, tls_ca_pem=b"")
    assert pebble.directory_url == "https://acme.example.test:14000/dir"


def test_tls_material_lifetime_covers_a_long_test_session() -> None:
    tls = make_tls_material(ALIAS)
    leaf = x509.load_pem_x509_certificate(tls.cert_pem)
    assert leaf.not_valid_after_utc - datetime.now(UTC) > timedelta(days=1)
