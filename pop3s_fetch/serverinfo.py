"""``pop3s-fetch serverinfo``: what a server offers, before any credential exists.

It connects as ``sync`` would (same TLS settings, same pin), reads the capabilities, and
reports the TLS version, cipher, certificate (with the fingerprint to pin) and the days left
before it expires. With ``login`` it also authenticates, to show which method was chosen, and
ends the session with QUIT having marked nothing for deletion.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass, field

from pop3s_fetch import tls
from pop3s_fetch.config import Account
from pop3s_fetch.connect import log_in, login_method, open_session

#: Capabilities (RFC 2449) worth showing, in this order, whether or not the server has them.
SHOWN = ("SASL", "PIPELINING", "TOP", "UIDL", "USER", "LOGIN-DELAY", "EXPIRE", "STLS")


@dataclass
class ServerInfo:
    """Everything ``serverinfo`` prints."""

    account: str
    where: str
    mode: str
    tls_version: str
    cipher: str
    certificate: tls.CertificateSummary
    pinned: bool
    capabilities: dict[str, list[str]]
    greeting: str
    method: str
    logged_in: bool = False
    extra: list[str] = field(default_factory=list)


def gather(account: Account, secret: Callable[[], str] | None = None) -> ServerInfo:
    """Connect (and log in when ``secret`` is given) and collect what the server offers.

    Raises:
        TLSError, ConnectError, ProtocolError, AuthError: as ``sync`` would meet them.
    """
    session = open_session(account)
    try:
        if not session.capabilities:
            session.capa()
        info = ServerInfo(
            account=account.name,
            where=f"{account.host}:{account.port}",
            mode="STLS" if account.tls.mode == "starttls" else "implicit TLS",
            tls_version=session.tls_version,
            cipher=session.cipher,
            certificate=tls.describe(session.peer_certificate()),
            pinned=account.tls.fingerprint is not None,
            capabilities=dict(session.capabilities),
            greeting=session.greeting,
            method=login_method(session, account),
        )
        if secret is not None:
            log_in(session, account, secret())
            info.logged_in = True
            after = session.capa()  # RFC 2449: capabilities may differ once logged in
            info.extra = sorted(set(after) - set(info.capabilities))
            session.quit()
    finally:
        session.close()
    return info


def render(info: ServerInfo, now: datetime.datetime | None = None) -> list[str]:
    """Plain lines, one fact each, aligned for reading."""
    now = now or datetime.datetime.now(datetime.UTC)
    cert = info.certificate
    days = (cert.not_after - now).days
    trust = "pinned fingerprint matches" if info.pinned else "verified"
    lines = [
        f"server:       {info.where} ({info.mode}), greeting: {info.greeting}",
        f"TLS:          {info.tls_version}, {info.cipher}",
        f"certificate:  {cert.subject} ({trust})",
        f"issuer:       {cert.issuer}{' (self-signed)' if cert.self_signed else ''}",
        f"valid for:    {', '.join(cert.names) or '(no names)'}",
        f"expires:      {cert.not_after:%Y-%m-%d %H:%M} UTC (in {days} days)",
        f"fingerprint:  {cert.sha256}",
    ]
    for name in SHOWN:
        if name in info.capabilities:
            args = info.capabilities[name]
            lines.append(f"{name + ':':<14}{' '.join(args) if args else 'yes'}")
        else:
            lines.append(f"{name + ':':<14}no")
    implementation = info.capabilities.get("IMPLEMENTATION")
    lines.append(f"IMPLEMENTATION: {' '.join(implementation) if implementation else '-'}")
    login = f"{info.method} (logged in)" if info.logged_in else info.method
    lines.append(f"{'login:':<14}{login}")
    if info.extra:
        lines.append(f"{'after login:':<14}{' '.join(info.extra)}")
    return lines
