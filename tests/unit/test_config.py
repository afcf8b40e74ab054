"""Settings: one typed object, validated once, with safe secret handling."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from irmsia.config import load_settings
from irmsia.errors import ConfigError
from tests.conftest import LEDGER_TEST_KEY

KEY = "ab" * 32


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"ENCRYPTION_KEY": "ab" * 20},
            "ENCRYPTION_KEY must be 64 hex characters (32 bytes); got 40 characters",
        ),
        (
            {"ENCRYPTION_KEY": "zz" * 32},
            "ENCRYPTION_KEY must be 64 hex characters (32 bytes); it contains non-hex",
        ),
        ({"SECRET_KEY": "short"}, "SECRET_KEY must be at least 32 characters; got 5 characters"),
        ({"PORT": "abc"}, "PORT"),
        ({"IRMSIA_ENV": "prod"}, "IRMSIA_ENV"),
        ({"AI_PROVIDER": "gpt"}, "AI_PROVIDER must be one of"),
        ({"BLOCKCHAIN_TYPE": "mock,bitcoin"}, "BLOCKCHAIN_TYPE must be a comma list"),
        ({"OIDC_ISSUER": "https://idp.example"}, "OIDC_AUDIENCE must be set"),
        ({"OIDC_ROLE_MAP": "{not json"}, "OIDC_ROLE_MAP must be valid JSON"),
        ({"BURNED_IN_MASK_REGIONS": "[[1,2]]"}, "BURNED_IN_MASK_REGIONS"),
        ({"DEID_OPTIONS": "retain_everything"}, "DEID_OPTIONS must be a comma list of"),
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL must be a sqlite:/// or postgresql:// URL"),
        ({"STORAGE_BACKEND": "s3"}, "S3_BUCKET must be set"),
        ({"KEY_PROVIDER": "vault"}, "VAULT_ADDR and VAULT_TOKEN must be set"),
        ({"BLOCKCHAIN_TYPE": "fabric"}, "FABRIC_GATEWAY_URL must be set"),
        ({"LEDGER_SIGNING_KEY": "PRIVATE+KEY+broken"}, "LEDGER_SIGNING_KEY must be a signed-note key"),
        ({"LEDGER_ORIGIN": "has space"}, "LEDGER_ORIGIN must be non-empty"),
    ],
)
def test_invalid_value_stops_with_one_line_naming_the_variable(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"IRMSIA_DATA_DIR": str(tmp_path), **env})
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_development_generates_secrets_once_with_mode_0600(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = load_settings({"IRMSIA_DATA_DIR": str(tmp_path)})
    path = tmp_path / "secrets.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert "generated SECRET_KEY, ENCRYPTION_KEY, PSEUDONYM_KEY, LEDGER_SIGNING_KEY" in caplog.text
    second = load_settings({"IRMSIA_DATA_DIR": str(tmp_path)})
    for name in ("SECRET_KEY", "ENCRYPTION_KEY", "PSEUDONYM_KEY"):
        assert first.secret(name) == second.secret(name)
    assert len(first.secret("ENCRYPTION_KEY")) == 32
    assert first.secret("SECRET_KEY").decode() not in caplog.text


@pytest.mark.parametrize("value", [None, "change-me", "secret"])
def test_production_refuses_missing_or_placeholder_secrets(tmp_path: Path, value: str | None) -> None:
    env = {
        "IRMSIA_DATA_DIR": str(tmp_path),
        "IRMSIA_ENV": "production",
        "ENCRYPTION_KEY": KEY,
        "PSEUDONYM_KEY": "p" * 40,
    }
    if value is not None:
        env["SECRET_KEY"] = value
    with pytest.raises(ConfigError, match="SECRET_KEY must be set to a real secret in production"):
        load_settings(env)
    assert not (tmp_path / "secrets.json").exists()


def test_production_accepts_real_secrets_and_does_not_auto_upgrade(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "IRMSIA_DATA_DIR": str(tmp_path),
            "IRMSIA_ENV": "production",
            "SECRET_KEY": "s" * 40,
            "ENCRYPTION_KEY": KEY.upper(),
            "PSEUDONYM_KEY": "p" * 40,
            "LEDGER_SIGNING_KEY": LEDGER_TEST_KEY,
        }
    )
    assert settings.is_production and not settings.auto_upgrade
    assert settings.secret("ENCRYPTION_KEY") == bytes.fromhex(KEY)


def test_defaults_live_in_the_data_directory(tmp_path: Path) -> None:
    settings = load_settings({"IRMSIA_DATA_DIR": str(tmp_path)})
    assert settings.database_url == f"sqlite:///{tmp_path.as_posix()}/irmsia.db"
    assert settings.storage_path == tmp_path / "blobs"
    assert settings.AI_PROVIDER == "builtin"
    assert settings.auto_upgrade


def test_postgres_url_gets_the_psycopg_driver(tmp_path: Path) -> None:
    settings = load_settings(
        {"IRMSIA_DATA_DIR": str(tmp_path), "DATABASE_URL": "postgresql://u:pw@db/irmsia"}
    )
    assert settings.database_url == "postgresql+psycopg://u:pw@db/irmsia"
    assert settings.masked()["DATABASE_URL"] == "postgresql+psycopg://u:********@db/irmsia"


def test_masked_configuration_hides_every_secret(tmp_path: Path) -> None:
    settings = load_settings({"IRMSIA_DATA_DIR": str(tmp_path), "OPENAI_API_KEY": "sk-canary-123"})
    masked = settings.masked()
    assert masked["OPENAI_API_KEY"] == masked["SECRET_KEY"] == masked["ENCRYPTION_KEY"] == "********"
    assert "sk-canary-123" not in str(masked)


def test_env_file_is_read_when_no_mapping_is_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(f"IRMSIA_DATA_DIR={tmp_path}\nPORT=8123\nAI_PROVIDER=mock\n")
    for name in ("PORT", "AI_PROVIDER", "IRMSIA_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(env_file=env_file)
    assert settings.PORT == 8123
    assert settings.AI_PROVIDER == "mock"


# --- ENCRYPTION_KEY_FILE ---------------------------------------------------------------


def _key_file(tmp_path: Path, content: str = KEY + "\n", mode: int = 0o600) -> Path:
    path = tmp_path / "kek.hex"
    path.write_text(content, encoding="ascii")
    path.chmod(mode)
    return path


def _production(tmp_path: Path, **env: str) -> dict[str, str]:
    return {
        "IRMSIA_DATA_DIR": str(tmp_path / "data"),
        "IRMSIA_ENV": "production",
        "SECRET_KEY": "s" * 40,
        "PSEUDONYM_KEY": "p" * 40,
        "LEDGER_SIGNING_KEY": LEDGER_TEST_KEY,
        **env,
    }


def test_key_file_provides_the_encryption_key(tmp_path: Path) -> None:
    path = _key_file(tmp_path, "  " + KEY.upper() + "\r\n")
    settings = load_settings({"IRMSIA_DATA_DIR": str(tmp_path / "data"), "ENCRYPTION_KEY_FILE": str(path)})
    assert settings.secret("ENCRYPTION_KEY") == bytes.fromhex(KEY)
    # No development key was generated in its place.
    generated = (tmp_path / "data" / "secrets.json").read_text(encoding="utf-8")
    assert "ENCRYPTION_KEY" not in generated
    assert settings.masked()["ENCRYPTION_KEY"] == "********"
    assert KEY not in str(settings.masked())


def test_key_file_in_production_with_mode_0600_is_accepted(tmp_path: Path) -> None:
    path = _key_file(tmp_path, mode=0o400)
    settings = load_settings(_production(tmp_path, ENCRYPTION_KEY_FILE=str(path)))
    assert settings.secret("ENCRYPTION_KEY") == bytes.fromhex(KEY)


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_key_file_open_to_group_or_others_is_refused_in_production(tmp_path: Path, mode: int) -> None:
    path = _key_file(tmp_path, mode=mode)
    with pytest.raises(ConfigError) as caught:
        load_settings(_production(tmp_path, ENCRYPTION_KEY_FILE=str(path)))
    message = str(caught.value)
    assert message == (
        f"ENCRYPTION_KEY_FILE {path} is accessible by group or others (mode {mode:04o}); "
        "run `chmod 600` on it (refused in production)"
    )
    assert KEY not in message


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_key_file_open_to_others_is_only_a_warning_in_development(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _key_file(tmp_path, mode=0o644)
    settings = load_settings({"IRMSIA_DATA_DIR": str(tmp_path / "data"), "ENCRYPTION_KEY_FILE": str(path)})
    assert settings.secret("ENCRYPTION_KEY") == bytes.fromhex(KEY)
    assert f"ENCRYPTION_KEY_FILE {path} is accessible by group or others (mode 0644)" in caplog.text
    assert KEY not in caplog.text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("ab" * 20, "must hold 64 hex characters (32 bytes); it holds 40 characters"),
        ("zz" * 32, "must hold 64 hex characters (32 bytes); it contains other characters"),
        ("ab" * 16 + " " + "ab" * 16, "must hold 64 hex characters (32 bytes); it holds 65 characters"),
        ("", "must hold 64 hex characters (32 bytes); it holds 0 characters"),
        ("ab" * 1000, "must hold 64 hex characters (32 bytes); it is longer than 1024 bytes"),
    ],
)
def test_key_file_with_bad_content_stops_with_one_line(tmp_path: Path, content: str, message: str) -> None:
    path = _key_file(tmp_path, content)
    with pytest.raises(ConfigError) as caught:
        load_settings({"IRMSIA_DATA_DIR": str(tmp_path / "data"), "ENCRYPTION_KEY_FILE": str(path)})
    assert str(caught.value) == f"ENCRYPTION_KEY_FILE {path} {message}"


def test_missing_key_file_stops_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "kek.hex"
    with pytest.raises(ConfigError) as caught:
        load_settings({"IRMSIA_DATA_DIR": str(tmp_path / "data"), "ENCRYPTION_KEY_FILE": str(path)})
    assert str(caught.value) == f"ENCRYPTION_KEY_FILE {path} does not exist"


def test_key_file_that_is_a_folder_stops_with_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"IRMSIA_DATA_DIR": str(tmp_path / "data"), "ENCRYPTION_KEY_FILE": str(tmp_path)})
    assert str(caught.value) == f"ENCRYPTION_KEY_FILE {tmp_path} is not a regular file"


def test_key_and_key_file_exclude_each_other(tmp_path: Path) -> None:
    path = _key_file(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_settings(
            {
                "IRMSIA_DATA_DIR": str(tmp_path / "data"),
                "ENCRYPTION_KEY": "cd" * 32,
                "ENCRYPTION_KEY_FILE": str(path),
            }
        )
    assert str(caught.value) == "ENCRYPTION_KEY and ENCRYPTION_KEY_FILE exclude each other; set only one"


def test_worker_settings_carry_the_key_file_not_the_key(tmp_path: Path) -> None:
    path = _key_file(tmp_path)
    settings = load_settings({"IRMSIA_DATA_DIR": str(tmp_path / "data"), "ENCRYPTION_KEY_FILE": str(path)})
    env = settings.as_env()
    assert "ENCRYPTION_KEY" not in env and env["ENCRYPTION_KEY_FILE"] == str(path)
    assert KEY not in str(env)
    assert load_settings(env).secret("ENCRYPTION_KEY") == bytes.fromhex(KEY)
