"""POP3 over TLS, in three layers: ``codec`` (bytes), ``transport`` (the connection, the only
user of poplib) and ``client`` (the command session).

The rest of pop3s_fetch imports what it uses from here; the layer modules are named only by
each other and by tests that exercise one layer. Must not know: storage, state, configuration,
credentials or the UI.
"""

from pop3s_fetch.pop3.client import (
    MessageTooLarge,
    NoUidl,
    Pop3Client,
    RemoteMessage,
    Retrieved,
    UidlReply,
)
from pop3s_fetch.pop3.codec import Sink
from pop3s_fetch.pop3.transport import ConnectionClosed

__all__ = [
    "ConnectionClosed",
    "MessageTooLarge",
    "NoUidl",
    "Pop3Client",
    "RemoteMessage",
    "Retrieved",
    "Sink",
    "UidlReply",
]
