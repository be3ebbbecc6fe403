"""SASL client mechanisms, AUTH framing, the choice of mechanism, and refusal codes.

SCRAM is checked against the RFC 5802/7677 example exchanges and against scramp's own server
(a different code path from the client) for success, a wrong password and a forged server
signature. Secrets are distinctive strings that every error and repr is searched for.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import sys
from collections.abc import Callable
from typing import ClassVar

import pytest
from scramp import ScramMechanism  # type: ignore[import-untyped]
from scramp.utils import ScramException  # type: ignore[import-untyped]

from pop3s_fetch import sasl
from pop3s_fetch.errors import (
    AuthError,
    ConfigError,
    CredentialError,
    ExitCode,
    ProtocolError,
    RemoteError,
)

PASSWORD = "s3cret-Pa55w0rd"
TOKEN = "ya29.TOKEN-never-shown"


def b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def assert_no_secret(*texts: object) -> None:
    for text in texts:
        shown = str(text)
        for secret in (PASSWORD, TOKEN, b64(PASSWORD), b64(TOKEN)):
            assert secret not in shown


# -- SCRAM ----------------------------------------------------------------------------------


RFC_EXCHANGES = [
    # RFC 7677 section 3
    (
        "SCRAM-SHA-256",
        "rOprNGfwEbeRWgbNEkqO",
        b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
    ),
    # RFC 5802 section 5
    (
        "SCRAM-SHA-1",
        "fyko+d2lbbFgONRv9qkxdawL",
        b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
        b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
        b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
        b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
    ),
]


@pytest.mark.parametrize(
    ("name", "nonce", "client_first", "server_first", "client_final", "server_final"),
    RFC_EXCHANGES,
)
def test_scram_rfc_example_exchange(
    name: str,
    nonce: str,
    client_first: bytes,
    server_first: bytes,
    client_final: bytes,
    server_final: bytes,
) -> None:
    mech = sasl.Scram(name, "user", "pencil", client_nonce=nonce)
    exchange = sasl.Exchange(mech)

    assert exchange.command() == f"AUTH {name} {b64(client_first)}"
    assert unb64(exchange.answer(b64(server_first))) == client_final
    assert exchange.answer(b64(server_final)) == ""  # empty line acknowledges server-final
    exchange.succeeded("Logged in.")


def test_scram_server_final_with_ok_is_verified() -> None:
    _, nonce, _, server_first, _, server_final = RFC_EXCHANGES[0]
    mech = sasl.Scram("SCRAM-SHA-256", "user", "pencil", client_nonce=nonce)
    mech.initial_response()
    mech.respond(server_first)
    mech.done(server_final)  # RFC 5034 servers may carry it with +OK instead


def test_scram_forged_signature_with_ok_is_refused() -> None:
    _, nonce, _, server_first, _, _ = RFC_EXCHANGES[0]
    mech = sasl.Scram("SCRAM-SHA-256", "user", "pencil", client_nonce=nonce)
    mech.initial_response()
    mech.respond(server_first)
    with pytest.raises(sasl.SaslError, match="server signature doesn't match"):
        mech.done(b"v=" + base64.b64encode(b"\0" * 32))


def scram_server(name: str, password: str) -> object:
    mechanism = ScramMechanism(name)
    auth_info = mechanism.make_auth_info(password, iteration_count=4096)
    return mechanism.make_server(lambda username: auth_info)


class ScramPop3Server:
    """scramp's server behind RFC 5034 framing: answers AUTH lines as a POP3 server would."""

    def __init__(self, name: str, password: str, *, tamper: Callable[[str], str] = str) -> None:
        self.server = scram_server(name, password)
        self.tamper = tamper
        self.transcript: list[str] = []

    def run(self, exchange: sasl.Exchange) -> None:
        """Drive the whole exchange; raise what the client raises, as the pop3 client would."""
        command = exchange.command()
        self.transcript.append(command)
        verb, mech, initial = command.split(" ")
        assert (verb, mech) == ("AUTH", exchange.mechanism.name)
        self.server.set_client_first(unb64(initial).decode())  # type: ignore[attr-defined]
        reply = self.challenge(exchange, self.server.get_server_first())  # type: ignore[attr-defined]
        with contextlib.suppress(ScramException):  # then the server-final carries e=
            self.server.set_client_final(unb64(reply).decode())  # type: ignore[attr-defined]
        final = self.tamper(self.server.get_server_final())  # type: ignore[attr-defined]
        reply = self.challenge(exchange, final)
        if reply == "*" or final.startswith("e="):
            self.transcript.append("-ERR [AUTH] Authentication failed.")
            raise exchange.failed("mail.example", "[AUTH] Authentication failed.")
        assert reply == ""
        self.transcript.append("+OK Logged in.")
        exchange.succeeded("Logged in.")

    def challenge(self, exchange: sasl.Exchange, message: str) -> str:
        self.transcript.append(f"+ {b64(message)}")
        reply = exchange.answer(b64(message))
        self.transcript.append(reply)
        return reply


@pytest.mark.parametrize("name", ["SCRAM-SHA-256", "SCRAM-SHA-1"])
def test_scram_against_scramp_server_succeeds(name: str) -> None:
    server = ScramPop3Server(name, PASSWORD)
    server.run(sasl.Exchange(sasl.mechanism(name, username="alice", secret=PASSWORD)))

    assert server.transcript[-1] == "+OK Logged in."
    assert_no_secret(*server.transcript)


@pytest.mark.parametrize("name", ["SCRAM-SHA-256", "SCRAM-SHA-1"])
def test_scram_wrong_password_is_bad_credentials(name: str) -> None:
    server = ScramPop3Server(name, "the-right-one")
    mech = sasl.mechanism(name, username="alice", secret=PASSWORD)

    with pytest.raises(AuthError) as caught:
        server.run(sasl.Exchange(mech))

    assert caught.value.exit_code == ExitCode.NOPERM
    assert str(caught.value) == (
        "mail.example refused the login: [AUTH] Authentication failed. "
        f"({name} server error: invalid-proof)"
    )
    assert server.transcript[-2] == "*"  # the client cancelled on e=
    assert_no_secret(caught.value, caught.value.hint, *server.transcript)


def forge_signature(final: str) -> str:
    signature = bytearray(base64.b64decode(final[2:]))
    signature[0] ^= 1
    return "v=" + base64.b64encode(bytes(signature)).decode()


@pytest.mark.parametrize("name", ["SCRAM-SHA-256", "SCRAM-SHA-1"])
def test_scram_forged_server_signature_cancels_and_is_a_protocol_error(name: str) -> None:
    server = ScramPop3Server(name, PASSWORD, tamper=forge_signature)

    with pytest.raises(sasl.SaslError) as caught:
        server.run(sasl.Exchange(sasl.mechanism(name, username="alice", secret=PASSWORD)))

    assert caught.value.exit_code == ExitCode.PROTOCOL
    assert str(caught.value) == (
        f"{name}: the server-final message was refused: The server signature doesn't match.: "
        "other-error"
    )
    assert server.transcript[-2:] == ["*", "-ERR [AUTH] Authentication failed."]
    assert_no_secret(caught.value, caught.value.hint)


def test_scram_ok_without_server_signature_is_refused() -> None:
    _, nonce, _, server_first, _, _ = RFC_EXCHANGES[0]
    exchange = sasl.Exchange(sasl.Scram("SCRAM-SHA-256", "user", "pencil", client_nonce=nonce))
    exchange.command()
    exchange.answer(b64(server_first))

    with pytest.raises(sasl.SaslError, match="without proving it knows the password"):
        exchange.succeeded("Logged in.")


def test_scram_server_nonce_must_extend_client_nonce() -> None:
    exchange = sasl.Exchange(sasl.Scram("SCRAM-SHA-256", "user", "pencil", client_nonce="abc"))
    exchange.command()

    assert exchange.answer(b64("r=xyzdef,s=QSXCR+Q6sek8bf92,i=4096")) == "*"
    error = exchange.failed("mail.example", "[AUTH] cancelled")
    assert isinstance(error, sasl.SaslError)
    assert str(error) == (
        "SCRAM-SHA-256: the server-first message was refused: Client nonce doesn't match.: "
        "other-error"
    )


def test_scram_unencodable_password_is_a_credential_error_without_the_password() -> None:
    secret = "bad\x07" + PASSWORD
    with pytest.raises(CredentialError) as caught:
        sasl.mechanism("scram-sha-256", username="alice", secret=secret)

    assert str(caught.value).startswith("SCRAM-SHA-256 cannot carry this username or password")
    assert secret not in str(caught.value)
    assert_no_secret(caught.value, caught.value.hint)


# -- PLAIN, LOGIN, CRAM-MD5 ---------------------------------------------------------------


def test_plain_exact_bytes_and_line() -> None:
    mech = sasl.mechanism("plain", username="alice", secret=PASSWORD)

    assert mech.initial_response() == b"\0alice\0" + PASSWORD.encode()
    assert sasl.Exchange(mech).command() == "AUTH PLAIN " + b64(b"\0alice\0" + PASSWORD.encode())


def test_plain_encodes_utf8() -> None:
    mech = sasl.mechanism("PLAIN", username="jörg", secret="pässword")
    assert mech.initial_response() == b"\0j\xc3\xb6rg\0p\xc3\xa4ssword"


def test_plain_unexpected_challenge_cancels() -> None:
    exchange = sasl.Exchange(sasl.mechanism("PLAIN", username="alice", secret=PASSWORD))
    exchange.command()

    assert exchange.answer(b64("more?")) == "*"
    error = exchange.failed("mail.example", "cancelled")
    assert isinstance(error, sasl.SaslError)
    assert str(error) == "PLAIN: the server sent an unexpected challenge 'more?'"


def test_login_answers_prompts() -> None:
    exchange = sasl.Exchange(sasl.mechanism("LOGIN", username="alice", secret=PASSWORD))

    assert exchange.command() == "AUTH LOGIN"
    assert unb64(exchange.answer(b64("Username:"))) == b"alice"
    assert unb64(exchange.answer(b64("Password:"))) == PASSWORD.encode()
    exchange.succeeded("")


def test_login_answers_unnamed_prompts_by_position() -> None:
    mech = sasl.mechanism("LOGIN", username="alice", secret=PASSWORD)

    assert mech.respond(b"") == b"alice"
    assert mech.respond(b"") == PASSWORD.encode()
    with pytest.raises(sasl.SaslError, match="unexpected challenge"):
        mech.respond(b"Password:")


def test_login_password_prompt_first_gets_the_password() -> None:
    mech = sasl.mechanism("LOGIN", username="alice", secret=PASSWORD)
    assert mech.respond(b"Password:") == PASSWORD.encode()


def test_cram_md5_rfc2195_example() -> None:
    exchange = sasl.Exchange(sasl.mechanism("CRAM-MD5", username="tim", secret="tanstaaftanstaaf"))

    assert exchange.command() == "AUTH CRAM-MD5"
    answer = exchange.answer("PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+")
    assert answer == "dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw"


def test_cram_md5_refuses_an_empty_challenge() -> None:
    mech = sasl.mechanism("CRAM-MD5", username="tim", secret=PASSWORD)
    with pytest.raises(sasl.SaslError):
        mech.respond(b"")


# -- XOAUTH2, OAUTHBEARER -------------------------------------------------------------------


GOOGLE_ERROR = b'{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}'


def test_xoauth2_exact_bytes() -> None:
    mech = sasl.mechanism("XOAUTH2", username="alice@example.com", secret="tok")
    assert mech.initial_response() == b"user=alice@example.com\x01auth=Bearer tok\x01\x01"
    assert sasl.Exchange(mech).command() == "AUTH XOAUTH2 " + b64(
        b"user=alice@example.com\x01auth=Bearer tok\x01\x01"
    )


def test_xoauth2_error_challenge_gets_empty_answer_then_oauth_auth_error() -> None:
    exchange = sasl.Exchange(sasl.mechanism("XOAUTH2", username="alice", secret=TOKEN))
    exchange.command()

    assert exchange.answer(b64(GOOGLE_ERROR)) == ""
    error = exchange.failed("pop.gmail.com", "[AUTH] Invalid credentials")

    assert isinstance(error, AuthError)
    assert error.exit_code == ExitCode.NOPERM
    assert str(error) == (
        "pop.gmail.com refused the login: [AUTH] Invalid credentials "
        "(status 401: invalid or expired token (scope https://mail.google.com/))"
    )
    assert error.hint == "the access token was refused; run: pop3s-fetch oauth2 login ACCOUNT"
    assert_no_secret(error, error.hint, exchange, exchange.mechanism)


def test_xoauth2_long_token_waits_for_the_empty_challenge() -> None:
    token = "t" * 400
    exchange = sasl.Exchange(sasl.mechanism("XOAUTH2", username="alice", secret=token))

    assert exchange.command() == "AUTH XOAUTH2"
    answer = exchange.answer("")
    assert unb64(answer) == f"user=alice\x01auth=Bearer {token}\x01\x01".encode()
    assert exchange.answer(b64(GOOGLE_ERROR)) == ""  # then the error step as usual
    exchange.succeeded("")  # XOAUTH2 has nothing to verify


def test_initial_response_that_just_fits_is_sent_inline() -> None:
    # 180 raw bytes -> 240 base64 characters; "AUTH XOAUTH2 " is 13: with CRLF, 255 octets.
    fits = "t" * (180 - len("user=u\x01auth=Bearer \x01\x01"))
    line = sasl.Exchange(sasl.mechanism("XOAUTH2", username="u", secret=fits)).command()
    assert len(line) + 2 == sasl.MAX_COMMAND_LINE == 255

    one_more = sasl.Exchange(sasl.mechanism("XOAUTH2", username="u", secret=fits + "t"))
    assert one_more.command() == "AUTH XOAUTH2"


def test_deferred_initial_response_refuses_a_non_empty_first_challenge() -> None:
    exchange = sasl.Exchange(sasl.mechanism("XOAUTH2", username="alice", secret="t" * 400))
    exchange.command()

    assert exchange.answer(b64("surprise")) == "*"
    error = exchange.failed("mail.example", "")
    assert isinstance(error, sasl.SaslError)
    assert "where an empty challenge was due" in str(error)


def test_oauthbearer_exact_bytes_with_escaped_authzid() -> None:
    mech = sasl.mechanism("OAUTHBEARER", username="a,b=c@example.com", secret="tok")
    assert mech.initial_response() == b"n,a=a=2Cb=3Dc@example.com,\x01auth=Bearer tok\x01\x01"


def test_oauthbearer_error_challenge_gets_ctrl_a() -> None:
    exchange = sasl.Exchange(sasl.mechanism("OAUTHBEARER", username="alice", secret=TOKEN))
    exchange.command()
    document = json.dumps({"status": "invalid_token", "scope": "mail"}).encode()

    assert exchange.answer(b64(document)) == b64(b"\x01")
    error = exchange.failed("mail.example", "[AUTH] Authentication failed.")
    assert isinstance(error, AuthError)
    assert str(error) == (
        "mail.example refused the login: [AUTH] Authentication failed. "
        "(status invalid_token: refused (scope mail))"
    )
    assert_no_secret(error, error.hint)


def test_oauth_second_challenge_cancels_but_keeps_the_server_reason() -> None:
    exchange = sasl.Exchange(sasl.mechanism("XOAUTH2", username="alice", secret=TOKEN))
    exchange.command()
    exchange.answer(b64(GOOGLE_ERROR))

    assert exchange.answer(b64(GOOGLE_ERROR)) == "*"
    error = exchange.failed("mail.example", "")
    assert isinstance(error, AuthError)
    assert str(error) == (
        "mail.example refused the login: no reason given "
        "(status 401: invalid or expired token (scope https://mail.google.com/))"
    )


@pytest.mark.parametrize(
    ("challenge", "text"),
    [
        (GOOGLE_ERROR, "status 401: invalid or expired token (scope https://mail.google.com/)"),
        (b'{"status":400,"schemes":"Bearer"}', "status 400: invalid request"),
        (b'{"status":"403","scope":""}', "status 403: insufficient scope"),
        (
            b'{"error":"invalid_token","error_description":"expired\\nnow"}',
            "refused invalid_token expired?now",
        ),
        (b"[1, 2]", "server said '[1, 2]'"),
        (b"not json \xff", "server said 'not json \ufffd'"),
        (b"x" * 300, "server said '" + "x" * 200 + "...'"),
    ],
)
def test_xoauth2_error_text(challenge: bytes, text: str) -> None:
    assert sasl.xoauth2_error(challenge) == text


# -- framing and factory --------------------------------------------------------------------


class EmptyInitial:
    name = "EMPTY"
    error_detail: str | None = None

    def initial_response(self) -> bytes:
        return b""

    def respond(self, challenge: bytes) -> bytes:
        raise AssertionError("no challenge expected")

    def done(self, final: bytes | None) -> None:
        return None


def test_empty_initial_response_is_an_equals_sign() -> None:
    assert sasl.Exchange(EmptyInitial()).command() == "AUTH EMPTY ="


def test_challenge_that_is_not_base64_cancels() -> None:
    exchange = sasl.Exchange(sasl.mechanism("LOGIN", username="alice", secret=PASSWORD))
    exchange.command()

    assert exchange.answer("Username:") == "*"
    error = exchange.failed("mail.example", "[AUTH] cancelled")
    assert isinstance(error, ProtocolError)
    assert str(error) == "the server sent a challenge that is not base64: 'Username:'"
    with pytest.raises(sasl.SaslError):
        exchange.succeeded("")  # even if the server then claims success


def test_mechanism_names_are_case_insensitive_and_unknown_ones_are_a_bug() -> None:
    assert sasl.mechanism("scram-sha-1", username="u", secret="p").name == "SCRAM-SHA-1"
    assert sasl.mechanism("cram-md5", username="u", secret="p").name == "CRAM-MD5"
    with pytest.raises(ValueError, match="GSSAPI"):
        sasl.mechanism("GSSAPI", username="u", secret="p")


@pytest.mark.parametrize(
    "name", ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2", "OAUTHBEARER"]
)
def test_repr_never_shows_the_secret(name: str) -> None:
    mech = sasl.mechanism(name, username="alice", secret=PASSWORD)
    assert repr(mech) == f"<{type(mech).__name__} user='alice'>"
    assert_no_secret(repr(sasl.Exchange(mech)))


# -- APOP -----------------------------------------------------------------------------------


def test_apop_digest_rfc1939_example() -> None:
    digest = sasl.apop_digest("<1896.697170952@dbc.mtview.ca.us>", "tanstaaf")
    assert digest == "c4c9334bac560ecc979e58001b3e22fb"


@pytest.mark.parametrize(
    ("greeting", "timestamp"),
    [
        (
            "POP3 server ready <1896.697170952@dbc.mtview.ca.us>",
            "<1896.697170952@dbc.mtview.ca.us>",
        ),
        ("Dovecot ready.", None),
        ("ready <no-at-sign>", None),
    ],
)
def test_apop_timestamp(greeting: str, timestamp: str | None) -> None:
    assert sasl.apop_timestamp(greeting) == timestamp


# -- choosing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("capabilities", "methods"),
    [
        ({"SASL": ["PLAIN", "scram-sha-256"], "USER": []}, ["PLAIN", "SCRAM-SHA-256", "USER"]),
        ({"SASL": ["PLAIN"], "UIDL": []}, ["PLAIN"]),
        ({"UIDL": []}, []),
        ({}, ["USER"]),  # no CAPA: an RFC 1939 server, which always has USER/PASS
    ],
)
def test_offered_methods(capabilities: dict[str, list[str]], methods: list[str]) -> None:
    assert sasl.offered_methods(capabilities) == methods


ALL = [
    "SCRAM-SHA-256",
    "SCRAM-SHA-1",
    "PLAIN",
    "LOGIN",
    "CRAM-MD5",
    "USER",
    "XOAUTH2",
    "OAUTHBEARER",
]


@pytest.mark.parametrize(
    ("offered", "oauth", "chosen"),
    [
        (ALL, False, "SCRAM-SHA-256"),
        (["SCRAM-SHA-1", "PLAIN", "USER"], False, "SCRAM-SHA-1"),
        (["plain", "USER", "CRAM-MD5", "LOGIN"], False, "PLAIN"),
        (["CRAM-MD5", "LOGIN", "USER"], False, "USER"),
        (ALL, True, "OAUTHBEARER"),
        (["XOAUTH2", "PLAIN", "USER"], True, "XOAUTH2"),
    ],
)
def test_choose_auto(offered: list[str], oauth: bool, chosen: str) -> None:
    assert sasl.choose("auto", offered, oauth=oauth, apop_possible=True) == chosen


def test_choose_auto_never_falls_back_to_apop_cram_or_login() -> None:
    with pytest.raises(ProtocolError) as caught:
        sasl.choose("auto", ["CRAM-MD5", "LOGIN"], oauth=False, apop_possible=True)

    assert str(caught.value) == (
        'the server does not offer SCRAM-SHA-256 or SCRAM-SHA-1 or PLAIN or USER (auth = "auto"); '
        "it offers: APOP, CRAM-MD5, LOGIN"
    )
    assert caught.value.hint == "set auth to one of: 'apop', 'cram-md5', 'login'"
    assert caught.value.exit_code == ExitCode.PROTOCOL


def test_choose_auto_oauth_without_oauth_mechanisms() -> None:
    with pytest.raises(ProtocolError) as caught:
        sasl.choose("auto", ["PLAIN", "USER"], oauth=True, apop_possible=False)

    assert str(caught.value) == (
        'the server does not offer OAUTHBEARER or XOAUTH2 (auth = "auto"); it offers: PLAIN, USER'
    )
    assert caught.value.hint == (
        "this server cannot log in this account with OAuth2; use a password instead"
    )


@pytest.mark.parametrize(
    ("auth", "offered", "oauth", "apop_possible", "chosen"),
    [
        ("scram-sha-256", ALL, False, False, "SCRAM-SHA-256"),
        ("scram-sha-1", ALL, False, False, "SCRAM-SHA-1"),
        ("plain", ALL, False, False, "PLAIN"),
        ("user", ALL, False, False, "USER"),
        ("cram-md5", ALL, False, False, "CRAM-MD5"),
        ("login", ALL, False, False, "LOGIN"),
        ("apop", ["USER"], False, True, "APOP"),
        ("xoauth2", ALL, True, False, "XOAUTH2"),
        ("oauthbearer", ALL, True, False, "OAUTHBEARER"),
    ],
)
def test_choose_named(
    auth: str, offered: list[str], oauth: bool, apop_possible: bool, chosen: str
) -> None:
    assert sasl.choose(auth, offered, oauth=oauth, apop_possible=apop_possible) == chosen


def test_choose_named_but_not_offered_names_what_is() -> None:
    with pytest.raises(ProtocolError) as caught:
        sasl.choose("scram-sha-256", ["PLAIN", "USER"], oauth=False, apop_possible=False)

    assert str(caught.value) == (
        'the server does not offer SCRAM-SHA-256 (auth = "scram-sha-256"); it offers: PLAIN, USER'
    )
    assert caught.value.hint == "set auth to one of: 'plain', 'user'"


def test_choose_apop_without_greeting_timestamp() -> None:
    with pytest.raises(ProtocolError, match=r'does not offer APOP \(auth = "apop"\)'):
        sasl.choose("apop", ["USER"], oauth=False, apop_possible=False)


def test_choose_with_nothing_offered() -> None:
    with pytest.raises(ProtocolError) as caught:
        sasl.choose("auto", [], oauth=False, apop_possible=False)
    assert "it offers: no login method at all" in str(caught.value)


@pytest.mark.parametrize(
    ("auth", "oauth", "message"),
    [
        ("xoauth2", False, 'auth = "xoauth2" sends an OAuth2 access token'),
        ("plain", True, 'auth = "plain" sends a password, but the account has an [oauth2] table'),
        ("kerberos", False, "unknown auth setting 'kerberos'"),
    ],
)
def test_choose_config_mismatch(auth: str, oauth: bool, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        sasl.choose(auth, ALL, oauth=oauth, apop_possible=True)
    assert caught.value.exit_code == ExitCode.CONFIG


# -- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("[AUTH] bad", "AUTH"),
        ("[SYS/TEMP] try later", "SYS/TEMP"),
        ("[in-use] locked", "IN-USE"),
        ("[LOGIN-DELAY]", "LOGIN-DELAY"),
        ("  [SYS/PERM] gone", "SYS/PERM"),
        ("Authentication failed [AUTH]", None),
        ("", None),
        ("[] empty", None),
    ],
)
def test_parse_response_code(text: str, code: str | None) -> None:
    assert sasl.parse_response_code(text) == code


@pytest.mark.parametrize(
    ("code", "exit_code"),
    [
        (None, ExitCode.NOPERM),
        ("AUTH", ExitCode.NOPERM),
        ("SYS/TEMP", ExitCode.TEMPFAIL),
        ("SYS/TEMP/QUOTA", ExitCode.TEMPFAIL),
        ("IN-USE", ExitCode.TEMPFAIL),
        ("LOGIN-DELAY", ExitCode.TEMPFAIL),
        ("SYS/PERM", ExitCode.UNAVAILABLE),
        ("SYS/TEMPEST", ExitCode.NOPERM),  # not in the SYS/TEMP family
        ("SOMETHING-NEW", ExitCode.NOPERM),
    ],
)
def test_exit_code_for(code: str | None, exit_code: ExitCode) -> None:
    assert sasl.exit_code_for(code) == exit_code


@pytest.mark.parametrize(
    ("text", "kind", "exit_code", "message"),
    [
        (
            "[AUTH] Authentication failed.",
            AuthError,
            ExitCode.NOPERM,
            "h refused the login: [AUTH] Authentication failed.",
        ),
        ("", AuthError, ExitCode.NOPERM, "h refused the login: no reason given"),
        (
            "[IN-USE] Mailbox locked",
            RemoteError,
            ExitCode.TEMPFAIL,
            "h refused the login for now: [IN-USE] Mailbox locked",
        ),
        (
            "[LOGIN-DELAY] wait 15 minutes",
            sasl.LoginDelayed,
            ExitCode.TEMPFAIL,
            "h refused the login for now: [LOGIN-DELAY] wait 15 minutes",
        ),
        (
            "[SYS/PERM] Account disabled",
            sasl.LoginUnavailable,
            ExitCode.UNAVAILABLE,
            "h cannot serve this account: [SYS/PERM] Account disabled",
        ),
    ],
)
def test_login_refused(
    text: str, kind: type[RemoteError], exit_code: ExitCode, message: str
) -> None:
    error = sasl.login_refused("h", text)
    assert type(error) is kind
    assert error.exit_code == exit_code
    assert str(error) == message


@pytest.mark.parametrize(
    ("auth", "last", "early"),
    [
        ("auto", "SCRAM-SHA-256", True),
        ("scram-sha-256", "SCRAM-SHA-256", True),
        ("scram-sha-1", "SCRAM-SHA-1", True),
        ("plain", "SCRAM-SHA-256", False),  # the setting changed since: it decides
        ("scram-sha-1", "SCRAM-SHA-256", False),
        ("auto", "PLAIN", False),  # its first line would carry the password
        ("auto", None, False),
        ("xoauth2", "XOAUTH2", False),
    ],
)
def test_only_a_scram_login_the_setting_allows_may_start_before_capa(
    auth: str, last: str | None, early: bool
) -> None:
    assert sasl.may_start_early(auth, last) is early


class _RecordedThread:
    """Stands in for threading.Thread: records what would start, runs nothing."""

    started: ClassVar[list[str]] = []

    def __init__(self, *, target: Callable[[], None], name: str, daemon: bool) -> None:
        self.name = name

    def start(self) -> None:
        _RecordedThread.started.append(self.name)


def test_preload_starts_no_thread_once_scramp_is_imported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A daemon's polls after the first: a thread each time would only cost a GIL hand-off.
    monkeypatch.setattr(sasl.threading, "Thread", _RecordedThread)
    monkeypatch.setattr(_RecordedThread, "started", [])
    assert "scramp" in sys.modules  # imported at the top of this file
    sasl.preload_in_background("auto", oauth=False)
    assert _RecordedThread.started == []
    monkeypatch.delitem(sys.modules, "scramp")  # restored afterwards
    sasl.preload_in_background("auto", oauth=False)
    assert _RecordedThread.started == ["preload-scramp"]
