"""The relying party's pure helpers: PKCE, the authorization and end-session URLs, error codes."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from irmsia.errors import ConfigError
from irmsia.security.oidc_client import (
    PKCE,
    TokenEndpoint,
    authorization_url,
    end_session_url,
    error_code,
    new_pkce,
    s256,
)


def test_s256_matches_the_rfc_7636_example() -> None:
    # RFC 7636 Appendix B.
    assert (
        s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    )


def test_new_pkce_pairs_are_random_long_enough_and_consistent() -> None:
    pairs = [new_pkce() for _ in range(20)]

    assert len({pair.verifier for pair in pairs}) == 20
    for pair in pairs:
        assert 43 <= len(pair.verifier) <= 128
        assert set(pair.verifier) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
        assert pair.challenge == s256(pair.verifier) and pair.method == "S256"
        assert pair.verifier not in repr(pair)


def test_authorization_url_keeps_the_endpoint_query_and_adds_the_request() -> None:
    pkce = PKCE(verifier="v" * 43, challenge="c" * 43)
    url = authorization_url(
        "https://login.example.test/tenant/oauth2/v2.0/authorize?p=b2c_1_signin",
        client_id="portal",
        redirect_uri="https://irmsia.example.test/portal/oidc/callback",
        scopes="openid profile",
        state="st",
        nonce="no",
        pkce=pkce,
    )
    parts = urlsplit(url)
    query = {name: values[0] for name, values in parse_qs(parts.query).items()}

    assert parts.path == "/tenant/oauth2/v2.0/authorize"
    assert query == {
        "p": "b2c_1_signin",
        "response_type": "code",
        "client_id": "portal",
        "redirect_uri": "https://irmsia.example.test/portal/oidc/callback",
        "scope": "openid profile",
        "state": "st",
        "nonce": "no",
        "code_challenge": "c" * 43,
        "code_challenge_method": "S256",
    }
    assert "v" * 43 not in url


def test_end_session_url_carries_no_token() -> None:
    url = end_session_url(
        "https://idp.example.test/logout",
        client_id="portal",
        post_logout_redirect_uri="https://x.test/portal/login",
    )

    assert parse_qs(urlsplit(url).query) == {
        "client_id": ["portal"],
        "post_logout_redirect_uri": ["https://x.test/portal/login"],
    }


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("access_denied", "access_denied"),
        ("login_required", "login_required"),
        ("<b>x</b>", "other"),
        (None, "other"),
    ],
)
def test_only_known_error_codes_are_repeated(given: str | None, shown: str) -> None:
    assert error_code(given) == shown


def test_token_endpoint_needs_a_client_id_and_a_redirect_uri() -> None:
    import httpx

    with httpx.Client() as http, pytest.raises(ConfigError):
        TokenEndpoint(http, client_id="", client_secret=None, redirect_uri="https://x.test/cb")
