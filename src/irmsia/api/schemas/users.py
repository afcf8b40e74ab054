"""Schemas of the user-management endpoints."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from irmsia.security.policy import Role


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=2, max_length=64)
    role: Role
    password: str | None = Field(None, max_length=1024, description="omit to generate a one-time password")


class UserUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Role | None = None
    disabled: bool | None = None


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    username: str
    role: str
    disabled: bool
    must_change_password: bool
    source: str
    created_at: datetime
    last_login_at: datetime | None


class UserCreated(UserPublic):
    one_time_password: str | None = Field(None, description="shown once; the user must change it")


class PasswordReset(BaseModel):
    one_time_password: str
