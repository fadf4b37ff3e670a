"""Properties of the two parsers of untrusted input: the enrolment validator and env-write's encoding."""

import contextlib
import datetime
import io
import json
import re
import tempfile
from pathlib import Path

import pytest
from dotenv import dotenv_values
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from directory_api import enrolment
from directory_api.envwrite import env_write
from directory_api.errors import UserError

TODAY = datetime.date(2026, 6, 15)
BIGINT_MAX = 2**63 - 1

# Every code point JSON can carry, lone surrogates included (json.loads makes them from "\ud800").
any_character = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, categories=None)
any_text = st.text(any_character, max_size=40)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | any_text,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(any_text, children, max_size=5),
    max_leaves=20,
)

# -- valid payloads -------------------------------------------------------------------------

storable_character = st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00")


def storable_text(min_size=0, max_size=40):
    return st.text(storable_character, min_size=min_size, max_size=max_size)


non_blank = storable_text(1, 255).filter(str.strip)
local_part = st.from_regex(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,20}(\.[A-Za-z0-9_-]{1,10}){0,2}", fullmatch=True)
domain = st.from_regex(r"([a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?\.){1,3}[a-z]{2,10}", fullmatch=True)
revenue = st.from_regex(r"[+-]?[0-9]{1,15}(\.[0-9]{0,2})?|\.[0-9]{1,2}", fullmatch=True)

OPTIONAL = {
    "mobile_number": storable_text(0, 20),
    "referrer": storable_text(0, 255),
    "revenue": revenue,
}


@st.composite
def valid_payloads(draw):
    payload = {
        "sso_id": draw(st.integers(1, BIGINT_MAX)),
        "company_number": draw(st.from_regex(r"[0-9]{8}|[A-Z]{2}[0-9]{6}", fullmatch=True)),
        "company_name": draw(non_blank),
        "company_email": f"{draw(local_part)}@{draw(domain)}",
        "export_status": draw(st.sampled_from(enrolment.EXPORT_STATUSES)),
        "date_of_creation": draw(st.dates(datetime.date(1800, 1, 1), TODAY)).isoformat(),
    }
    for name in draw(st.sets(st.sampled_from(sorted(OPTIONAL)))):
        payload[name] = draw(OPTIONAL[name])
    # Unknown fields are kept and ignored.
    extra_names = storable_text(1, 20).filter(lambda name: name not in payload and name not in OPTIONAL)
    payload.update(draw(st.dictionaries(extra_names, st.integers() | storable_text(), max_size=3)))
    return payload


# -- one invalid value per field ------------------------------------------------------------

not_a_string = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.lists(st.integers(), max_size=2)
)
too_long = lambda limit: storable_text(limit + 1, limit + 40)  # noqa: E731

INVALID = {
    "sso_id": st.integers(max_value=0) | st.integers(min_value=BIGINT_MAX + 1) | st.booleans()
    | st.floats(allow_nan=False) | any_text | st.none(),
    "company_number": not_a_string
    | any_text.filter(lambda value: not enrolment.COMPANY_NUMBER.fullmatch(value)),
    "company_name": not_a_string | st.sampled_from(["", "   ", "\t\n"]) | too_long(255)
    | st.just("Acme\x00 Ltd"),
    "company_email": not_a_string | storable_text(1, 40).filter(lambda value: "@" not in value)
    | st.builds(lambda local: f"{local}@{'a' * 250}.com", local_part),
    "export_status": json_values.filter(lambda value: value not in enrolment.EXPORT_STATUSES),
    "date_of_creation": not_a_string
    | st.dates(TODAY + datetime.timedelta(days=1)).map(datetime.date.isoformat)
    | st.sampled_from(["2021-02-30", "2021-13-01", "10/10/2010", "2010-1-1", ""]),
    "mobile_number": not_a_string | too_long(20),
    "referrer": not_a_string | too_long(255),
    "revenue": not_a_string | st.sampled_from(["", "abc", "1e5", "1,000", "1.234", "1234567890123456", "."]),
}
REQUIRED_FIELDS = [name for name in INVALID if name not in OPTIONAL]


@given(json_values)
def test_validate_never_raises_and_answers_field_names_with_messages(value):
    errors = enrolment.validate(value, today=TODAY)

    assert isinstance(errors, dict)
    for name, messages in errors.items():
        assert isinstance(name, str)
        assert messages and all(isinstance(message, str) and message for message in messages)


@given(st.dictionaries(st.sampled_from(sorted(INVALID)) | any_text, json_values, max_size=12))
def test_validate_never_raises_on_objects_that_look_like_enrolments(value):
    enrolment.validate(value, today=TODAY)


@given(st.binary(max_size=200))
def test_parse_of_any_bytes_gives_a_value_or_a_body_error(body):
    with contextlib.suppress(enrolment.BodyError):
        enrolment.parse(body)


@given(valid_payloads())
def test_a_valid_payload_has_no_errors(payload):
    assert enrolment.validate(payload, today=TODAY) == {}


@given(valid_payloads(), st.data())
def test_one_invalid_field_is_reported_against_that_field_alone(payload, data):
    field = data.draw(st.sampled_from(sorted(INVALID)), label="field")
    payload[field] = data.draw(INVALID[field], label="value")

    assert set(enrolment.validate(payload, today=TODAY)) == {field}


@given(valid_payloads(), st.sampled_from(REQUIRED_FIELDS))
def test_a_missing_required_field_is_reported_against_that_field_alone(payload, field):
    del payload[field]

    assert set(enrolment.validate(payload, today=TODAY)) == {field}


# -- env-write --------------------------------------------------------------------------------

names = st.from_regex(r"[A-Z_][A-Z0-9_]{0,10}", fullmatch=True)
# Values as a host environment can hold them: any text but NUL, weighted towards quotes, backslashes and dollars.
env_values = st.lists(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00")
    | st.sampled_from(list("'\"\\$`#= \t\n\r{}") + ["${X}", "$X", "\\n", "\\$", "\\\"", "#x", " export "]
                      + [" #", "\t#", "\xa0", "\x85", "\u2028", "\u3000", "\x0b", "\x1c", "\x7f"]),
    max_size=15,
).map("".join)


def no_spelling_carries(value: str) -> bool:
    """env-write: single quotes carry all but ', \\, ${ (and line breaks); double quotes all but $ (and line breaks)."""
    if "\n" in value or "\r" in value:
        return True
    return "$" in value and any(text in value for text in ("'", "\\", "${"))


def write(variables: dict[str, str]) -> str | None:
    """Run env-write for `variables` as optional host variables; the file's text, or None if refused."""
    written = write_and_warn(variables)
    return None if written is None else written[0]


def write_and_warn(variables: dict[str, str]) -> tuple[str, list[str]] | None:
    """The file's text and the lines env-write warned, or None if refused."""
    warned: list[str] = []
    with tempfile.TemporaryDirectory() as directory:
        target = Path(directory) / "out.env"
        config = Path(directory) / "env.json"
        config.write_text(json.dumps({
            "host_env_var_prefix": "HOST",
            "file_path": str(target),
            "env_vars": {"required": [], "optional": list(variables)},
        }))
        environ = {f"HOST_{name}": value for name, value in variables.items()}
        try:
            env_write([config], environ, echo=lambda line: None, warn=warned.append)
        except UserError:
            assert not target.exists(), "a refused value still wrote the file"
            return None
        return target.read_text(encoding="utf-8"), warned


def python_dotenv_reads(text: str) -> dict[str, str | None]:
    return dotenv_values(stream=io.StringIO(text))


# Three more readers, modelled on their sources for the lines env-write writes (NAME=value, NAME='...' or
# NAME="..."): compose-go dotenv/parser.go (locateKeyName, extractVarValue, expandEscapes), systemd
# src/basic/env-file.c (parse_env_file_internal) and docker/cli pkg/kvfile/kvfile.go (parseKeyValueFile).
COMPOSE_ESCAPES = re.compile(r'\\(?:[abcfnrtv$"\\]|0\d{0,3})')
COMPOSE_ESCAPED = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", '"': '"', "\\": "\\"}
COMPOSE_SPACE = "\t\v\f\r \x85\xa0"  # its isSpace: what it trims after the =
# Go's unicode.IsSpace: what compose trims from the end of a bare value and docker from the start of a line.
GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a" \
    "\u2028\u2029\u202f\u205f\u3000"
SYSTEMD_WHITESPACE = " \t\n\r"
SYSTEMD_NEWLINE = "\n\r"


def compose_reads_value(text: str) -> tuple[str, str]:
    """The value at the start of `text` (just after the =), and the rest from its line's end."""
    text = text.lstrip(COMPOSE_SPACE)
    if text[:1] in ("'", '"'):
        return compose_reads_quoted(text[1:], text[0])
    value, newline, rest = text.partition("\n")
    value = value.split(" #", 1)[0].rstrip(GO_SPACE)
    assert "$" not in value, "compose would expand a variable"
    return value, newline + rest


def compose_reads_quoted(text: str, quote: str) -> tuple[str, str]:
    """The value of a quoted string at the start of `text` (after its opening quote), and the rest."""
    chars, escaped = [], False
    for index, char in enumerate(text):
        if char != quote:
            if not escaped and char == "\\":
                escaped = True
                continue
            if escaped:
                escaped = False
                chars.append("\\")
            chars.append(char)
        elif escaped:
            escaped = False
            chars.append(char)
        else:
            value = "".join(chars)
            if quote == '"':
                value = COMPOSE_ESCAPES.sub(lambda match: COMPOSE_ESCAPED.get(match[0][1], match[0]), value)
                assert "$" not in value, "compose would expand a variable"
            return value, text[index + 1:]
    raise AssertionError("compose: unterminated quoted value")


def systemd_reads_value(text: str) -> tuple[str, str]:
    """systemd's PRE_VALUE, VALUE and VALUE_ESCAPE states; quoted values go to systemd_reads_quoted."""
    index = 0
    while index < len(text) and text[index] in " \t":
        index += 1
    if text[index:index + 1] in ("'", '"'):
        return systemd_reads_quoted(text[index + 1:], text[index])
    chars: list[str] = []
    trailing_whitespace_from = None
    while index < len(text) and text[index] not in SYSTEMD_NEWLINE:
        char = text[index]
        if char == "\\":
            index += 1
            trailing_whitespace_from = None
            if index < len(text) and text[index] not in SYSTEMD_NEWLINE:
                chars.append(text[index])
        else:
            if char not in SYSTEMD_WHITESPACE:
                trailing_whitespace_from = None
            elif trailing_whitespace_from is None:
                trailing_whitespace_from = len(chars)
            chars.append(char)
        index += 1
    if trailing_whitespace_from is not None:
        del chars[trailing_whitespace_from:]
    value = "".join(chars)
    # env-util.c: an assignment whose value holds a control character (but tab and newline) is ignored.
    assert not any(ord(char) < 32 and char not in "\t\n" or char == "\x7f" for char in value), "systemd drops it"
    return value, text[index:]


def systemd_reads_quoted(text: str, quote: str) -> tuple[str, str]:
    chars: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == quote:
            return "".join(chars), text[index + 1:]
        if char == "\\" and quote == '"':
            index += 1
            following = text[index]
            if following in '"\\`$':
                chars.append(following)
            elif following != "\n":
                chars += ["\\", following]
        else:
            chars.append(char)
        index += 1
    raise AssertionError("systemd: unterminated quoted value")


def reads(text: str, read_value) -> dict[str, str]:
    """Every NAME=value line of `text`, each value read by `read_value`."""
    values = {}
    while text:
        name, text = text.split("=", 1)
        value, text = read_value(text)
        assert text.startswith("\n"), "more after the value"
        values[name] = value
        text = text[1:]
    return values


def docker_run_reads(text: str) -> dict[str, str]:
    """`docker run --env-file`: each line's left-trimmed text after the first =, literally."""
    values = {}
    # bufio.ScanLines: lines end at \n, and a \r before it is dropped.
    for raw in text.split("\n")[:-1] if text.endswith("\n") else text.split("\n"):
        line = raw.removesuffix("\r").lstrip(GO_SPACE)
        if not line or line.startswith("#"):
            continue
        name, _, value = line.partition("=")
        assert not any(char in name for char in " \t"), "docker: a name with whitespace"
        values[name] = value
    return values


READERS = {"python-dotenv": python_dotenv_reads,
           "compose-go": lambda text: reads(text, compose_reads_value),
           "systemd": lambda text: reads(text, systemd_reads_value)}


def read_safely(read, text: str):
    """What `read` makes of `text`, or None where the reader would fail or expand."""
    try:
        return read(text)
    except AssertionError:
        return None


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=300)
@given(st.dictionaries(names, env_values, max_size=6))
def test_every_value_env_write_accepts_reads_back_identical_and_adds_no_variable(variables):
    text = write(variables)

    if text is not None:
        expected = {name: value for name, value in variables.items() if value != ""}
        for reader, read in READERS.items():
            assert read(text) == expected, reader


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=300)
@given(st.dictionaries(names, env_values, max_size=6))
def test_docker_run_reads_every_value_env_write_does_not_warn_about(variables):
    written = write_and_warn(variables)

    if written is not None:
        text, warned = written
        docker = docker_run_reads(text)
        misread = {name for name, value in variables.items() if value != "" and docker.get(name) != value}
        assert set(docker) == {name for name, value in variables.items() if value != ""}
        assert {name for name in variables if any(f" {name} is written in quotes" in line for line in warned)} \
            == misread


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=300)
@given(names, env_values)
def test_env_write_quotes_only_values_some_reader_would_misread_bare(name, value):
    written = write_and_warn({name: value})
    assume(written is not None and value != "")
    text, warned = written

    bare = f"{name}={value}\n"
    read_bare_right = all(read_safely(read, bare) == {name: value} for read in [*READERS.values(), docker_run_reads])
    assert (text == bare) == read_bare_right
    assert bool(warned) == (text != bare)


@settings(max_examples=300)
@given(names, env_values)
def test_env_write_refuses_only_values_no_spelling_carries(name, value):
    assume(value != "")

    refused = write({name: value}) is None

    assert refused == no_spelling_carries(value)


@pytest.mark.parametrize(
    "value", ["a\nEVIL=1", "a' EVIL='1", 'a" EVIL="1', 'a\\" EVIL="1\\', "x\rEVIL=1", "${HOME}", "a\\'b$"]
)
def test_env_write_never_lets_a_value_add_a_variable(value):
    text = write({"SAFE": value})

    assert text is None or all(read(text) == {"SAFE": value} for read in READERS.values())


@pytest.mark.parametrize("value", ["a\nEVIL=1", "x\rEVIL=1", "a\u2028EVIL=1", "a\x85EVIL=1"])
def test_docker_run_never_sees_a_value_add_a_variable(value):
    text = write({"SAFE": value})

    assert text is None or set(docker_run_reads(text)) == {"SAFE"}
