"""The one exception type for mistakes a user can make."""

from __future__ import annotations


class GruHwError(Exception):
    """A user-caused error: bad file, wrong shape, unsupported model feature, bad value.

    The message says what is wrong and where (file, value, tensor). The command line prints it on
    one line and exits with status 2. Anything else that escapes is a bug and keeps its traceback.

    ``subject`` names the parameter a message is about (``"lanes"``, ``"clock_mhz"``, ...): the
    library never names a command-line flag; the command line maps the subject to its flag.
    """

    def __init__(self, message: str, *, subject: str | None = None) -> None:
        super().__init__(message)
        self.subject = subject
