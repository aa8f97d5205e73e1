"""VPN_CERT=files with damaged, mixed-up or exposed files: every one is refused at start with
one line naming the file's setting, whatever the damage (generated: cut at any byte, any
byte changed), and never with a traceback or a piece of the key."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from certfactory import NOW, Chain, Files, le_like_chain, make_leaf, mount
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ikev2_vpn.errors import ConfigError
from ikev2_vpn.state.certcheck import CERT, CHAIN, KEY

# What `openssl ecparam -name prime256v1` writes: the curve's name, no key.
EC_PARAMETERS = b"-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"
_FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def chain() -> Chain:
    return le_like_chain()


@pytest.fixture(scope="module")
def ec_chain() -> Chain:
    return le_like_chain(key="p256")


def setup(tmp_path: Path, made: Chain, **files: bytes | int) -> Files:
    """certbot's layout (fullchain.pem, privkey.pem 0600) with the given files replaced."""
    mounted = mount(
        tmp_path,
        made.leaf,
        **{"cert": made.fullchain_pem, "trust": made.root.cert_pem, **files},  # type: ignore[arg-type]
    )
    return replace(mounted, now=NOW)


def refusal(files: Files, chain: Chain) -> ConfigError:
    with pytest.raises(ConfigError) as raised:
        files.load()
    return checked(raised.value, chain)


def checked(error: ConfigError, chain: Chain) -> ConfigError:
    line = error.line()
    assert line.startswith(f"{error.setting}: ") and error.setting in {CERT, KEY, CHAIN}
    assert len(line.splitlines()) == 1, line
    assert error.fix, "every refusal says what to do"
    key_body = [part for part in chain.leaf.key_pem().splitlines() if not part.startswith(b"-----")]
    for part in key_body:
        assert part.decode()[:16] not in line, "a piece of the key reached the message"
    return error


def der(chain: Chain) -> tuple[bytes, bytes]:
    cert = chain.leaf.cert.public_bytes(serialization.Encoding.DER)
    key = chain.leaf.key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert, key


# --- the wrong kind of file in each place --------------------------------------------------


def test_key_in_der(tmp_path: Path, chain: Chain) -> None:
    error = refusal(setup(tmp_path, chain, key=der(chain)[1]), chain)
    assert error.setting == KEY and "not PEM" in error.problem
    assert "openssl pkey -inform der" in error.fix


def test_chain_in_der(tmp_path: Path, chain: Chain) -> None:
    files = setup(
        tmp_path,
        chain,
        cert=chain.leaf.cert_pem,
        chain=chain.intermediate.cert.public_bytes(serialization.Encoding.DER),
    )
    error = refusal(files, chain)
    assert error.setting == CHAIN and "not PEM" in error.problem


@pytest.mark.parametrize(
    ("place", "setting", "words"),
    [
        ("key", KEY, "holds EC parameters, not a private key"),
        ("cert", CERT, "holds EC parameters, not a certificate"),
        ("chain", CHAIN, "holds EC parameters, not a certificate"),
    ],
)
def test_ec_parameter_file(
    tmp_path: Path, chain: Chain, place: str, setting: str, words: str
) -> None:
    error = refusal(setup(tmp_path, chain, **{place: EC_PARAMETERS}), chain)
    assert error.setting == setting and words in error.problem


def test_ecparam_genkey_output_is_a_usable_key(tmp_path: Path, ec_chain: Chain) -> None:
    """`openssl ecparam -genkey` writes the parameters before the key: that is fine."""
    key = EC_PARAMETERS + ec_chain.leaf.key_pem(traditional=True)
    assert setup(tmp_path, ec_chain, key=key).load().leaf == ec_chain.leaf.cert


def test_public_key_where_the_private_key_belongs(tmp_path: Path, chain: Chain) -> None:
    public = chain.leaf.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    error = refusal(setup(tmp_path, chain, key=public), chain)
    assert error.setting == KEY and "holds a public key, not a private key" in error.problem


def test_key_and_certificate_swapped(tmp_path: Path, chain: Chain) -> None:
    files = setup(tmp_path, chain, cert=chain.leaf.key_pem(), key=chain.fullchain_pem)
    error = refusal(files, chain)
    assert error.setting == CERT and "holds a private key, not a certificate" in error.problem


@pytest.mark.parametrize("mode", [0o604, 0o644, 0o666, 0o777])
def test_world_readable_key(tmp_path: Path, chain: Chain, mode: int) -> None:
    error = refusal(setup(tmp_path, chain, key_mode=mode), chain)
    assert error.setting == KEY and f"mode {mode:04o}" in error.problem


def test_key_file_of_another_type_with_unreadable_mode_is_still_about_the_mode(
    tmp_path: Path, chain: Chain
) -> None:
    """Exposure is reported first: the key must be replaced whatever else is wrong."""
    error = refusal(setup(tmp_path, chain, key=b"junk\n", key_mode=0o644), chain)
    assert "chmod 600" in error.fix


@pytest.mark.parametrize(
    "path",
    ["/certs/a\nVPN_HOST: forged line", "/certs/\u2028x", "/" + "x" * 5000, "/etc/hostname/x"],
    ids=["newline", "line-separator", "too-long", "file-as-directory"],
)
@pytest.mark.parametrize("place", ["cert", "key", "chain"])
def test_odd_paths_are_reported_on_one_line(
    tmp_path: Path, chain: Chain, place: str, path: str
) -> None:
    files = replace(
        setup(tmp_path, chain, chain=chain.intermediate.cert_pem),
        **{place: Path(path)},  # type: ignore[arg-type]
    )
    error = refusal(files, chain)
    assert error.setting == {"cert": CERT, "key": KEY, "chain": CHAIN}[place]


# --- damage anywhere ------------------------------------------------------------------------


@_FUZZ
@given(data=st.data())
def test_certificate_cut_anywhere(tmp_path: Path, chain: Chain, data: st.DataObject) -> None:
    full = chain.fullchain_pem
    cut = data.draw(st.integers(0, len(full.rstrip()) - 1))
    try:
        setup(tmp_path, chain, cert=full[:cut]).load()
    except ConfigError as error:
        assert checked(error, chain).setting == CERT
    else:  # only cuts in the intermediate's last line can leave a usable chain
        pytest.fail(f"a certificate cut at byte {cut} of {len(full)} was accepted")


@_FUZZ
@given(data=st.data())
def test_key_cut_anywhere(tmp_path: Path, chain: Chain, data: st.DataObject) -> None:
    pem = chain.leaf.key_pem()
    cut = data.draw(st.integers(0, len(pem.rstrip()) - 1))
    with pytest.raises(ConfigError) as raised:
        setup(tmp_path, chain, key=pem[:cut]).load()
    assert checked(raised.value, chain).setting == KEY


@_FUZZ
@given(data=st.data())
@pytest.mark.filterwarnings("ignore:Parsed a negative serial number")  # a changed serial byte
def test_any_byte_changed(tmp_path: Path, chain: Chain, data: st.DataObject) -> None:
    """A changed byte is either harmless (a line ending, text outside the PEM blocks) or
    refused naming the changed file."""
    place = data.draw(st.sampled_from(["cert", "key"]))
    original = chain.fullchain_pem if place == "cert" else chain.leaf.key_pem()
    at = data.draw(st.integers(0, len(original) - 1))
    byte = data.draw(st.integers(0, 255).filter(lambda b: b != original[at]))
    damaged = original[:at] + bytes([byte]) + original[at + 1 :]
    try:
        setup(tmp_path, chain, **{place: damaged}).load()
    except ConfigError as error:
        checked(error, chain)
        # A changed byte in the certificate's public key makes the key not belong to it.
        mismatch = "does not belong to the certificate" in error.problem
        assert error.setting == (CERT if place == "cert" and not mismatch else KEY), error


def test_leaf_with_a_key_of_another_type(tmp_path: Path, chain: Chain) -> None:
    """An ECDSA key next to an RSA certificate: named as the key's problem."""
    other = make_leaf(chain.intermediate, key="p256")
    error = refusal(setup(tmp_path, chain, key=other.key_pem()), chain)
    assert error.setting == KEY and "does not belong" in error.problem
