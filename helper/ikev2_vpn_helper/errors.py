"""Errors the operator can fix: each becomes one line at the command line's edge."""


class HelperError(Exception):
    """Something outside the helper is wrong (engine, image, server, files); never a secret."""
