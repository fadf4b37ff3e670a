"""The enrolment payload: parsing the request body and the field rules of docs/http-api.md.

`serve` and the worker both call `validate`, so a message the API accepted is
judged by the same rules when it is saved.
"""

import dataclasses
import datetime
import json
import math
import re
from collections.abc import Callable

NON_FIELD_ERRORS = "non_field_errors"
MAX_BODY_BYTES = 256 * 1024  # docs/http-api.md: the largest enrolment body accepted

EXPORT_STATUSES = ("YES", "ONE_TWO_YEARS_AGO", "OVER_TWO_YEARS_AGO", "NOT_YET", "NO_INTENTION")
BIGINT_MAX = 2**63 - 1  # supplier.sso_id is a BIGINT
# company.revenue is DECIMAL(17, 2): 15 digits before the point, 2 after.
REVENUE_INTEGER_DIGITS = 15
REVENUE_FRACTION_DIGITS = 2

COMPANY_NUMBER = re.compile(r"[0-9]{8}|[A-Z]{2}[0-9]{6}")
ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
DECIMAL = re.compile(r"(?P<sign>[+-]?)(?P<integer>[0-9]*)(?:\.(?P<fraction>[0-9]*))?")
EMAIL_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
EMAIL_DOMAIN_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
EMAIL_TOP_LEVEL = re.compile(r"[A-Za-z]{2,63}|xn--[A-Za-z0-9-]{1,59}")
# PostgreSQL text and jsonb cannot hold NUL; an unpaired surrogate cannot be encoded as UTF-8.
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# What SQS refuses in a message body (anything outside #x9 #xA #xD #x20-#xD7FF #xE000-#xFFFD #x10000-#x10FFFF).
# It sees the raw body, so a JSON escape such as \u0001 is fine; the character itself is not.
NOT_FOR_SQS = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
MAX_DEPTH = 100  # docs/http-api.md: JSON nested deeper than this is refused
# Python refuses to read a longer integer (sys.get_int_max_str_digits), with a ValueError that is not a JSONDecodeError.
MAX_INTEGER_DIGITS = 4300
# A JSON string (an unterminated one runs to the end, so no text is scanned twice) or a bracket.
STRING_OR_BRACKET = re.compile(r'"(?:[^"\\]|\\[\s\S]?)*+(?:"|\Z)|[\[\]{}]')

REQUIRED = "This field is required."
NOT_STRING = "Must be a string."
UNSTORABLE_TEXT = "Must not contain NUL or unpaired surrogate characters."
UNSTORABLE_NAME = "A field name must not contain NUL or unpaired surrogate characters."

# The earliest time zone is UTC+14: a date that is already today somewhere is not "in the future".
EARLIEST_UTC_OFFSET = datetime.timedelta(hours=14)


class BodyError(ValueError):
    """The request body is not a JSON document; the message says why."""


def parse(body: bytes) -> object:
    """The JSON document in a request body; BodyError when it is not UTF-8 or not JSON."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BodyError(f"The body is not UTF-8 (byte {error.start}).") from None
    if unfit := NOT_FOR_SQS.search(text):
        raise BodyError(
            f"The body holds a character a queue message cannot carry: U+{ord(unfit[0]):04X} "
            f"(character {unfit.start()}); write it as a JSON escape such as \\u{ord(unfit[0]):04x}."
        )
    if too_deep(text):
        raise BodyError(f"The body is not JSON this service accepts: it is nested deeper than {MAX_DEPTH} levels.")
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_int=_integer, parse_float=_finite)
    except json.JSONDecodeError as error:
        raise BodyError(f"The body is not JSON: {error.msg} (line {error.lineno} column {error.colno}).") from None
    except RecursionError:  # cannot happen after too_deep; kept so no body can ever be a 500
        raise BodyError(
            f"The body is not JSON this service accepts: it is nested deeper than {MAX_DEPTH} levels."
        ) from None


def too_deep(text: str, limit: int = MAX_DEPTH) -> bool:
    """Whether JSON text opens more than `limit` arrays or objects inside one another, before it is parsed.

    One pass, no recursion: brackets inside strings do not count, and it stops at the first level too many.
    """
    if text.count("[") + text.count("{") <= limit:
        return False  # the usual enrolment: too few brackets to be too deep, counted at C speed
    depth = 0
    for token in STRING_OR_BRACKET.finditer(text):
        bracket = token[0]
        if bracket in "[{":
            depth += 1
            if depth > limit:
                return True
        elif bracket in "]}":
            depth -= 1
    return False


def _integer(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise BodyError(
            f"The body is not JSON this service accepts: a number has more than {MAX_INTEGER_DIGITS} digits."
        )
    return int(digits)


def _finite(literal: str) -> float:
    # 1e400 reads as infinity, which neither JSON nor PostgreSQL's jsonb can hold: the worker could never save it.
    number = float(literal)
    if not math.isfinite(number):
        raise BodyError(f"The body is not JSON this service accepts: the number {literal[:20]} is too large.")
    return number


def _refuse_constant(name: str) -> None:
    # Python's json reads NaN and Infinity, which JSON does not have.
    raise json.JSONDecodeError(f"{name} is not a JSON value", name, 0)


def validate(payload: object, *, today: datetime.date | None = None) -> dict[str, list[str]]:
    """The field errors of an enrolment payload, {} when it is valid.

    `today` is the latest allowed date_of_creation (default: today in the earliest time zone).
    """
    if not isinstance(payload, dict):
        return {NON_FIELD_ERRORS: [f"The body must be a JSON object, not {_json_type(payload)}."]}
    if today is None:
        today = (datetime.datetime.now(datetime.UTC) + EARLIEST_UTC_OFFSET).date()
    errors: dict[str, list[str]] = {}
    for field in FIELDS:
        if field.name not in payload:
            if field.required:
                errors[field.name] = [REQUIRED]
            continue
        messages = field.check(payload[field.name], today)
        if messages:
            errors[field.name] = messages
    for name, value in payload.items():
        if name not in errors and not _storable(value):
            errors[name] = [UNSTORABLE_TEXT]
        if UNSTORABLE.search(name):
            errors[NON_FIELD_ERRORS] = [UNSTORABLE_NAME]
    return errors


def _storable(value: object) -> bool:
    """Whether every string in a JSON value (keys included) can be stored in PostgreSQL jsonb."""
    if isinstance(value, str):
        return not UNSTORABLE.search(value)
    if isinstance(value, list):
        return all(_storable(item) for item in value)
    if isinstance(value, dict):
        return all(_storable(key) and _storable(item) for key, item in value.items())
    return True


def _json_type(value: object) -> str:
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


# Each check takes the value and today's date and returns its error messages.
Check = Callable[[object, datetime.date], list[str]]


@dataclasses.dataclass(frozen=True)
class Field:
    name: str
    required: bool
    check: Check


def _text(max_length: int, *, min_length: int = 0, then: Callable[[str], list[str]] | None = None) -> Check:
    def check(value: object, today: datetime.date) -> list[str]:
        if not isinstance(value, str):
            return [NOT_STRING]
        if UNSTORABLE.search(value):
            return [UNSTORABLE_TEXT]
        if min_length and not value.strip():
            return ["This field may not be blank."]
        if len(value) > max_length:
            return [f"Ensure this field has no more than {max_length} characters."]
        return then(value) if then else []

    return check


def _sso_id(value: object, today: datetime.date) -> list[str]:
    # bool is an int in Python, but true is not an id.
    if not isinstance(value, int) or isinstance(value, bool):
        return ["Must be a whole number (a JSON integer)."]
    if not 1 <= value <= BIGINT_MAX:
        return [f"Must be between 1 and {BIGINT_MAX}."]
    return []


def _company_number(value: str) -> list[str]:
    if not COMPANY_NUMBER.fullmatch(value):
        return ["Must be 8 digits, or 2 capital letters and 6 digits (e.g. 01234567 or SC123456)."]
    return []


def _email(value: str) -> list[str]:
    return [] if is_email_address(value) else ["Enter a valid email address."]


def is_email_address(value: str) -> bool:
    """An address as company_email must be: a dot-atom local part, a domain (IDNA allowed) with a top level."""
    local, at, domain = value.rpartition("@")
    return bool(at and EMAIL_LOCAL.fullmatch(local) and _email_domain(domain))


def _email_domain(domain: str) -> bool:
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        return False
    *labels, top_level = ascii_domain.split(".")
    return bool(labels) and all(EMAIL_DOMAIN_LABEL.fullmatch(label) for label in labels) and bool(
        EMAIL_TOP_LEVEL.fullmatch(top_level)
    )


def _export_status(value: object, today: datetime.date) -> list[str]:
    if value not in EXPORT_STATUSES:
        return [f"Must be one of {', '.join(EXPORT_STATUSES)}."]
    return []


def _date_of_creation(value: object, today: datetime.date) -> list[str]:
    if not isinstance(value, str) or not ISO_DATE.fullmatch(value):
        return ["Must be a date as YYYY-MM-DD."]
    try:
        date = datetime.date.fromisoformat(value)
    except ValueError:
        return [f"{value} is not a date in the calendar."]
    if date > today:
        return ["Must not be in the future."]
    return []


def _revenue(value: object, today: datetime.date) -> list[str]:
    if not isinstance(value, str):
        return ['Must be a decimal number as a string, e.g. "125000.50".']
    match = DECIMAL.fullmatch(value)
    if not match or not (match["integer"] or match["fraction"]):
        return ['Must be a decimal number as a string, e.g. "125000.50".']
    # Leading zeros and trailing fractional zeros are not stored, so they do not count.
    integer_digits = len(match["integer"].lstrip("0"))
    fraction_digits = len((match["fraction"] or "").rstrip("0"))
    messages = []
    if integer_digits > REVENUE_INTEGER_DIGITS:
        messages.append(f"Ensure that there are no more than {REVENUE_INTEGER_DIGITS} digits before the decimal point.")
    if fraction_digits > REVENUE_FRACTION_DIGITS:
        messages.append(f"Ensure that there are no more than {REVENUE_FRACTION_DIGITS} decimal places.")
    return messages


FIELDS = (
    Field("sso_id", True, _sso_id),
    Field("company_number", True, _text(8, min_length=1, then=_company_number)),
    Field("company_name", True, _text(255, min_length=1)),
    Field("company_email", True, _text(255, min_length=1, then=_email)),
    Field("export_status", True, _export_status),
    Field("date_of_creation", True, _date_of_creation),
    Field("mobile_number", False, _text(20)),
    Field("referrer", False, _text(255)),
    Field("revenue", False, _revenue),
)
