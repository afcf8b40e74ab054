"""The role matrix's route discovery sees every route, including those hidden from the schema.

``test_matrix_covers_every_route`` is only as good as ``_app_routes``: a route it cannot see
needs no matrix row. These tests pin what it sees.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

from tests.integration.api.test_role_matrix import (
    MATRIX,
    PUBLIC_DOCS,
    _app_routes,
    _portal_routes,
    _schema_routes,
    _served_routes,
)


def _hidden_router() -> APIRouter:
    router = APIRouter(prefix="/api/v1")

    @router.get("/secret", include_in_schema=False)
    def secret() -> dict[str, str]:
        return {}

    nested = APIRouter(prefix="/inner")

    @nested.delete("/{thing_id}", include_in_schema=False)
    def delete_thing(thing_id: str) -> dict[str, str]:
        return {}

    @nested.post("/visible")
    def visible() -> dict[str, str]:
        return {}

    router.include_router(nested, prefix="/nest")
    return router


def test_discovery_finds_hidden_and_nested_routes_of_a_small_app() -> None:
    app = FastAPI()
    app.include_router(_hidden_router())

    found = _app_routes(app) - PUBLIC_DOCS

    assert found == {
        ("GET", "/api/v1/secret"),
        ("DELETE", "/api/v1/nest/inner/{thing_id}"),
        ("POST", "/api/v1/nest/inner/visible"),
    }
    # The schema alone would miss the hidden two: the router walk is what finds them.
    assert _schema_routes(app) == {("POST", "/api/v1/nest/inner/visible")}


def test_a_hidden_api_route_without_a_matrix_row_is_reported(app: FastAPI) -> None:
    listed = {(entry.method, entry.path) for entry in MATRIX}
    assert _app_routes(app) - PUBLIC_DOCS - _portal_routes() - listed == set()

    app.include_router(_hidden_router())

    unlisted = _app_routes(app) - PUBLIC_DOCS - _portal_routes() - listed
    assert unlisted == {
        ("GET", "/api/v1/secret"),
        ("DELETE", "/api/v1/nest/inner/{thing_id}"),
        ("POST", "/api/v1/nest/inner/visible"),
    }


def test_the_router_walk_sees_every_schema_route_of_the_real_app(app: FastAPI) -> None:
    schema = _schema_routes(app)
    assert any(path.startswith("/api/v1/") for _, path in schema)
    assert schema - _served_routes(app) == set()


def test_portal_routes_excluded_from_the_api_matrix_are_not_api_routes() -> None:
    # The API matrix leaves the portal's routes to the portal matrix; none may hide an API route.
    portal = _portal_routes()
    assert portal
    assert not [path for _, path in portal if path.startswith("/api/")]
