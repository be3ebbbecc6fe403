"""Account passwords in the OS keyring; the only module that imports ``keyring``.

Each password is stored under the keyring service :data:`SERVICE` (``"pop3s-fetch"``) with the
*account name* from the configuration file as the keyring user name (not the POP3 login name),
so two accounts with the same login on different servers never share an entry, e.g.::

    secret-tool lookup service pop3s-fetch username work

Every failure becomes a :class:`~pop3s_fetch.errors.CredentialError` (exit 77). This module never
prompts: it runs unattended from cron and systemd, where a prompt would hang. Asking the user
for a password is the CLI's job. No message or exception raised here contains a password.

``keyring`` is imported inside the functions, not at module level, because importing it
discovers backends and that slows down ``pop3s-fetch --help``.

Must not know: click, rich, poplib, the configuration file format, or how mail is fetched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from pop3s_fetch.errors import CredentialError

if TYPE_CHECKING:
    from keyring.backend import KeyringBackend

SERVICE = "pop3s-fetch"

_T = TypeVar("_T")

_NO_BACKEND_HINT = (
    "cron jobs and systemd services run outside the desktop session, so they cannot reach "
    "its keyring; run pop3s-fetch where the keyring is unlocked, or choose a backend with the "
    "PYTHON_KEYRING_BACKEND environment variable (`keyring --list-backends` shows them)"
)


def get_password(account: str) -> str:
    """Return the stored password for ``account``.

    Raises:
        CredentialError: nothing is stored, or no keyring is usable, locked, or failing.
    """
    password = _call(account, "read", lambda backend: backend.get_password(SERVICE, account))
    if not password:
        raise CredentialError(
            f"no password stored for account {_quoted(account)}",
            hint=f"store one with: pop3s-fetch password set {account}",
        )
    return password


def set_password(account: str, password: str) -> None:
    """Store ``password`` for ``account``, replacing any stored one.

    Raises:
        CredentialError: the password is empty, or no keyring is usable, locked, or failing.
    """
    if not password:
        raise CredentialError(f"refusing to store an empty password for account {_quoted(account)}")
    _call(
        account,
        "store",
        lambda backend: backend.set_password(SERVICE, account, password),
        secret=password,
    )


def delete_password(account: str) -> None:
    """Remove the stored password for ``account``.

    Raises:
        CredentialError: nothing is stored, or no keyring is usable, locked, or failing.
    """
    from keyring.errors import PasswordDeleteError

    def delete(backend: KeyringBackend) -> None:
        try:
            backend.delete_password(SERVICE, account)
        except PasswordDeleteError:
            raise CredentialError(f"no password stored for account {_quoted(account)}") from None

    _call(account, "delete", delete)


def backend_description() -> str:
    """Describe the active keyring backend, e.g. ``SecretService Keyring (priority 5)``.

    Meant for diagnostics output; it never raises.
    """
    try:
        backend = _active_backend()
        description = _describe(backend)
        chained = _chained_backends(backend)
        if chained is not None:
            inner = ", ".join(_describe(b) for b in chained) or "no backends"
            description = f"{description}: {inner}"
        return description
    except Exception as err:
        return f"unavailable ({type(err).__name__}: {_one_line(str(err))})"


# --- helpers --------------------------------------------------------------------------------


def _active_backend() -> KeyringBackend:
    import keyring

    return keyring.get_keyring()


def _usable_backend(account: str) -> KeyringBackend:
    """Return the active backend, or raise if it is one that can never hold a password.

    keyring falls back to ``fail.Keyring`` when it finds nothing, and a chainer with nothing to
    chain or the ``null`` backend would quietly report "no password stored", which would send
    the user off to store a password that cannot be stored.
    """
    from keyring.backends import chainer, fail, null

    backend = _active_backend()
    chained = _chained_backends(backend)
    if isinstance(backend, fail.Keyring | null.Keyring) or (
        isinstance(backend, chainer.ChainerBackend) and not chained
    ):
        raise _no_backend_error(account)
    return backend


def _chained_backends(backend: KeyringBackend) -> list[KeyringBackend] | None:
    """Return the backends a chainer delegates to, or None if ``backend`` is not a chainer."""
    from keyring.backends import chainer

    if not isinstance(backend, chainer.ChainerBackend):
        return None
    return list(backend.backends)


def _no_backend_error(account: str) -> CredentialError:
    return CredentialError(
        f"no usable OS keyring for account {_quoted(account)} (keyring found no backend; is a "
        "Secret Service such as gnome-keyring running in this D-Bus session?)",
        hint=_NO_BACKEND_HINT,
    )


def _call(
    account: str,
    action: str,
    operation: Callable[[KeyringBackend], _T],
    *,
    secret: str | None = None,
) -> _T:
    """Run ``operation`` on the usable backend, turning every failure into CredentialError.

    ``action`` ("read", "store", "delete") words the message; ``secret`` is scrubbed from it.
    """
    from keyring.errors import KeyringLocked, NoKeyringError

    try:
        return operation(_usable_backend(account))
    except CredentialError:
        raise
    except NoKeyringError:
        raise _no_backend_error(account) from None
    except KeyringLocked:
        raise CredentialError(
            f"the OS keyring is locked, so the password for account {_quoted(account)} "
            f"could not be {_PAST_PARTICIPLE[action]}",
            hint="unlock the keyring (for example by logging in to the desktop session or with "
            "your keyring manager) and try again",
        ) from None
    # secretstorage raises D-Bus errors that do not subclass KeyringError, so catch broadly.
    except Exception as err:
        failure = CredentialError(
            f"the OS keyring could not {action} the password for account {_quoted(account)}: "
            f"{type(err).__name__}: {_one_line(_scrub(str(err), secret))}"
        )
        if secret is None or secret not in _exception_text(err):
            raise failure from err
    # Raised outside the handler so that the exception quoting the password is not chained
    # to ours (a --debug traceback would print it).
    raise failure


_PAST_PARTICIPLE = {"read": "read", "store": "stored", "delete": "deleted"}


def _exception_text(err: BaseException) -> str:
    """Everything a traceback of ``err`` would print about it and the exceptions behind it."""
    parts: list[str] = []
    current: BaseException | None = err
    seen: set[int] = set()
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.extend([str(current), repr(current.args)])
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


def _scrub(text: str, secret: str | None) -> str:
    return text.replace(secret, "[password hidden]") if secret else text


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "(no message)"


def _describe(backend: KeyringBackend) -> str:
    kind = type(backend)
    try:
        return f"{kind.name} (priority {kind.priority:g})"
    except Exception:  # a backend's priority may raise once its service has gone away
        return kind.name


def _quoted(account: str) -> str:
    return '"' + account.replace("\\", "\\\\").replace('"', '\\"') + '"'
