"""ikev2-vpn: a strongSwan IKEv2 server configured from the environment (container side).

Kept free of imports: the health check imports a submodule and must start fast.
"""
