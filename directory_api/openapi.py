"""The OpenAPI 3 description of the HTTP API, served at /openapi.json."""

from directory_api import __version__, enrolment

MAX_BODY_KIB = enrolment.MAX_BODY_BYTES // 1024

_DETAIL = {
    "type": "object",
    "required": ["detail"],
    "properties": {"detail": {"type": "string"}},
}
_FIELD_ERRORS = {
    "type": "object",
    "description": 'Messages per field; errors that concern no single field are under "non_field_errors".',
    "additionalProperties": {"type": "array", "items": {"type": "string"}},
    "example": {"company_number": ["Must be 8 digits, or 2 capital letters and 6 digits (e.g. 01234567 or SC123456)."]},
}
_ENROLMENT = {
    "type": "object",
    "description": "Unknown extra fields are kept in the stored data and otherwise ignored.",
    "required": ["sso_id", "company_number", "company_name", "company_email", "export_status", "date_of_creation"],
    "additionalProperties": True,
    "properties": {
        "sso_id": {"type": "integer", "format": "int64", "minimum": 1, "maximum": enrolment.BIGINT_MAX},
        "company_number": {
            "type": "string", "pattern": f"^({enrolment.COMPANY_NUMBER.pattern})$", "example": "SC123456",
        },
        "company_name": {"type": "string", "minLength": 1, "maxLength": 255},
        "company_email": {"type": "string", "format": "email", "maxLength": 255},
        "export_status": {"type": "string", "enum": list(enrolment.EXPORT_STATUSES)},
        "date_of_creation": {"type": "string", "format": "date", "description": "Not in the future."},
        "mobile_number": {"type": "string", "maxLength": 20},
        "referrer": {"type": "string", "maxLength": 255},
        "revenue": {
            "type": "string",
            "pattern": r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)$",
            "description": "A decimal number: at most 15 digits before the point and 2 after.",
            "example": "125000.50",
        },
    },
}
_HEALTH = {
    "type": "object",
    "required": ["status", "database", "queue"],
    "properties": {
        "status": {"type": "string", "enum": ["ok", "unavailable"]},
        "database": {"type": "string", "enum": ["ok", "unavailable", "not writable"]},
        "queue": {"type": "string", "enum": ["ok", "unavailable"]},
    },
}


def _json(schema_name: str, description: str, headers: dict | None = None) -> dict:
    response = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}},
    }
    if headers:
        response["headers"] = headers
    return response


_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}
_UNSIGNED = _json("Detail", "Signature missing, wrong, stale or replayed.")
_SIGNED: list[dict[str, list[str]]] = [{"hawk": []}]


def document() -> dict:
    """The OpenAPI document, as a dict ready for JSON."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "directory-api",
            "version": __version__,
            "description": (
                "The Export Directory enrolment service. Every answer is JSON, errors included. "
                "Signed requests carry X-Signature: the Hawk header that sigauth's RequestSigner writes "
                "(sha256 over method, path with query, Content-Type and body; 60 s clock skew; "
                "a nonce is accepted once)."
            ),
        },
        "paths": {
            "/": {
                "get": {
                    "summary": "Hello world, for load balancer checks.",
                    "responses": {"200": _json("Hello", "The service answers.")},
                }
            },
            "/healthcheck/": {
                "get": {
                    "summary": "Whether the database and the enrolment queue answer.",
                    "responses": {
                        "200": _json("Health", "Both answer."),
                        "503": _json("Health", "A part does not answer; the body names which."),
                    },
                }
            },
            "/enrolment/": {
                "post": {
                    "summary": "Queue an enrolment (also accepted at /enrolment without the slash).",
                    "security": _SIGNED,
                    "requestBody": {
                        "required": True,
                        "description": f"A JSON object of at most {MAX_BODY_KIB} KiB, queued unchanged.",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Enrolment"}}},
                    },
                    "responses": {
                        "202": _json("Queued", "Queued; the id names the enrolment from now on."),
                        "400": {
                            "description": (
                                "Not UTF-8, not JSON, nested deeper than 100 levels or holding a character SQS "
                                "cannot carry ({detail}), or fields invalid ({field: [...]})."
                            ),
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "oneOf": [
                                            {"$ref": "#/components/schemas/Detail"},
                                            {"$ref": "#/components/schemas/FieldErrors"},
                                        ]
                                    }
                                }
                            },
                        },
                        "401": _UNSIGNED,
                        "413": _json("Detail", f"The body is larger than {MAX_BODY_KIB} KiB."),
                        "503": _json("Detail", (
                            "The queue did not confirm it took the body; retry the same payload. It may be queued "
                            "(its answer lost): the retry is then saved as that one enrolment, mailed once."
                        ), _RETRY_AFTER),
                    },
                }
            },
            "/enrolment/{id}/": {
                "get": {
                    "summary": "What became of a queued enrolment.",
                    "security": _SIGNED,
                    "parameters": [
                        {"name": "id", "in": "path", "required": True, "schema": {"type": "string"},
                         "description": "The id the 202 answer gave."}
                    ],
                    "responses": {
                        "200": _json("Status", "Saved (created) or set aside (rejected)."),
                        "401": _UNSIGNED,
                        "404": _json("Unknown", "Not saved or set aside yet, or never queued."),
                        "503": _json("Detail", "The database is unavailable.", _RETRY_AFTER),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document.",
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {
                "hawk": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Signature",
                    "description": (
                        "Hawk (sha256) as written by sigauth.helpers.RequestSigner with the shared UI_SECRET."
                    ),
                }
            },
            "schemas": {
                "Hello": {
                    "type": "object",
                    "properties": {"status_code": {"type": "integer"}, "detail": {"type": "string"}},
                    "example": {"status_code": 200, "detail": "Hello world"},
                },
                "Health": _HEALTH,
                "Enrolment": _ENROLMENT,
                "Queued": {
                    "type": "object",
                    "required": ["id", "status"],
                    "properties": {"id": {"type": "string"}, "status": {"type": "string", "enum": ["queued"]}},
                },
                "Status": {
                    "type": "object",
                    "required": ["id", "status"],
                    "properties": {
                        "id": {"type": "string"},
                        "status": {"type": "string", "enum": ["created", "rejected"]},
                        "enrolment_id": {"type": "integer", "description": "When created."},
                        "errors": {"$ref": "#/components/schemas/FieldErrors"},
                    },
                },
                "Unknown": {
                    "type": "object",
                    "required": ["id", "status"],
                    "properties": {"id": {"type": "string"}, "status": {"type": "string", "enum": ["unknown"]}},
                },
                "Detail": _DETAIL,
                "FieldErrors": _FIELD_ERRORS,
            },
        },
    }
