# syntax=docker/dockerfile:1
# ikev2-vpn: strongSwan IKEv2 server configured from environment variables.
#
# BASE_IMAGE: Debian stable. Hosts without registry access build a local one with
#   `ikev2-vpn-helper build` (debootstrap from Debian's mirror, then `docker load`).
# EXTRA_CA_CERTS: PEM certificates of a TLS-intercepting proxy, trusted by the build stage
#   only, so pip can reach PyPI behind a corporate proxy without disabling verification.
#   The helper passes the host's /usr/local/share/ca-certificates by default.
ARG BASE_IMAGE=debian:trixie-slim

FROM ${BASE_IMAGE} AS build
ARG EXTRA_CA_CERTS=""
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates python3-pip python3-setuptools python3-venv \
 && rm -rf /var/lib/apt/lists/*
RUN if [ -n "$EXTRA_CA_CERTS" ]; then \
        printf '%s\n' "$EXTRA_CA_CERTS" > /usr/local/share/ca-certificates/build-extra.crt \
        && update-ca-certificates >/dev/null; \
    fi
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    PIP_ROOT_USER_ACTION=ignore
# Runtime libraries come from Debian (security updates, same versions as the tests pin);
# the venv sees them through --system-site-packages. Only vici, which Debian does not
# package, comes from PyPI, pinned to charon's version; and qrcode (pure Python, Debian's
# version), because Debian's python3-qrcode depends on Pillow and 26 more packages (+16 MB)
# while profiles only need its pure-Python PNG path (pypng: python3-png below).
RUN python3 -m venv --system-site-packages --without-pip /opt/ikev2-vpn \
 && pip --python /opt/ikev2-vpn/bin/python3 install --no-deps vici==6.0.1 qrcode==8.2
COPY pyproject.toml README.md /src/
COPY entrypoint /src/entrypoint
COPY config /src/config
# Only the server's distribution: the helper, the test lab and the benchmark are others.
RUN pip --python /opt/ikev2-vpn/bin/python3 install --no-deps --no-build-isolation /src

FROM ${BASE_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates iproute2 nftables \
        strongswan-charon strongswan-swanctl libcharon-extauth-plugins \
        libcharon-extra-plugins \
        python3 python3-pydantic-settings python3-jinja2 python3-cryptography \
        python3-pycryptodome python3-acme python3-png python3-prometheus-client \
        python3-waitress python3-flask python3-flaskext.wtf \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
COPY --from=build /opt/ikev2-vpn /opt/ikev2-vpn
ENV PATH=/opt/ikev2-vpn/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
VOLUME ["/data"]
# 80/tcp: the ACME HTTP-01 challenge (VPN_CERT=letsencrypt only; nothing listens otherwise).
EXPOSE 500/udp 4500/udp 80/tcp 443/tcp
# Docker 20.10 has no --start-interval: the first check runs one interval after start, so
# the interval is short; a check costs about 30 ms of CPU (1 % of a core at 3 s).
HEALTHCHECK --interval=3s --timeout=3s --start-period=60s --retries=3 \
    CMD ["/opt/ikev2-vpn/bin/python3", "-m", "ikev2_vpn.run.health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["ikev2-vpn"]
CMD ["run"]
