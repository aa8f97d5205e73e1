"""Settings: the only module that reads environment variables and ``*_FILE`` secrets.

Everything after this step takes a validated :class:`Settings` and never looks at
``os.environ``. Invalid input becomes :class:`ConfigError` lines that name the variable,
say what is wrong and what to do, and never echo a secret.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import unicodedata
from collections.abc import Iterable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from . import defaults
from .errors import ConfigError, ConfigErrors

ENV_PREFIX = "VPN_"
ACME_PREFIX = "ACME_"  # the ACME settings keep the names people know from other ACME tools
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# EAP identities: letters, digits and . _ @ + - (no spaces, no colon: it separates the
# password in VPN_USERS). Starts with a letter or digit; at most 64 characters.
_USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")
_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")
# VPN_RADIUS_SERVERS entries: host, host:port, [IPv6]:port or a bare IPv6 address.
_RADIUS_ENTRY = re.compile(
    r"\[(?P<v6>[^\]]*)\](?::(?P<v6port>[^:]*))?|(?P<host>[^:]*)(?::(?P<port>[^:]*))?"
)
# NAS-Identifier: what RADIUS servers show as the name of this server (RFC 2865 5.32).
_NAS_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,252}")


class Backend(StrEnum):
    AUTO = "auto"
    KERNEL = "kernel"
    USERSPACE = "userspace"


class ProposalSet(StrEnum):
    COMPATIBLE = "compatible"
    MODERN = "modern"


class CertSource(StrEnum):
    SELF_SIGNED = "self-signed"
    FILES = "files"
    LETSENCRYPT = "letsencrypt"


class KeyType(StrEnum):
    """The server key for an ACME certificate. RSA by default: Apple clients have trouble
    with ECDSA server certificates (docs/clients.md)."""

    RSA_2048 = "rsa-2048"
    RSA_3072 = "rsa-3072"
    ECDSA_P256 = "ecdsa-p256"
    ECDSA_P384 = "ecdsa-p384"


class ProfilePasswords(StrEnum):
    INCLUDE = "include"
    OMIT = "omit"


class AcmeFallback(StrEnum):
    NONE = "none"
    SELF_SIGNED = "self-signed"


class V6Egress(StrEnum):
    """How clients' IPv6 traffic leaves the server (VPN_POOL_V6_EGRESS)."""

    NAT66 = "nat66"  # masqueraded behind the server's IPv6 address (a ULA pool)
    ROUTED = "routed"  # the provider routes the pool to the server: forwarded as is
    NDP_PROXY = "ndp-proxy"  # the pool is part of the on-link /64: the server answers NDP


class Account(BaseModel):
    """A VPN login: EAP-MSCHAPv2 name and password."""

    model_config = ConfigDict(frozen=True)

    name: str
    password: SecretStr
    source: str  # the setting that declared it, for error messages


WEB_PASSWORD_MIN = 12


class PasswordHash:
    """A password kept only as its salted scrypt hash (werkzeug.security)."""

    __slots__ = ("_hash",)

    def __init__(self, hashed: str) -> None:
        self._hash = hashed

    @classmethod
    def of(cls, password: str) -> PasswordHash:
        from werkzeug.security import generate_password_hash

        return cls(generate_password_hash(password, method="scrypt"))

    def matches(self, password: str) -> bool:
        from werkzeug.security import check_password_hash

        return check_password_hash(self._hash, password)

    def __repr__(self) -> str:
        return "PasswordHash('**********')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PasswordHash) and other._hash == self._hash

    def __hash__(self) -> int:
        return hash(self._hash)


def check_username(name: str) -> str:
    """Return the problem with a user name, or an empty string when it is fine."""
    if not name:
        return "a user name is empty"
    if not _USERNAME.fullmatch(name):
        return (
            f"user name {name!r} is not allowed (use 1-64 letters, digits and . _ @ + -, "
            "starting with a letter or digit)"
        )
    return ""


PASSWORD_FIX = "choose a password of printable characters"  # noqa: S105 (advice, not a password)


def check_password(password: str) -> str:
    """Return the problem with a password, or an empty string when it is fine. Never
    quotes the password.

    What every client profile and charon can carry: no control character (the Apple
    profile's XML cannot hold most, and turns CR into LF), no lone surrogate (what
    ``os.environ`` makes of bytes that are not UTF-8; no NT hash can be computed from it),
    and neither U+FFFE nor U+FFFF (not XML characters either).
    """
    if not password:
        return "the password is empty"
    for char in password:
        category = unicodedata.category(char)
        if category == "Cs":
            return "the password holds bytes that are not UTF-8 text"
        if category == "Cc":
            return (
                f"the password holds the control character U+{ord(char):04X}, which client "
                "profiles cannot carry"
            )
        if char in "\ufffe\uffff":
            return f"the password holds U+{ord(char):04X}, which client profiles cannot carry"
    return ""


def _account(name: str, password: str, source: str) -> Account:
    if problem := check_username(name):
        raise ValueError(f"{problem}; rename the user")
    if not password:
        raise ValueError(f"user {name!r} has an empty password; give every user a password")
    if problem := check_password(password):
        raise ValueError(
            f"{problem.replace('the password', f'the password of {name!r}')}; {PASSWORD_FIX}"
        )
    return Account(name=name, password=SecretStr(password), source=source)


class RadiusServer(BaseModel):
    """One RADIUS server from VPN_RADIUS_SERVERS."""

    model_config = ConfigDict(frozen=True)

    host: str  # an IP address or a DNS name
    auth_port: int = defaults.RADIUS_AUTH_PORT

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.auth_port}"


def parse_radius_server(text: str) -> RadiusServer:
    """``host``, ``host:port``, ``[IPv6]:port`` or a bare IPv6 address."""
    example = "radius.example.com:1812"
    found = _RADIUS_ENTRY.fullmatch(text)
    bracketed = found is not None and found.group("v6") is not None
    if found is None:  # more than one colon and no brackets: a bare IPv6 address, or junk
        host, port = text, None
    elif bracketed:
        host, port = found.group("v6"), found.group("v6port")
    else:
        host, port = found.group("host"), found.group("port")
    if ":" in host or bracketed:
        try:
            address: IPAddress = ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(
                f"{text!r} is not host[:port]; list RADIUS servers like {example} "
                "(an IPv6 address with a port in brackets: [2001:db8::1]:1812)"
            ) from None
        host = str(address)
    elif not (_is_ip_address(host) or _is_dns_name(host)):
        raise ValueError(
            f"{text!r} is not host[:port]; list RADIUS servers like {example}, separated by commas"
        )
    if port is None:
        return RadiusServer(host=host.lower().rstrip("."))
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"{text!r} has no valid UDP port; give 1 to 65535, like {example}")
    return RadiusServer(host=host.lower().rstrip("."), auth_port=int(port))


def check_radius_secret(secret: str) -> str:
    """Return the problem with a RADIUS shared secret, or an empty string when it is fine.
    Printable ASCII only: RADIUS servers differ in how they read anything else."""
    if not secret:
        return "the shared secret is empty"
    if len(secret) > defaults.RADIUS_SECRET_MAX:
        return f"the shared secret is longer than {defaults.RADIUS_SECRET_MAX} characters"
    if not all(" " <= c <= "~" for c in secret):
        return "the shared secret holds characters other than printable ASCII"
    return ""


class UsersFile(BaseModel):
    """The accounts read from VPN_USERS_FILE."""

    model_config = ConfigDict(frozen=True)

    path: Path
    accounts: tuple[Account, ...]


def parse_users_file(text: str) -> tuple[Account, ...]:
    """One ``name:password`` per line; the password is everything after the first colon.

    Blank lines and lines starting with ``#`` are skipped. Only the line ending is removed
    from the password, so any other character (spaces included) is part of it.
    """
    accounts = []
    # split("\n"), not splitlines(): U+2028 and the like are password characters (control
    # characters, which splitlines() would also split at, are refused by check_password).
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.removesuffix("\r")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, colon, password = line.partition(":")
        if not colon:
            raise ValueError(f"line {number} has no colon; write one 'name:password' per line")
        accounts.append(_account(name, password, f"VPN_USERS_FILE line {number}"))
    return tuple(accounts)


def _read_text(setting: str, path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(setting, f"{path} does not exist", "mount the file or unset it") from None
    except PermissionError:
        raise ConfigError(
            setting, f"{path} is not readable", "make it readable by the container's root user"
        ) from None
    except IsADirectoryError:
        raise ConfigError(setting, f"{path} is a directory", "point it at a file") from None
    except UnicodeDecodeError:
        raise ConfigError(setting, f"{path} is not UTF-8 text", "save it as UTF-8") from None
    except OSError as error:  # a name too long, a file as a directory on the way, ...
        raise ConfigError(
            setting, f"{path} cannot be read ({error.strerror})", "correct the path"
        ) from None


class FileVariantSource(PydanticBaseSettingsSource):
    """``VPN_<NAME>_FILE=/path``: the value of ``VPN_<NAME>`` read from a file.

    The Docker and Kubernetes way of passing secrets. One trailing newline is removed (what
    ``echo secret > file`` adds); the rest is used verbatim.
    """

    FIELDS = ("password", "radius_secret", "web_password")

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ is overridden; pydantic-settings never calls this

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for field in self.FIELDS:
            direct = ENV_PREFIX + field.upper()
            variant = direct + "_FILE"
            path = os.environ.get(variant)
            if not path:
                continue
            if os.environ.get(direct):
                raise ConfigError(variant, f"both {direct} and {variant} are set", "keep one")
            text = _read_text(variant, Path(path))
            values[field] = text.removesuffix("\n").removesuffix("\r")
        return values


class Settings(BaseSettings):
    """Validated container settings. Field ``x`` is read from ``VPN_X``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        case_sensitive=False,
        env_ignore_empty=True,  # compose files pass unset variables as empty strings
        extra="ignore",
        frozen=True,
        arbitrary_types_allowed=True,  # PasswordHash
    )

    host: str | None = None
    host_detect: bool = True
    user: str | None = None
    password: SecretStr | None = None
    users: Annotated[tuple[Account, ...], NoDecode] = ()
    users_file: Annotated[UsersFile | None, NoDecode] = None
    pool_v4: ipaddress.IPv4Network = defaults.POOL_V4
    pool_v4_static: ipaddress.IPv4Network | None = None
    pool_v6: ipaddress.IPv6Network | None = None  # off unless set
    pool_v6_egress: V6Egress = V6Egress.NAT66
    dns: Annotated[tuple[IPAddress, ...], NoDecode] = (
        ipaddress.IPv4Address("1.1.1.1"),
        ipaddress.IPv4Address("1.0.0.1"),
    )
    ipsec_backend: Backend = Backend.AUTO
    proposals: ProposalSet = ProposalSet.COMPATIBLE
    cert: CertSource = CertSource.SELF_SIGNED
    cert_path: Path = Path("/certs/fullchain.pem")
    key_path: Path = Path("/certs/privkey.pem")
    chain_path: Path | None = None
    log_level: int = Field(default=1)
    dpd_delay: int = 30  # seconds of silence before a client is probed
    client_isolation: bool = False  # clients cannot reach each other
    allow_server_access: bool = False  # clients may reach services of the container itself
    allow_link_local: bool = False  # clients may reach 169.254.0.0/16 and fe80::/10 (metadata)
    # The client fence (ikev2_vpn/fence.py): more destinations to keep clients from, and
    # destinations to take out of what is fenced off.
    client_deny: Annotated[tuple[IPNetwork, ...], NoDecode] = ()
    client_allow: Annotated[tuple[IPNetwork, ...], NoDecode] = ()
    # Split tunnel: only these networks (and the DNS servers) go through the tunnel; ():
    # everything does (a full tunnel).
    split_nets: Annotated[tuple[IPNetwork, ...], NoDecode] = ()
    ban_after: int = 5  # failed logins from one address before it is banned; 0: never
    ban_seconds: int = 600
    metrics_port: int | None = None  # TCP port of the Prometheus endpoint; None: off
    web_port: int | None = None  # TCP port of the web console and API (HTTPS); None: off
    # The console's admin password, kept only as its hash from the moment it is read.
    web_password: Annotated[PasswordHash | None, NoDecode] = None
    profile_passwords: ProfilePasswords = ProfilePasswords.INCLUDE
    profile_always_on: bool = False
    # Users in RADIUS (strongSwan's eap-radius plugin) instead of local accounts.
    radius_servers: Annotated[tuple[RadiusServer, ...], NoDecode] = ()
    radius_secret: SecretStr | None = None
    radius_nas_identifier: str | None = None  # default: the server's identity (VPN_HOST)
    radius_accounting_port: int | None = None  # default: each server's port + 1
    radius_interim_interval: int = defaults.RADIUS_INTERIM_INTERVAL_S  # 0: no interim updates
    acme_email: str | None = Field(default=None, validation_alias="ACME_EMAIL")
    acme_directory: str = Field(
        default=defaults.ACME_DIRECTORIES["production"], validation_alias="ACME_DIRECTORY"
    )
    acme_ca_bundle: Path | None = Field(default=None, validation_alias="ACME_CA_BUNDLE")
    acme_key_type: KeyType = Field(default=KeyType.RSA_3072, validation_alias="ACME_KEY_TYPE")
    acme_fallback: AcmeFallback = Field(default=AcmeFallback.NONE, validation_alias="ACME_FALLBACK")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, FileVariantSource(settings_cls))

    # --- field validators: messages are "problem; fix" ----------------------------------

    @field_validator("host", mode="before")
    @classmethod
    def _host(cls, value: Any) -> Any:
        if value is None:
            return None
        text = str(value)
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            if not _is_dns_name(text):
                raise ValueError(
                    f"{text!r} is neither an IP address nor a DNS name; "
                    "give the name or address clients dial, without scheme or port"
                ) from None
            return text.lower().rstrip(".")
        if _has_zone(address):
            raise ValueError(f"{text!r} has a zone index; give the server's public address or name")
        if _unreachable(address):
            raise ValueError(
                f"{text} cannot be dialled by clients; give the server's public address or name"
            )
        return str(address)

    @field_validator("user", mode="after")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        if value is not None and (problem := check_username(value)):
            raise ValueError(f"{problem}; rename the user")
        return value

    @field_validator("password", mode="after")
    @classmethod
    def _password(cls, value: SecretStr | None) -> SecretStr | None:
        # Empty is reported with its fix by _check_combinations.
        text = value.get_secret_value() if value is not None else ""
        if text and (problem := check_password(text)):
            raise ValueError(f"{problem}; {PASSWORD_FIX}")
        return value

    @field_validator("users", mode="before")
    @classmethod
    def _users(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        accounts = []
        for number, item in enumerate(value.split(), start=1):
            name, colon, password = item.partition(":")
            if not colon:
                # Not echoed: it may be the part of a password after a space.
                raise ValueError(
                    f"entry {number} has no colon; write name:password pairs separated "
                    "by spaces (use VPN_USERS_FILE for passwords with spaces)"
                )
            if number > 1 and check_username(name):
                # Not echoed either: after a space, "name" may be the tail of a password.
                raise ValueError(
                    f"entry {number} has no valid user name before its colon; use 1-64 "
                    "letters, digits and . _ @ + - (use VPN_USERS_FILE for passwords with "
                    "spaces)"
                )
            accounts.append(_account(name, password, "VPN_USERS"))
        return tuple(accounts)

    @field_validator("users_file", mode="before")
    @classmethod
    def _users_file(cls, value: Any) -> Any:
        if not isinstance(value, str | Path):
            return value
        path = Path(value)
        accounts = parse_users_file(_read_text("VPN_USERS_FILE", path))
        if not accounts:
            raise ValueError(f"{path} lists no users; add 'name:password' lines or unset it")
        return UsersFile(path=path, accounts=accounts)

    @field_validator("radius_servers", mode="before")
    @classmethod
    def _radius_servers(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        servers = tuple(parse_radius_server(item) for item in value.replace(",", " ").split())
        if not servers:
            raise ValueError("no RADIUS server given; list host[:port] entries or unset it")
        if len(set(servers)) != len(servers):
            raise ValueError("a RADIUS server is listed twice; list each one once")
        return servers

    @field_validator("radius_secret", mode="after")
    @classmethod
    def _radius_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and (problem := check_radius_secret(value.get_secret_value())):
            raise ValueError(
                f"{problem}; use 1-{defaults.RADIUS_SECRET_MAX} printable ASCII characters, "
                "the same as on the RADIUS server"
            )
        return value

    @field_validator("radius_nas_identifier", mode="before")
    @classmethod
    def _radius_nas_identifier(cls, value: Any) -> Any:
        if isinstance(value, str) and not _NAS_IDENTIFIER.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a NAS identifier; use letters, digits and . _ : @ - "
                "(at most 253), such as the server's name"
            )
        return value

    @field_validator("pool_v4_static", mode="before")
    @classmethod
    def _pool_v4_static(cls, value: Any) -> Any:
        return _ipv4_network(value, "10.10.10.192/26") if isinstance(value, str) else value

    @field_validator("pool_v4", mode="before")
    @classmethod
    def _pool_v4(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        pool = _ipv4_network(value, "10.10.10.0/24")
        if not 8 <= pool.prefixlen <= 30:
            raise ValueError(f"/{pool.prefixlen} is out of range; use a prefix from /8 to /30")
        if not (pool.is_private or pool.subnet_of(ipaddress.IPv4Network("100.64.0.0/10"))):
            raise ValueError(
                f"{pool} is public address space; use a private range such as 10.10.10.0/24"
            )
        return pool

    @field_validator("pool_v6", mode="before")
    @classmethod
    def _pool_v6(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        example = "fd00:10:10::/112"
        try:
            if "/" not in value:
                raise ValueError(value)
            pool = ipaddress.IPv6Network(value, strict=False)
        except ValueError:
            raise ValueError(
                f"{value!r} is not an IPv6 network; use CIDR notation like {example}"
            ) from None
        if ipaddress.IPv6Address(value.partition("/")[0]) != pool.network_address:
            raise ValueError(f"{value!r} has host bits set; use {pool}")
        if not V6_POOL_MIN_PREFIX <= pool.prefixlen <= V6_POOL_MAX_PREFIX:
            raise ValueError(
                f"/{pool.prefixlen} is out of range; use a prefix from /{V6_POOL_MIN_PREFIX} "
                f"to /{V6_POOL_MAX_PREFIX}, such as {example}"
            )
        if any(pool.overlaps(special) for special in _NOT_A_POOL_V6):
            raise ValueError(
                f"{pool} is not unicast address space clients can use; use a ULA prefix "
                f"such as {example}, or the prefix your provider routes to this server"
            )
        return pool

    @field_validator("dns", mode="before")
    @classmethod
    def _dns(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        servers = []
        for item in value.replace(",", " ").split():
            try:
                server: IPAddress | None = ipaddress.ip_address(item)
            except ValueError:
                server = None
            if server is None or _has_zone(server):
                raise ValueError(
                    f"{item!r} is not an IP address; list DNS server addresses separated by commas"
                )
            if _unreachable(server):
                raise ValueError(
                    f"{item} cannot be reached by VPN clients; give a DNS server address they "
                    "can reach through the tunnel"
                )
            servers.append(server)
        if not servers:
            raise ValueError("no DNS server given; list at least one address")
        return tuple(servers)

    @field_validator("client_deny", "client_allow", mode="before")
    @classmethod
    def _client_networks(cls, value: Any, info: Any) -> Any:
        if not isinstance(value, str):
            return value
        networks = tuple(_fence_network(item) for item in value.replace(",", " ").split())
        if not networks:
            raise ValueError("no network given; list CIDR ranges separated by commas, or unset it")
        if info.field_name == "client_deny":
            for network in networks:
                if network.prefixlen == 0:
                    raise ValueError(
                        f"{network} would fence clients off everything; list only the ranges "
                        "they must not reach, such as 192.168.0.0/16"
                    )
        return networks

    @field_validator("split_nets", mode="before")
    @classmethod
    def _split_nets(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        networks = [_split_network(item) for item in value.replace(",", " ").split()]
        if not networks:
            raise ValueError(
                "no network given; list the CIDR ranges clients reach through the tunnel, "
                "or unset it for a full tunnel"
            )
        for index, network in enumerate(networks):
            for other in networks[:index]:
                if network.version == other.version and network.overlaps(other):
                    # Overlapping networks nest: the longer prefix lies inside the other.
                    narrow, wide = sorted((network, other), key=lambda n: -n.prefixlen)
                    raise ValueError(
                        f"{narrow} lies inside {wide}, which is listed too; list each range once"
                    )
        return tuple(networks)

    @field_validator(
        "ipsec_backend",
        "proposals",
        "cert",
        "acme_key_type",
        "acme_fallback",
        "profile_passwords",
        "pool_v6_egress",
        mode="before",
    )
    @classmethod
    def _choice(cls, value: Any, info: Any) -> Any:
        choices: type[StrEnum] = {
            "ipsec_backend": Backend,
            "proposals": ProposalSet,
            "cert": CertSource,
            "acme_key_type": KeyType,
            "acme_fallback": AcmeFallback,
            "profile_passwords": ProfilePasswords,
            "pool_v6_egress": V6Egress,
        }[info.field_name]
        if isinstance(value, str) and value.lower() not in {c.value for c in choices}:
            allowed = ", ".join(c.value for c in choices)
            raise ValueError(f"{value!r} is not a known value; use one of: {allowed}")
        return value.lower() if isinstance(value, str) else value

    @field_validator("acme_email", mode="before")
    @classmethod
    def _acme_email(cls, value: Any) -> Any:
        if isinstance(value, str) and not _EMAIL.fullmatch(value):
            raise ValueError(
                f"{value!r} is not an e-mail address; give one address like admin@example.com"
            )
        return value

    @field_validator("acme_directory", mode="before")
    @classmethod
    def _acme_directory(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        if value.lower() in defaults.ACME_DIRECTORIES:
            return defaults.ACME_DIRECTORIES[value.lower()]
        url = urlsplit(value)
        if url.scheme != "https" or not url.hostname or any(c.isspace() for c in value):
            raise ValueError(
                f"{value!r} is not an https URL; give the CA's ACME directory URL "
                "(or production, staging)"
            )
        return value

    @field_validator("acme_ca_bundle", mode="before")
    @classmethod
    def _acme_ca_bundle(cls, value: Any) -> Any:
        if not isinstance(value, str | Path):
            return value
        path = Path(value)
        text = _read_text("ACME_CA_BUNDLE", path)
        if "-----BEGIN CERTIFICATE-----" not in text:
            raise ValueError(
                f"{path} holds no PEM certificate; give the CA certificate(s) that signed "
                "the ACME server's TLS certificate, in PEM"
            )
        return path

    @field_validator(
        "dpd_delay",
        "ban_after",
        "ban_seconds",
        "radius_accounting_port",
        "radius_interim_interval",
        mode="before",
    )
    @classmethod
    def _bounded(cls, value: Any, info: Any) -> Any:
        if value is None:  # optional ones unset
            return None
        low, high, unit = {
            "dpd_delay": (5, 3600, "seconds"),
            "ban_after": (0, 1000, "failed logins (0 turns banning off)"),
            "ban_seconds": (10, 86400, "seconds"),
            "radius_accounting_port": (1, 65535, "(a UDP port)"),
            "radius_interim_interval": (0, 86400, "seconds (0 turns interim updates off)"),
        }[info.field_name]
        try:
            number = (
                int(str(value).removesuffix("s"))
                if info.field_name not in {"ban_after", "radius_accounting_port"}
                else int(value)
            )
        except (TypeError, ValueError):
            raise ValueError(
                f"{value!r} is not a whole number; give {low} to {high} {unit}"
            ) from None
        if not low <= number <= high:
            raise ValueError(f"{number} is out of range; give {low} to {high} {unit}")
        return number

    @field_validator("metrics_port", "web_port", mode="before")
    @classmethod
    def _tcp_port(cls, value: Any, info: Any) -> Any:
        if value is None:
            return None
        example, what = {"metrics_port": (9814, "metrics"), "web_port": (8443, "the console")}[
            info.field_name
        ]
        try:
            port = int(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"{value!r} is not a port number; give a TCP port such as {example}, or leave "
                f"it unset to turn {what} off"
            ) from None
        if not 1 <= port <= 65535:
            raise ValueError(f"{port} is out of range; give a TCP port from 1 to 65535")
        if port == defaults.ACME_HTTP_PORT:
            raise ValueError(
                f"{port} is the container's HTTP port (ACME challenges, profile sharing); "
                f"give another TCP port such as {example}"
            )
        if port == defaults.SHARE_HTTPS_PORT:
            raise ValueError(
                f"{port} is the container's HTTPS port (profile sharing with a public "
                f"certificate); give another TCP port such as {example}"
            )
        return port

    @field_validator("web_password", mode="before")
    @classmethod
    def _web_password(cls, value: Any) -> Any:
        if value is None or isinstance(value, PasswordHash):
            return value
        text = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        if len(text) < WEB_PASSWORD_MIN:
            raise ValueError(
                f"the password has fewer than {WEB_PASSWORD_MIN} characters; choose a longer "
                "one (a generated one: openssl rand -base64 18)"
            )
        if problem := check_password(text):
            raise ValueError(f"{problem}; {PASSWORD_FIX}")
        return PasswordHash.of(text)

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level(cls, value: Any) -> Any:
        try:
            level = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"{value!r} is not a number; use 0, 1 or 2") from None
        if not 0 <= level <= 2:
            raise ValueError(
                f"{level} is out of range (higher levels log key material); use 0, 1 or 2"
            )
        return level

    # --- derived ------------------------------------------------------------------------

    def accounts(self) -> tuple[Account, ...]:
        """Every account the operator declared, from all user settings together."""
        declared: list[Account] = []
        if self.user is not None and self.password is not None:
            declared.append(Account(name=self.user, password=self.password, source="VPN_USER"))
        declared.extend(self.users)
        if self.users_file is not None:
            declared.extend(self.users_file.accounts)
        return tuple(declared)

    def split_tunnel(self) -> tuple[IPNetwork, ...]:
        """What clients send through the tunnel with VPN_SPLIT_NETS; () for a full tunnel."""
        return split_selectors(self.split_nets, self.dns)


def split_selectors(
    split_nets: tuple[IPNetwork, ...], dns: tuple[IPAddress, ...]
) -> tuple[IPNetwork, ...]:
    """The split networks, then each DNS server outside them as a one-address network, so
    that the servers pushed to clients are reached through the tunnel too (clients that
    send their queries elsewhere leak them: docs/settings.md). () stays (): a full tunnel."""
    if not split_nets:
        return ()
    hosts: list[IPNetwork] = []
    for server in dns:
        host = ipaddress.ip_network(server)
        if not any(server in net for net in (*split_nets, *hosts)):
            hosts.append(host)
    return (*split_nets, *hosts)


def _ipv4_network(value: str, example: str) -> ipaddress.IPv4Network:
    """A network in CIDR notation, exactly as written (no host bits)."""
    try:
        if "/" not in value:
            raise ValueError(value)
        network = ipaddress.IPv4Network(value, strict=False)
    except ValueError:
        raise ValueError(
            f"{value!r} is not an IPv4 network; use CIDR notation like {example}"
        ) from None
    if str(network) != value:
        raise ValueError(f"{value!r} has host bits set; use {network}")
    return network


def _fence_network(text: str) -> IPNetwork:
    """One entry of VPN_CLIENT_DENY or VPN_CLIENT_ALLOW: a network in CIDR notation, exactly as
    written, or a bare address (one host)."""
    example = "192.168.0.0/16 or 2001:db8::/32"
    try:
        if "%" in text:  # a zone index: any text, and nothing a route could name
            raise ValueError(text)
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(
            f"{text!r} is not an IP network; use CIDR notation like {example}, separated by commas"
        ) from None
    if network.network_address != ipaddress.ip_interface(text).ip:
        raise ValueError(f"{text!r} has host bits set; use {network}")
    return network


# What VPN_SPLIT_NETS may not name: clients could never reach it through the server.
_NOT_A_SPLIT_NET = {
    ipaddress.ip_network(net): kind
    for net, kind in (
        ("0.0.0.0/8", "this-network"), ("127.0.0.0/8", "loopback"), ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"), ("::/128", "unspecified"), ("::1/128", "loopback"),
        ("ff00::/8", "multicast"),
    )
}  # fmt: skip


def _split_network(text: str) -> IPNetwork:
    """One entry of VPN_SPLIT_NETS: a network in CIDR notation, exactly as written."""
    example = "10.20.0.0/16 or 2001:db8:20::/48"
    try:
        if "/" not in text or "%" in text:
            raise ValueError(text)
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(
            f"{text!r} is not an IP network; use CIDR notation like {example}, separated by commas"
        ) from None
    if network.network_address != ipaddress.ip_interface(text).ip:
        raise ValueError(f"{text!r} has host bits set; use {network}")
    if network.prefixlen == 0:
        raise ValueError(
            f"{network} is everything; unset VPN_SPLIT_NETS for a full tunnel, or list only "
            "the networks clients reach through it"
        )
    for reserved, kind in _NOT_A_SPLIT_NET.items():
        if network.version == reserved.version and network.overlaps(reserved):
            raise ValueError(
                f"{network} takes in {kind} addresses ({reserved}), which VPN clients cannot "
                "reach through the server; list the networks behind the server"
            )
    return network


# IPv6 pools: from a /48 (what providers delegate; strongSwan caps a pool at 2^31 leases
# anyway) to a /120 (256 addresses, like a /24).
V6_POOL_MIN_PREFIX = 48
V6_POOL_MAX_PREFIX = 120
# VPN_POOL_V6_EGRESS=ndp-proxy adds one neighbour proxy entry per pool address at start.
V6_NDP_PROXY_MIN_PREFIX = 116
ULA = ipaddress.IPv6Network("fc00::/7")
_NOT_A_POOL_V6 = tuple(
    ipaddress.IPv6Network(net)
    for net in ("::/8", "fe80::/10", "fec0::/10", "ff00::/8", "64:ff9b::/96", "2002::/16")
)  # unspecified, loopback and v4-mapped (::/8), link-local, site-local, multicast, NAT64, 6to4


def _has_zone(address: IPAddress) -> bool:
    """A scoped IPv6 address ("fe80::1%eth0"): the zone index may hold any text, braces and
    newlines included, and clients cannot dial it anyway."""
    return isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None


def _unreachable(address: IPAddress) -> bool:
    """Addresses a remote client can never reach: loopback, unspecified, link-local, multicast
    (also when written as an IPv4-mapped IPv6 address)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        address.is_unspecified
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
    )


def _is_dns_name(text: str) -> bool:
    name = text.rstrip(".")
    labels = name.split(".")
    return (
        0 < len(name) <= 253
        and all(_DNS_LABEL.fullmatch(label) for label in labels)
        and not labels[-1].isdigit()  # "1.2.3.999" is a broken address, not a name
    )


# --- loading and error reporting ---------------------------------------------------------

_SECRET_FIELDS = {"password", "users", "radius_secret", "web_password"}


def env_name(field: str) -> str:
    """The environment variable a settings field is read from."""
    info = Settings.model_fields.get(field)
    if info is not None and isinstance(info.validation_alias, str):
        return info.validation_alias
    if field.upper().startswith(ACME_PREFIX):  # pydantic reports aliased fields by alias
        return field.upper()
    return ENV_PREFIX + field.upper()


def known_variables() -> set[str]:
    names = {env_name(field) for field in Settings.model_fields}
    names.update(env_name(field) + "_FILE" for field in FileVariantSource.FIELDS)
    return names


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """Warnings for VPN_* and ACME_* variables nobody reads: usually a typo worth pointing out."""
    environ = os.environ if environ is None else environ
    known = known_variables()
    warnings = []
    for name in sorted(environ):
        if name.startswith((ENV_PREFIX, ACME_PREFIX)) and name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]}?" if close else "; it is ignored"
            warnings.append(f"{name}: not a setting of this image{hint}")
    return warnings


def _to_config_error(error: Mapping[str, Any]) -> ConfigError:
    field = str(error["loc"][0]) if error["loc"] else ""
    setting = env_name(field) if field else "settings"
    if field in FileVariantSource.FIELDS and os.environ.get(setting + "_FILE"):
        setting += "_FILE"  # the value came from that file: the operator set this one
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "value_error" and "; " in message:
        problem, fix = message.split("; ", 1)
        return ConfigError(setting, problem, fix)
    shown = "" if field in _SECRET_FIELDS else f" (got {error.get('input')!r})"
    return ConfigError(setting, f"{message}{shown}", "see the settings table in README.md")


def _check_combinations(settings: Settings) -> None:
    if settings.user is not None and settings.password is None:
        raise ConfigError(
            "VPN_PASSWORD",
            "VPN_USER is set without a password",
            "set VPN_PASSWORD or VPN_PASSWORD_FILE",
        )
    if settings.password is not None and settings.user is None:
        raise ConfigError("VPN_USER", "VPN_PASSWORD is set without a user name", "set VPN_USER")
    if settings.password is not None and not settings.password.get_secret_value():
        raise ConfigError("VPN_PASSWORD", "the password is empty", "set a non-empty password")
    seen: dict[str, str] = {}
    for account in settings.accounts():
        if account.name in seen:
            raise ConfigError(
                _setting_of(account.source),
                f"user {account.name!r} is declared twice ({seen[account.name]} and "
                f"{account.source})",
                "keep one definition",
            )
        seen[account.name] = account.source
    _check_acme(settings)
    _check_radius(settings)
    _check_web(settings)
    _check_static_block(settings)
    _check_pool_v6(settings)
    _check_split_nets(settings)
    if settings.cert is CertSource.SELF_SIGNED and (settings.chain_path is not None):
        raise ConfigError(
            "VPN_CHAIN_PATH",
            "is only used with VPN_CERT=files",
            "set VPN_CERT=files or unset VPN_CHAIN_PATH",
        )


def _check_web(settings: Settings) -> None:
    if settings.web_port is not None and settings.web_password is None:
        raise ConfigError(
            "VPN_WEB_PASSWORD",
            "is not set, and VPN_WEB_PORT needs the console's admin password",
            f"set VPN_WEB_PASSWORD_FILE (or VPN_WEB_PASSWORD) to {WEB_PASSWORD_MIN} or more "
            "characters",
        )
    if settings.web_password is not None and settings.web_port is None:
        raise ConfigError(
            "VPN_WEB_PORT",
            "is not set, so the console's password (VPN_WEB_PASSWORD) would not be used",
            "set VPN_WEB_PORT (such as 8443) or unset VPN_WEB_PASSWORD",
        )
    if settings.web_port is not None and settings.web_port == settings.metrics_port:
        raise ConfigError(
            "VPN_WEB_PORT",
            f"{settings.web_port} is also VPN_METRICS_PORT",
            "give the console another TCP port such as 8443",
        )


def _check_static_block(settings: Settings) -> None:
    block, pool = settings.pool_v4_static, settings.pool_v4
    if block is None:
        return
    if not block.subnet_of(pool):
        raise ConfigError(
            "VPN_POOL_V4_STATIC",
            f"{block} is not inside VPN_POOL_V4 ({pool})",
            "give a part of VPN_POOL_V4, such as its last quarter",
        )
    if block == pool:
        raise ConfigError(
            "VPN_POOL_V4_STATIC",
            "takes all of VPN_POOL_V4, leaving no addresses for other clients",
            "give a part of VPN_POOL_V4, such as its last quarter",
        )


_RADIUS_OPTIONS = (
    "radius_nas_identifier",
    "radius_accounting_port",
    "radius_interim_interval",
)


def _check_radius(settings: Settings) -> None:
    """RADIUS replaces local accounts: one source of users, so a login never depends on
    which of the two a server happened to ask."""
    if not settings.radius_servers:
        for field in ("radius_secret", *_RADIUS_OPTIONS):
            if getattr(settings, field) != Settings.model_fields[field].default:
                name = env_name(field)
                raise ConfigError(
                    name,
                    "is only used with VPN_RADIUS_SERVERS",
                    f"set VPN_RADIUS_SERVERS or unset {name}",
                )
        return
    if settings.radius_secret is None:
        raise ConfigError(
            "VPN_RADIUS_SECRET",
            "is not set, and VPN_RADIUS_SERVERS needs the shared secret of the RADIUS servers",
            "set VPN_RADIUS_SECRET_FILE (or VPN_RADIUS_SECRET)",
        )
    for field, name in (
        ("user", "VPN_USER"),
        ("users", "VPN_USERS"),
        ("users_file", "VPN_USERS_FILE"),
    ):
        if getattr(settings, field):
            raise ConfigError(
                name,
                "declares local users, but with VPN_RADIUS_SERVERS users live in RADIUS",
                f"unset {name} and add its users on the RADIUS server",
            )
    if settings.pool_v4_static is not None:
        raise ConfigError(
            "VPN_POOL_V4_STATIC",
            "static IPs belong to local users, and with VPN_RADIUS_SERVERS users live in RADIUS",
            "unset VPN_POOL_V4_STATIC",
        )
    if settings.radius_accounting_port is None:
        for server in settings.radius_servers:
            if server.auth_port >= 65535:
                raise ConfigError(
                    "VPN_RADIUS_SERVERS",
                    f"{server} leaves no port for accounting (its port + 1 is beyond 65535)",
                    "set VPN_RADIUS_ACCOUNTING_PORT, or use the server's usual port 1812",
                )


def _check_pool_v6(settings: Settings) -> None:
    pool, egress = settings.pool_v6, settings.pool_v6_egress
    if pool is None:
        if egress is not V6Egress.NAT66:
            raise ConfigError(
                "VPN_POOL_V6_EGRESS",
                "is only used with VPN_POOL_V6",
                "set VPN_POOL_V6 or unset VPN_POOL_V6_EGRESS",
            )
        if v6 := [server for server in settings.dns if server.version == 6]:
            # Without a v6 pool the tunnel carries no IPv6 (only 0.0.0.0/0 is tunnelled).
            raise ConfigError(
                "VPN_DNS",
                f"{v6[0]} is an IPv6 server, and clients get no IPv6 address or route "
                "through the tunnel without VPN_POOL_V6",
                "set VPN_POOL_V6 or list only IPv4 servers",
            )
        return
    if egress is V6Egress.NAT66 and not pool.subnet_of(ULA):
        raise ConfigError(
            "VPN_POOL_V6",
            f"{pool} is not a unique local (fc00::/7) prefix, and with NAT66 clients would "
            "shadow whoever owns it",
            "use a ULA prefix such as fd00:10:10::/112, or VPN_POOL_V6_EGRESS=routed for a "
            "prefix routed to this server",
        )
    if egress is V6Egress.NDP_PROXY and pool.prefixlen < V6_NDP_PROXY_MIN_PREFIX:
        raise ConfigError(
            "VPN_POOL_V6",
            f"/{pool.prefixlen} is too large for VPN_POOL_V6_EGRESS=ndp-proxy (one neighbour "
            "proxy entry per address)",
            f"use a /{V6_NDP_PROXY_MIN_PREFIX} to /{V6_POOL_MAX_PREFIX} inside the server's "
            "on-link /64",
        )


def _check_split_nets(settings: Settings) -> None:
    v6 = [net for net in settings.split_nets if net.version == 6]
    if v6 and settings.pool_v6 is None:
        raise ConfigError(
            "VPN_SPLIT_NETS",
            f"{v6[0]} is an IPv6 network, and clients get no IPv6 address or route "
            "through the tunnel without VPN_POOL_V6",
            "set VPN_POOL_V6 or list only IPv4 networks",
        )


_ACME_FIELDS = ("acme_email", "acme_ca_bundle", "acme_key_type", "acme_fallback")


def _check_acme(settings: Settings) -> None:
    if settings.cert is not CertSource.LETSENCRYPT:
        for field in (*_ACME_FIELDS, "acme_directory"):
            if getattr(settings, field) != Settings.model_fields[field].default:
                name = env_name(field)
                raise ConfigError(
                    name,
                    "is only used with VPN_CERT=letsencrypt",
                    f"set VPN_CERT=letsencrypt or unset {name}",
                )
        return
    if settings.host is None:
        raise ConfigError(
            "VPN_HOST",
            "is not set, and VPN_CERT=letsencrypt needs the DNS name clients dial",
            "set VPN_HOST to a name whose A/AAAA record points at this server",
        )
    if _is_ip_address(settings.host):
        raise ConfigError(
            "VPN_HOST",
            f"{settings.host} is an IP address, and ACME CAs such as Let's Encrypt issue "
            "certificates for DNS names",
            "set VPN_HOST to a DNS name pointing at this server, or use VPN_CERT=self-signed",
        )


def _is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _setting_of(source: str) -> str:
    return source.split(" ", 1)[0]


def load_settings() -> Settings:
    """Validate the environment; raise ConfigErrors listing every problem found."""
    try:
        settings = Settings()
    except ValidationError as exc:
        raise ConfigErrors([_to_config_error(e) for e in exc.errors()]) from None
    except ConfigError as exc:
        raise ConfigErrors([exc]) from None
    try:
        _check_combinations(settings)
    except ConfigError as exc:
        raise ConfigErrors([exc]) from None
    return settings


def _read_by_settings(name: str) -> bool:
    return name.startswith((ENV_PREFIX, ACME_PREFIX))


def child_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for charon and every other child process: this one's without the
    variables that settings read. No child needs them, and they hold the passwords."""
    environ = os.environ if environ is None else environ
    return {name: value for name, value in environ.items() if not _read_by_settings(name)}


def forget_environment() -> list[str]:
    """Remove what settings read from this process's environment, once they are loaded, so
    that nothing started later inherits a password; returns the names removed.

    ``docker exec`` and ``docker inspect`` still show what the container was given (Docker
    keeps it), and so does ``/proc/1/environ``, the kernel's copy of the environment this
    process started with: that is why passwords belong in ``*_FILE`` settings.
    """
    names = sorted(name for name in os.environ if _read_by_settings(name))
    for name in names:
        del os.environ[name]
    return names


def describe(settings: Settings) -> Iterable[str]:
    """The effective settings as log lines, with secrets left out."""
    yield f"VPN_HOST={settings.host or '(auto)'} VPN_HOST_DETECT={settings.host_detect}"
    if settings.radius_servers:
        accounting = settings.radius_accounting_port or "port+1"
        yield (
            f"users: in RADIUS; VPN_RADIUS_SERVERS={','.join(map(str, settings.radius_servers))} "
            f"VPN_RADIUS_ACCOUNTING_PORT={accounting} "
            f"VPN_RADIUS_NAS_IDENTIFIER={settings.radius_nas_identifier or '(VPN_HOST)'} "
            f"VPN_RADIUS_INTERIM_INTERVAL={settings.radius_interim_interval}"
        )
    else:
        names = ", ".join(account.name for account in settings.accounts()) or "(generated)"
        yield f"users: {names}"
    yield (
        f"VPN_POOL_V4={settings.pool_v4} "
        f"VPN_POOL_V4_STATIC={settings.pool_v4_static or '(none)'} "
        f"VPN_POOL_V6={settings.pool_v6 or '(off)'} "
        + (f"VPN_POOL_V6_EGRESS={settings.pool_v6_egress} " if settings.pool_v6 else "")
        + f"VPN_DNS={','.join(map(str, settings.dns))} "
        f"VPN_SPLIT_NETS={','.join(map(str, settings.split_nets)) or '(full tunnel)'} "
        f"VPN_IPSEC_BACKEND={settings.ipsec_backend} VPN_PROPOSALS={settings.proposals} "
        f"VPN_CERT={settings.cert}"
    )
    yield (
        f"VPN_DPD_DELAY={settings.dpd_delay} VPN_CLIENT_ISOLATION={settings.client_isolation} "
        f"VPN_ALLOW_SERVER_ACCESS={settings.allow_server_access} "
        f"VPN_ALLOW_LINK_LOCAL={settings.allow_link_local} "
        f"VPN_CLIENT_DENY={','.join(map(str, settings.client_deny)) or '(none)'} "
        f"VPN_CLIENT_ALLOW={','.join(map(str, settings.client_allow)) or '(none)'} "
        f"VPN_BAN_AFTER={settings.ban_after} VPN_BAN_SECONDS={settings.ban_seconds}"
    )
    yield (
        f"VPN_METRICS_PORT={settings.metrics_port or '(off)'} "
        f"VPN_WEB_PORT={settings.web_port or '(off)'}"
    )
    yield (
        f"VPN_PROFILE_PASSWORDS={settings.profile_passwords} "
        f"VPN_PROFILE_ALWAYS_ON={settings.profile_always_on}"
    )
    if settings.cert is CertSource.LETSENCRYPT:
        yield (
            f"ACME_DIRECTORY={settings.acme_directory} "
            f"ACME_EMAIL={settings.acme_email or '(none)'} "
            f"ACME_KEY_TYPE={settings.acme_key_type} ACME_FALLBACK={settings.acme_fallback}"
            + (f" ACME_CA_BUNDLE={settings.acme_ca_bundle}" if settings.acme_ca_bundle else "")
        )
