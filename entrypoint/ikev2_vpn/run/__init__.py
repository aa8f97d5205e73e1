"""Starting and supervising charon, talking to it over VICI."""
