"""State under /data: created once, then reused."""
