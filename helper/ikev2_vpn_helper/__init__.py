"""Host-side helper for ikev2-vpn: build the image, run the server, check it end to end.

A small library (used by the ``ikev2-vpn-helper`` command, and built upon by the test lab,
``ikev2_vpn_lab``, which it never imports) on top of the Docker SDK. Every object a check
or a test creates carries the label ``ikev2-vpn.test=<run id>``, so
:func:`ikev2_vpn_helper.engine.remove_run` can always find and remove it.
"""

__version__ = "0.1.0"
