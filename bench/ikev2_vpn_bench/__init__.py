"""Benchmarks: ikev2-vpn side by side with a bare, hand-configured strongSwan server.

``bench/run`` (or ``python -m ikev2_vpn_bench``) measures start-up, connect latency,
connection bursts, throughput and memory for both servers in one run, on the same machine,
with the same image and strongSwan, and writes JSON, a chart and the table in docs/development.md.
"""
