"""Messages that pointed the wrong way (issue 14, items 8-11): each now names the right thing."""

from __future__ import annotations

import errno
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pop3s_fetch.config import Account
from pop3s_fetch.destinations import open_destination
from pop3s_fetch.destinations.files import delivery_error
from pop3s_fetch.errors import DeliveryError, LockedError
from pop3s_fetch.state import AccountLock
from pop3s_fetch.sync import SyncOptions, sync_account
from tests.support.reporting import NullReporter
from tests.support.rig import serve


def test_a_refused_creation_names_the_directory_that_refused(tmp_path: Path) -> None:
    read_only = tmp_path / "ro"
    read_only.mkdir()
    err = delivery_error(
        PermissionError(errno.EACCES, "Permission denied"), "create the Maildir", read_only / "Mail"
    )
    assert str(err) == f"cannot create the Maildir {read_only / 'Mail'}: permission denied"
    assert err.hint == f"not writable: check the permissions of {read_only}"


def test_a_directory_as_mbox_names_the_format_key(tmp_path: Path) -> None:
    with pytest.raises(DeliveryError) as caught:
        open_destination(tmp_path, "mbox", owner="test")
    assert caught.value.hint == 'for a Maildir set format = "maildir"'


def test_a_file_as_maildir_names_the_format_key(tmp_path: Path) -> None:
    (tmp_path / "inbox").touch()
    with pytest.raises(DeliveryError) as caught:
        open_destination(tmp_path / "inbox", "maildir", owner="test")
    assert caught.value.hint == 'for a single mbox file set format = "mbox"'


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP and never says a word (no TLS, no greeting)."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for connection in accepted:
            connection.close()
        listener.close()


def test_a_port_that_never_speaks_tls_is_named_as_a_handshake_timeout(
    tmp_path: Path, silent_port: int, ca_file: Path
) -> None:
    account = Account(
        name="work",
        host="127.0.0.1",
        port=silent_port,
        username="u",
        destination=tmp_path / "Mail",
        ca_file=ca_file,
        timeout=0.5,
    )
    result = sync_account(
        account, lambda: "pw", SyncOptions(state_dir=tmp_path / "s"), NullReporter()
    )
    assert result.error is not None
    assert str(result.error) == (
        f"timed out in the TLS handshake with 127.0.0.1:{silent_port} (the TCP connection was "
        "accepted)"
    )
    assert result.error.hint == (
        'check port and tls: implicit TLS is usually port 995; port 110 needs tls = "starttls"'
    )
    assert int(result.error.exit_code) == 75


def test_a_wait_that_ran_out_does_not_suggest_waiting(tmp_path: Path) -> None:
    path = tmp_path / "work.lock"
    with AccountLock(path, "work") as holder:
        holder.acquire()
        with pytest.raises(LockedError) as caught:
            AccountLock(path, "work").acquire(wait=0.1)
    assert caught.value.hint == "it did not finish within --wait 0.1; wait longer, or let it end"


@pytest.mark.parametrize("fmt", ["maildir", "mbox"])
def test_a_failed_first_run_leaves_no_empty_destination(
    tmp_path: Path, fmt: str, server_ssl_context: ssl.SSLContext, ca_file: Path
) -> None:
    """A wrong password left an empty ~/Mail/wrongpw behind (issue 14, item 7)."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "keep-me").touch()
    destination = home / "Mail" / ("wrongpw" if fmt == "maildir" else "wrongpw.mbox")
    with serve(server_ssl_context, [b"Subject: x\n\nhi\n"], user="alice", password="right") as drop:
        account = Account(
            name="wrongpw",
            host="127.0.0.1",
            port=drop.server.port,
            username="alice",
            destination=destination,
            format=fmt,
            ca_file=ca_file,
            timeout=2.0,  # type: ignore[arg-type]
        )
        options = SyncOptions(state_dir=tmp_path / "state")
        failed = sync_account(account, lambda: "wrong", options, NullReporter())
        assert failed.error is not None
        assert sorted(p.name for p in home.iterdir()) == ["keep-me"]  # Mail/ is gone too
        good = sync_account(account, lambda: "right", options, NullReporter())
    assert good.error is None
    assert good.fetched == 1
    assert destination.exists()


def test_a_failed_run_never_removes_a_destination_that_existed(
    tmp_path: Path, server_ssl_context: ssl.SSLContext, ca_file: Path
) -> None:
    destination = tmp_path / "Maildir"
    for name in ("cur", "new", "tmp"):
        (destination / name).mkdir(parents=True)
    with serve(server_ssl_context, [b"Subject: x\n\nhi\n"], user="alice", password="right") as drop:
        account = Account(
            name="existing",
            host="127.0.0.1",
            port=drop.server.port,
            username="alice",
            destination=destination,
            ca_file=ca_file,
            timeout=2.0,
        )
        failed = sync_account(
            account, lambda: "wrong", SyncOptions(state_dir=tmp_path / "state"), NullReporter()
        )
    assert failed.error is not None
    assert sorted(p.name for p in destination.iterdir()) == ["cur", "new", "tmp"]


def test_a_missing_directory_still_gets_the_leading_directories_hint(tmp_path: Path) -> None:
    """Where a directory on the way really is missing, that remains the advice."""
    target = tmp_path / "gone" / "Mail"
    err = delivery_error(
        FileNotFoundError(errno.ENOENT, "No such file or directory", str(target)),
        "create the mbox",
        target,
    )
    assert str(err) == f"cannot create the mbox {target}: no such file or directory"
    assert err.hint == f"check that the directories leading to {target} exist"


def test_a_vanished_file_is_not_blamed_on_the_file_system(tmp_path: Path) -> None:
    """ENOENT from a rename names an entry that went away, not a refused creation."""
    gone = tmp_path / "tmp" / "1.msg"
    gone.parent.mkdir()
    err = delivery_error(
        FileNotFoundError(errno.ENOENT, "No such file or directory", str(gone)),
        "rename the message file",
        gone,
    )
    assert err.hint == f"check that the directories leading to {gone} exist"


def test_an_existing_message_file_is_not_called_a_non_directory(tmp_path: Path) -> None:
    """EEXIST on the file being created (O_EXCL) says nothing of the directories."""
    taken = tmp_path / "new" / "1.msg"
    taken.parent.mkdir()
    taken.write_text("")
    err = delivery_error(
        FileExistsError(errno.EEXIST, "File exists", str(taken)), "create the message file", taken
    )
    assert str(err) == f"cannot create the message file {taken}: file exists (EEXIST)"
