"""Log lines on stderr, as text or one JSON object a line (LOG_FORMAT), and request ids.

Our own loggers (`directory_api.*`) log at DEBUG under --debug; third-party
ones (mohawk, botocore, urllib3, waitress, peewee, …) stay at INFO, since at
DEBUG they print every hash input of a signature and every HTTP header of an
SQS call. LOG_LEVEL sets every logger, third-party included, to one level: the
way to see those lines when they are wanted.
"""

import datetime
import json
import logging
import os
import re
import sys
import threading

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

OUR_LOGGER = "directory_api"
# Third-party loggers that are noisy even at INFO: WARNING unless --debug or LOG_LEVEL says otherwise.
QUIET_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer", "peewee")
# waitress warns "Task queue depth is N" for nearly every request under load: a log write each.
SILENCED_LOGGERS = ("waitress.queue",)

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_ENVIRON = "directory_api.request_id"
REQUEST_ID_ATTRIBUTE = "request_id"  # the queue message attribute that carries it to the worker
MAX_REQUEST_ID = 200
SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]+")

# What every LogRecord has; anything else on a record came in `extra` and is a field of the JSON line.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}

_format = "text"


def safe_request_id(raw: str | None) -> str | None:
    """The client's request id when it is safe to log and echo (at most 200 of [A-Za-z0-9._-]), else None."""
    if raw and len(raw) <= MAX_REQUEST_ID and SAFE_REQUEST_ID.fullmatch(raw):
        return raw
    return None


def new_request_id() -> str:
    return os.urandom(16).hex()


def request_id_for(raw: str | None) -> str:
    """The request id of a request whose X-Request-ID header is `raw` (None when absent)."""
    return safe_request_id(raw) or new_request_id()


def utc_timestamp(created: float) -> str:
    moment = datetime.datetime.fromtimestamp(created, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object a record: time, level, logger, message, and the fields given in `extra`."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": utc_timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


def configure(*, debug: bool, log_format: str = "text", level: str | None = None) -> None:
    """Send every logger's lines to stderr in `log_format`; our loggers at DEBUG under --debug, others at INFO.

    `level` (LOG_LEVEL) sets every logger, third-party included.
    """
    global _format
    _format = log_format
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level or "INFO")
    logging.getLogger(OUR_LOGGER).setLevel(logging.DEBUG if debug else logging.NOTSET)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if level else logging.INFO if debug else logging.WARNING)
    for name in SILENCED_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if level else logging.ERROR)
    logging.captureWarnings(log_format == "json")  # a warning is a line of the log too
    if log_format == "json":
        # A crash's traceback is a line of the log too, not lines of raw text between JSON objects.
        sys.excepthook = _log_uncaught
        threading.excepthook = lambda args: _log_uncaught(args.exc_type, args.exc_value, args.exc_traceback)
    else:
        sys.excepthook, threading.excepthook = sys.__excepthook__, threading.__excepthook__


def _log_uncaught(kind, value, traceback) -> None:
    logging.getLogger(OUR_LOGGER).critical("uncaught exception: %s", value, exc_info=(kind, value, traceback))


def emit(level: int, text: str, message: str | None = None, **fields) -> None:
    """A line the CLI prints itself (an error, the --debug settings), in the log's format.

    Text prints `text` as it is; JSON prints one object like a log line, with `message` (else `text`) and `fields`.
    """
    if _format == "json":
        record = logging.LogRecord("directory_api.cli", level, "", 0, text if message is None else message, (), None)
        record.__dict__.update(fields)
        print(JsonFormatter().format(record), file=sys.stderr, flush=True)
    else:
        print(text, file=sys.stderr, flush=True)


def error(message: str) -> None:
    """A user error's line: `error: message` as text."""
    emit(logging.ERROR, f"error: {message}", message)
