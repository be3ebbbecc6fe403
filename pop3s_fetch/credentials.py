"""Where an account's login secret comes from; the only module that imports ``keyring``.

A password comes from exactly one source, chosen in the configuration:

* the OS keyring (the default),
* ``password_command``: an argv list run without a shell, whose first line of output is the
  password (``["pass", "show", "mail/work"]``),
* ``password_credential``: a systemd credential, read from ``$CREDENTIALS_DIRECTORY`` so that
  ``LoadCredentialEncrypted=`` works for services with no keyring.

OAuth2 refresh tokens are kept in the keyring too, under :data:`OAUTH2_SERVICE`.

Each password is stored under the keyring service :data:`SERVICE` (``"pop3s-fetch"``) with the
*account name* from the configuration file as the keyring user name (not the POP3 login name),
so two accounts with the same login on different servers never share an entry, e.g.::

    secret-tool lookup service pop3s-fetch username work

Every failure becomes a :class:`~pop3s_fetch.errors.CredentialError` (exit 77). This module never
prompts: it runs unattended from cron and systemd, where a prompt would hang. Asking the user
for a password is the CLI's job. No message or exception raised here contains a password or
token, and this module never writes one anywhere but the keyring.

``keyring`` is imported inside the functions, not at module level, because importing it
discovers backends and that slows down ``pop3s-fetch --help``. Reading a secret skips keyring
altogether where keyring would use the Secret Service anyway (see
:func:`_read_from_secret_service`): importing it and probing every platform's backend costs
more than the rest of an idle run. Within :func:`secret_service_kept_open` (``sync --every``)
those reads share one D-Bus connection and Secret Service session instead of opening their
own; the secret is still read each time.

Must not know: click, rich, poplib, the configuration file format (it reads the validated
:class:`~pop3s_fetch.config.Account` only), OAuth2 HTTP, or how mail is fetched.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import stat
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from pop3s_fetch.errors import CredentialError
from pop3s_fetch.programs import exit_status, stop_group

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from jeepney.io.blocking import DBusConnection  # type: ignore[import-untyped]
    from keyring.backend import KeyringBackend
    from secretstorage.dhcrypto import Session as SecretSession

    from pop3s_fetch.config import Account

SERVICE = "pop3s-fetch"
OAUTH2_SERVICE = "pop3s-fetch-oauth2"  # refresh tokens, keyring user name = account name
PASSWORD_COMMAND_TIMEOUT = 60.0  # seconds; long enough to type a GPG passphrase in pinentry
CREDENTIALS_DIRECTORY_VAR = "CREDENTIALS_DIRECTORY"
#: Where systemd-logind puts each logged-in user's runtime directory (and session bus).
RUN_USER = Path("/run/user")

_T = TypeVar("_T")

_OUTSIDE_SESSION = (
    "cron jobs and systemd services run outside the desktop session, so they cannot reach "
    "its keyring; run pop3s-fetch where the keyring is unlocked, "
)
_CHOOSE_BACKEND = (
    "choose a backend with the PYTHON_KEYRING_BACKEND environment variable "
    "(`keyring --list-backends` shows them)"
)
_HEADLESS_SOURCES = (
    'set password_command = ["pass", "show", "mail/work"] or password_credential = "NAME" '
    "(a systemd LoadCredentialEncrypted= credential) in the account instead"
)
_NO_BACKEND_HINTS = {
    "password": f"{_OUTSIDE_SESSION}{_CHOOSE_BACKEND}, or {_HEADLESS_SOURCES}",
    "token": f"{_OUTSIDE_SESSION}or {_CHOOSE_BACKEND}; OAuth2 refresh tokens are kept only "
    "in the keyring",
}
_UNLOCK = (
    "unlock the keyring (for example by logging in to the desktop session or with your "
    "keyring manager) and try again"
)
_LOCKED_HINTS = {
    "password": f"{_UNLOCK}; for unattended runs, {_HEADLESS_SOURCES}",
    "token": _UNLOCK,
}
_STDERR_LIMIT = 200  # characters of a failed command's stderr logged under --debug
#: The longest password accepted from any source; a longer one is a mistake (a file, a key),
#: and a server would refuse the line that carries it anyway.
MAX_SECRET_BYTES = 4096
_STDOUT_CAP = 64 * 1024  # bytes of a password_command's stdout kept; the rest is drained
_STDERR_CAP = 16 * 1024


# --- any source -----------------------------------------------------------------------------


def get_secret(account: Account, *, environ: Mapping[str, str] | None = None) -> str:
    """Return the password for ``account`` from the one source its configuration names.

    ``environ`` (default ``os.environ``) supplies ``$CREDENTIALS_DIRECTORY``.

    Raises:
        CredentialError: the source has no password or failed; the message says why.
        ValueError: the account logs in with OAuth2, so it has no password (a caller's bug).
    """
    if account.oauth2 is not None:
        raise ValueError(f"account {account.name!r} logs in with OAuth2 and has no password")
    if account.password_command is not None:
        return run_password_command(account.name, account.password_command)
    if account.password_credential is not None:
        return read_systemd_credential(
            account.name, account.password_credential, os.environ if environ is None else environ
        )
    return get_password(account.name)


# --- password_command -----------------------------------------------------------------------


def run_password_command(
    account: str, argv: tuple[str, ...], *, timeout: float = PASSWORD_COMMAND_TIMEOUT
) -> str:
    """Run ``argv`` without a shell and return the first line it prints, sans line ending.

    Only ``argv[0]`` is quoted in errors: later arguments are the user's business. The
    command's stderr is never put in an error: a helper may echo the secret there, in a form
    no scrubbing recognises. It is logged (first line, shortened, with anything the command
    printed on stdout scrubbed out) at debug level, which only ``--debug`` shows. The command
    runs in a session of its own so that a timeout stops its children too, and what it prints
    is read up to a cap, so a runaway helper cannot fill memory.

    Raises:
        CredentialError: the command is missing, cannot run, times out, fails, or prints
            nothing on its first line, something that is not UTF-8, or a line too long.
    """
    import subprocess  # only a password_command pays for it (and selectors, below)

    what = f"password_command for account {_quoted(account)} ({_quoted(argv[0])})"
    failure: CredentialError
    try:
        returncode, stdout, stderr = _run_capped(argv, timeout)
    except FileNotFoundError:
        failure = CredentialError(
            f"{what}: command not found",
            hint="check the program name in password_command, or give its absolute path",
        )
    except subprocess.TimeoutExpired:
        failure = CredentialError(
            f"{what} did not finish within {timeout:g} seconds",
            hint="the command must print the password without waiting for input",
        )
    except OSError as err:
        failure = CredentialError(f"{what} could not be run: {err.strerror or type(err).__name__}")
    else:
        if returncode != 0:
            excerpt = _stderr_excerpt(stderr, stdout)
            if excerpt is None:
                raise CredentialError(
                    f"{what} failed ({exit_status(returncode)}) and wrote nothing on stderr"
                )
            logger.debug("%s wrote on stderr: %s", what, excerpt)
            raise CredentialError(
                f"{what} failed ({exit_status(returncode)})",
                hint="run it by hand, or run pop3s-fetch with --debug to see its stderr "
                "(which may show the password if the command echoes it there)",
            )
        return _decoded(
            _first_line(stdout),
            empty=f"{what} printed nothing on its first line",
            not_text=f"{what} printed something that is not UTF-8 text",
            too_long=f"{what} printed a first line longer than {MAX_SECRET_BYTES} bytes",
        )
    # Raised outside the handler so that nothing is chained: TimeoutExpired carries whatever
    # the command printed before it was killed, which may be the password.
    raise failure


def _run_capped(argv: tuple[str, ...], timeout: float) -> tuple[int, bytes, bytes]:
    """Run ``argv``; keep at most the first bytes of stdout and stderr; stop its group on timeout.

    Raises:
        subprocess.TimeoutExpired: it ran past ``timeout`` (its process group was killed).
        OSError: it could not be started.
    """
    import selectors
    import subprocess
    import time

    process = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, so a timeout can stop its children
    )
    assert process.stdout is not None
    assert process.stderr is not None
    out, err = process.stdout.fileno(), process.stderr.fileno()
    kept = {out: bytearray(), err: bytearray()}
    caps = {out: _STDOUT_CAP, err: _STDERR_CAP}
    deadline = time.monotonic() + timeout
    try:
        with selectors.DefaultSelector() as selector:
            for fd in kept:
                selector.register(fd, selectors.EVENT_READ)
            while selector.get_map():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    stop_group(process)
                    raise subprocess.TimeoutExpired(argv, timeout)
                for key, _ in selector.select(remaining):
                    chunk = os.read(key.fd, 65536)
                    if not chunk:
                        selector.unregister(key.fd)
                        continue
                    buffer = kept[key.fd]
                    buffer += chunk[: max(0, caps[key.fd] - len(buffer))]  # the rest is drained
        try:
            returncode = process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            stop_group(process)
            raise
    finally:
        process.stdout.close()
        process.stderr.close()
    return returncode, bytes(kept[out]), bytes(kept[err])


def _stderr_excerpt(stderr: bytes, stdout: bytes) -> str | None:
    """The first non-blank stderr line, trimmed, with every stdout line scrubbed from it."""
    text = stderr.decode("utf-8", errors="replace")
    for secret in stdout.decode("utf-8", errors="replace").splitlines():
        if secret.strip():
            text = text.replace(secret, "[output hidden]")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    first = lines[0]
    return first if len(first) <= _STDERR_LIMIT else first[: _STDERR_LIMIT - 3] + "..."


# --- systemd credentials --------------------------------------------------------------------


def read_systemd_credential(account: str, name: str, environ: Mapping[str, str]) -> str:
    """Return the first line of the credential ``name`` that systemd passed to this service.

    Raises:
        CredentialError: ``$CREDENTIALS_DIRECTORY`` is unset, or the credential is missing,
            unreadable, empty or not UTF-8.
    """
    directory = environ.get(CREDENTIALS_DIRECTORY_VAR, "")
    what = f'password_credential = "{name}" for account {_quoted(account)}'
    unit_line = f"LoadCredentialEncrypted={name}:/etc/credstore.encrypted/{name}"
    if not directory:
        raise CredentialError(
            f"{what} needs ${CREDENTIALS_DIRECTORY_VAR}, which is not set",
            hint=(
                f"systemd sets it for a service whose unit has LoadCredential= or "
                f"LoadCredentialEncrypted=, e.g. {unit_line}; run pop3s-fetch from such a "
                "unit (or systemd-run -p ...), or use the keyring or password_command instead"
            ),
        )
    path = Path(directory) / name
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CredentialError(
            f"{what}: there is no {path}",
            hint=f"add {unit_line} (or LoadCredential={name}:FILE) to the service unit",
        ) from None
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise CredentialError(f"{what}: cannot read {path}: {reason}") from None
    return _decoded(
        _first_line(data),
        empty=f"{what}: {path} is empty on its first line",
        not_text=f"{what}: {path} is not UTF-8 text",
        too_long=f"{what}: the first line of {path} is longer than {MAX_SECRET_BYTES} bytes",
    )


def _first_line(data: bytes) -> bytes:
    """The text before the first line break; a CR of a CRLF ending goes too, nothing else."""
    line = data.split(b"\n", 1)[0]
    return line.removesuffix(b"\r")


def _decoded(line: bytes, *, empty: str, not_text: str, too_long: str) -> str:
    """Decode a password line; the messages must not quote it (UnicodeDecodeError would)."""
    if not line:
        raise CredentialError(empty)
    if len(line) > MAX_SECRET_BYTES:
        raise CredentialError(too_long, hint="the first line must hold the password alone")
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        pass
    # Outside the handler: the UnicodeDecodeError holds the bytes, so it must not be chained.
    raise CredentialError(not_text)


# --- the keyring ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Item:
    """What kind of secret a keyring call handles, for its service name and its messages."""

    service: str
    noun: str  # "password", "OAuth2 refresh token"
    kind: str  # key into _NO_BACKEND_HINTS and _LOCKED_HINTS
    hidden: str  # what replaces the secret if a backend's message quotes it


_PASSWORD = _Item(SERVICE, "password", "password", "[password hidden]")
_REFRESH_TOKEN = _Item(OAUTH2_SERVICE, "OAuth2 refresh token", "token", "[token hidden]")


def get_password(account: str) -> str:
    """Return the password stored in the keyring for ``account``.

    Raises:
        CredentialError: nothing is stored, or no keyring is usable, locked, or failing.
    """
    password = _get(account, _PASSWORD)
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
    _set(account, password, _PASSWORD)


def delete_password(account: str) -> None:
    """Remove the stored password for ``account``.

    Raises:
        CredentialError: nothing is stored, or no keyring is usable, locked, or failing.
    """
    _delete(account, _PASSWORD)


def get_refresh_token(account: str) -> str:
    """Return the OAuth2 refresh token stored for ``account`` by ``oauth2 login``.

    Raises:
        CredentialError: nothing is stored, or no keyring is usable, locked, or failing.
    """
    token = _get(account, _REFRESH_TOKEN)
    if not token:
        raise CredentialError(
            f"no OAuth2 refresh token stored for account {_quoted(account)}",
            hint=f"sign in once with: pop3s-fetch oauth2 login {account}",
        )
    return token


def set_refresh_token(account: str, token: str) -> None:
    """Store (or replace, when the provider rotates it) the refresh token for ``account``.

    Raises:
        CredentialError: the token is empty, or no keyring is usable, locked, or failing.
    """
    _set(account, token, _REFRESH_TOKEN)


def delete_refresh_token(account: str) -> None:
    """Forget the refresh token for ``account`` (sign out).

    Raises:
        CredentialError: nothing is stored, or no keyring is usable, locked, or failing.
    """
    _delete(account, _REFRESH_TOKEN)


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


# --- keyring helpers ------------------------------------------------------------------------


def _get(account: str, item: _Item) -> str | None:
    secret = _read_from_secret_service(account, item, os.environ)
    if secret is not None:
        return secret
    return _call(
        account, "read", lambda backend: backend.get_password(item.service, account), item=item
    )


# --- reading straight from the Secret Service --------------------------------------------------

#: The attributes keyring's Secret Service backend searches by (its default scheme); it stores
#: an item with these plus ``application``, so a search by these finds what it stored.
_SERVICE_ATTRIBUTE = "service"
_USERNAME_ATTRIBUTE = "username"


def _read_from_secret_service(account: str, item: _Item, environ: Mapping[str, str]) -> str | None:
    """The secret keyring would read, read from the Secret Service without keyring; or None.

    Only where keyring is left to choose its backend and would choose the Secret Service
    (:func:`_secret_service_is_keyring_choice`), and only in the plain case: the default
    collection unlocked, exactly one item with keyring's attributes, unlocked, holding UTF-8.
    Anything else (no bus, no such item, several, a lock that would need a prompt, any error)
    returns None, and the caller asks keyring, which then says what is wrong in its usual
    words. What secretstorage raised is logged by type only: its text may quote the secret.
    """
    if not _secret_service_is_keyring_choice(environ):
        return None
    try:
        # keyring's own dependency on Linux; imported directly because keyring's import and
        # backend detection cost ~0.25 s, this ~0.05 s.
        import secretstorage
    except ImportError:
        return None
    query = {_USERNAME_ATTRIBUTE: account, _SERVICE_ATTRIBUTE: item.service}
    try:
        if _kept.holders:
            secret, failure = _kept.read(secretstorage.dbus_init, query, environ)
        else:
            from secretstorage.util import open_session

            with contextlib.closing(secretstorage.dbus_init()) as connection:
                secret, failure = _read_item(connection, open_session(connection), query)
    except Exception as err:  # D-Bus and secretstorage errors, UnicodeDecodeError: keyring's turn
        secret, failure = None, type(err).__name__
    if secret is not None:
        logger.debug(
            "the %s for account %s was read from the Secret Service directly",
            item.noun,
            _quoted(account),
        )
        return secret
    logger.debug("reading the Secret Service directly: %s; asking keyring", failure)
    return None


def _read_item(
    connection: DBusConnection, session: SecretSession, query: dict[str, str]
) -> tuple[str | None, str]:
    """(the secret, "") in the plain case, else (None, why not); D-Bus errors are raised.

    Two calls: SearchItems in the default collection (keyring's), GetSecret of the one item
    found. A locked collection or item answers GetSecret with IsLocked; it is never unlocked
    here (unlocking may prompt).
    """
    from secretstorage.collection import COLLECTION_IFACE, DEFAULT_COLLECTION
    from secretstorage.defines import SS_PREFIX
    from secretstorage.item import ITEM_IFACE
    from secretstorage.util import DBusAddressWrapper

    collection = DBusAddressWrapper(DEFAULT_COLLECTION, COLLECTION_IFACE, connection)
    (found,) = collection.call("SearchItems", "a{ss}", query)
    if len(found) != 1:
        return None, f"{len(found)} items match"
    item = DBusAddressWrapper(found[0], ITEM_IFACE, connection)
    try:
        (secret,) = item.call("GetSecret", "o", session.object_path)
    except Exception as err:
        if getattr(err, "name", None) == SS_PREFIX + "Error.IsLocked":
            return None, "the item is locked"
        raise
    return _decrypted(session, secret).decode("utf-8"), ""


def _decrypted(session: SecretSession, secret: tuple[str, bytes, bytes, str]) -> bytes:
    """The value of a Secret Service ``Secret`` struct, decrypted with the session's key."""
    _, parameters, value, _ = secret
    if not session.encrypted:
        return bytes(value)
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    assert session.aes_key is not None
    decryptor = Cipher(algorithms.AES(session.aes_key), modes.CBC(bytes(parameters))).decryptor()
    padded = decryptor.update(bytes(value)) + decryptor.finalize()
    pad = padded[-1] if padded else 0
    if not 1 <= pad <= 16 or padded[-pad:] != bytes([pad]) * pad:  # PKCS #7
        raise ValueError("the Secret Service sent a secret that does not decrypt")
    return padded[:-pad]


class _KeptLink:
    """One D-Bus connection and Secret Service session, shared by the reads of a daemon.

    Opening them costs more than the read itself (a connection, and a Diffie-Hellman key
    exchange in Python for the session). The secret is still read afresh each time, so a
    ``password set`` takes effect at the next read. The link is opened again, once per read,
    when the bus address changed, the Secret Service is another process than the one the
    session belongs to (the keyring was restarted), or a call on the kept link failed.
    """

    def __init__(self) -> None:
        self.holders = 0  # secret_service_kept_open() blocks running; 0: each read opens a link
        self._lock = threading.Lock()  # jeepney's blocking connection is one caller's at a time
        self._connection: DBusConnection | None = None
        self._session: SecretSession | None = None
        self._address = ""
        self._owner = ""  # the Secret Service's unique bus name when the session was opened

    def read(
        self,
        connect: Callable[[], DBusConnection],
        query: dict[str, str],
        environ: Mapping[str, str],
    ) -> tuple[str | None, str]:
        with self._lock:
            address = environ.get("DBUS_SESSION_BUS_ADDRESS", "")
            try:
                if not self._usable(address):
                    self._open(connect, address)
                return self._read(query)
            except Exception as err:  # the bus or the keyring went away: a new link, once
                logger.debug(
                    "the kept Secret Service link failed (%s); opening it again", type(err).__name__
                )
                self._open(connect, address)
                return self._read(query)

    def _usable(self, address: str) -> bool:
        """Open on this bus, to the Secret Service process that the session belongs to."""
        if self._connection is None or self._address != address:
            return False
        if self._service_owner() != self._owner:
            logger.debug("the Secret Service was restarted; opening a new session with it")
            return False
        return True

    def _read(self, query: dict[str, str]) -> tuple[str | None, str]:
        assert self._connection is not None
        assert self._session is not None
        return _read_item(self._connection, self._session, query)

    def _open(self, connect: Callable[[], DBusConnection], address: str) -> None:
        from secretstorage.util import open_session

        self.close()
        self._connection = connect()
        self._address = address
        self._session = open_session(self._connection)
        self._owner = self._service_owner()
        logger.debug("opened a Secret Service session to keep while running")

    def _service_owner(self) -> str:
        """The unique bus name of the Secret Service's process; raises if none owns it."""
        from jeepney.bus_messages import message_bus  # type: ignore[import-untyped]
        from jeepney.wrappers import unwrap_msg  # type: ignore[import-untyped]

        assert self._connection is not None
        reply = self._connection.send_and_get_reply(message_bus.GetNameOwner(_SECRETS_BUS_NAME))
        (owner,) = unwrap_msg(reply)  # a D-Bus error (no owner) raises
        return str(owner)

    def close(self) -> None:
        """Close the link (the caller holds the lock)."""
        if self._connection is not None:
            with contextlib.suppress(OSError):
                self._connection.close()
        self._connection, self._session, self._owner = None, None, ""


_SECRETS_BUS_NAME = "org.freedesktop.secrets"
_kept = _KeptLink()


@contextlib.contextmanager
def secret_service_kept_open() -> Iterator[None]:
    """Within this block, reads from the Secret Service share one connection and session.

    For a process that reads the same secrets again and again (``sync --every``); closed when
    the last block ends. Never prompts: a locked keyring is left to keyring, as elsewhere.
    """
    with _kept._lock:
        _kept.holders += 1
    try:
        yield
    finally:
        with _kept._lock:
            _kept.holders -= 1
            if not _kept.holders:
                _kept.close()


def _secret_service_is_keyring_choice(environ: Mapping[str, str]) -> bool:
    """Whether keyring, left alone, would read from the Secret Service of this D-Bus session.

    That is keyring's choice on Linux with a session bus unless something else chooses or
    could outrank it: a backend named in ``PYTHON_KEYRING_BACKEND`` or keyring's
    ``keyringrc.cfg``, ``KEYRING_PROPERTY_*`` settings (another collection or attribute scheme),
    a KDE session (KWallet can take priority there), a third-party keyring backend installed,
    or keyring already set up in this process (it is then cheap, and may have been told to
    use another backend).
    """
    if not sys.platform.startswith("linux") or not environ.get("DBUS_SESSION_BUS_ADDRESS"):
        return False
    if "PYTHON_KEYRING_BACKEND" in environ or any(
        name.startswith("KEYRING_PROPERTY_") for name in environ
    ):
        return False
    if "KDE" in environ.get("XDG_CURRENT_DESKTOP", "").split(":"):
        return False
    keyring_core = sys.modules.get("keyring.core")
    if keyring_core is not None and getattr(keyring_core, "_keyring_backend", None) is not None:
        return False
    return not _keyring_config_file(environ).exists() and not _keyring_plugins_installed()


def _keyring_config_file(environ: Mapping[str, str]) -> Path:
    """Where keyring looks for its configuration on Linux (keyring.util.platform_)."""
    root = environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(root, "python_keyring", "keyringrc.cfg")


@functools.cache
def _keyring_plugins_installed() -> bool:
    """Whether a distribution other than keyring registers keyring backends (entry points).

    A directory scan, because importlib.metadata's own costs about as much as keyring's
    backend detection would; distributions inside zip files are not looked at. Done once per
    process, as keyring itself detects its backends once: a daemon's every poll paid 3-8 ms.
    """
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:  # missing, or not a directory (a zip file)
            continue
        for name in names:
            if not name.endswith((".dist-info", ".egg-info")) or name.startswith("keyring-"):
                continue
            try:
                entry_points = Path(entry, name, "entry_points.txt").read_bytes()
            except OSError:
                continue
            if b"[keyring.backends]" in entry_points:
                return True
    return False


def _set(account: str, secret: str, item: _Item) -> None:
    if not secret:
        raise CredentialError(
            f"refusing to store an empty {item.noun} for account {_quoted(account)}"
        )
    _call(
        account,
        "store",
        lambda backend: backend.set_password(item.service, account, secret),
        item=item,
        secret=secret,
    )


def _delete(account: str, item: _Item) -> None:
    from keyring.errors import PasswordDeleteError

    def delete(backend: KeyringBackend) -> None:
        try:
            backend.delete_password(item.service, account)
        except PasswordDeleteError:
            raise CredentialError(f"no {item.noun} stored for account {_quoted(account)}") from None

    _call(account, "delete", delete, item=item)


def require_keyring(account: str, *, retry: str | None = None) -> None:
    """Fail now if no keyring can hold a password: before the user types it, twice.

    ``retry`` is the command to run once the keyring is reachable, given by a caller at a
    terminal (init, password set): the session-bus fix is then worded for the shell there,
    not for a crontab.

    Raises:
        CredentialError: no usable backend (the same text get_password would give).
    """
    _usable_backend(account, _PASSWORD, retry=retry)


def _active_backend() -> KeyringBackend:
    import keyring

    return keyring.get_keyring()


def _usable_backend(account: str, item: _Item, *, retry: str | None = None) -> KeyringBackend:
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
        raise _no_backend_error(account, item, retry=retry)
    return backend


def _chained_backends(backend: KeyringBackend) -> list[KeyringBackend] | None:
    """Return the backends a chainer delegates to, or None if ``backend`` is not a chainer."""
    from keyring.backends import chainer

    if not isinstance(backend, chainer.ChainerBackend):
        return None
    return list(backend.backends)


def _no_backend_error(account: str, item: _Item, *, retry: str | None = None) -> CredentialError:
    advice = unseen_session_bus(os.environ, retry=retry)
    return CredentialError(
        f"no usable OS keyring for account {_quoted(account)} (keyring found no backend; is a "
        "Secret Service such as gnome-keyring running in this D-Bus session?)",
        hint=f"{advice}; or else: {_NO_BACKEND_HINTS[item.kind]}"
        if advice
        else _NO_BACKEND_HINTS[item.kind],
    )


def unseen_session_bus(
    environ: Mapping[str, str], run_user: Path | None = None, *, retry: str | None = None
) -> str:
    """The fix when this run was told of no D-Bus session while the user has one running.

    cron starts jobs without ``DBUS_SESSION_BUS_ADDRESS`` or ``XDG_RUNTIME_DIR``, so the
    Secret Service of a logged-in desktop is not found although its bus socket is in its
    usual place (``/run/user/UID/bus``, systemd-logind's): one crontab line reaches it.
    At a terminal (a shell over ssh, su, a console) the same variable is exported in that
    shell instead, and ``retry`` run again; the caller says so by giving ``retry``.
    Empty when either variable is set (then that is the bus looked at) or there is no socket.
    """
    if environ.get("DBUS_SESSION_BUS_ADDRESS") or environ.get("XDG_RUNTIME_DIR"):
        return ""
    bus = (run_user or RUN_USER) / str(os.getuid()) / "bus"
    try:
        is_socket = stat.S_ISSOCK(bus.stat().st_mode)
    except OSError:
        return ""
    if not is_socket:
        return ""
    if retry is not None:
        return (
            f"this shell has no D-Bus session set, while yours is at {bus}: run "
            f"`export DBUS_SESSION_BUS_ADDRESS=unix:path={bus}` in this shell, then {retry} "
            "(the keyring is usable while it is unlocked, that is while you are logged in)"
        )
    return (
        f"this run was not given your D-Bus session, whose socket is {bus}: put "
        f"DBUS_SESSION_BUS_ADDRESS=unix:path={bus} in the crontab (the keyring is usable "
        "while it is unlocked, that is while you are logged in)"
    )


def _call(
    account: str,
    action: str,
    operation: Callable[[KeyringBackend], _T],
    *,
    item: _Item,
    secret: str | None = None,
) -> _T:
    """Run ``operation`` on the usable backend, turning every failure into CredentialError.

    ``action`` ("read", "store", "delete") words the message; ``secret`` is scrubbed from it.
    """
    from keyring.errors import KeyringLocked, NoKeyringError

    try:
        return operation(_usable_backend(account, item))
    except CredentialError:
        raise
    except NoKeyringError:
        raise _no_backend_error(account, item) from None
    except KeyringLocked:
        raise CredentialError(
            f"the OS keyring is locked, so the {item.noun} for account {_quoted(account)} "
            f"could not be {_PAST_PARTICIPLE[action]}",
            hint=_LOCKED_HINTS[item.kind],
        ) from None
    # secretstorage raises D-Bus errors that do not subclass KeyringError, so catch broadly.
    except Exception as err:
        failure = CredentialError(
            f"the OS keyring could not {action} the {item.noun} for account {_quoted(account)}: "
            f"{type(err).__name__}: {_one_line(_scrub(str(err), secret, item.hidden))}"
        )
        if secret is None or secret not in _exception_text(err):
            raise failure from err
    # Raised outside the handler so that the exception quoting the secret is not chained
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


def _scrub(text: str, secret: str | None, hidden: str) -> str:
    return text.replace(secret, hidden) if secret else text


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


# --- what a login needs -----------------------------------------------------------------------


def login_secret(account: Account) -> str:
    """The secret to log in with: the account's password, or a fresh OAuth2 access token.

    For OAuth2 the refresh token kept in the keyring is exchanged for an access token, and a
    rotated refresh token is stored before the access token is used.

    Raises:
        CredentialError: no password or refresh token, or the provider refused (77).
        ConnectError: the token endpoint could not be reached (75).
    """
    if account.oauth2 is None:
        return get_secret(account)
    from pop3s_fetch import oauth2, tls
    from pop3s_fetch.config import TlsSettings

    return oauth2.access_token(
        account.oauth2,
        account.name,
        lambda: get_refresh_token(account.name),
        lambda token: set_refresh_token(account.name, token),
        context=tls.client_context(TlsSettings()),
        timeout=account.timeout,
    )
