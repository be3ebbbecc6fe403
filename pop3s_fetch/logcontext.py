"""Which account a log line speaks for, so that parallel dialogues can be told apart.

``--debug sync a b`` runs two accounts at once; their POP3 dialogues interleave in one log.
The account is set once per sync (and carried into the threads it starts); the log formatter
puts it in front of every line. A context variable, because the protocol code that logs
knows nothing of accounts, and must not.

Must not know: logging formats, accounts' configuration, or anything else of the program.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

current_account: ContextVar[str] = ContextVar("pop3s_fetch_account", default="")


@contextlib.contextmanager
def speaking_for(account: str) -> Iterator[None]:
    """Log lines emitted inside (in this thread, or threads started with its context) name
    ``account``."""
    token = current_account.set(account)
    try:
        yield
    finally:
        current_account.reset(token)
