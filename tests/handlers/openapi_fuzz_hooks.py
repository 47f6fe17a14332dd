"""Schemathesis checks for tests/handlers/test_openapi_fuzz.py, loaded through SCHEMATHESIS_HOOKS.

Two built-in checks are widened in the test's schemathesis.toml and judged more finely here:

- not_a_server_error lets 503 through; `unavailable_only_when_unconfigured` fails any 503 but those of
  the services the run leaves unconfigured (Stripe, Google Play, Firebase: `*_disabled`).
- positive_data_acceptance lets 415 and 422 through; `valid_data_accepted` fails a schema-valid request
  answered 415/422 unless what was refused is something a JSON schema cannot describe: an opaque cursor
  (only the server's own `next_cursor` values are cursors), a file's content (the type is read from its
  bytes), an email address on a special-use domain (`.test`, `.invalid`: email-validator refuses them),
  a string whose length is only wrong once its surrounding whitespace is trimmed (bodies are trimmed
  before their limits apply: docs/api.md), or a path id that schemathesis filled from a null field of
  an earlier response."""

from __future__ import annotations

import json
from typing import Any

import schemathesis
from schemathesis import Case, CheckContext, Response

UNCONFIGURED = {"billing_disabled", "firebase_disabled"}
# Fields whose validity is state no schema can say: a cursor, a file's bytes, an email's deliverability, a
# file's category (`file_id` of a chat attachment given as knowledge), a position past a chat's last seq
# (`to_seq`, `at_seq`: a stale view) and a variant a reply does not have.
OPAQUE_FIELDS = {"cursor", "file", "email", "file_id", "to_seq", "at_seq", "variant"}


def _error(response: Response) -> dict[str, Any]:
    try:
        error = json.loads(response.content)["error"]
    except (ValueError, KeyError, TypeError):
        return {}
    return error if isinstance(error, dict) else {}


def _trimmed_to_size(body: Any, detail: dict[str, Any]) -> bool:
    if detail.get("type") not in ("string_too_short", "string_too_long"):
        return False
    value = body
    for key in str(detail.get("field", "")).split("."):
        if isinstance(value, dict):
            value = value.get(key)
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return False
    return isinstance(value, str) and value != value.strip()


@schemathesis.check
def unavailable_only_when_unconfigured(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    if response.status_code != 503:
        return None
    code = _error(response).get("code")
    if code not in UNCONFIGURED:
        raise AssertionError(f"503 {code!r}: only unconfigured services ({sorted(UNCONFIGURED)}) may answer 503")
    return None


@schemathesis.check
def valid_data_accepted(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    if response.status_code not in (415, 422) or case.meta is None or not case.meta.generation.mode.is_positive:
        return None
    if any(value is None for value in (case.path_parameters or {}).values()):
        return None  # a link took a null (say a deleted persona's id): "None" is no id
    if response.status_code == 415 and "multipart/form-data" in str(case.media_type or ""):
        return None
    error = _error(response)
    details = [d for d in error.get("details") or [] if isinstance(d, dict)]
    fields = {str(d.get("field")) for d in details}
    if response.status_code == 422 and fields and fields <= OPAQUE_FIELDS:
        return None
    if response.status_code == 422 and details and all(_trimmed_to_size(case.body, d) for d in details):
        return None
    raise AssertionError(f"valid data refused with {response.status_code}: {error}")
