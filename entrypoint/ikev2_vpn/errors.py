"""Errors the operator can fix.

Each is reported as one line (which setting, what is wrong, what to do) and stops the
container before anything is started or written. Messages never contain secrets.
"""


class ConfigError(Exception):
    """A problem in the operator's input, reported as one line."""

    def __init__(self, setting: str, problem: str, fix: str) -> None:
        self.setting = setting
        self.problem = problem
        self.fix = fix
        super().__init__(self.line())

    def line(self) -> str:
        return _one_line(f"{self.setting}: {self.problem}; {self.fix}")


def _one_line(text: str) -> str:
    """Operator input quoted in a message (a path, say) may hold newlines, U+2028 and other
    control characters: escaped, so a message stays one line and cannot forge another."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


class ConfigErrors(Exception):
    """Several independent problems found while validating the settings."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__("\n".join(error.line() for error in errors))


class SystemSetupError(Exception):
    """The container lacks something only the operator can grant (a capability, a device)."""
