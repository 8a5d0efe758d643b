"""One exception type for every problem a user can fix: bad input, missing weights or data.

Its message is the single line the command line prints (`error: <file>: <problem>`), so raise it
with the file and the problem named, and never let a bare traceback reach the user for these.
"""


class KitError(Exception):
    """A user-facing error: the message names the file (or setting) and the problem, in one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # one line, always
