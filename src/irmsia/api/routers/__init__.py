"""One router per resource; each carries its full path prefix (so logs and audit see full route templates)."""

API_PREFIX = "/api/v1"
