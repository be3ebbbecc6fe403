"""The peers' file parsers on odd and hostile input: quotes, comments, escapes, several accounts.

The files the real peers write and accept are covered end to end in
tests/system/test_import_peers.py; here each parser meets what a hand-edited file can hold.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from pop3s_fetch import config
from pop3s_fetch.errors import ConfigError
from pop3s_fetch.migrate import fetchmail, getmail, importer, mpop
from pop3s_fetch.migrate.model import PeerFileError, mda_argv

RC = Path("/home/a/.fetchmailrc")


def fetchmail_accounts(text: str, ids: Path | None = None) -> list[object]:
    return fetchmail.accounts(fetchmail.parse_rc(text, RC), ids, "~/Maildir")  # type: ignore[return-value]


def test_fetchmail_quotes_comments_escapes_and_several_users() -> None:
    text = (
        "# a comment\n"
        "defaults keep\n"
        "poll pop.example.com, proto pop3;  # trailing comment\n"
        '  user "alice" there is alice here with password "p#ss word"\n'  # '#' inside quotes
        "    options ssl sslcertfile ~/ca.pem limit 1000 fetchall\n"
        '  user "b\\x6fb" there with pass "two\\\n'  # \x6f is 'o'; backslash-newline joins
        'lines" mda "/usr/bin/procmail -f %F -a \'%T\'"\n'
        "skip other.example.org via pop.other.example.org protocol IMAP user carol\n"
    )
    [alice, bob, carol] = fetchmail.accounts(fetchmail.parse_rc(text, RC), None, "~/Maildir")
    assert (alice.name, bob.name) == ("pop.example.com-alice", "pop.example.com-bob")
    assert alice.password == "p#ss word"
    assert alice.keys["keep"] is True  # from defaults
    assert alice.keys["port"] == 995
    assert alice.keys["max_message_size"] == 1000
    assert alice.keys["ca"] == str(Path("~/ca.pem").expanduser())
    assert [str(n) for n in alice.notes if n.option == "fetchall"] == [
        ".fetchmailrc line 5: `fetchall` has no equivalent: pop3s-fetch fetches each message "
        "once (pop3s-fetch state forget ACCOUNT --all fetches everything again)"
    ]
    assert bob.username == "bob"
    assert bob.password == "twolines"
    assert bob.keys["keep"] is True
    assert bob.keys["mda"] == [
        "/bin/sh", "-c", '/usr/bin/procmail -f "$1" -a "$2"', "sh", "{sender}", "{recipient}"
    ]  # fmt: skip
    assert carol.skipped == "protocol IMAP: pop3s-fetch speaks POP3 only"
    assert carol.host == "pop.other.example.org"


def test_fetchmail_quote_ends_the_string_as_fetchmail_reads_it() -> None:
    """A quote ends a fetchmail string: `\\"` is no escape there (fetchmail refuses it too)."""
    with pytest.raises(PeerFileError, match=r"\.fetchmailrc line 1: a quoted string is not"):
        fetchmail.parse_rc('poll h user "u" there with password "pa\\"ss w"\n', RC)


def test_fetchmail_defaults_translate_nokeep_starttls_and_notes() -> None:
    [account] = fetchmail_accounts(
        "set daemon 300\nset logfile ~/fm.log\npoll h port 110 user u no rewrite "
        "sslfingerprint "
        '"' + ":".join(["ab"] * 32) + '"\n'
    )
    assert account.keys["keep"] is False  # fetchmail deletes by default
    assert account.keys["tls"] == "starttls"
    assert account.keys["port"] == 110
    assert account.keys["fingerprint"] == "sha256:" + "ab" * 32
    notes = [str(n) for n in account.notes]
    assert any("`set daemon`" in n and "sync --every" in n for n in notes)
    assert any("`set logfile`" in n for n in notes)
    assert any('`no ssl` translated as tls = "starttls"' in n for n in notes)
    assert any("`(delivery by SMTP)` has no equivalent" in n for n in notes)


def test_fetchmail_md5_fingerprint_is_a_note() -> None:
    [account] = fetchmail_accounts('poll h user u ssl sslfingerprint "' + "AB:" * 15 + 'AB"\n')
    assert "fingerprint" not in account.keys
    assert any("not a SHA-256 fingerprint" in str(n) for n in account.notes)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('poll h user "u\n', "line 1: a quoted string is not closed"),
        ("poll h user u frobnicate\n", "line 1: unknown keyword `frobnicate`"),
        ("user u\n", "line 1: `user` where `poll`"),
        ("poll h\nuser\n", "line 2: the file ends where a value for `user` was expected"),
        ("poll h user u limit\npoll x\n", "line 2: `limit` needs a value"),
    ],
)
def test_fetchmail_syntax_errors_name_the_line(text: str, where: str) -> None:
    with pytest.raises(PeerFileError) as caught:
        fetchmail.parse_rc(text, RC)
    assert str(caught.value).startswith(f"{RC} {where}")


def test_fetchids_pick_the_user_and_label(tmp_path: Path) -> None:
    ids = tmp_path / ".fetchids"
    ids.write_text('u@h 0001\nu@h "0002"\nother@h 0003\nu@elsewhere 0004\n\n')
    [account] = fetchmail_accounts("poll h user u\n", ids)
    assert account.uidls == {"0001": None, "0002": None}
    ids.write_text("garbage\n")
    with pytest.raises(PeerFileError, match="line 1: expected `user@server UIDL`"):
        fetchmail_accounts("poll h user u\n", ids)


def test_set_idfile_wins(tmp_path: Path) -> None:
    ids = tmp_path / "ids"
    ids.write_text("u@h x1\n")
    [account] = fetchmail_accounts(f'set idfile "{ids}"\npoll h user u\n', tmp_path / "none")
    assert account.uidls == {"x1": None}


GETMAILRC = """\
[retriever]
type = SimplePOP3SSLRetriever
server = pop.example.com
username = me
; a comment
password = 100%% sure # not a comment
password_command = ("/usr/bin/pass", "show", "mail")
ssl_fingerprints = ('{pin}',)

[destination]
type = MDA_external
path = /usr/bin/procmail
arguments = ("-f", "%(sender)", "-a", "%(local)")

[options]
delete_after = 7
max_messages_per_session = 50
read_all = true

[filter-spam]
type = Filter_external
"""


def test_getmail_interpolation_literals_and_mda(tmp_path: Path) -> None:
    rc = tmp_path / "work.rc"
    rc.write_text(GETMAILRC.format(pin="AA:" * 31 + "AA"))
    (tmp_path / "oldmail-pop.example.com-995-me").write_bytes(
        b"u1\x001700000000\nu2\x00not-a-time\n\n"
    )
    account = getmail.parse(rc.read_text(), rc)
    assert account.name == "work"
    assert account.password == "100%% sure # not a comment"  # no interpolation, no comment
    assert account.keys["password_command"] == ["/usr/bin/pass", "show", "mail"]
    assert account.keys["fingerprint"] == "sha256:" + "aa" * 32
    assert account.keys["mda"] == ["/usr/bin/procmail", "-f", "{sender}", "-a", "%(local)"]
    assert account.keys["keep"] == "7d"
    assert account.keys["max_messages"] == 50
    assert account.uidls == {"u1": 1700000000.0, "u2": None}
    notes = [str(n) for n in account.notes]
    assert "work.rc line 13: `%(local)` uses a getmail placeholder" in " ".join(notes)
    assert any(n.startswith("work.rc line 18: `read_all = true` has no equivalent") for n in notes)
    assert any(n.startswith("work.rc line 21: `[filter-spam]` has no equivalent") for n in notes)


def test_getmail_literals_are_never_run(tmp_path: Path) -> None:
    rc = tmp_path / "getmailrc"
    marker = tmp_path / "ran"
    rc.write_text(
        "[retriever]\ntype = SimplePOP3SSLRetriever\nserver = h\nusername = u\n"
        f"password_command = __import__('os').system('touch {marker}')\n"
    )
    account = getmail.parse(rc.read_text(), rc)
    assert "password_command" not in account.keys
    assert not marker.exists()
    assert any("is not a tuple of strings" in str(n) for n in account.notes)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[options]\ndelete = true\n", r"has no \[retriever\] section"),
        ("no section header\n", "not a getmail rc file"),
        ("[retriever]\ntype = SimplePOP3SSLRetriever\n", "needs server and username"),
    ],
)
def test_getmail_refuses_what_is_not_an_rc_file(text: str, message: str) -> None:
    with pytest.raises(PeerFileError, match=message):
        getmail.parse(text, Path("/x/getmailrc"))


def test_getmail_imap_and_oldmail_garbage(tmp_path: Path) -> None:
    rc = tmp_path / "getmailrc"
    rc.write_text("[retriever]\ntype = SimpleIMAPSSLRetriever\nserver = h\nusername = u\n")
    assert getmail.parse(rc.read_text(), rc).skipped == (
        "retriever type SimpleIMAPSSLRetriever: pop3s-fetch speaks POP3 only"
    )
    bad = tmp_path / "oldmail-h-995-u"
    bad.write_bytes(b"no nul here\n")
    with pytest.raises(PeerFileError, match="line 1: expected a UIDL, a NUL byte and a time"):
        getmail.read_oldmail(bad)


MPOPRC = """\
# comment
defaults
tls on
tls_starttls off
keep

account base
host pop.example.com
user "me with space"
password "a \\"quoted\\" #hash"

account second : base
user other
passwordeval pass show "mail/other" | head -1
killsize 10k
delivery mda /usr/bin/procmail -f '%F'
uidls_file ~/uidls/%U_at_%H
   filter /usr/bin/spamc
"""


def test_mpop_inheritance_quotes_and_commands(tmp_path: Path) -> None:
    path = tmp_path / ".mpoprc"
    uidls = tmp_path / "uidls"
    uidls.mkdir()
    (uidls / "other_at_pop.example.com").write_text(
        "# header\n 2 pop.example.com other\nA1\nA2\n 1 pop.example.com someone\nB1\n"
    )
    base, second = mpop.accounts(mpop.parse_config(MPOPRC, path), path, {"HOME": str(tmp_path)})
    assert base.username == "me with space"
    assert base.password == 'a "quoted" #hash'
    assert (base.keys["port"], base.keys["keep"]) == (995, True)
    assert "tls" not in base.keys
    assert second.password is None  # its own passwordeval beats the inherited password
    assert second.keys["password_command"] == [
        "/bin/sh", "-c", 'pass show "mail/other" | head -1'
    ]  # fmt: skip
    assert (second.keys["max_message_size"], second.keys["oversize"]) == (10240, "delete")
    assert second.keys["mda"] == ["/bin/sh", "-c", '/usr/bin/procmail -f "$1"', "sh",
                                  "{sender}", "{recipient}"]  # fmt: skip
    assert second.uidls == {"A1": None, "A2": None}
    assert any(str(n).startswith(".mpoprc line 18: `filter /usr/bin/spamc`") for n in second.notes)


def test_mpop_errors_name_the_line() -> None:
    with pytest.raises(PeerFileError, match="line 2: a quoted value is not closed"):
        mpop.parse_config('account a\npassword "open\n', Path("/x/.mpoprc"))
    with pytest.raises(PeerFileError, match="line 1: `host` before any"):
        mpop.parse_config("host h\n", Path("/x/.mpoprc"))
    with pytest.raises(PeerFileError, match="line 1: account nope is not defined above"):
        mpop.parse_config("account a : nope\n", Path("/x/.mpoprc"))


def test_mpop_uidl_file_that_lies_about_its_count(tmp_path: Path) -> None:
    path = tmp_path / "u"
    path.write_text(" 3 h u\nA\nB\n")
    with pytest.raises(PeerFileError, match="the list promises 3 UIDLs"):
        mpop.read_uidls(path, "h", "u")


def test_mda_placeholders_never_reach_the_shell_as_text() -> None:
    argv = mda_argv("deliver -f %F | logger '%T'", "%F", "%T")
    assert argv == ["/bin/sh", "-c", 'deliver -f "$1" | logger "$2"', "sh", "{sender}",
                    "{recipient}"]  # fmt: skip
    assert mda_argv("cat >> ~/mbox", "%F", "%T") == ["/bin/sh", "-c", "cat >> ~/mbox"]


@pytest.mark.parametrize(
    "value",
    ['evil"]\n[accounts.x]\nhost = "a', "tab\there", "nul\x00", "back\\slash", "ünïcödé"],
)
def test_toml_values_round_trip(value: str) -> None:
    assert tomllib.loads(f"k = {importer.toml_value(value)}")["k"] == value
    argv = ["a", value]
    assert tomllib.loads(f"k = {importer.toml_value(argv)}")["k"] == argv


def test_plan_refuses_a_taken_name_and_writes_nothing(tmp_path: Path) -> None:
    rc = tmp_path / ".mpoprc"
    rc.write_text("account work\nhost h\nuser u\npassword secret\ndelivery maildir ~/M\n")
    ours = tmp_path / "config.toml"
    ours.write_text('[accounts.work]\nhost = "h"\nusername = "x"\ndestination = "/m"\n')
    before = ours.read_bytes()
    with pytest.raises(ConfigError) as caught:
        importer.plan("mpop", [rc], ours, {"HOME": str(tmp_path)})
    assert caught.value.message == (
        f'account "work" (from {rc} line 1) is already in {ours}; nothing was imported'
    )
    assert caught.value.hint is not None
    assert "--prefix mpop-" in caught.value.hint
    assert ours.read_bytes() == before
    plan = importer.plan("mpop", [rc], ours, {"HOME": str(tmp_path)}, prefix="mpop-")
    loaded = config.parse(plan.config_text, ours)
    assert set(loaded.accounts) == {"work", "mpop-work"}
    assert "secret" not in plan.config_text


def test_plan_says_which_value_would_not_load(tmp_path: Path) -> None:
    rc = tmp_path / ".mpoprc"
    rc.write_text("account a\nhost bad host name\nuser u\n")
    with pytest.raises(ConfigError, match="would not load"):
        importer.plan("mpop", [rc], tmp_path / "config.toml", {"HOME": str(tmp_path)})


@pytest.mark.parametrize(
    ("options", "headers", "default_note"),
    [
        ("received = true\ndelivered_to = yes\n", ["received", "delivered-to"], False),
        ("received = false\n", None, True),  # delivered_to unset: getmail's default is on
        ("", None, True),
    ],
)
def test_getmail_trace_headers_become_add_headers_only_where_set(
    tmp_path: Path, options: str, headers: list[str] | None, default_note: bool
) -> None:
    """What the file sets is translated; getmail's silent default (on) is a note, so a switched
    user's copies stay byte for byte the server's unless they ask."""
    rc = tmp_path / "getmailrc"
    rc.write_text(
        "[retriever]\ntype = SimplePOP3SSLRetriever\nserver = h\nusername = u\n"
        f"[destination]\ntype = Maildir\npath = ~/Mail/\n[options]\n{options}"
    )
    account = getmail.parse(rc.read_text(), rc)
    assert account.keys.get("add_headers") == headers
    notes = " ".join(str(n) for n in account.notes)
    assert ("getmail adds that header by default" in notes) == default_note
    if "received = false" in options:
        assert "`received = false` needs no key" in notes


@pytest.mark.parametrize(
    ("line", "headers", "default_note"),
    [("received_header on\n", ["received"], False), ("received_header off\n", None, False),
     ("", None, True)],
)  # fmt: skip
def test_mpop_received_header(
    tmp_path: Path, line: str, headers: list[str] | None, default_note: bool
) -> None:
    path = tmp_path / ".mpoprc"
    text = f"account a\nhost h\nuser u\n{line}"
    (account,) = mpop.accounts(mpop.parse_config(text, path), path, {"HOME": str(tmp_path)})
    assert account.keys.get("add_headers") == headers
    notes = " ".join(str(n) for n in account.notes)
    assert ("mpop adds a Received header by default" in notes) == default_note
