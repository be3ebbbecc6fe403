"""The run's outcome as numbers: the overall exit code and the ``--json`` document.

Kept apart from the UI so that scripts get the same facts the screen shows, in a versioned
schema (documented in pop3s-fetch(1), section JSON OUTPUT); bump ``SCHEMA`` on any
incompatible change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pop3s_fetch import __version__
from pop3s_fetch.errors import ExitCode, Pop3sFetchError
from pop3s_fetch.sync import AccountResult

if TYPE_CHECKING:
    import datetime

SCHEMA = "pop3s-fetch.sync/1"

#: Some accounts failed while others succeeded: distinct from every single-cause code.
PARTIAL_FAILURE = 1


def exit_code(results: Sequence[AccountResult]) -> int:
    """0 if all succeeded; the first failure's code if all failed; 1 if only some failed."""
    failed = [r for r in results if r.error is not None]
    if not failed:
        return int(ExitCode.OK)
    if len(failed) < len(results):
        return PARTIAL_FAILURE
    return int(failed[0].exit_code)


def error_record(err: Pop3sFetchError) -> dict[str, Any]:
    return {
        "code": int(err.exit_code),
        "type": type(err).__name__,
        "message": err.message,
        "hint": err.hint,
    }


def _login_delay_record(result: AccountResult) -> dict[str, Any] | None:
    """Why a "skipped" account was: the server's LOGIN-DELAY, and when to come back."""
    held = result.login_delay
    if held is None:
        return None
    import datetime

    return {
        "delay": held.delay,
        "next_login": None
        if held.next_at is None
        else datetime.datetime.fromtimestamp(held.next_at, datetime.UTC).isoformat(
            timespec="seconds"
        ),
        "refused": held.refused,
        "note": held.note(result.account),
    }


def json_document(
    results: Sequence[AccountResult], started: datetime.datetime, duration: float
) -> dict[str, Any]:
    """The whole run as one JSON-ready dict (see the schema in pop3s-fetch(1))."""
    return {
        "schema": SCHEMA,
        "version": __version__,
        "started": started.isoformat(timespec="seconds"),
        "duration": round(duration, 3),
        "exit_code": exit_code(results),
        "accounts": [
            {
                "name": r.account,
                "status": "failed" if r.error else "skipped" if r.login_delay else "ok",
                "fetched": r.fetched,
                "bytes": r.octets,
                "skipped": r.skipped,
                "deleted": r.deleted,
                "on_server": r.on_server,
                "recovered": r.recovered,
                "duration": round(r.duration, 3),
                "errors": [error_record(r.error)] if r.error else [],
                "warnings": list(r.warnings),
                "remaining": r.remaining,
                "oversize": [
                    {"uidl": o.uidl, "size": o.size, "action": o.action, "new": o.new}
                    for o in r.oversize
                ],
                "login_delay": _login_delay_record(r),
                "filtered": [
                    {"uidl": f.uidl, "size": f.size, "action": f.action, "new": f.new}
                    for f in r.filtered
                ],
            }
            for r in results
        ],
    }
