"""Portal sessions: cookies, CSRF, expiry, refresh, logout, forced password change."""

from __future__ import annotations

from http.cookies import SimpleCookie

import pytest
from fastapi import FastAPI

from irmsia.bootstrap import Container
from irmsia.db.auditlog import AuditFilter
from irmsia.errors import NotFound
from irmsia.portal.sessions import LOGIN_COOKIE, SESSION_COOKIE
from irmsia.portal.web import install
from tests.conftest import TEST_PASSWORD, FakeClock
from tests.factories import make_ct, to_bytes
from tests.integration.portal.conftest import Browser, BrowserFactory, World, csrf_of
from tests.support import CLI_CTX


def _cookie_attributes(header: str, name: str) -> dict[str, str]:
    for part in header.split(", "):
        if part.startswith(f"{name}="):
            cookie = SimpleCookie()
            cookie.load(part)
            morsel = cookie[name]
            return {
                key: str(morsel[key]) for key in ("path", "httponly", "samesite", "secure") if morsel[key]
            }
    raise AssertionError(f"no {name} cookie set")


def _actions(container: Container, action: str) -> list[str]:
    return [e.outcome for e in container.audit.search(CLI_CTX, AuditFilter(action=action)).items]


def test_login_sets_an_opaque_httponly_samesite_cookie(browser: BrowserFactory, container: Container) -> None:
    container.accounts.create(CLI_CTX, "reader1", "clinician", TEST_PASSWORD)
    visitor = browser()
    response = visitor.login("reader1")
    assert response.status_code == 303
    attributes = _cookie_attributes(response.headers["set-cookie"], SESSION_COOKIE)
    assert attributes == {"path": "/portal", "httponly": "True", "samesite": "lax"}
    value = visitor.http.cookies[SESSION_COOKIE]
    # An opaque id and its signature: no token, no user id, no role in the cookie.
    assert value.count(".") == 1 and "eyJ" not in value
    assert container.accounts.by_username("reader1").id not in value
    assert _actions(container, "auth.login") == ["success"]


def test_cookies_are_secure_over_https(app: FastAPI, container: Container) -> None:
    container.accounts.create(CLI_CTX, "reader1", "clinician", TEST_PASSWORD)
    secure = Browser(app, base_url="https://testserver")
    response = secure.login("reader1")
    assert response.status_code == 303
    assert _cookie_attributes(response.headers["set-cookie"], SESSION_COOKIE)["secure"] == "True"
    secure.close()


def test_install_is_idempotent_and_secure_can_be_forced(tmp_path, db_url: str) -> None:  # type: ignore[no-untyped-def]
    from irmsia.api.app import create_app
    from irmsia.bootstrap import build_container
    from tests.conftest import make_settings

    forced = build_container(make_settings(tmp_path / "s", db_url, PORTAL_COOKIE_SECURE="always"))
    app = create_app(container=forced)  # create_app installs the portal from the settings
    routes = len(app.routes)
    install(app, cookie_secure=False)  # a second install changes nothing
    assert len(app.routes) == routes
    plain_http = Browser(app)
    response = plain_http.get("/portal/login")
    assert _cookie_attributes(response.headers["set-cookie"], LOGIN_COOKIE)["secure"] == "True"
    plain_http.close()
    forced.close()


def test_a_new_session_id_at_every_login(browser: BrowserFactory, container: Container) -> None:
    container.accounts.create(CLI_CTX, "reader1", "clinician", TEST_PASSWORD)
    visitor = browser()
    visitor.login("reader1")
    first = visitor.http.cookies[SESSION_COOKIE]
    visitor.http.cookies.delete(SESSION_COOKIE)
    visitor.login("reader1")
    assert visitor.http.cookies[SESSION_COOKIE] != first


def test_a_forged_or_tampered_cookie_is_anonymous(browser: BrowserFactory, world: World) -> None:
    reader = browser("clinician")
    value = reader.http.cookies[SESSION_COOKIE]
    session_id, _, signature = value.partition(".")
    assert reader.get("/portal/worklist").status_code == 200
    for forged in (f"{session_id}.{signature[:-2]}AA", f"{session_id[:-1]}x.{signature}", "nonsense"):
        stranger = browser()
        stranger.http.cookies.set(SESSION_COOKIE, forged, path="/portal")
        response = stranger.get("/portal/worklist")
        assert response.status_code == 303
        assert response.headers["location"].startswith("/portal/login")


def test_wrong_password_re_renders_the_form_with_401(browser: BrowserFactory, container: Container) -> None:
    container.accounts.create(CLI_CTX, "reader1", "clinician", TEST_PASSWORD)
    response = browser().login("reader1", "not the password")
    assert response.status_code == 401
    assert "Incorrect username or password." in response.text
    assert SESSION_COOKIE not in response.headers.get("set-cookie", "")
    assert _actions(container, "auth.login") == ["failure"]


def test_repeated_failures_are_throttled(browser: BrowserFactory, container: Container) -> None:
    container.accounts.create(CLI_CTX, "reader1", "clinician", TEST_PASSWORD)
    visitor = browser()
    statuses = [
        visitor.login("reader1", "wrong").status_code for _ in range(container.settings.LOGIN_MAX_FAILURES)
    ]
    assert statuses == [401] * container.settings.LOGIN_MAX_FAILURES
    throttled = visitor.login("reader1")
    assert throttled.status_code == 429
    assert int(throttled.headers["retry-after"]) > 0
    assert "Too many failed sign-ins" in throttled.text


def test_login_without_the_form_nonce_is_refused(browser: BrowserFactory, container: Container) -> None:
    container.accounts.create(CLI_CTX, "reader1", "clinician", TEST_PASSWORD)
    visitor = browser()
    response = visitor.http.post(
        "/portal/login", data={"username": "reader1", "password": TEST_PASSWORD, "csrf_token": "guess"}
    )
    assert response.status_code == 403
    assert SESSION_COOKIE not in response.headers.get("set-cookie", "")
    assert _actions(container, "auth.login") == []


def test_loading_the_sign_in_page_again_does_not_expire_a_form_on_screen(
    browser: BrowserFactory, container: Container
) -> None:
    # A second tab, or an image request of a page signed out meanwhile that is redirected to
    # the sign-in page, must not invalidate the form the user is filling in.
    container.accounts.create(CLI_CTX, "reader2", "clinician", TEST_PASSWORD)
    visitor = browser()
    first = csrf_of(visitor.http.get("/portal/login").text)
    again = visitor.http.get("/portal/login")
    assert csrf_of(again.text) == first
    response = visitor.http.post(
        "/portal/login", data={"username": "reader2", "password": TEST_PASSWORD, "csrf_token": first}
    )
    assert response.status_code == 303 and SESSION_COOKIE in response.headers.get("set-cookie", "")
    # A malformed pre-login cookie is replaced, not trusted.
    stranger = browser()
    stranger.http.cookies.set(LOGIN_COOKIE, "planted", path="/portal/login")
    assert csrf_of(stranger.http.get("/portal/login").text) != "planted"


def test_a_signed_out_image_request_gets_401_not_the_sign_in_page(
    browser: BrowserFactory, world: World
) -> None:
    # A lazily loaded thumbnail of a page whose session ended: redirected to the sign-in page,
    # it would set a new pre-login token while the user fills in another load's form.
    visitor = browser()
    image = visitor.get(f"/portal/images/{world.image_ids[0]}/thumbnail", headers={"Sec-Fetch-Dest": "image"})
    assert image.status_code == 401
    assert LOGIN_COOKIE not in image.headers.get("set-cookie", "")
    page = visitor.get(f"/portal/studies/{world.study_id}", headers={"Sec-Fetch-Dest": "document"})
    assert page.status_code == 303 and page.headers["location"].startswith("/portal/login?next=")
    # Without Fetch Metadata (older browsers, scripts) a GET is still treated as navigation.
    assert visitor.get(f"/portal/studies/{world.study_id}").status_code == 303


@pytest.mark.parametrize(
    "target", ["https://evil.example/", "//evil.example/x", "/api/v1/users", "/portal\\x"]
)
def test_the_return_path_after_login_stays_in_the_portal(
    browser: BrowserFactory, container: Container, target: str
) -> None:
    container.accounts.create(CLI_CTX, "reader1", "clinician", TEST_PASSWORD)
    response = browser().login("reader1", next_path=target)
    assert response.status_code == 303
    assert response.headers["location"] == "/portal/"


def test_posts_without_the_csrf_token_change_nothing(browser: BrowserFactory, container: Container) -> None:
    admin = browser("admin")
    for data in ({}, {"csrf_token": "wrong"}):
        response = admin.http.post(
            "/portal/admin/users", data={"username": "mallory", "role": "admin", **data}
        )
        assert response.status_code == 403
        assert "expired" in response.text
    with pytest.raises(NotFound):
        container.accounts.by_username("mallory")


def test_cross_site_posts_are_refused_even_with_the_token(
    browser: BrowserFactory, container: Container
) -> None:
    admin = browser("admin")
    token = admin.csrf()
    for headers in (
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": "https://evil.example"},
        {"Sec-Fetch-Site": "same-site"},
    ):
        response = admin.http.post(
            "/portal/admin/users",
            data={"username": "mallory", "role": "admin", "csrf_token": token},
            headers=headers,
        )
        assert response.status_code == 403
    same_origin = admin.http.post(
        "/portal/admin/users",
        data={"username": "alice", "role": "clinician", "csrf_token": token},
        headers={"Sec-Fetch-Site": "same-origin", "Origin": "null"},
    )
    assert same_origin.status_code == 303


def test_uploads_need_the_csrf_header(browser: BrowserFactory, container: Container) -> None:
    uploader = browser("uploader")
    response = uploader.http.post(
        "/portal/upload/file",
        files=[("files", ("upload", to_bytes(make_ct()), "application/dicom"))],
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert container.search.patients(CLI_CTX).total == 0


def test_sessions_end_after_the_idle_timeout(browser: BrowserFactory, world: World, clock: FakeClock) -> None:
    reader = browser("clinician")
    clock.advance(minutes=29)
    assert reader.get("/portal/worklist").status_code == 200
    clock.advance(minutes=31)
    response = reader.get("/portal/worklist")
    assert response.status_code == 303
    assert response.headers["location"].startswith("/portal/login")


def test_access_tokens_are_refreshed_quietly(
    browser: BrowserFactory, world: World, clock: FakeClock, container: Container
) -> None:
    reader = browser("clinician")
    for _ in range(4):  # 4 x 14 minutes: past several access-token lifetimes, never idle for 30
        clock.advance(minutes=14)
        assert reader.get("/portal/worklist").status_code == 200
    assert _actions(container, "auth.refresh").count("success") >= 3


def test_disabling_an_account_ends_its_sessions_at_once(
    browser: BrowserFactory, world: World, container: Container
) -> None:
    reader = browser("clinician")
    assert reader.get("/portal/worklist").status_code == 200
    container.accounts.set_disabled(CLI_CTX, container.accounts.by_username("clinician1").id, True)
    response = reader.get("/portal/worklist")
    assert response.status_code == 303
    assert response.headers["location"].startswith("/portal/login")


def test_logout_revokes_the_session_and_its_refresh_tokens(
    browser: BrowserFactory, world: World, container: Container
) -> None:
    reader = browser("clinician")
    stolen = reader.http.cookies[SESSION_COOKIE]
    response = reader.post("/portal/logout")
    assert response.status_code == 303
    assert response.headers["location"] == "/portal/login?signed_out=1"
    assert 'irmsia_session=""' in response.headers["set-cookie"]
    assert _actions(container, "auth.logout") == ["success"]
    replay = browser()
    replay.http.cookies.set(SESSION_COOKIE, stolen, path="/portal")
    assert replay.get("/portal/worklist").status_code == 303
    assert "You have signed out." in reader.get("/portal/login?signed_out=1").text


def test_a_required_password_change_comes_first(app: FastAPI, world: World, container: Container) -> None:
    created = container.accounts.create(CLI_CTX, "newbie", "clinician")  # generated one-time password
    assert created.one_time_password
    newbie = Browser(app)
    assert newbie.login("newbie", created.one_time_password).status_code == 303
    for path in ("/portal/", "/portal/worklist", f"/portal/studies/{world.study_id}"):
        response = newbie.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"] == "/portal/password"
    page = newbie.get("/portal/password")
    assert "requires a new password" in page.text
    token = csrf_of(page.text)
    mismatch = newbie.http.post(
        "/portal/password",
        data={
            "csrf_token": token,
            "current_password": created.one_time_password,
            "new_password": "one",
            "confirm_password": "two",
        },
    )
    assert mismatch.status_code == 400 and "do not match" in mismatch.text
    wrong = newbie.http.post(
        "/portal/password",
        data={
            "csrf_token": token,
            "current_password": "not my password",
            "new_password": "a fresh passphrase",
            "confirm_password": "a fresh passphrase",
        },
    )
    assert wrong.status_code == 400 and "incorrect" in wrong.text
    changed = newbie.http.post(
        "/portal/password",
        data={
            "csrf_token": token,
            "current_password": created.one_time_password,
            "new_password": "a fresh passphrase",
            "confirm_password": "a fresh passphrase",
        },
    )
    assert changed.status_code == 303
    after = newbie.get("/portal/worklist")
    assert after.status_code == 200
    assert "Your password has been changed." in after.text
    assert "Your password has been changed." not in newbie.get("/portal/worklist").text  # shown once
    newbie.close()
