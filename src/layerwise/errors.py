"""User-facing errors.

Every mistake a user can make (a bad model path, an impossible selection, an empty data file...)
raises `LayerwiseError` with a one-line message that names the bad input and what would be
valid. The CLI turns it into that line on stderr and exit code 2; library callers can catch it.
"""


class LayerwiseError(ValueError):
    """A problem with the user's input, reported as one line (CLI: exit code 2)."""

    def __init__(self, message: str):
        # One line, always: a multi-line message would read like a traceback.
        super().__init__(" ".join(str(message).split()))
