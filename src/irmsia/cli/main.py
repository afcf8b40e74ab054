"""The ``irmsia`` command line. ``main(argv) -> int`` so tests can run it in-process."""

from __future__ import annotations

import argparse
import getpass
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, TextIO

from irmsia import __version__
from irmsia.config import Settings, load_settings
from irmsia.errors import IrmsiaError
from irmsia.security.policy import Principal, Role
from irmsia.usecases.context import RequestContext

if TYPE_CHECKING:  # the object graph is imported when a command needs it, not for --help
    from irmsia.bootstrap import Container
    from irmsia.usecases.ledger import LedgerServices
    from irmsia.usecases.users import Accounts, CreatedUser

CLI_PRINCIPAL = Principal(id="cli", username="cli", roles=frozenset({Role.ADMIN}), method="cli")
CLI_CTX = RequestContext(principal=CLI_PRINCIPAL, client_ip="local", request_id=None)

Handler = Callable[[argparse.Namespace, Settings, TextIO], int]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="irmsia", description="IRMSIA medical imaging platform")
    parser.add_argument("--version", action="version", version=f"irmsia {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the web server (API, DICOMweb, portal)")
    serve.add_argument("--host", help="bind address (default HOST)")
    serve.add_argument("--port", type=int, help="port (default PORT)")
    serve.set_defaults(handler=_serve)

    user = sub.add_parser("user", help="manage accounts").add_subparsers(dest="user_command", required=True)
    create = user.add_parser("create", help="create an account")
    create.add_argument("username")
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input (else one is generated)",
    )
    create.set_defaults(handler=_user_create)
    listing = user.add_parser("list", help="list accounts")
    listing.set_defaults(handler=_user_list)
    disable = user.add_parser("disable", help="disable an account (revokes its tokens)")
    disable.add_argument("username")
    disable.add_argument("--enable", action="store_true", help="re-enable instead")
    disable.set_defaults(handler=_user_disable)
    set_role = user.add_parser("set-role", help="change an account's role")
    set_role.add_argument("username")
    set_role.add_argument("role", choices=[r.value for r in Role])
    set_role.set_defaults(handler=_user_set_role)
    reset = user.add_parser("reset-password", help="issue a one-time password")
    reset.add_argument("username")
    reset.set_defaults(handler=_user_reset)

    from irmsia.cli import imaging

    imaging.add_commands(sub)

    from irmsia.cli.ledger import add_ledger_commands

    add_ledger_commands(sub, _ledger_services, CLI_CTX)

    db = sub.add_parser("db", help="database").add_subparsers(dest="db_command", required=True)
    upgrade = db.add_parser("upgrade", help="apply migrations")
    upgrade.set_defaults(handler=_db_upgrade)

    config = sub.add_parser("config", help="configuration").add_subparsers(
        dest="config_command", required=True
    )
    check = config.add_parser("check", help="validate and print the effective configuration, secrets masked")
    check.set_defaults(handler=_config_check)
    return parser


def main(
    argv: Sequence[str] | None = None, *, out: TextIO | None = None, settings: Settings | None = None
) -> int:
    """Run one command; return the exit status (0 ok, 1 failure, 2 usage or configuration)."""
    stream = out or sys.stdout
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse has printed its message
        return int(exc.code or 0)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        effective = settings or load_settings()
        handler: Handler = args.handler
        return handler(args, effective, stream)
    except IrmsiaError as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 2 if exc.code == "config_error" else 1
    except KeyboardInterrupt:
        return 130


def entrypoint() -> None:
    sys.exit(main())


@contextmanager
def _container(settings: Settings) -> Iterator[Container]:
    """The object graph of a one-shot command (inline jobs), closed when the command ends."""
    from irmsia.bootstrap import build_container

    container = build_container(settings, executor="inline")
    try:
        yield container
    finally:
        container.close()


@contextmanager
def _ledger_services(settings: Settings) -> Iterator[LedgerServices]:
    with _container(settings) as container:
        yield container.ledger


def _serve(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    from irmsia.api.app import create_app
    from irmsia.bootstrap import build_container

    host, port = args.host or settings.HOST, args.port or settings.PORT
    # The server's container runs jobs on the configured executor (INGEST_EXECUTOR); the
    # one-shot commands use ``_container`` (inline), which finishes every job before exiting.
    container = build_container(settings)
    url = settings.public_url if not (args.host or args.port) else f"http://{host}:{port}"
    try:
        announce_start(container.accounts, url, out)
        app = create_app(container=container)
    except BaseException:
        container.close()  # once serving, the app's shutdown closes it
        raise
    _run_server(app, host=host, port=port, settings=settings)
    return 0


def announce_start(accounts: Accounts, url: str, out: TextIO) -> CreatedUser | None:
    """Print where the server listens; on an empty database create ``admin`` first.

    The first admin's one-time password is printed here, once, and never logged; the account
    must change it before anything else is allowed. Returns the account created, if any.
    """
    created = accounts.bootstrap_admin(CLI_CTX)
    print(f"IRMSIA {__version__} on {url}", file=out)
    print(f"  API docs: {url}/docs    portal: {url}/", file=out)
    if created is not None:
        print("  First run: created the account 'admin' with this one-time password (shown once):", file=out)
        print(f"      {created.one_time_password}", file=out)
        print("  Log in with it; you will be asked to choose a new password.", file=out)
    out.flush()
    return created


def _run_server(app: object, *, host: str, port: int, settings: Settings) -> None:
    """Serve ``app`` until interrupted (uvicorn)."""
    import uvicorn

    # uvicorn's access log prints raw paths and query strings; IRMSIA logs route templates instead.
    uvicorn.run(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        log_level=settings.LOG_LEVEL.lower(),
        access_log=False,
    )


def _user_create(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    password = None
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n") if not sys.stdin.isatty() else getpass.getpass()
    with _container(settings) as container:
        created = container.accounts.create(CLI_CTX, args.username, args.role, password)
    print(f"created {created.user.username} ({created.user.role}) id={created.user.id}", file=out)
    if created.one_time_password:
        print(f"one-time password (change at first login): {created.one_time_password}", file=out)
    return 0


def _user_list(_args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    with _container(settings) as container:
        users = container.accounts.list(CLI_CTX, limit=500)
    print(f"{'USERNAME':<24} {'ROLE':<12} {'STATE':<9} ID", file=out)
    for user in users:
        state = "disabled" if user.disabled else "active"
        print(f"{user.username:<24} {user.role:<12} {state:<9} {user.id}", file=out)
    return 0


def _user_disable(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    with _container(settings) as container:
        accounts = container.accounts
        user = accounts.set_disabled(CLI_CTX, accounts.by_username(args.username).id, not args.enable)
    print(f"{user.username} is now {'disabled' if user.disabled else 'active'}", file=out)
    return 0


def _user_set_role(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    with _container(settings) as container:
        accounts = container.accounts
        user = accounts.set_role(CLI_CTX, accounts.by_username(args.username).id, args.role)
    print(f"{user.username} now has role {user.role}", file=out)
    return 0


def _user_reset(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    with _container(settings) as container:
        accounts = container.accounts
        password = accounts.reset_password(CLI_CTX, accounts.by_username(args.username).id)
    print(f"one-time password for {args.username} (change at next login): {password}", file=out)
    return 0


def _db_upgrade(_args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    from irmsia.db import migrate
    from irmsia.db.engine import make_engine

    engine = make_engine(settings.database_url)
    try:
        migrate.upgrade(engine)
        print(f"database at revision {migrate.current_revision(engine)}", file=out)
    finally:
        engine.dispose()
    return 0


def _config_check(_args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    for name, value in settings.masked().items():
        print(f"{name}={value}", file=out)
    print("configuration OK", file=out)
    return 0
