"""The test lab of ikev2-vpn: what the end-to-end tests and the benchmark drive.

Built on the operator helper (``ikev2_vpn_helper``: engine, image builds, server, topology,
client and the check session), never the other way round. :class:`~ikev2_vpn_lab.lab.Lab`
starts servers, clients, Pebble (ACME) and FreeRADIUS on a topology of its own; the other
modules flood a server, stand in for Kubernetes, read a server's state, replay client
profiles and keep the client compatibility matrix.
"""
