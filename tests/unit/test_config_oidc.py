"""The settings of the portal's OIDC sign-in: validated in one line, secrets masked."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from irmsia.cli.main import main
from irmsia.config import load_settings
from irmsia.errors import ConfigError
from tests.conftest import LEDGER_TEST_KEY

ISSUER = "https://idp.example.test/realms/irmsia"
OIDC = {"OIDC_ISSUER": ISSUER, "OIDC_AUDIENCE": "api://irmsia", "OIDC_CLIENT_ID": "irmsia-portal"}
PRODUCTION = {
    "IRMSIA_ENV": "production",
    "SECRET_KEY": "s" * 40,
    "ENCRYPTION_KEY": "ab" * 32,
    "PSEUDONYM_KEY": "p" * 40,
    "LEDGER_SIGNING_KEY": LEDGER_TEST_KEY,
}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OIDC_CLIENT_ID": "irmsia-portal"}, "OIDC_ISSUER must be set when OIDC_CLIENT_ID is set"),
        (
            {**OIDC, "OIDC_CLIENT_ID": "", "OIDC_CLIENT_SECRET": "s3cret-value"},
            "OIDC_CLIENT_ID must be set when OIDC_CLIENT_SECRET is set",
        ),
        ({**OIDC, "OIDC_SCOPES": "profile email"}, "OIDC_SCOPES must include openid; got 'profile email'"),
        ({**OIDC, "OIDC_SCOPES": 'openid "x"'}, "OIDC_SCOPES must be space-separated scope names"),
        ({**OIDC, "OIDC_PROVIDER_NAME": "   "}, "OIDC_PROVIDER_NAME must be 1 to 64 characters"),
        ({**OIDC, "PUBLIC_URL": "irmsia.example.test"}, "PUBLIC_URL must be an http(s) URL"),
        ({**OIDC, "PUBLIC_URL": "https://irmsia.example.test/?x=1"}, "without query or fragment"),
        ({**OIDC, **PRODUCTION}, "PUBLIC_URL must be set when OIDC_CLIENT_ID is set in production"),
        (
            {**OIDC, **PRODUCTION, "PUBLIC_URL": "http://irmsia.example.test"},
            "PUBLIC_URL must be an https:// URL when OIDC_CLIENT_ID is set in production",
        ),
    ],
)
def test_invalid_oidc_sign_in_settings_stop_with_one_line(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"IRMSIA_DATA_DIR": str(tmp_path), **env})

    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert "s3cret-value" not in str(caught.value)


def test_defaults_and_derived_redirect_uris(tmp_path: Path) -> None:
    settings = load_settings(
        {"IRMSIA_DATA_DIR": str(tmp_path), **OIDC, "PUBLIC_URL": "https://irmsia.example.test/"}
    )

    assert settings.OIDC_SCOPES == "openid profile email"
    assert settings.OIDC_CLIENT_SECRET is None  # a public client unless a secret is set
    assert settings.oidc_redirect_uri == "https://irmsia.example.test/portal/oidc/callback"
    assert settings.oidc_post_logout_redirect_uri == "https://irmsia.example.test/portal/login"


def test_redirect_uri_defaults_to_host_and_port_in_development(tmp_path: Path) -> None:
    settings = load_settings({"IRMSIA_DATA_DIR": str(tmp_path), **OIDC, "PORT": "8123"})

    assert settings.oidc_redirect_uri == "http://127.0.0.1:8123/portal/oidc/callback"


def test_scopes_are_normalised_and_an_empty_secret_means_a_public_client(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "IRMSIA_DATA_DIR": str(tmp_path),
            **OIDC,
            "OIDC_SCOPES": "  openid   profile openid offline_access ",
            "OIDC_CLIENT_SECRET": "  ",
        }
    )

    assert settings.OIDC_SCOPES == "openid profile offline_access"
    assert settings.OIDC_CLIENT_SECRET is None


def test_production_accepts_an_https_public_url(tmp_path: Path) -> None:
    settings = load_settings(
        {"IRMSIA_DATA_DIR": str(tmp_path), **OIDC, **PRODUCTION, "PUBLIC_URL": "https://irmsia.example.test"}
    )

    assert settings.OIDC_CLIENT_ID == "irmsia-portal"


def test_config_check_masks_the_client_secret(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "IRMSIA_DATA_DIR": str(tmp_path / "data"),
            "DATABASE_URL": f"sqlite:///{tmp_path}/cli.db",
            **OIDC,
            "OIDC_CLIENT_SECRET": "client-secret-canary-42",
        }
    )
    out = io.StringIO()

    assert main(["config", "check"], out=out, settings=settings) == 0

    assert "OIDC_CLIENT_SECRET=********" in out.getvalue()
    assert "OIDC_CLIENT_ID=irmsia-portal" in out.getvalue()
    assert "client-secret-canary-42" not in out.getvalue()
