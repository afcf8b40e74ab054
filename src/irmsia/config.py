"""Settings: the only module that reads the environment.

``load_settings()`` reads environment variables and an optional ``.env`` file once, at
start-up, into one typed, validated ``Settings`` object that the entry points hand to
``bootstrap``. An invalid value raises ``ConfigError`` with one line naming the variable
and what is expected. In development, missing secrets are generated once and kept in
``<data dir>/secrets.json`` (mode 0600); in production a missing or placeholder secret
refuses to start.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import stat
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from irmsia.errors import ConfigError

log = logging.getLogger(__name__)

# Values that appear in examples and tutorials: never acceptable as real secrets.
PLACEHOLDER_SECRETS = frozenset(
    {"", "change-me", "changeme", "secret", "your-secret-key", "your-secret-key-here", "dev", "test"}
)
GENERATED_SECRETS = ("SECRET_KEY", "ENCRYPTION_KEY", "PSEUDONYM_KEY", "LEDGER_SIGNING_KEY")
ANCHOR_KINDS = frozenset({"mock", "ipfs", "fabric"})
AI_PROVIDERS = frozenset({"mock", "builtin", "torchxrayvision", "onnx", "huggingface", "openai"})


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class Settings(BaseSettings):
    """Every configuration variable of IRMSIA, with its default.

    Field names are the environment variable names (case-insensitive). The README's
    configuration table is generated from the same list.
    """

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False, frozen=True
    )

    # --- runtime -----------------------------------------------------------------
    IRMSIA_ENV: Environment = Field(Environment.DEVELOPMENT, description="development, test or production")
    IRMSIA_DATA_DIR: Path = Field(
        Path("data"), description="where the SQLite file, blobs and dev secrets live"
    )
    HOST: str = Field("127.0.0.1", description="address `irmsia serve` binds")
    PORT: int = Field(8000, ge=1, le=65535, description="port `irmsia serve` binds")
    PUBLIC_URL: str = Field(
        "",
        description="external base URL, used in printed links and the OIDC redirect URI (default http://HOST:PORT)",
    )
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log level")

    # --- secrets -----------------------------------------------------------------
    SECRET_KEY: SecretStr | None = Field(
        None, description="signs access tokens and sessions (≥ 32 characters)"
    )
    ENCRYPTION_KEY: SecretStr | None = Field(
        None, description="key-encryption key: 64 hex characters (32 bytes)"
    )
    ENCRYPTION_KEY_FILE: Path | None = Field(
        None,
        description="file holding ENCRYPTION_KEY (64 hex characters); excludes ENCRYPTION_KEY; "
        "mode 0600 or stricter required in production",
    )
    PSEUDONYM_KEY: SecretStr | None = Field(
        None, description="HMAC key for patient pseudonyms, UID and date-shift derivation (≥ 32 characters)"
    )

    # --- database ----------------------------------------------------------------
    DATABASE_URL: str = Field("", description="SQLAlchemy URL; default sqlite:///<data dir>/irmsia.db")
    DB_AUTO_UPGRADE: bool | None = Field(
        None, description="apply migrations at start (default: yes in development/test, no in production)"
    )

    # --- authentication ----------------------------------------------------------
    ACCESS_TOKEN_TTL_SECONDS: int = Field(900, ge=60, le=86400, description="lifetime of an access token")
    REFRESH_TOKEN_TTL_SECONDS: int = Field(
        7 * 86400, ge=300, le=90 * 86400, description="lifetime of a refresh token"
    )
    ARGON2_TIME_COST: int = Field(3, ge=1, le=20, description="argon2id passes per password hash")
    ARGON2_MEMORY_KIB: int = Field(65536, ge=8, le=4 << 20, description="argon2id memory per password hash")
    LOGIN_MAX_FAILURES: int = Field(
        5, ge=1, description="failed logins per account or client before throttling"
    )
    LOGIN_WINDOW_SECONDS: int = Field(300, ge=1, description="window and lock-out time for failed logins")
    OIDC_ISSUER: str = Field("", description="OIDC issuer URL; enables bearer tokens from that provider")
    OIDC_AUDIENCE: str = Field("", description="expected `aud` of OIDC tokens (required with OIDC_ISSUER)")
    OIDC_JWKS_URL: str = Field("", description="JWKS URL (default: discovered from the issuer)")
    OIDC_ROLE_CLAIM: str = Field(
        "roles", description="claim holding roles; dotted path allowed (realm_access.roles)"
    )
    OIDC_ROLE_MAP: dict[str, str] = Field(
        default_factory=dict,
        description='JSON map from IdP role to IRMSIA role, e.g. {"Radiology": "radiologist"}',
    )
    OIDC_CLIENT_ID: str = Field(
        "", description="the portal's client id at the IdP; enables 'Sign in with …' (needs OIDC_ISSUER)"
    )
    OIDC_CLIENT_SECRET: SecretStr | None = Field(
        None, description="client secret of a confidential client (client_secret_basic); unset: public client"
    )
    OIDC_SCOPES: str = Field(
        "openid profile email", description="scopes the portal asks for; must include openid"
    )
    OIDC_PROVIDER_NAME: str = Field(
        "single sign-on", description="provider name on the sign-in button ('Sign in with …')"
    )

    # --- limits ------------------------------------------------------------------
    MAX_JSON_BYTES: int = Field(1 << 20, ge=1024, description="largest accepted JSON/form body")
    MAX_UPLOAD_BYTES: int = Field(2 << 30, ge=1024, description="largest accepted upload request")
    MAX_OBJECT_BYTES: int = Field(1 << 30, ge=1024, description="largest accepted single DICOM object")

    # --- portal ------------------------------------------------------------------
    PORTAL_COOKIE_SECURE: Literal["auto", "always", "never"] = Field(
        "auto", description="Secure flag of portal cookies: auto = over https or with an https PUBLIC_URL"
    )
    PORTAL_SESSION_IDLE_MINUTES: int = Field(
        30, ge=1, le=1440, description="portal sessions end after this long idle"
    )
    PORTAL_SESSION_MAX_HOURS: int = Field(
        12, ge=1, le=720, description="portal sessions end this long after sign-in"
    )

    # --- storage and keys --------------------------------------------------------
    STORAGE_BACKEND: Literal["filesystem", "s3"] = Field("filesystem", description="blob store")
    STORAGE_PATH: Path | None = Field(None, description="filesystem blob root (default <data dir>/blobs)")
    S3_BUCKET: str = Field("", description="bucket for the s3 blob store")
    S3_PREFIX: str = Field("", description="key prefix inside the bucket")
    S3_ENDPOINT_URL: str = Field("", description="S3-compatible endpoint (MinIO, …); empty for AWS")
    S3_REGION: str = Field("us-east-1", description="S3 region")
    S3_ACCESS_KEY_ID: SecretStr | None = Field(None, description="S3 access key (default: boto3's chain)")
    S3_SECRET_ACCESS_KEY: SecretStr | None = Field(None, description="S3 secret key")
    KEY_PROVIDER: Literal["local", "vault"] = Field("local", description="who holds key-encryption keys")
    KEY_RING_PATH: Path | None = Field(
        None, description="local rotated-key ring (default <data dir>/keyring.json)"
    )
    VAULT_ADDR: str = Field("", description="HashiCorp Vault address for KEY_PROVIDER=vault")
    VAULT_TOKEN: SecretStr | None = Field(None, description="Vault token")
    VAULT_TRANSIT_MOUNT: str = Field("transit", description="Vault transit mount")
    VAULT_TRANSIT_KEY: str = Field("irmsia", description="Vault transit key name")

    # --- ingest ------------------------------------------------------------------
    INGEST_EXECUTOR: Literal["thread", "process", "inline"] = Field(
        "process",
        description="where pipeline jobs run: local worker processes, threads of the server, or inline",
    )
    INGEST_WORKERS: int = Field(2, ge=1, le=256, description="parallel pipeline workers")
    VALIDATION_MODE: Literal["strict", "lenient"] = Field("strict", description="DICOM validation policy")
    DEID_OPTIONS: str = Field(
        "retain_long_modified_dates,retain_patient_characteristics,clean_descriptors,clean_structured_content",
        description="comma list of PS3.15 Annex E options applied on top of the Basic Profile",
    )
    BURNED_IN_POLICY: Literal["reject", "quarantine", "mask"] = Field(
        "reject", description="images that may carry burned-in text: reject, quarantine for review, or mask"
    )
    BURNED_IN_MASK_REGIONS: list[tuple[int, int, int, int]] = Field(
        default_factory=list, description="JSON list of [x, y, width, height] pixel regions masked with mask"
    )
    RENDER_16BIT: bool = Field(False, description="also store a 16-bit PNG of every frame")
    THUMBNAIL_SIZE: int = Field(256, ge=16, le=1024, description="longest side of thumbnails, in pixels")
    PNG_COMPRESSION: int = Field(
        1, ge=0, le=9, description="deflate level of stored PNGs (0 stores them uncompressed; 1 is fast)"
    )

    # --- AI ------------------------------------------------------------------------
    AI_PROVIDER: str = Field(
        "builtin", description="mock, builtin, torchxrayvision, onnx, huggingface or openai"
    )
    OPENAI_API_KEY: SecretStr | None = Field(None, description="API key for AI_PROVIDER=openai")
    OPENAI_MODEL: str = Field("gpt-4o", description="model name for AI_PROVIDER=openai")
    OPENAI_BASE_URL: str = Field("https://api.openai.com/v1", description="OpenAI-compatible base URL")
    HUGGINGFACE_MODEL: str = Field("", description="local Hugging Face model directory")
    WEIGHTS_DIR: Path | None = Field(None, description="local directory of model weights")
    AI_AUTO_ANALYZE: bool = Field(
        False, description="analyse every stored image as a pipeline step after ingest"
    )
    AI_ROUTES: str = Field(
        "",
        description='JSON list of routing rules, e.g. [{"modality": "CR", "body_part": "CHEST", "provider": "onnx"}]',
    )
    AI_TIMEOUT_SECONDS: float = Field(
        60.0, gt=0, le=3600, description="time limit of one analysis, retries included"
    )
    AI_MAX_RETRIES: int = Field(2, ge=0, le=10, description="extra attempts for remote providers")
    AI_RETRY_BACKOFF_SECONDS: float = Field(
        0.5, ge=0, le=60, description="first retry delay, doubled each time"
    )
    AI_WORKERS: int = Field(2, ge=1, le=64, description="threads running provider calls")
    AI_DEVICE: Literal["cpu", "cuda"] = Field("cpu", description="device for PyTorch providers")
    AI_ONNX_MODEL_CARD: Path | None = Field(
        None, description="model card of the onnx provider (relative: WEIGHTS_DIR)"
    )
    AI_ONNX_THREADS: int = Field(
        0, ge=0, le=256, description="ONNX Runtime intra-op threads (0: its default)"
    )
    AI_ONNX_SPINNING: bool = Field(
        True, description="ONNX Runtime thread spinning (turn off beside other work)"
    )
    AI_XRV_WEIGHTS: str = Field(
        "densenet121-res224-all", description="torchxrayvision weights file WEIGHTS_DIR/<name>.pt"
    )
    AI_TORCH_THREADS: int = Field(0, ge=0, le=256, description="PyTorch threads (0: its default)")
    AI_REPORT_WRITER: Literal["", "mock", "openai"] = Field(
        "", description="language model that writes the narrative from a vision result (vision + LLM chain)"
    )

    # --- ledger ------------------------------------------------------------------
    BLOCKCHAIN_TYPE: str = Field("mock", description="checkpoint anchors: comma list of mock, ipfs, fabric")
    IPFS_HOST: str = Field("127.0.0.1", description="kubo RPC host")
    IPFS_PORT: int = Field(5001, ge=1, le=65535, description="kubo RPC port")
    LEDGER_ORIGIN: str = Field(
        "irmsia.local/ledger", description="the log's identity: first line of every checkpoint and key name"
    )
    LEDGER_SIGNING_KEY: SecretStr | None = Field(
        None,
        description="Ed25519 signed-note key PRIVATE+KEY+… that signs checkpoints (`irmsia ledger keygen`)",
    )
    LEDGER_CHECKPOINT_INTERVAL_SECONDS: int = Field(
        60, ge=0, description="sign a checkpoint this often when the log grew (0 = off)"
    )
    LEDGER_ANCHOR_INTERVAL_SECONDS: int = Field(
        3600, ge=0, description="publish the latest checkpoint to every anchor this often (0 = off)"
    )
    LEDGER_ANCHOR_TIMEOUT_SECONDS: float = Field(
        10.0, gt=0, le=300, description="timeout of one anchor request"
    )
    LEDGER_VERIFY_INTERVAL_SECONDS: int = Field(
        86400, ge=0, description="run a verification in the background this often (0 = off)"
    )
    LEDGER_VERIFY_SAMPLE: int = Field(
        0, ge=0, description="objects re-hashed by a scheduled verification (0 = all)"
    )
    FABRIC_GATEWAY_URL: str = Field("", description="Fabric Gateway REST sidecar for BLOCKCHAIN_TYPE=fabric")
    FABRIC_CHANNEL: str = Field("mychannel", description="Fabric channel of the checkpoint chaincode")
    FABRIC_CHAINCODE: str = Field("irmsia-ledger", description="chaincode that keeps checkpoints")

    # --- validators ----------------------------------------------------------------
    @field_validator("ENCRYPTION_KEY")
    @classmethod
    def _hex_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        raw = value.get_secret_value().strip()
        if len(raw) != 64:
            raise ValueError(f"must be 64 hex characters (32 bytes); got {len(raw)} characters")
        try:
            bytes.fromhex(raw)
        except ValueError:
            raise ValueError("must be 64 hex characters (32 bytes); it contains non-hex characters") from None
        return SecretStr(raw.lower())

    @field_validator("SECRET_KEY", "PSEUDONYM_KEY")
    @classmethod
    def _long_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        raw = value.get_secret_value()
        if raw.strip().lower() in PLACEHOLDER_SECRETS:
            return value  # judged by environment in the model validator
        if len(raw) < 32:
            raise ValueError(f"must be at least 32 characters; got {len(raw)} characters")
        return value

    @field_validator("AI_PROVIDER")
    @classmethod
    def _ai_provider(cls, value: str) -> str:
        value = value.strip().lower()
        if value not in AI_PROVIDERS:
            raise ValueError(f"must be one of {', '.join(sorted(AI_PROVIDERS))}; got {value!r}")
        return value

    @field_validator("BLOCKCHAIN_TYPE")
    @classmethod
    def _anchors(cls, value: str) -> str:
        kinds = [part.strip().lower() for part in value.split(",") if part.strip()]
        unknown = [kind for kind in kinds if kind not in ANCHOR_KINDS]
        if unknown:
            raise ValueError(f"must be a comma list of {', '.join(sorted(ANCHOR_KINDS))}; got {unknown[0]!r}")
        return ",".join(kinds)

    @field_validator("LEDGER_ORIGIN")
    @classmethod
    def _origin(cls, value: str) -> str:
        value = value.strip()
        if not value or "+" in value or any(ch.isspace() for ch in value):
            raise ValueError("must be non-empty, without spaces or '+', e.g. hospital.example/irmsia-ledger")
        return value

    @field_validator("LEDGER_SIGNING_KEY")
    @classmethod
    def _note_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or value.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS:
            return value  # judged by environment (generated in development, refused in production)
        from irmsia.errors import CryptoError
        from irmsia.ledger.checkpoint import NoteSigner

        try:
            NoteSigner.from_string(value.get_secret_value().strip())
        except CryptoError:
            # Never echo the value: it is secret key material.
            raise ValueError(
                "must be a signed-note key PRIVATE+KEY+<name>+<keyid>+<key>; see `irmsia ledger keygen`"
            ) from None
        return SecretStr(value.get_secret_value().strip())

    @field_validator("DEID_OPTIONS")
    @classmethod
    def _deid_options(cls, value: str) -> str:
        from irmsia.domain.deid import DeidOptions

        known = {name for name in DeidOptions.__dataclass_fields__}
        names = [part.strip().lower() for part in value.split(",") if part.strip()]
        unknown = [name for name in names if name not in known]
        if unknown:
            raise ValueError(f"must be a comma list of {', '.join(sorted(known))}; got {unknown[0]!r}")
        if "retain_long_full_dates" in names and "retain_long_modified_dates" in names:
            raise ValueError("cannot retain both full and modified dates")
        return ",".join(names)

    @field_validator("OIDC_ROLE_MAP", "BURNED_IN_MASK_REGIONS", mode="before")
    @classmethod
    def _role_map(cls, value: Any) -> Any:
        if isinstance(value, str):
            if not value.strip():
                return {}
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise ValueError("must be valid JSON") from None
        return value

    @field_validator("OIDC_CLIENT_SECRET")
    @classmethod
    def _optional_secret(cls, value: SecretStr | None) -> SecretStr | None:
        # Empty means unset: a public client (PKCE only).
        return value if value is not None and value.get_secret_value().strip() else None

    @field_validator("OIDC_SCOPES")
    @classmethod
    def _scopes(cls, value: str) -> str:
        scopes = value.split()
        # RFC 6749 §3.3: scope tokens are printable ASCII without space, '"' or '\\'.
        if any(not all(0x21 <= ord(ch) <= 0x7E and ch not in '"\\' for ch in scope) for scope in scopes):
            raise ValueError("must be space-separated scope names of printable ASCII")
        if "openid" not in scopes:
            raise ValueError(f"must include openid; got {value.strip()!r}")
        return " ".join(dict.fromkeys(scopes))

    @field_validator("OIDC_PROVIDER_NAME")
    @classmethod
    def _provider_name(cls, value: str) -> str:
        value = " ".join(value.split())
        if not value or len(value) > 64:
            raise ValueError("must be 1 to 64 characters")
        return value

    @field_validator("DATABASE_URL")
    @classmethod
    def _database_url(cls, value: str) -> str:
        if value and not value.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:")):
            raise ValueError("must be a sqlite:/// or postgresql:// URL")
        if value.startswith("postgresql://"):
            return "postgresql+psycopg://" + value.removeprefix("postgresql://")
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> Settings:
        if self.is_production and self.PORTAL_COOKIE_SECURE == "never":
            raise ValueError("PORTAL_COOKIE_SECURE=never is refused in production")
        if self.OIDC_ISSUER and not self.OIDC_AUDIENCE:
            raise ValueError("OIDC_AUDIENCE must be set when OIDC_ISSUER is set")
        if self.OIDC_CLIENT_ID and not self.OIDC_ISSUER:
            raise ValueError("OIDC_ISSUER must be set when OIDC_CLIENT_ID is set")
        if self.OIDC_CLIENT_SECRET is not None and not self.OIDC_CLIENT_ID:
            raise ValueError("OIDC_CLIENT_ID must be set when OIDC_CLIENT_SECRET is set")
        if self.OIDC_CLIENT_ID:
            _check_public_url(self.PUBLIC_URL, self.is_production)
        if self.STORAGE_BACKEND == "s3" and not self.S3_BUCKET:
            raise ValueError("S3_BUCKET must be set when STORAGE_BACKEND=s3")
        if "fabric" in self.anchors and not self.FABRIC_GATEWAY_URL:
            raise ValueError("FABRIC_GATEWAY_URL must be set when BLOCKCHAIN_TYPE includes fabric")
        if self.ENCRYPTION_KEY is not None and self.ENCRYPTION_KEY_FILE is not None:
            raise ValueError("ENCRYPTION_KEY and ENCRYPTION_KEY_FILE exclude each other; set only one")
        if self.KEY_PROVIDER == "vault" and not (self.VAULT_ADDR and self.VAULT_TOKEN):
            raise ValueError("VAULT_ADDR and VAULT_TOKEN must be set when KEY_PROVIDER=vault")
        return self

    # --- derived values ------------------------------------------------------------
    @property
    def is_production(self) -> bool:
        return self.IRMSIA_ENV is Environment.PRODUCTION

    @property
    def database_url(self) -> str:
        return self.DATABASE_URL or f"sqlite:///{(self.IRMSIA_DATA_DIR / 'irmsia.db').as_posix()}"

    @property
    def storage_path(self) -> Path:
        return self.STORAGE_PATH or self.IRMSIA_DATA_DIR / "blobs"

    @property
    def key_ring_path(self) -> Path:
        return self.KEY_RING_PATH or self.IRMSIA_DATA_DIR / "keyring.json"

    @property
    def auto_upgrade(self) -> bool:
        return self.DB_AUTO_UPGRADE if self.DB_AUTO_UPGRADE is not None else not self.is_production

    @property
    def public_url(self) -> str:
        return self.PUBLIC_URL.rstrip("/") or f"http://{self.HOST}:{self.PORT}"

    @property
    def oidc_redirect_uri(self) -> str:
        """Where the IdP sends the browser back after sign-in (register it at the IdP)."""
        return f"{self.public_url}/portal/oidc/callback"

    @property
    def oidc_post_logout_redirect_uri(self) -> str:
        """Where the IdP sends the browser after signing out there (register it too)."""
        return f"{self.public_url}/portal/login"

    @property
    def anchors(self) -> list[str]:
        return [kind for kind in self.BLOCKCHAIN_TYPE.split(",") if kind]

    def secret(self, name: str) -> bytes:
        """Return a secret's bytes (ENCRYPTION_KEY decoded from hex)."""
        value: SecretStr | None = getattr(self, name)
        if value is None:
            raise ConfigError(f"{name} is not set")
        raw = value.get_secret_value()
        return bytes.fromhex(raw) if name == "ENCRYPTION_KEY" else raw.encode()

    def as_env(self) -> dict[str, str]:
        """Every setting as environment strings, secrets revealed: for worker processes only.

        With ENCRYPTION_KEY_FILE the key itself is left out: the worker reads the file.
        """
        out: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None or (name == "ENCRYPTION_KEY" and self.ENCRYPTION_KEY_FILE is not None):
                continue
            if isinstance(value, SecretStr):
                out[name] = value.get_secret_value()
            elif isinstance(value, dict):
                out[name] = json.dumps(value)
            elif isinstance(value, bool):
                out[name] = "true" if value else "false"
            else:
                out[name] = str(value.value if isinstance(value, StrEnum) else value)
        return out

    def masked(self) -> dict[str, str]:
        """The effective configuration as strings, secrets masked (for `irmsia config check`)."""
        out: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                out[name] = "********"
            elif value is None:
                out[name] = ""
            elif isinstance(value, dict):
                out[name] = json.dumps(value, sort_keys=True)
            else:
                out[name] = str(value.value if isinstance(value, StrEnum) else value)
        out["DATABASE_URL"] = _mask_url(self.database_url)
        return out


def _check_public_url(value: str, production: bool) -> None:
    """PUBLIC_URL makes the OIDC redirect URI: a plain origin (and path), https in production."""
    from urllib.parse import urlsplit

    if not value:
        if production:
            raise ValueError("PUBLIC_URL must be set when OIDC_CLIENT_ID is set in production")
        return
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"PUBLIC_URL must be an http(s) URL without query or fragment; got {value!r}")
    if production and parts.scheme != "https":
        raise ValueError("PUBLIC_URL must be an https:// URL when OIDC_CLIENT_ID is set in production")


def _mask_url(url: str) -> str:
    """Hide a password embedded in a database URL."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:********@{host}" if ":" in credentials else url
    return url


def _first_error_line(exc: ValidationError) -> str:
    error = exc.errors()[0]
    field = ".".join(str(part) for part in error.get("loc", ())) or ""
    message = str(error.get("msg", "is invalid")).removeprefix("Value error, ")
    if not field:  # model-level validator: the message names its variables
        return message
    if error.get("type") in {"enum", "literal_error"}:
        return f"{field} {message[0].lower()}{message[1:]}; got {error.get('input')!r}"
    if error.get("type", "").endswith("_parsing") or error.get("type", "").startswith(("greater", "less")):
        return f"{field}: {message}"
    return f"{field} {message}"


def load_settings(env: Mapping[str, str] | None = None, *, env_file: str | Path | None = ".env") -> Settings:
    """Read, validate and complete the settings once.

    ``env`` replaces ``os.environ`` (tests pass a dict). Raises ``ConfigError`` with one
    line naming the offending variable.
    """
    try:
        if env is None:
            settings = Settings(_env_file=env_file)
        else:
            values = {
                key.upper(): value for key, value in env.items() if key.upper() in Settings.model_fields
            }
            settings = Settings.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(_first_error_line(exc)) from None
    return _complete_secrets(_read_key_file(settings))


def _read_key_file(settings: Settings) -> Settings:
    """Load ENCRYPTION_KEY from ENCRYPTION_KEY_FILE, when that is set.

    A key file that group or others may access (any of mode 0o077) is refused in production
    and logged as a warning elsewhere, like ssh does with private keys.
    """
    path = settings.ENCRYPTION_KEY_FILE
    if path is None:
        return settings
    from irmsia.crypto.keys import read_master_key_file

    key_file = read_master_key_file(path)
    if key_file.exposed:
        problem = f"ENCRYPTION_KEY_FILE {path} is accessible by group or others (mode {key_file.mode:04o})"
        if settings.is_production:
            raise ConfigError(f"{problem}; run `chmod 600` on it (refused in production)")
        log.warning("%s; run `chmod 600` on it (refused in production)", problem)
    return settings.model_copy(update={"ENCRYPTION_KEY": SecretStr(key_file.key.hex())})


def _complete_secrets(settings: Settings) -> Settings:
    missing = [name for name in GENERATED_SECRETS if _is_unset(getattr(settings, name))]
    if not missing:
        return settings
    if settings.is_production:
        raise ConfigError(
            f"{missing[0]} must be set to a real secret in production (IRMSIA_ENV=production); "
            "it is missing or a placeholder"
        )
    stored = _load_or_create_dev_secrets(settings.IRMSIA_DATA_DIR, missing, settings)
    return settings.model_copy(update={name: SecretStr(stored[name]) for name in missing})


def _is_unset(value: SecretStr | None) -> bool:
    return value is None or value.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS


def _generate_secret(name: str, settings: Settings) -> str:
    """A fresh development secret: a note signing key for the ledger, else 32 random bytes as hex."""
    if name == "LEDGER_SIGNING_KEY":
        from irmsia.ledger.checkpoint import NoteSigner

        return NoteSigner.generate(settings.LEDGER_ORIGIN).to_string()
    return secrets.token_hex(32)


def _load_or_create_dev_secrets(data_dir: Path, names: list[str], settings: Settings) -> dict[str, str]:
    """Generate development secrets once and keep them in a 0600 file in the data dir."""
    path = data_dir / "secrets.json"
    stored: dict[str, str] = {}
    if path.exists():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            raise ConfigError(f"{path} is unreadable; delete it to regenerate development secrets") from None
    created = [name for name in names if name not in stored]
    if created:
        for name in created:
            stored[name] = _generate_secret(name, settings)
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, stat.S_IRUSR | stat.S_IWUSR)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(stored, handle, indent=2, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        log.warning(
            "development mode: generated %s and stored them in %s (mode 0600); "
            "set them explicitly in production",
            ", ".join(created),
            path,
        )
    return stored
