"""Queries on users, refresh tokens and the login throttle."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, Row, Table, bindparam, func, select, update
from sqlalchemy.orm import Session

from irmsia.db.models import LoginThrottle, RefreshToken, User

_USERS: Table = User.__table__  # type: ignore[assignment]
_ACCOUNT_STATE = select(
    _USERS.c.id, _USERS.c.username, _USERS.c.role, _USERS.c.disabled, _USERS.c.must_change_password
).where(_USERS.c.id == bindparam("user_id"))


def user_by_name(session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == username.strip().lower()))


def user_by_id(session: Session, user_id: str) -> User | None:
    return session.get(User, user_id)


def account_state(connection: Connection, user_id: str) -> Row[tuple[str, str, str, bool, bool]] | None:
    """(id, username, role, disabled, must_change_password) of an account: what every
    authenticated request checks, in one Core query (no ORM session)."""
    return connection.execute(_ACCOUNT_STATE, {"user_id": user_id}).first()  # type: ignore[return-value]


def list_users(session: Session, *, offset: int = 0, limit: int = 100) -> Sequence[User]:
    return session.scalars(select(User).order_by(User.username).offset(offset).limit(limit)).all()


def count_users(session: Session, *, role: str | None = None, active_only: bool = False) -> int:
    query = select(func.count()).select_from(User)
    if role is not None:
        query = query.where(User.role == role)
    if active_only:
        query = query.where(User.disabled.is_(False))
    return int(session.scalar(query) or 0)


def refresh_by_digest(session: Session, digest: str) -> RefreshToken | None:
    return session.scalar(select(RefreshToken).where(RefreshToken.token_hash == digest).with_for_update())


def revoke_family(session: Session, family_id: str, now: datetime) -> None:
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )


def revoke_user_tokens(session: Session, user_id: str, now: datetime) -> None:
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )


def throttle(session: Session, key: str) -> LoginThrottle | None:
    return session.get(LoginThrottle, key)
