"""``pop3s-fetch import`` from files the real peers wrote: fetchmail, getmail6 and mpop.

Each peer (Debian's package) fetches from the test Dovecot over verified TLS, in keep mode, and
leaves its real state (``.fetchids``, ``oldmail-*`` with its NUL-separated times, mpop's UIDL
file). Then pop3s-fetch imports, and its first sync must fetch nothing the peer fetched: the
destination gains no file and the summary says 0. A message added afterwards arrives once.
The passwords (with a space and a ``#``, so comment and quoting rules matter) must end up in
the real keyring and nowhere in our configuration.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import server_unavailable
from tests.support.cli import Cli, make_cli
from tests.support.dovecot import DovecotServer, DovecotUser, ensure_system_user

pytestmark = [pytest.mark.dovecot, pytest.mark.secret_service]

PASSWORD = "s3cr#t pw"
#: getmail refuses to deliver as root: as root, every peer runs as this unprivileged user.
PEER_USER = "pop3s-fetch-bench"
MESSAGES = [f"Subject: kept {n}\n\nbody {n}\n".encode() for n in range(3)]
LATE = b"Subject: arrived after the switch\n\nnew\n"


def need(program: str) -> str:
    found = shutil.which(program)
    if found is None:
        server_unavailable(f"{program} is not installed (apt-get install fetchmail getmail6 mpop)")
    assert found is not None
    return found


@pytest.fixture
def peer_home(ca_file: Path) -> Iterator[Path]:
    """A HOME the peer (unprivileged when we are root) can write, with the test CA in it."""
    home = Path(tempfile.mkdtemp(prefix="pop3s-fetch-peer-"))
    home.chmod(0o755)
    shutil.copy(ca_file, home / "ca.pem")
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def keyring_cli(tmp_path: Path, secret_service: object, peer_home: Path) -> Cli:
    env = dict(secret_service.env)  # type: ignore[attr-defined]
    env.pop("HOME", None)
    cli = make_cli(tmp_path, env)
    cli.env["HOME"] = str(peer_home)  # where import finds the peer's files by default
    return cli


def run_peer(argv: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    """Run a peer as its user would, with HOME pointing at its files."""
    ids: dict[str, int] = {}
    if os.geteuid() == 0:
        user = ensure_system_user(PEER_USER)
        for path in [home, *home.rglob("*")]:
            os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)
        ids = {"user": user.pw_uid, "group": user.pw_gid}
    env = {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
    return subprocess.run(
        argv, env=env, cwd=home, capture_output=True, text=True, timeout=120, check=False, **ids
    )  # type: ignore[call-overload, no-any-return]


def maildir(path: Path) -> Path:
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path


def delivered(path: Path) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes() for sub in ("new", "cur") for p in sorted((path / sub).iterdir())
    }


def sync(cli: Cli) -> dict[str, object]:
    result = cli.run("sync", "--json")
    assert result.code == 0, result.output
    [account] = json.loads(result.stdout)["accounts"]
    assert isinstance(account, dict)
    return account


def switch_and_check(
    cli: Cli, peer: str, prefix: str, name: str, user: DovecotUser, destination: Path
) -> str:
    """Import, then: the first sync fetches nothing; a new message arrives exactly once."""
    before = delivered(destination)
    assert len(before) == len(MESSAGES)

    result = cli.run("import", peer, "--prefix", prefix)
    assert result.code == 0, result.output
    account = prefix + name
    config = cli.config_path.read_text()
    assert f"[accounts.{account}]" in config
    assert (
        f"state: {len(MESSAGES)} UIDLs the peer fetched marked delivered "
        f"({len(MESSAGES)} added to the state; "
    ) in result.stdout
    assert "stored in the keyring" in result.stdout
    assert "remove the password from" in result.stdout
    assert cli.run("password", "check", account).code == 0

    first = sync(cli)
    assert (first["fetched"], first["on_server"]) == (0, len(MESSAGES))
    assert delivered(destination) == before
    # the password is in the keyring only: not in our config, state or output
    assert PASSWORD.encode() not in cli.everything_written()

    user.add_messages([LATE])
    second = sync(cli)
    assert second["fetched"] == 1
    after = delivered(destination)
    assert set(before) < set(after)
    assert [after[n] for n in sorted(set(after) - set(before))] == [LATE]
    assert sync(cli)["fetched"] == 0
    return result.stdout


def test_fetchmail(keyring_cli: Cli, dovecot: DovecotServer, peer_home: Path) -> None:
    need("fetchmail")
    user = dovecot.add_user(MESSAGES, password=PASSWORD)
    out = maildir(peer_home / "Mail")
    rc = peer_home / ".fetchmailrc"
    rc.write_text(
        "# written for the import test\n"
        "set no syslog\n"
        f"poll localhost with proto POP3 port {dovecot.port} uidl  # a comment\n"
        f'  user "{user.name}" there with password "{PASSWORD}"\n'
        f'  options ssl sslcertck sslcertfile "{peer_home}/ca.pem"\n'
        "  keep no rewrite\n"
        f'  mda "cat > $(mktemp {out}/new/fm.XXXXXXXXXX)"\n'
    )
    rc.chmod(0o600)
    done = run_peer(["fetchmail", "--nodetach", "--silent"], peer_home)
    assert done.returncode == 0, done.stderr
    assert len((peer_home / ".fetchids").read_text().splitlines()) == len(MESSAGES)

    prefix = f"f{secrets.token_hex(3)}-"
    output = switch_and_check(keyring_cli, "fetchmail", prefix, "localhost", user, out)
    assert "`no rewrite` needs no key" in output
    assert "`set no syslog`" in output


def test_getmail(keyring_cli: Cli, dovecot: DovecotServer, peer_home: Path) -> None:
    need("getmail")
    user = dovecot.add_user(MESSAGES, password=PASSWORD)
    out = maildir(peer_home / "Mail")
    getmail_dir = peer_home / ".getmail"
    getmail_dir.mkdir()
    (getmail_dir / "getmailrc").write_text(
        "[retriever]\n"
        "type = SimplePOP3SSLRetriever\n"
        "server = localhost\n"
        f"port = {dovecot.port}\n"
        f"username = {user.name}\n"
        f"password = {PASSWORD}\n"
        f"ca_certs = {peer_home}/ca.pem\n\n"
        "[destination]\ntype = Maildir\n"
        f"path = {out}/\n\n"
        "[options]\n# keep mode\nread_all = false\ndelete = false\n"
        "delivered_to = false\nreceived = false\nmessage_log = ~/getmail.log\n"
    )
    done = run_peer(["getmail", "--quiet"], peer_home)
    assert done.returncode == 0, done.stderr
    [oldmail] = getmail_dir.glob("oldmail-*")
    assert oldmail.read_bytes().count(b"\0") == len(MESSAGES)

    prefix = f"g{secrets.token_hex(3)}-"
    output = switch_and_check(keyring_cli, "getmail", prefix, "localhost", user, out)
    assert "getmailrc line 19: `message_log = ~/getmail.log` has no equivalent" in output


def test_mpop(keyring_cli: Cli, dovecot: DovecotServer, peer_home: Path) -> None:
    need("mpop")
    user = dovecot.add_user(MESSAGES, password=PASSWORD)
    out = maildir(peer_home / "Mail")
    rc = peer_home / ".mpoprc"
    rc.write_text(
        "# mpop: defaults, then an account\n"
        "defaults\n"
        "tls on\n"
        "tls_starttls off\n"
        f"tls_trust_file {peer_home}/ca.pem\n"
        "keep on\n"
        "received_header off\n\n"
        "account work\n"
        "host localhost\n"
        f"port {dovecot.port}\n"
        f"user {user.name}\n"
        f'password "{PASSWORD}"\n'
        f"delivery maildir {out}\n"
    )
    rc.chmod(0o600)
    done = run_peer(["mpop", "--quiet", "--all-accounts"], peer_home)
    assert done.returncode == 0, done.stderr

    prefix = f"m{secrets.token_hex(3)}-"
    output = switch_and_check(keyring_cli, "mpop", prefix, "work", user, out)
    assert ".mpoprc line 7: `received_header off` needs no key" in output


ODD_RC = (
    "# comments, punctuation, escapes, defaults and two users, as fetchmail reads them\n"
    "defaults keep\n"
    "poll pop.example.com, proto pop3;  # trailing comment\n"
    '  user "alice" there is alice here with password "p#ss word"\n'
    "    options ssl limit 1000 fetchall\n"
    '  user "b\\x6fb" there with pass "two\\\nlines" no keep\n'
    '  user dave here is "ca\\114ol" there password "\\101\\0602\\x41"\n'
)


def test_fetchmail_reads_odd_files_as_the_parser_does(tmp_path: Path) -> None:
    """fetchmail's own --configdump is the oracle for users, passwords and keep."""
    need("fetchmail")
    from pop3s_fetch.migrate import fetchmail

    rc = tmp_path / "rc"
    rc.write_text(ODD_RC)
    rc.chmod(0o600)
    dump = subprocess.run(
        ["fetchmail", "-f", str(rc), "--configdump"],
        env={"HOME": str(tmp_path), "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    theirs = list(
        zip(
            re.findall(r'"remote":"([^"]*)"', dump),
            re.findall(r'"password":"([^"]*)"', dump),
            re.findall(r"'keep':(TRUE|FALSE)", dump),
            strict=True,
        )
    )
    ours = [
        (a.username, a.password, "TRUE" if a.keys["keep"] else "FALSE")
        for a in fetchmail.accounts(fetchmail.parse_rc(ODD_RC, rc), None, "~/Maildir")
    ]
    assert ours == theirs
    assert ours[2] == ("carol", "e02A", "TRUE")  # decimal, octal (\\0 and two digits), hex


MPOPRC_ONE = "account work\nhost localhost\nuser u\npassword {password}\ndelivery maildir ~/M\n"


def test_dry_run_writes_nothing_and_no_keyring_stops_before_any_write(cli: Cli) -> None:
    (cli.home / ".mpoprc").write_text(MPOPRC_ONE.format(password=PASSWORD))
    (cli.home / ".mpop_uidls").mkdir()
    (cli.home / ".mpop_uidls" / "u_at_localhost").write_text(" 2 localhost u\nA\nB\n")

    dry = cli.run("import", "mpop", "--dry-run")
    assert dry.code == 0, dry.output
    assert "state: would mark 2 UIDLs delivered" in dry.stdout
    assert dry.stdout.splitlines()[-1].startswith("dry run: nothing was written")
    assert not cli.config_path.exists()
    assert not cli.state_dir.exists()

    refused = cli.run("import", "mpop")  # this home has no usable keyring
    assert refused.code == 77, refused.output
    assert not cli.config_path.exists()
    assert not cli.state_dir.exists()

    done = cli.run("import", "mpop", "--no-passwords")
    assert done.code == 0, done.output
    assert "not stored (--no-passwords): pop3s-fetch password set work" in done.stdout
    assert "[accounts.work]" in cli.config_path.read_text()
    assert PASSWORD.encode() not in cli.everything_written().replace(
        (cli.home / ".mpoprc").read_bytes(), b""
    )
    again = cli.run("import", "mpop", "--no-passwords")
    assert again.code == 78
    assert again.stderr.startswith('error: account "work" (from ')
    assert "import with --prefix mpop-" in again.stderr
