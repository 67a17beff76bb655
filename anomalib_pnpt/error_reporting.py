# Copyright (C) 2026 anomalib-pnpt contributors
# SPDX-License-Identifier: Apache-2.0

"""Errors a user fixes outside the code print as one line when nothing catches them.

anomalib's CLI installs rich's traceback printer at import (``anomalib/cli/cli.py``), so a missing network
or weights file -- fixed by a command-line option, not by reading code -- reaches the user as a 300-line
boxed traceback with the fix at its very end. anomalib has no hook for an error's presentation; the public
one Python offers is ``sys.excepthook``, which this module CHAINS: only :class:`UserFacingError` is printed
as one line (exit status 1, as for any uncaught exception); every other exception goes to the hook that was
installed before (rich's in anomalib's CLI), and code that catches the error sees an ordinary exception.

Example:
    >>> import sys
    >>> before = sys.excepthook
    >>> report_user_facing_errors()
    >>> hook = sys.excepthook
    >>> report_user_facing_errors()  # installing twice chains once
    >>> sys.excepthook is hook, hook.reports_user_facing_errors
    (True, True)
    >>> sys.excepthook = before
"""

from __future__ import annotations

import sys
from types import TracebackType


class UserFacingError(RuntimeError):
    """An error whose message is the whole story: its fix is an option or a file, not a code change."""


def report_user_facing_errors() -> None:
    """Make an uncaught :class:`UserFacingError` print ``Type: message`` instead of a traceback (idempotent).

    Called where such an error is raised, i.e. after anomalib's CLI has installed its own hook, so this one
    is outermost.
    """
    previous = sys.excepthook
    if getattr(previous, "reports_user_facing_errors", False):
        return

    def hook(error_type: type[BaseException], error: BaseException, traceback: TracebackType | None) -> None:
        if issubclass(error_type, UserFacingError):
            print(f"{error_type.__name__}: {error}", file=sys.stderr)  # the exit status stays 1
            return
        previous(error_type, error, traceback)

    hook.reports_user_facing_errors = True  # type: ignore[attr-defined]
    sys.excepthook = hook
