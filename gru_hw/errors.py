"""The one exception type for mistakes a user can make."""

from __future__ import annotations


class GruHwError(Exception):
    """A user-caused error: bad file, wrong shape, unsupported model feature, bad value.

    The message says what is wrong and where (file, argument, tensor). The command line prints it on
    one line and exits with status 2. Anything else that escapes is a bug and keeps its traceback.
    """
