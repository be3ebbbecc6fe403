"""The OAuth 2.0 client against a real local authorization server (tests/support/oauth2_authority).

Nothing here sleeps: the device flow's ``wait`` is a recorder that also plays the user.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from pop3s_fetch import oauth2
from pop3s_fetch.errors import ConfigError, ConnectError, CredentialError, ExitCode

if TYPE_CHECKING:  # imported by pytest as a plugin; importing it here too would warn
    from tests.support.oauth2_authority import OAuth2Authority

# Until tests/conftest.py lists it.


@dataclass(frozen=True, slots=True)
class Settings:
    """The fields oauth2 reads, as config.OAuth2Settings carries them."""

    token_endpoint: str
    device_endpoint: str
    client_id: str = "pop3s-fetch-test-client"  # the authority's default
    client_secret: str | None = None
    scopes: tuple[str, ...] = ("pop3", "offline_access")
    provider: str = "custom"


def settings_for(authority: OAuth2Authority, **overrides: str | None) -> Settings:
    return Settings(
        token_endpoint=authority.token_endpoint,
        device_endpoint=authority.device_endpoint,
        **overrides,  # type: ignore[arg-type]
    )


class User:
    """Records what the client shows and how long it waits; approves after ``approve_after``."""

    def __init__(
        self, authority: OAuth2Authority, act: Callable[[str], None] | None, after: int
    ) -> None:
        self.authority = authority
        self.act = act
        self.after = after
        self.shown: list[tuple[str, str, int]] = []
        self.waits: list[float] = []

    def show(self, uri: str, user_code: str, expires_in: int) -> None:
        self.shown.append((uri, user_code, expires_in))

    def wait(self, seconds: float) -> None:
        self.waits.append(seconds)
        if self.act is not None and len(self.waits) == self.after:
            self.act(self.shown[0][1])


def test_device_login_waits_out_pending_and_slow_down_then_returns_the_tokens(
    oauth2_authority: OAuth2Authority,
) -> None:
    oauth2_authority.script_polls("authorization_pending", "slow_down", "authorization_pending")
    user = User(oauth2_authority, lambda code: oauth2_authority.approve(code, "alice"), after=4)

    tokens = oauth2.device_login(
        settings_for(oauth2_authority), user.show, account_name="work", wait=user.wait
    )

    assert user.shown == [("https://authority.invalid/device", user.shown[0][1], 600)]
    assert user.waits == [5, 5, 10, 10]  # slow_down adds 5 seconds for good
    assert oauth2_authority.username_for(tokens.access_token) == "alice"
    assert tokens.refresh_token is not None
    assert oauth2_authority.is_live_refresh_token(tokens.refresh_token)
    polls = [r for r in oauth2_authority.token_requests if r.grant_type == oauth2.DEVICE_CODE_GRANT]
    assert len(polls) == 4
    assert polls[0].fields["client_id"] == oauth2_authority.client_id


def test_device_login_accepts_googles_verification_url_spelling(
    oauth2_authority: OAuth2Authority,
) -> None:
    oauth2_authority.verification_field = "verification_url"
    user = User(oauth2_authority, lambda code: oauth2_authority.approve(code, "bob"), after=1)

    tokens = oauth2.device_login(settings_for(oauth2_authority), user.show, wait=user.wait)

    assert user.shown[0][0] == "https://authority.invalid/device"
    assert oauth2_authority.username_for(tokens.access_token) == "bob"


def test_a_denied_device_login_tells_to_log_in_again(oauth2_authority: OAuth2Authority) -> None:
    user = User(oauth2_authority, oauth2_authority.deny, after=2)

    with pytest.raises(CredentialError) as caught:
        oauth2.device_login(
            settings_for(oauth2_authority), user.show, account_name="work", wait=user.wait
        )

    assert str(caught.value) == (
        "the OAuth2 server 127.0.0.1 refused the login (access_denied: the user said no)"
    )
    assert caught.value.hint == "run: pop3s-fetch oauth2 login work"
    assert caught.value.exit_code == ExitCode.NOPERM
    assert len(user.waits) == 2


def test_a_device_code_the_server_expired_ends_the_login(
    oauth2_authority: OAuth2Authority,
) -> None:
    user = User(oauth2_authority, oauth2_authority.expire, after=1)

    with pytest.raises(
        CredentialError, match=r"^the device login code expired before it was approved$"
    ):
        oauth2.device_login(settings_for(oauth2_authority), user.show, wait=user.wait)


def test_the_client_stops_polling_once_expires_in_has_passed(
    oauth2_authority: OAuth2Authority,
) -> None:
    oauth2_authority.expires_in = 12
    user = User(oauth2_authority, None, after=0)

    with pytest.raises(CredentialError, match="expired before it was approved") as caught:
        oauth2.device_login(
            settings_for(oauth2_authority), user.show, account_name="home", wait=user.wait
        )

    assert user.waits == [5, 5, 5]
    assert caught.value.hint == "run: pop3s-fetch oauth2 login home"


def test_refresh_without_rotation_keeps_the_refresh_token(
    oauth2_authority: OAuth2Authority,
) -> None:
    _, refresh_token = oauth2_authority.issue("alice")

    tokens = oauth2.refresh(settings_for(oauth2_authority), refresh_token)

    assert tokens.refresh_token == refresh_token
    assert oauth2_authority.username_for(tokens.access_token) == "alice"
    sent = oauth2_authority.token_requests[-1].fields
    assert sent["grant_type"] == "refresh_token"
    assert sent["refresh_token"] == refresh_token
    assert sent["scope"] == "pop3 offline_access"


def test_refresh_with_rotation_returns_the_new_refresh_token(
    oauth2_authority: OAuth2Authority,
) -> None:
    oauth2_authority.rotate_refresh = True
    _, old = oauth2_authority.issue("alice")

    tokens = oauth2.refresh(settings_for(oauth2_authority), old)

    assert tokens.refresh_token is not None
    assert tokens.refresh_token != old
    assert oauth2_authority.is_live_refresh_token(tokens.refresh_token)
    assert not oauth2_authority.is_live_refresh_token(old)


@pytest.mark.parametrize("rotate", [True, False])
def test_access_token_stores_a_rotated_refresh_token_and_only_then(
    oauth2_authority: OAuth2Authority, rotate: bool
) -> None:
    oauth2_authority.rotate_refresh = rotate
    _, old = oauth2_authority.issue("alice")
    stored: list[str] = []

    access = oauth2.access_token(settings_for(oauth2_authority), "work", lambda: old, stored.append)

    assert oauth2_authority.username_for(access) == "alice"
    if rotate:
        assert len(stored) == 1
        assert oauth2_authority.is_live_refresh_token(stored[0])
    else:
        assert stored == []


def test_a_revoked_refresh_token_asks_for_a_new_login_without_quoting_it(
    oauth2_authority: OAuth2Authority,
) -> None:
    _, refresh_token = oauth2_authority.issue("alice")
    oauth2_authority.revoke(refresh_token)

    with pytest.raises(CredentialError) as caught:
        oauth2.access_token(
            settings_for(oauth2_authority), "work", lambda: refresh_token, pytest.fail
        )

    # The authority echoes the token in error_description; the client must scrub it.
    assert str(caught.value) == (
        "the OAuth2 server 127.0.0.1 refused the refresh token "
        "(invalid_grant: refresh token [hidden] is revoked)"
    )
    assert caught.value.hint == "run: pop3s-fetch oauth2 login work"
    assert caught.value.exit_code == ExitCode.NOPERM
    assert refresh_token not in repr(caught.value.args)
    assert caught.value.__context__ is None  # no HTTPError holding the body behind it


def test_a_wrong_client_secret_is_a_configuration_error(
    oauth2_authority: OAuth2Authority,
) -> None:
    oauth2_authority.client_secret = "right-secret"
    _, refresh_token = oauth2_authority.issue("alice")

    tokens = oauth2.refresh(
        settings_for(oauth2_authority, client_secret="right-secret"), refresh_token
    )
    assert oauth2_authority.username_for(tokens.access_token) == "alice"
    with pytest.raises(ConfigError) as caught:
        oauth2.refresh(settings_for(oauth2_authority, client_secret="wrong-secret"), refresh_token)

    assert str(caught.value) == (
        "the OAuth2 server 127.0.0.1 refused the refresh (invalid_client: unknown client)"
    )
    assert "wrong-secret" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "http://mail.example.com/token",
        "http://192.0.2.7/token",
        "ftp://127.0.0.1/token",
        "http://127.0.0.2/token",  # loopback, but not one the configuration accepts either
    ],
)
def test_plain_http_is_refused_except_to_loopback(url: str) -> None:
    settings = Settings(token_endpoint=url, device_endpoint="https://login.example.com/device")

    with pytest.raises(ConfigError, match="must be an https:// URL") as caught:
        oauth2.refresh(settings, "a-refresh-token")

    assert caught.value.exit_code == ExitCode.CONFIG


def test_a_server_error_is_temporary(oauth2_authority: OAuth2Authority) -> None:
    oauth2_authority.fail_with_status = 503

    with pytest.raises(ConnectError) as caught:
        oauth2.refresh(settings_for(oauth2_authority), "a-refresh-token")

    assert str(caught.value) == "the OAuth2 server 127.0.0.1 failed (HTTP 503)"
    assert caught.value.exit_code == ExitCode.TEMPFAIL


def test_an_unreachable_server_is_temporary() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/token"

    with pytest.raises(ConnectError, match=r"^cannot reach the OAuth2 server 127\.0\.0\.1: "):
        oauth2.refresh(Settings(token_endpoint=url, device_endpoint=url), "a-refresh-token")


def test_tokens_repr_hides_the_tokens() -> None:
    tokens = oauth2.Tokens("access-secret", 1234.0, "refresh-secret")

    assert repr(tokens) == (
        "Tokens(access_token='[hidden]', expires_at=1234.0, refresh_token='[hidden]')"
    )
    assert "None" in repr(oauth2.Tokens("access-secret", 1.0, None))


def test_auto_approval_lets_a_login_finish_on_the_first_poll(
    oauth2_authority: OAuth2Authority,
) -> None:
    oauth2_authority.auto_approve_as = "carol"
    user = User(oauth2_authority, None, after=0)

    tokens = oauth2.device_login(settings_for(oauth2_authority), user.show, wait=user.wait)

    assert user.waits == [5]
    assert oauth2_authority.user_codes == [user.shown[0][1]]
    assert oauth2_authority.username_for(tokens.access_token) == "carol"
    assert tokens.access_token in oauth2_authority.issued_tokens
    assert tokens.refresh_token in oauth2_authority.issued_tokens


def test_an_unknown_client_id_is_a_configuration_error(oauth2_authority: OAuth2Authority) -> None:
    user = User(oauth2_authority, None, after=0)

    with pytest.raises(ConfigError) as caught:
        oauth2.device_login(
            settings_for(oauth2_authority, client_id="someone-else"), user.show, wait=user.wait
        )

    assert str(caught.value) == (
        "the OAuth2 server 127.0.0.1 refused the device authorization (invalid_client)"
    )
    assert user.shown == []
