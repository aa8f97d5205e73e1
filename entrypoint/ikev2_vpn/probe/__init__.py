"""Read-only facts about the machine, gathered before anything under /data is touched."""
