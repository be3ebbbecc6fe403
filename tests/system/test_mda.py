"""Delivery through a program (format = "mda"): the backend, its configuration, and sync's use.

The programs are small shell scripts that record what they were given (stdin, argv), or that
fail in the ways an MDA fails: exit 75, another status, a signal, running past the timeout.
The real MDAs (procmail, maildrop, dovecot-lda) against Dovecot are in test_mda_dovecot.py.
"""

from __future__ import annotations

import os
import ssl
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pop3s_fetch import config
from pop3s_fetch.config import Account
from pop3s_fetch.destinations import Command, MessageRefused, open_destination
from pop3s_fetch.destinations import mda as mda_module
from pop3s_fetch.destinations.base import Destination
from pop3s_fetch.errors import ConfigError, DeliveryError, ExitCode
from pop3s_fetch.state import Intent, open_store
from pop3s_fetch.sync import SyncOptions, sync_account
from tests.support.reporting import NullReporter
from tests.support.rig import BuiltinMaildrop, serve
from tests.unit.test_delivery import MESSAGES, stage

PASSWORD = "mda-test-password"


def script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o700)
    return path


def recorder(tmp_path: Path, then: str = "exit 0") -> tuple[Path, Path]:
    """An MDA that keeps each message and its argv as N.msg and N.args, then runs ``then``."""
    box = tmp_path / "box"
    box.mkdir()
    program = script(
        tmp_path / "record",
        f'n=$(ls "{box}" | grep -c "msg$")\n'
        f'cat > "{box}/$n.msg"\n'
        f'for a in "$@"; do printf "%s\\n" "$a"; done > "{box}/$n.args"\n'
        f"{then}\n",
    )
    return program, box


def recorded(box: Path) -> list[tuple[bytes, list[str]]]:
    count = len(list(box.glob("*.msg")))
    return [
        ((box / f"{n}.msg").read_bytes(), (box / f"{n}.args").read_text().splitlines())
        for n in range(count)
    ]


def opened(tmp_path: Path, argv: list[str], timeout: float = 30) -> Destination:
    return open_destination(
        tmp_path / "scratch", "mda", owner="work", command=Command(tuple(argv), timeout)
    )


def hand_over(destination: Destination, message: bytes, labels: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    writer = destination.open_message(labels or {"uidl": "U1", "recipient": "me"})
    for start in range(0, len(message), 5):
        writer.write(message[start : start + 5])
    journal: list[object] = []
    placements = destination.publish([writer.finish()], journal.append)
    return placements, journal


# --- the backend ------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_each_message_reaches_the_program_byte_for_byte(tmp_path: Path, name: str) -> None:
    program, box = recorder(tmp_path)
    with opened(tmp_path, [str(program)]) as destination:
        placements, journal = hand_over(destination, MESSAGES[name])

    assert recorded(box) == [(MESSAGES[name], [])]
    assert journal == [placements]  # journalled before the program ran, once
    assert placements[0].length == len(MESSAGES[name])
    assert os.listdir(tmp_path / "scratch") == []  # staged files have no name


def test_placeholders_are_whole_arguments_from_header_and_labels(tmp_path: Path) -> None:
    program, box = recorder(tmp_path)
    message = (
        b"Return-Path: <alice@example.org>\nDelivered-To: bob@example.net\n"
        b"Subject: two words\n\nbody\n"
    )
    argv = [str(program), "-f", "{sender}", "--to={recipient}", "{account}/{uidl}", "{other}"]
    with opened(tmp_path, argv) as destination:
        hand_over(destination, message, {"uidl": "0000a b", "recipient": "me"})

    assert recorded(box)[0][1] == [
        "-f",
        "alice@example.org",
        "--to=bob@example.net",
        "work/0000a b",  # a value with a space stays one argument
        "{other}",  # not a placeholder: the configuration refuses it before we get here
    ]


@pytest.mark.parametrize(
    ("head", "sender", "recipient"),
    [
        (b"Subject: none\n\n", "MAILER-DAEMON", "me"),
        (b"Return-Path: <>\nX-Original-To: x@y\n\n", "MAILER-DAEMON", "x@y"),
        (b"Return-Path: <-oQ/tmp/x@evil>\nDelivered-To: -d root\n\n", "MAILER-DAEMON", "me"),
        (b"Return-Path: <a b@c>\nDelivered-To: <-froot>\n\n", "MAILER-DAEMON", "me"),
        (b"\nReturn-Path: <in@body>\n", "MAILER-DAEMON", "me"),  # not in the header block
    ],
)
def test_a_hostile_header_cannot_become_an_option(head: bytes, sender: str, recipient: str) -> None:
    values = mda_module.message_values(head, {"recipient": "me", "uidl": "U"}, "work")
    assert (values["sender"], values["recipient"]) == (sender, recipient)


def test_the_placeholders_are_the_ones_the_configuration_accepts() -> None:
    assert mda_module.PLACEHOLDERS == config.MDA_PLACEHOLDERS


def test_exit_75_is_a_temporary_refusal(tmp_path: Path) -> None:
    program = script(tmp_path / "busy", "cat >/dev/null\necho 'mailbox busy' >&2\nexit 75\n")
    with opened(tmp_path, [str(program)]) as destination, pytest.raises(MessageRefused) as caught:
        hand_over(destination, b"Subject: x\n\nx\n")

    assert caught.value.temporary
    assert caught.value.exit_code == ExitCode.TEMPFAIL
    assert str(caught.value) == (
        f"the MDA {program} asked to try again later (exit status 75); it wrote: mailbox busy"
    )


def test_a_failure_names_the_status_and_the_first_lines_of_stderr(tmp_path: Path) -> None:
    program = script(
        tmp_path / "fail",
        "cat >/dev/null\nprintf '\\n  first\\n\\033]0;title\\a second\\nthird\\nfourth\\n' >&2\n"
        "exit 3\n",
    )
    with opened(tmp_path, [str(program)]) as destination, pytest.raises(MessageRefused) as caught:
        hand_over(destination, b"Subject: x\n\nx\n")

    assert not caught.value.temporary
    assert caught.value.exit_code == ExitCode.IOERR
    assert str(caught.value) == (
        f"the MDA {program} failed (exit status 3); it wrote: first | \x1b]0;title\x07 second"
        " | third"  # escaped at the output boundary, like every remote or foreign text
    )


def test_a_signal_and_silence_are_named(tmp_path: Path) -> None:
    program = script(tmp_path / "die", "cat >/dev/null\nkill -KILL $$\n")
    with opened(tmp_path, [str(program)]) as destination, pytest.raises(MessageRefused) as caught:
        hand_over(destination, b"Subject: x\n\nx\n")
    assert str(caught.value) == (
        f"the MDA {program} failed (killed by SIGKILL); it wrote nothing on stderr"
    )


def test_a_program_past_its_timeout_is_killed_with_its_children(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    program = script(tmp_path / "hang", f'sleep 300 &\necho $! > "{pid_file}"\nwait\n')
    with (
        opened(tmp_path, [str(program)], timeout=2) as destination,
        pytest.raises(MessageRefused) as caught,
    ):
        hand_over(destination, b"Subject: x\n\nx\n")

    assert str(caught.value) == (
        f"the MDA {program} failed (it ran past mda_timeout, 2 seconds, and was killed); "
        "it wrote nothing on stderr"
    )
    assert caught.value.exit_code == ExitCode.IOERR
    # Its child got SIGKILL with the group: it dies (gone, or a zombie awaiting its reaper)
    # as soon as the kernel delivers the signal, which can take a moment on a busy machine.
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while not _dead(child) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _dead(child)


def _dead(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return status.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def test_a_missing_program_stops_the_account_before_anything_is_fetched(tmp_path: Path) -> None:
    with pytest.raises(DeliveryError) as caught:
        opened(tmp_path, [str(tmp_path / "procmial"), "-f", "{sender}"])
    assert str(caught.value) == f"cannot run the MDA {tmp_path / 'procmial'}: no such executable"
    assert type(caught.value) is DeliveryError  # the account fails (74), not one message


def test_reconcile_cannot_look_so_it_hands_everything_over_again(tmp_path: Path) -> None:
    program, _ = recorder(tmp_path)
    with opened(tmp_path, [str(program)]) as destination:
        placements, _ = hand_over(destination, b"Subject: x\n\nx\n")
        assert not destination.verifiable
        assert destination.max_batch == 1
        assert destination.reconcile(placements * 2) == [False, False]
        assert destination.remove_stale_staging() == 0


def test_an_unpublished_message_leaves_nothing(tmp_path: Path) -> None:
    program, box = recorder(tmp_path)
    with opened(tmp_path, [str(program)]) as destination:
        stage(destination, b"Subject: x\n\nx\n")
        destination.open_message().write(b"Subject: half")
    assert recorded(box) == []
    assert os.listdir(tmp_path / "scratch") == []


def test_the_program_is_not_told_where_systemd_credentials_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "creds"))
    monkeypatch.setenv("SOME_OTHER", "kept")
    seen = tmp_path / "env"
    program = script(tmp_path / "env-of", f'env > "{seen}"\n')
    with opened(tmp_path, [str(program)]) as destination:
        hand_over(destination, b"Subject: x\n\nx\n")
    assert "SOME_OTHER=kept\n" in seen.read_text()
    assert "CREDENTIALS_DIRECTORY" not in seen.read_text()


def test_the_message_file_is_private(tmp_path: Path) -> None:
    mode_file = tmp_path / "mode"
    program = script(tmp_path / "mode-of-stdin", f'stat -L -c %a /dev/stdin > "{mode_file}"\n')
    with opened(tmp_path, [str(program)]) as destination:
        hand_over(destination, b"Subject: x\n\nx\n")
    assert mode_file.read_text().strip() == "600"
    assert stat.S_IMODE((tmp_path / "scratch").stat().st_mode) == 0o700


# --- the configuration ------------------------------------------------------------------

BASE = '[accounts.work]\nhost = "pop.example.org"\nusername = "me"\n'


def problems(text: str, tmp_path: Path) -> list[str]:
    path = tmp_path / "config.toml"
    with pytest.raises(ConfigError) as caught:
        config.parse(text, path)
    return [problem.removeprefix(f"{path}: ") for problem in caught.value.problems]


def test_an_mda_account_needs_no_destination(tmp_path: Path) -> None:
    text = BASE + 'format = "mda"\nmda = ["/usr/bin/procmail", "-f", "{sender}"]\n'
    account = config.parse(text, tmp_path / "c.toml").accounts["work"]
    assert account.destination is None
    assert account.mda == ("/usr/bin/procmail", "-f", "{sender}")
    assert account.mda_timeout == config.DEFAULT_MDA_TIMEOUT == 300


def test_a_destination_inherited_from_defaults_is_not_used(tmp_path: Path) -> None:
    text = (
        '[defaults]\ndestination = "~/Mail"\nmda = ["procmail"]\nmda_timeout = 20\n'
        + BASE
        + 'format = "mda"\n[accounts.files]\nhost = "h"\nusername = "u"\n'
    )
    accounts = config.parse(text, tmp_path / "c.toml").accounts
    assert accounts["work"].destination is None
    assert accounts["work"].mda_timeout == 20
    assert accounts["files"].mda is None  # inherited by a Maildir account: simply not used
    assert accounts["files"].destination == Path("~/Mail").expanduser()


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            'format = "mda"\n',
            ["accounts.work.mda: missing required key (set it here or in [defaults])"],
        ),
        (
            'format = "mda"\nmda = ["procmail", "-f", "{sendr}"]\n',
            [
                "accounts.work.mda: unknown placeholder {sendr} in argument 3 "
                "(did you mean {sender}?)"
            ],
        ),
        (
            'format = "mda"\nmda = ["procmail", "{x}"]\n',
            [
                "accounts.work.mda: unknown placeholder {x} in argument 2 "
                "(known: {sender}, {recipient}, {account}, {uidl})"
            ],
        ),
        (
            'format = "mda"\nmda = ["{uidl}"]\n',
            ["accounts.work.mda: the program (the first argument) cannot hold a placeholder"],
        ),
        (
            'format = "mda"\nmda = "procmail -f {sender}"\n',
            [
                "accounts.work.mda: expected an array of non-empty strings such as "
                '["/usr/bin/procmail", "-f", "{sender}"] (it is run without a shell), '
                'got "procmail -f {sender}" (did you mean ["procmail", "-f", "{sender}"]?)'
            ],
        ),
        (
            'format = "mda"\nmda = ["procmail"]\ndestination = "~/Mail"\n',
            [
                'accounts.work.destination: not used with format = "mda" (the MDA decides '
                "where mail goes); remove it"
            ],
        ),
        (
            'destination = "~/Mail"\nmda = ["procmail"]\nmda_timeout = 5\n',
            [
                'accounts.work.mda: used only with format = "mda"; remove it, or set '
                'format = "mda"',
                'accounts.work.mda_timeout: used only with format = "mda"; remove it, or set '
                'format = "mda"',
            ],
        ),
        (
            'format = "mda"\nmda = ["procmail"]\nmda_timeout = 0\n',
            [
                "accounts.work.mda_timeout: expected a number of seconds above 0 and at most "
                "3600, got 0"
            ],
        ),
        (
            'format = "mda"\nmda = ["procmail"]\nmda_timout = 5\n',
            ['accounts.work.mda_timout: unknown key (did you mean "mda_timeout"?)'],
        ),
        (
            'destination = "~/Mail"\nmdaa = ["procmail"]\n',
            ['accounts.work.mdaa: unknown key (did you mean "mda"?)'],
        ),
    ],
)
def test_configuration_mistakes_are_named(tmp_path: Path, lines: str, expected: list[str]) -> None:
    assert problems(BASE + lines, tmp_path) == expected


# --- sync through an MDA, against the built-in server ----------------------------------

CORPUS = [
    b"Return-Path: <a@example.org>\nSubject: one\n\nfirst\n",
    b"Subject: two\n\nsecond, to be refused\n",
    b"Subject: three\n\nthird\n",
]


@pytest.fixture
def maildrop(server_ssl_context: ssl.SSLContext) -> Iterator[BuiltinMaildrop]:
    with serve(server_ssl_context, CORPUS, user="me", password=PASSWORD) as drop:
        yield drop


def uidl_of(drop: BuiltinMaildrop, message: bytes) -> str:
    return next(uidl for uidl, body in drop.store.messages() if body == message)


def mda_account(drop: BuiltinMaildrop, ca_file: Path, argv: list[str], *, keep: bool) -> Account:
    return Account(
        name="work",
        host=drop.server.host,
        port=drop.server.port,
        username="me",
        destination=None,
        format="mda",
        keep=keep,
        ca_file=ca_file,
        timeout=10,
        mda=tuple(argv),
        mda_timeout=30,
    )


@pytest.mark.parametrize(("status", "code"), [(1, ExitCode.IOERR), (75, ExitCode.TEMPFAIL)])
def test_a_refused_message_stays_on_the_server_and_the_others_go_on(
    tmp_path: Path, maildrop: BuiltinMaildrop, ca_file: Path, status: int, code: ExitCode
) -> None:
    refuse = f'grep -q "to be refused" "{tmp_path}/box/$n.msg" && {{ echo no >&2; exit {status}; }}'
    program, box = recorder(tmp_path, then=f"{refuse}\nexit 0")
    account = mda_account(maildrop, ca_file, [str(program), "{uidl}"], keep=False)
    options = SyncOptions(state_dir=tmp_path / "state")

    result = sync_account(account, lambda: PASSWORD, options, NullReporter())

    assert [message for message, _ in recorded(box)] == CORPUS  # the third one still went
    assert result.fetched == 2
    assert result.exit_code == code
    uidl = uidl_of(maildrop, CORPUS[1])
    assert str(result.error) == (
        f"message 2 (UIDL {uidl}) not delivered: the MDA {program} "
        + (
            "asked to try again later (exit status 75); it wrote: no"
            if status == 75
            else "failed (exit status 1); it wrote: no"
        )
    )
    assert maildrop.messages_on_server() == [CORPUS[1]]
    with open_store(options.state_dir / "work.sqlite3") as store:
        assert store.pending() == []  # the refused one's entry is gone: no doubt about it
        assert store.delivered() == set()  # the others were deleted, so forgotten

    # The next run hands over the one still there, and only that one.
    again = sync_account(account, lambda: PASSWORD, options, NullReporter())
    assert again.exit_code == code  # the same rules refuse it again
    assert again.fetched == 0
    assert [message for message, _ in recorded(box)] == [*CORPUS, CORPUS[1]]
    assert recorded(box)[3][1] == [uidl]


def test_a_run_killed_while_the_mda_had_a_message_hands_it_over_again(
    tmp_path: Path, maildrop: BuiltinMaildrop, ca_file: Path
) -> None:
    """The journal entry of a run that died after the MDA took a message (simulated: the
    entry is left pending as a killed run leaves it) makes the next run deliver it again."""
    program, box = recorder(tmp_path)
    account = mda_account(maildrop, ca_file, [str(program)], keep=True)
    options = SyncOptions(state_dir=tmp_path / "state")
    first = sync_account(account, lambda: PASSWORD, options, NullReporter())
    assert first.error is None
    with open_store(options.state_dir / "work.sqlite3") as store:
        # Back to "pending", as a kill between the MDA's exit and the commit leaves it.
        size = len(CORPUS[2])
        store.record_intents([Intent(uidl_of(maildrop, CORPUS[2]), size, "mda", 0, size, "")])

    second = sync_account(account, lambda: PASSWORD, options, NullReporter())

    assert second.error is None
    assert second.fetched == 1
    assert [m for m, _ in recorded(box)] == [*CORPUS, CORPUS[2]]  # at least once: a duplicate
    assert second.warnings == [
        "a run was stopped while the MDA had 1 message(s) in hand; it cannot tell whether it "
        "delivered them, so they are handed over again (a duplicate is possible, a loss is not)"
    ]


def test_refusals_for_one_cause_are_counted_and_another_cause_is_a_warning(
    tmp_path: Path, maildrop: BuiltinMaildrop, ca_file: Path
) -> None:
    """Seven identical warnings told the user nothing more than the error: the same cause again
    is only counted in the error, and a refusal for another cause still gets its own line."""
    program = script(
        tmp_path / "picky",
        "body=$(cat)\n"
        'case "$body" in *"Subject: three"*) echo "quota exceeded" >&2; exit 1;; esac\n'
        'echo "no such folder" >&2\nexit 1\n',
    )
    account = mda_account(maildrop, ca_file, [str(program)], keep=True)
    options = SyncOptions(state_dir=tmp_path / "state")

    result = sync_account(account, lambda: PASSWORD, options, NullReporter())

    assert result.fetched == 0
    assert result.warnings == [
        f"message 3 (UIDL {uidl_of(maildrop, CORPUS[2])}) not delivered: the MDA {program} "
        "failed (exit status 1); it wrote: quota exceeded"
    ]
    assert str(result.error) == (
        f"message 1 (UIDL {uidl_of(maildrop, CORPUS[0])}) not delivered: the MDA {program} "
        "failed (exit status 1); it wrote: no such folder (and 2 more: 1 for the same reason, "
        "the others in the warnings)"
    )
