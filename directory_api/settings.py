"""Settings: read once from the environment into one object, validated at start."""

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

from directory_api.errors import SettingsError

REQUIRED = object()  # a default meaning "the variable must be set"

DATABASE_SCHEMES = ("postgres", "postgresql", "sqlite")
QUEUE_BACKENDS = ("sqs", "database")
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")
QUEUE_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}")
REGION_NAME = re.compile(r"[a-z]{2}(-[a-z]+)+-\d+")


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


def _database_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in DATABASE_SCHEMES:
        # The scheme alone: the rest of a URL may hold a password.
        raise ValueError(
            f"scheme {parts.scheme + '://' if parts.scheme else '(none)'} is not supported; "
            "use postgres://user@host/name, postgresql://… or sqlite:///path"
        )
    if parts.scheme == "sqlite":
        if parts.netloc or not parts.path.lstrip("/"):
            raise ValueError("a SQLite URL is sqlite:///relative/path or sqlite:////absolute/path")
    elif not parts.path.lstrip("/"):
        raise ValueError("the URL names no database (postgres://user@host:5432/NAME)")
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


def _secret(raw: str) -> str:
    return raw


@dataclasses.dataclass(frozen=True)
class Variable:
    name: str
    field: str
    parse: Callable[[str], object]
    default: object
    debug_default: object
    secret: bool = False


VARIABLES = (
    Variable("PORT", "port", _integer(1, 65535), 8000, 8000),
    Variable("DATABASE_URL", "database_url", _database_url, REQUIRED,
             "sqlite:///directory-api-debug.sqlite3", secret=True),
    Variable("UI_SECRET", "ui_secret", _secret, REQUIRED, "debug", secret=True),
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
    Variable("SIGNATURE_LEGACY", "signature_legacy", _boolean, False, False),
    Variable("OPS_PASSWORD", "ops_password", _secret, None, "debug", secret=True),
)
BY_NAME = {variable.name: variable for variable in VARIABLES}

# What each command cannot start without; the other variables fall back to None.
NEEDS_DATABASE = ("DATABASE_URL",)
NEEDS_QUEUES = ("DATABASE_URL", "SQS_ENROLMENT_QUEUE_NAME", "SQS_INVALID_ENROLMENT_QUEUE_NAME")
NEEDS_ALL = NEEDS_QUEUES + ("UI_SECRET",)


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
    signature_legacy: bool
    ops_password: str | None  # None: the ops console is off
    # Where each value came from ("environment", "default", "debug default"), for describe().
    sources: Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str], *, debug: bool = False, require: Iterable[str] = NEEDS_ALL
    ) -> "Settings":
        """Build and validate the settings; raise SettingsError naming every bad variable."""
        required = set(require)
        values: dict[str, object] = {}
        sources: dict[str, str] = {}
        problems: list[str] = []
        for variable in VARIABLES:
            raw = environ.get(variable.name, "")
            if raw != "":
                try:
                    values[variable.field] = variable.parse(raw)
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
        if problems:
            raise SettingsError("\n".join(problems))
        return cls(debug=debug, sources=sources, **values)

    def describe(self) -> str:
        """The settings as VAR=value lines, secrets masked, for --debug and check."""
        lines = []
        for variable in VARIABLES:
            value = getattr(self, variable.field)
            shown = "(unset)" if value is None else _mask(variable, value)
            lines.append(f"  {variable.name}={shown}  [{self.sources.get(variable.name, 'default')}]")
        return "\n".join(lines)


def _required_hint(name: str) -> str:
    hints = {
        "DATABASE_URL": " (e.g. postgres://user@host:5432/directory_api or sqlite:///directory-api.sqlite3)",
        "UI_SECRET": " (the secret shared with directory-ui for request signatures)",
    }
    return hints.get(name, "")


def _mask(variable: Variable, value: object) -> str:
    if not variable.secret:
        return str(value)
    if variable.name == "DATABASE_URL":
        return mask_url(str(value))
    return "********"


def mask_url(url: str) -> str:
    """The URL with its password replaced by ********."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:********@{netloc}"))
