"""The API driven from its own /openapi.json: generated, signed requests never get a 500 or a non-JSON answer.

A small generator from the document's JSON schemas stands in for schemathesis: the API has
five operations, and the signing (a fresh sigauth Hawk header per request) is the part a
generic tool makes awkward.
"""

import json
import re
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.signing import signed_headers

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

OPERATIONS = [
    ("get", "/"),
    ("get", "/healthcheck/"),
    ("post", "/enrolment/"),
    ("get", "/enrolment/{id}/"),
    ("get", "/openapi.json"),
]
EXAMPLES = 60

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


def resolve(schema: dict, document: dict) -> dict:
    while "$ref" in schema:
        *_, name = schema["$ref"].split("/")
        schema = document["components"]["schemas"][name]
    return schema


def from_schema(schema: dict, document: dict) -> st.SearchStrategy:
    """Values that conform to an OpenAPI 3.0 schema (the subset this document uses)."""
    schema = resolve(schema, document)
    for key in ("oneOf", "anyOf"):
        if key in schema:
            return st.one_of([from_schema(option, document) for option in schema[key]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "object":
        return _object(schema, document)
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {}), document), max_size=4)
    if kind == "integer":
        return st.integers(schema.get("minimum"), schema.get("maximum"))
    if kind == "number":
        return st.floats(schema.get("minimum"), schema.get("maximum"), allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "string":
        return _string(schema)
    return json_values


def _string(schema: dict) -> st.SearchStrategy:
    if "pattern" in schema:
        # Anchors off, fullmatch on: "$" would also allow a trailing newline.
        return st.from_regex(re.sub(r"^\^|\$$", "", schema["pattern"]), fullmatch=True)
    if schema.get("format") == "date":
        return st.dates().map(lambda date: date.isoformat())
    if schema.get("format") == "email":
        return st.emails().filter(lambda email: len(email) <= schema.get("maxLength", 255))
    return st.text(min_size=schema.get("minLength", 0), max_size=min(schema.get("maxLength", 40), 300))


@st.composite
def _object(draw, schema: dict, document: dict):
    properties = schema.get("properties", {})
    required = set(schema.get("required", []))
    chosen = required | draw(st.sets(st.sampled_from(sorted(properties)))) if properties else required
    value = {name: draw(from_schema(properties[name], document)) for name in sorted(chosen)}
    if schema.get("additionalProperties") is True:
        extra = st.text(min_size=1, max_size=10).filter(lambda name: name not in properties)
        value.update(draw(st.dictionaries(extra, json_values, max_size=2)))
    return value


def body_strategy(schema: dict, document: dict) -> st.SearchStrategy:
    """Conforming bodies, bodies with one property broken, and any JSON at all."""
    conforming = from_schema(schema, document)
    properties = sorted(resolve(schema, document).get("properties", {}))

    @st.composite
    def one_broken(draw):
        value = draw(conforming)
        value[draw(st.sampled_from(properties))] = draw(json_values)
        return value

    return st.one_of(conforming, one_broken(), json_values)


@pytest.fixture(scope="module")
def document(live_api) -> dict:
    response = requests.get(f"{live_api.base_url}/openapi.json", timeout=10)
    assert response.status_code == 200
    return response.json()


def test_the_document_describes_exactly_the_operations_of_the_spec(document):
    described = {(method, path) for path, item in document["paths"].items() for method in item}

    assert described == set(OPERATIONS)


def check_answer(response: requests.Response, operation: dict, request: str) -> None:
    documented = set(operation["responses"])
    assert response.status_code < 500 or str(response.status_code) in documented, request
    assert str(response.status_code) in documented, f"undocumented {response.status_code} for {request}"
    assert response.headers.get("Content-Type", "").startswith("application/json"), request
    body = response.json()
    if response.status_code >= 400:
        assert isinstance(body, dict) and body, f"{response.status_code} {body!r} for {request}"


def send(live_api, method: str, path: str, operation: dict, body: bytes | None, signed: bool) -> requests.Response:
    url = f"{live_api.base_url}{path}"
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if signed and "security" in operation:
        headers = signed_headers(url, body or b"", method.upper(), headers.get("Content-Type"))
    return requests.request(method, url, data=body, headers=headers, timeout=30)


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_generated_requests_get_a_documented_json_answer_never_a_500(live_api, document, method, path):
    operation = document["paths"][path][method]
    parameters = {
        # Neither empty nor holding "/": WSGI decodes %2F in PATH_INFO, so both would name another path.
        parameter["name"]: from_schema(parameter["schema"], document).filter(
            lambda value: str(value) != "" and "/" not in str(value)
        )
        for parameter in operation.get("parameters", [])
        if parameter["in"] == "path"
    }
    request_schema = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    statuses = []

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data(), signed=st.booleans())
    def exercise(data, signed):
        values = {name: data.draw(strategy, label=name) for name, strategy in parameters.items()}
        concrete = path.format(**{name: quote(str(value), safe="") for name, value in values.items()})
        body = None
        if request_schema:
            value = data.draw(body_strategy(request_schema, document), label="body")
            body = json.dumps(value).encode()
        response = send(live_api, method, concrete, operation, body, signed)
        statuses.append(response.status_code)
        check_answer(response, operation, f"{method.upper()} {concrete} {body!r:.200} signed={signed}")
        if "security" in operation and not signed:
            assert response.status_code == 401, concrete

    exercise()

    if request_schema:
        # The generator must reach past the checks to the queue, or it tested only the refusals.
        assert 202 in statuses and 400 in statuses, sorted(set(statuses))
