"""The parts of ``backup`` that need no server: options, where its state lives, the verdict."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pop3s_fetch import backup
from pop3s_fetch.config import Account
from pop3s_fetch.destinations import inventory, open_destination, stored_keys
from pop3s_fetch.errors import ExitCode


def plan(tmp_path: Path, target: str = "copy", **options: object) -> backup.Plan:
    return backup.for_server(
        "pop.example.com",
        "alice",
        target,
        "maildir",
        cwd=tmp_path,
        **options,  # type: ignore[arg-type]
    )


def test_a_server_on_the_command_line_becomes_an_account_that_keeps_everything(
    tmp_path: Path,
) -> None:
    made = plan(tmp_path, "./alice-2026-12/", port=110)
    account = made.account
    assert account.name == "alice@pop.example.com"
    assert account.keep is True
    assert account.delete_after is None
    assert account.destination == tmp_path / "alice-2026-12"
    assert account.tls.mode == "starttls"  # as the configuration decides for port 110
    assert made.shown == "./alice-2026-12/"
    assert made.keyring_names == ("alice@pop.example.com",)
    assert made.store_as == "alice@pop.example.com"


def test_a_configured_account_with_the_same_server_and_user_is_asked_first(
    tmp_path: Path,
) -> None:
    work = Account("work", "POP.example.com", "alice", tmp_path / "Mail")
    other = Account("other", "pop.example.com", "bob", tmp_path / "Mail2")
    made = plan(tmp_path, configured=[work, other])
    assert made.keyring_names == ("work", "alice@pop.example.com")


def test_password_command_replaces_the_keyring(tmp_path: Path) -> None:
    made = plan(tmp_path, password_command=["pass", "show", "mail/alice"])
    assert made.account.password_command == ("pass", "show", "mail/alice")
    assert made.keyring_names == ()
    assert made.store_as is None


@pytest.mark.parametrize(
    ("options", "start"),
    [
        ({"fingerprint": "md5:00"}, "--fingerprint: "),
        ({"ca": "no-such-ca.pem"}, "--ca: there is no file "),
    ],
)
def test_a_bad_option_is_named_and_exits_64(
    tmp_path: Path, options: dict[str, object], start: str
) -> None:
    with pytest.raises(backup.BadOption) as caught:
        plan(tmp_path, **options)
    assert caught.value.message.startswith(start), caught.value.message
    assert caught.value.exit_code == ExitCode.USAGE


def test_a_configured_account_loses_its_deletion_and_limits(tmp_path: Path) -> None:
    account = Account(
        "work",
        "pop.example.com",
        "alice",
        tmp_path / "Mail",
        keep=False,
        max_messages=10,
        on_new_mail=("notmuch", "new"),
    )
    made = backup.for_account(account, "copy.mbox", "mbox", cwd=tmp_path)
    assert made.account.keep is True
    assert made.account.max_messages is None
    assert made.account.on_new_mail is None
    assert made.account.destination == tmp_path / "copy.mbox"
    assert made.account.format == "mbox"
    assert made.keyring_names == ("work",)
    assert made.store_as is None  # its password is managed with `password set work`


def test_state_is_kept_per_server_user_and_target_apart_from_accounts(tmp_path: Path) -> None:
    root = tmp_path / "state"
    one = backup.state_location(root, plan(tmp_path, "a").account)
    assert one == backup.state_location(root, plan(tmp_path, "./a").account)
    assert one.parent == root / "backups"
    others = {
        backup.state_location(root, plan(tmp_path, "b").account),
        backup.state_location(root, plan(tmp_path, "a", port=1995).account),
        backup.state_location(
            root, backup.for_server("h", "alice", "a", "maildir", cwd=tmp_path).account
        ),
    }
    assert one not in others
    assert len(others) == 3


def test_the_verdict_says_counts_bytes_and_where() -> None:
    good = backup.Verdict("./alice-2026-12/", 305, 48_215_000, found=305)
    assert good.ok
    assert good.line() == (
        "backup verified: 305 messages, 48.2 MB, all on the server are in ./alice-2026-12/ "
        "exactly once"
    )
    bad = backup.Verdict(
        "copy",
        3,
        1200,
        found=1,
        missing=["missing: message 2 ..."],
        duplicated=["duplicated: UIDL x ..."],
        extra=1,
    )
    assert not bad.ok
    assert bad.line() == (
        "backup NOT verified: of 3 messages on the server (1.2 kB), 1 missing from copy, 1 "
        "there more than once, 0 with another size (1 more in the copy that the server no "
        "longer has, or that are not from it)"
    )
    failure = bad.failure()
    assert failure.exit_code == ExitCode.IOERR
    assert failure.differences == ["missing: message 2 ...", "duplicated: UIDL x ..."]


@pytest.mark.parametrize("fmt", ["maildir", "mbox"])
def test_inventory_keys_each_message_as_its_placement_recorded_it(tmp_path: Path, fmt: str) -> None:
    from pop3s_fetch.destinations import stored_key

    path = tmp_path / ("Maildir" if fmt == "maildir" else "box.mbox")
    messages = [b"Subject: a\n\nFrom here\n", b"Subject: b\n\n>From there\nno end"]
    placements = []
    with open_destination(path, fmt) as destination:  # type: ignore[arg-type]
        staged = []
        for message in messages:
            writer = destination.open_message()
            writer.write(message)
            staged.append(writer.finish())
        placements = destination.publish(staged, lambda _: None)
    # Maildir names sort by file name, not always in delivery order: look each key up.
    listed = {stored.key: stored for stored in inventory(path, fmt)}  # type: ignore[arg-type]
    keys = [stored_key(fmt, p) for p in placements]  # type: ignore[arg-type]
    assert sorted(listed) == sorted(keys)
    assert sorted(stored_keys(path, fmt)) == sorted(keys)  # type: ignore[arg-type]
    # As handed over (the mbox adds the final line end a message lacks), quoting undone.
    last = messages[1] + (b"\n" if fmt == "mbox" else b"")
    expected = [messages[0], last]
    assert [listed[k].sha256 for k in keys] == [hashlib.sha256(m).hexdigest() for m in expected]
    assert [listed[k].wire_size for k in keys] == [len(m) + m.count(b"\n") for m in expected]
