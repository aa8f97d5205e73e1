"""Rendering of the profile templates in ``config/profiles/`` (no I/O beyond reading them).

Values reach the templates already escaped for their format: each platform module decides
the quoting, the template only places the text.
"""

from __future__ import annotations

from typing import Any

from ..render import render_template


def render_profile(template: str, **values: Any) -> str:
    """``config/profiles/<template>`` rendered with ``values``."""
    return render_template(f"profiles/{template}", **values)
