"""The one place that decides which certificates we trust.

poplib's own default context verifies nothing (``ssl._create_stdlib_context``), so every
connection is given a context built here: certifi's CA bundle (or the account's ``ca_file``),
hostname checking on, TLS 1.2 or newer. There is deliberately no switch to turn verification off.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from pop3s_fetch.errors import TLSError


def client_context(ca_file: Path | None = None) -> ssl.SSLContext:
    """Return a verifying client context trusting certifi's bundle, or only ``ca_file``.

    Raises:
        TLSError: ``ca_file`` cannot be read or holds no certificate.
    """
    if ca_file is None:
        import certifi  # imported here: only commands that connect pay for it

        cafile = certifi.where()
    else:
        cafile = str(ca_file)
    try:
        context = ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as err:
        raise TLSError(
            f"cannot load CA certificates from {cafile}: {err.strerror or err}",
            hint="point ca_file at a readable PEM file of CA certificates",
        ) from err
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context
