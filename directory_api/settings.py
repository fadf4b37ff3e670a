"""Settings: read once from the environment into one object, validated at start."""

import dataclasses
import email.utils
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from directory_api.enrolment import EMAIL_DOMAIN_LABEL, EMAIL_LOCAL
from directory_api.errors import SettingsError
from directory_api.logs import LOG_FORMATS, LOG_LEVELS

REQUIRED = object()  # a default meaning "the variable must be set"

DATABASE_SCHEMES = ("postgres", "postgresql", "sqlite")
QUEUE_BACKENDS = ("sqs", "database")
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")
QUEUE_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}")
REGION_NAME = re.compile(r"[a-z]{2}(-[a-z]+)+-\d+")
HOST_NAME = re.compile(r"[A-Za-z0-9._:-]{1,253}")  # a DNS name, an IPv4 or an IPv6 address
# What may never reach an e-mail header from a setting: line breaks (a second header) and other controls.
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MIN_SECRET_LENGTH = 16


def _integer(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError(f"{raw!r} is not a whole number") from None
        if not low <= value <= high:
            raise ValueError(f"{value} is out of range {low}-{high}")
        return value

    return parse


def _boolean(raw: str) -> bool:
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"{raw!r} is not true or false")


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in choices:
            raise ValueError(f"{raw!r} is not one of {', '.join(choices)}")
        return raw

    return parse


@dataclasses.dataclass(frozen=True)
class DatabaseUrl:
    """The parts of a DATABASE_URL, percent-decoded."""

    scheme: str
    user: str | None
    password: str | None
    host: str | None
    port: int | None
    name: str  # the database name, or the SQLite file's path


URL_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
URL_AUTHORITY_END = re.compile(r"[/?#]")
URL_HOST_PORT = re.compile(r"(?P<host>\[[^\]]*\]|[^:]*)(?::(?P<port>[^:]*))?")


def split_database_url(raw: str) -> DatabaseUrl:
    """The parts of a DATABASE_URL; ValueError saying what is wrong without quoting the URL (it may hold a password).

    The user part ends at the last "@", so a password may hold "/", "?", "#"
    or "@" unescaped (urlsplit would cut it at the first of them and read the
    rest as host, port and path).
    """
    scheme, rest = _scheme_and_rest(raw)
    if scheme not in DATABASE_SCHEMES:
        raise ValueError(
            f"scheme {scheme + '://' if scheme else '(none)'} is not supported; "
            "use postgres://user@host/name, postgresql://… or sqlite:///path"
        )
    if scheme == "sqlite":
        authority, path = _authority_and_path(rest)
        if authority or not path.lstrip("/"):
            raise ValueError("a SQLite URL is sqlite:///relative/path or sqlite:////absolute/path")
        return DatabaseUrl(scheme, None, None, None, None, unquote(path[1:]))
    user, password, host_part = _userinfo_and_rest(rest)
    authority, path = _authority_and_path(host_part)
    host, port = _host_and_port(authority)
    if not path.lstrip("/"):
        raise ValueError("the URL names no database (postgres://user@host:5432/NAME)")
    return DatabaseUrl(
        scheme,
        user=unquote(user) or None,
        password=(unquote(password) or None) if password is not None else None,
        host=host,
        port=port,
        name=unquote(path[1:]),
    )


def _scheme_and_rest(raw: str) -> tuple[str, str]:
    match = URL_SCHEME.match(raw)
    return (match[1].lower(), raw[match.end():]) if match else ("", raw)


def _userinfo_and_rest(rest: str) -> tuple[str, str | None, str]:
    """User, password (None without a colon) and what follows the last "@", all as written."""
    userinfo, _, host_part = rest.rpartition("@")
    user, colon, password = userinfo.partition(":")
    return user, password if colon else None, host_part


def _authority_and_path(rest: str) -> tuple[str, str]:
    """host:port, and the path without query or fragment."""
    authority = URL_AUTHORITY_END.split(rest, maxsplit=1)[0]
    path = re.split("[?#]", rest[len(authority):], maxsplit=1)[0]
    return authority, path


def _host_and_port(authority: str) -> tuple[str | None, int | None]:
    match = URL_HOST_PORT.fullmatch(authority)
    if not match:
        raise ValueError("the part after the last @ is not host, host:port or [IPv6 address]:port")
    host = unquote(match["host"].strip("[]")) or None
    if not match["port"]:
        return host, None
    # The port is not quoted: a URL whose password was cut short shows a piece of it here.
    if not match["port"].isascii() or not match["port"].isdigit() or not 1 <= int(match["port"]) <= 65535:
        raise ValueError("the port is not a number from 1 to 65535")
    return host, int(match["port"])


def _database_url(raw: str) -> str:
    split_database_url(raw)
    return raw


def _queue_name(raw: str) -> str:
    if not QUEUE_NAME.fullmatch(raw):
        raise ValueError(f"{raw!r} is not a queue name (1-80 of A-Z a-z 0-9 - _)")
    return raw


def _region(raw: str) -> str:
    if not REGION_NAME.fullmatch(raw):
        raise ValueError(f"{raw!r} is not an AWS region name such as eu-west-1")
    return raw


def _endpoint_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{raw!r} is not an http:// or https:// URL")
    return raw


def _log_level(raw: str) -> str:
    if raw.upper() not in LOG_LEVELS:
        raise ValueError(f"{raw!r} is not one of {', '.join(LOG_LEVELS)}")
    return raw.upper()


def _secret(raw: str) -> str:
    return raw


def _host_name(raw: str) -> str:
    if not HOST_NAME.fullmatch(raw):
        raise ValueError(f"{raw!r} is not a host name or IP address such as smtp.example.com")
    return raw


def _mail_sender(raw: str) -> str:
    """An address for From: noreply@example.com, or Name <noreply@example.com>; the domain may be one label."""
    _, address = email.utils.parseaddr(raw)
    local, at, domain = address.rpartition("@")
    labels_valid = all(EMAIL_DOMAIN_LABEL.fullmatch(part) for part in domain.split("."))
    valid = at and EMAIL_LOCAL.fullmatch(local) and labels_valid
    if CONTROL.search(raw) or not valid:
        raise ValueError(f"{raw!r} is not an e-mail address such as noreply@example.com or Name <noreply@example.com>")
    return raw


def _header_text(raw: str) -> str:
    if CONTROL.search(raw):
        raise ValueError("holds a line break or another control character")
    if len(raw) > 200:
        raise ValueError(f"is {len(raw)} characters long, at most 200")
    return raw


def _link_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc or CONTROL.search(raw) or " " in raw:
        raise ValueError(f"{raw!r} is not an http:// or https:// URL")
    return raw


def _long_secret(value: str) -> None:
    # The value is never quoted: it is a secret, even when a bad one.
    if len(value) < MIN_SECRET_LENGTH:
        raise ValueError(
            f"too short (length {len(value)}): at least {MIN_SECRET_LENGTH} characters outside --debug, "
            "as a short secret is guessed in a few requests "
            "(make one with `python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )


@dataclasses.dataclass(frozen=True)
class Variable:
    name: str
    field: str
    parse: Callable[[str], object]
    default: object
    debug_default: object
    secret: bool = False
    # A further rule for a value given outside --debug (raises ValueError).
    outside_debug: Callable[[Any], None] | None = None  # given what `parse` returned


VARIABLES = (
    Variable("PORT", "port", _integer(1, 65535), 8000, 8000),
    Variable("DATABASE_URL", "database_url", _database_url, REQUIRED,
             "sqlite:///directory-api-debug.sqlite3", secret=True),
    Variable("UI_SECRET", "ui_secret", _secret, REQUIRED, "debug", secret=True, outside_debug=_long_secret),
    Variable("QUEUE_BACKEND", "queue_backend", _choice(*QUEUE_BACKENDS), "sqs", "database"),
    Variable("SQS_ENROLMENT_QUEUE_NAME", "enrolment_queue", _queue_name, REQUIRED, "enrolment"),
    Variable("SQS_INVALID_ENROLMENT_QUEUE_NAME", "invalid_queue", _queue_name, REQUIRED,
             "enrolment-invalid"),
    Variable("SQS_REGION_NAME", "sqs_region", _region, "eu-west-1", "eu-west-1"),
    Variable("SQS_ENDPOINT_URL", "sqs_endpoint_url", _endpoint_url, None, None),
    Variable("SQS_WAIT_TIME", "sqs_wait_time", _integer(0, 20), 20, 20),
    Variable("SQS_MAX_NUMBER_OF_MESSAGES", "sqs_max_messages", _integer(1, 10), 10, 10),
    Variable("SQS_VISIBILITY_TIMEOUT", "sqs_visibility_timeout", _integer(1, 43200), 30, 30),
    Variable("SQS_MAX_RECEIVE_COUNT", "sqs_max_receive_count", _integer(1, 1000), 5, 5),
    Variable("SQS_DIRECT", "sqs_direct", _boolean, True, True),
    Variable("SIGNATURE_LEGACY", "signature_legacy", _boolean, False, False),
    Variable("EMAIL_HOST", "email_host", _host_name, None, None),
    Variable("EMAIL_PORT", "email_port", _integer(1, 65535), 587, 587),
    Variable("EMAIL_HOST_USER", "email_host_user", _secret, None, None),
    Variable("EMAIL_HOST_PASSWORD", "email_host_password", _secret, None, None, secret=True),
    Variable("EMAIL_USE_TLS", "email_use_tls", _boolean, True, False),
    Variable("DEFAULT_FROM_EMAIL", "default_from_email", _mail_sender, None, "noreply@localhost"),
    Variable("COMPANY_EMAIL_CONFIRMATION_FROM", "confirmation_from", _mail_sender, None, None),
    Variable("COMPANY_EMAIL_CONFIRMATION_SUBJECT", "confirmation_subject", _header_text,
             "Your company's trade profile", "Your company's trade profile"),
    Variable("COMPANY_EMAIL_CONFIRMATION_URL", "confirmation_url", _link_url, None, "http://127.0.0.1:8000/"),
    Variable("LOG_FORMAT", "log_format", _choice(*LOG_FORMATS), "text", "text"),
    Variable("LOG_LEVEL", "log_level", _log_level, None, None),
    Variable("METRICS_PORT", "metrics_port", _integer(1, 65535), None, None),
    Variable("METRICS_HOST", "metrics_host", _host_name, "0.0.0.0", "127.0.0.1"),
    # The console re-drives messages and downloads all personal data, on the API's own port.
    Variable("OPS_PASSWORD", "ops_password", _secret, None, "debug", secret=True, outside_debug=_long_secret),
    Variable("REJECTION_RETENTION_DAYS", "rejection_retention_days", _integer(0, 36500), 90, 90),
    Variable("EMAIL_RETENTION_DAYS", "email_retention_days", _integer(0, 36500), 90, 90),
)
BY_NAME = {variable.name: variable for variable in VARIABLES}

# What each command cannot start without; the other variables fall back to None.
NEEDS_DATABASE = ("DATABASE_URL",)
# Required only when the variable on the right is set (the e-mail is then sent, so it needs a sender and a link).
REQUIRED_WHEN = {
    "DEFAULT_FROM_EMAIL": "EMAIL_HOST",
    "COMPANY_EMAIL_CONFIRMATION_URL": "EMAIL_HOST",
    "EMAIL_HOST_PASSWORD": "EMAIL_HOST_USER",
    "EMAIL_HOST_USER": "EMAIL_HOST_PASSWORD",
}
NEEDS_MAIL = tuple(REQUIRED_WHEN)
NEEDS_QUEUES = ("DATABASE_URL", "SQS_ENROLMENT_QUEUE_NAME", "SQS_INVALID_ENROLMENT_QUEUE_NAME") + NEEDS_MAIL
NEEDS_ALL = NEEDS_QUEUES + ("UI_SECRET",)
# The text variables a command requires (from_environ's `require`, or OPS_PASSWORD for the console it mounts),
# which Settings.required hands back typed str.
RequiredName = Literal[
    "DATABASE_URL", "UI_SECRET", "SQS_ENROLMENT_QUEUE_NAME", "SQS_INVALID_ENROLMENT_QUEUE_NAME", "OPS_PASSWORD"
]


@dataclasses.dataclass(frozen=True)
class Settings:
    debug: bool
    port: int
    database_url: str | None
    ui_secret: str | None
    queue_backend: str
    enrolment_queue: str | None
    invalid_queue: str | None
    sqs_region: str
    sqs_endpoint_url: str | None
    sqs_wait_time: int
    sqs_max_messages: int
    sqs_visibility_timeout: int
    sqs_max_receive_count: int
    sqs_direct: bool
    signature_legacy: bool
    email_host: str | None
    email_port: int
    email_host_user: str | None
    email_host_password: str | None
    email_use_tls: bool
    default_from_email: str | None
    confirmation_from: str | None
    confirmation_subject: str
    confirmation_url: str | None
    log_format: str = "text"
    log_level: str | None = None
    metrics_port: int | None = None
    metrics_host: str = "0.0.0.0"
    ops_password: str | None = None  # None: the ops console is off
    rejection_retention_days: int = 90  # 0: keep for ever (jobs.py's retention)
    email_retention_days: int = 90
    # Where each value came from ("environment", "default", "debug default"), for describe().
    sources: Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str], *, debug: bool = False, require: Iterable[str] = NEEDS_ALL
    ) -> "Settings":
        """Build and validate the settings; raise SettingsError naming every bad variable."""
        required = set(require)
        values: dict[str, Any] = {}  # field -> what its Variable's parse returned, of the field's type
        sources: dict[str, str] = {}
        problems: list[str] = []
        for variable in VARIABLES:
            raw = environ.get(variable.name, "")
            if raw != "":
                try:
                    values[variable.field] = variable.parse(raw)
                    if variable.outside_debug and not debug:
                        variable.outside_debug(values[variable.field])
                    sources[variable.name] = "environment"
                except ValueError as error:
                    problems.append(f"{variable.name}: {error}")
                continue
            default = variable.debug_default if debug else variable.default
            sources[variable.name] = "debug default" if debug else "default"
            if default is REQUIRED:
                if variable.name in required:
                    problems.append(f"{variable.name} is not set{_required_hint(variable.name)}")
                default = None
            values[variable.field] = default
        problems += _missing_when_needed(values, required)
        if problems:
            raise SettingsError("\n".join(problems))
        return cls(debug=debug, sources=sources, **values)

    def required(self, name: RequiredName) -> str:
        """A variable's value, typed str, for a command that required it (SettingsError naming it when unset)."""
        value = getattr(self, BY_NAME[name].field)
        if value is None:
            raise SettingsError(f"{name} is not set{_required_hint(name)}")
        return str(value)

    @property
    def confirmation_sender(self) -> str | None:
        """COMPANY_EMAIL_CONFIRMATION_FROM, else DEFAULT_FROM_EMAIL."""
        return self.confirmation_from or self.default_from_email

    def describe(self) -> str:
        """The settings as VAR=value lines, secrets masked, for --debug and check."""
        return "\n".join(
            f"  {name}={shown}  [{self.sources.get(name, 'default')}]" for name, shown in self.shown().items()
        )

    def shown(self) -> dict[str, str]:
        """VAR -> value as --debug shows it: secrets masked, "(unset)" for None."""
        return {
            variable.name: "(unset)" if (value := getattr(self, variable.field)) is None else _mask(variable, value)
            for variable in VARIABLES
        }


def _missing_when_needed(values: Mapping[str, object], required: set[str]) -> list[str]:
    problems = []
    for name, when in REQUIRED_WHEN.items():
        if name not in required:
            continue
        if values.get(BY_NAME[name].field) is None and values.get(BY_NAME[when].field) is not None:
            problems.append(f"{name} is not set (required when {when} is set{_required_hint(name)})")
    return problems


def _required_hint(name: str) -> str:
    hints = {
        "DATABASE_URL": " (e.g. postgres://user@host:5432/directory_api or sqlite:///directory-api.sqlite3)",
        "UI_SECRET": " (the secret shared with directory-ui for request signatures)",
        "DEFAULT_FROM_EMAIL": ": the sender of the confirmation e-mail, e.g. noreply@example.com",
        "COMPANY_EMAIL_CONFIRMATION_URL": ": the link the confirmation e-mail carries",
        "EMAIL_HOST_PASSWORD": ": the SMTP login needs both",
        "EMAIL_HOST_USER": ": the SMTP login needs both",
    }
    return hints.get(name, "")


def _mask(variable: Variable, value: object) -> str:
    if not variable.secret:
        return str(value)
    if variable.name == "DATABASE_URL":
        return mask_url(str(value))
    return "********"


def mask_url(url: str) -> str:
    """The URL with its password replaced by ********, read as split_database_url reads it."""
    scheme, rest = _scheme_and_rest(url)
    user, password, host_part = _userinfo_and_rest(rest)
    if scheme == "sqlite" or password is None:
        return url
    return f"{url[:len(url) - len(rest)]}{user}:********@{host_part}"
