r"""env-write: .env files from prefixed host variables, checked whole before anything is written.

A config file (the 2016 format):

    {"host_env_var_prefix": "DIRECTORY_API",
     "file_path": ".env",
     "env_vars": {"required": ["DATABASE_URL"], "optional": ["PORT"]}}

Each VAR is read from the host variable PREFIX_VAR and written bare (VAR=value)
when bare reads back the same in all four readers of the file; else as
VAR='value', or as VAR="value" with every " and \ escaped (\" and \\) when
single quotes cannot carry it, and named on stderr. The readers: python-dotenv,
docker compose, systemd's EnvironmentFile= and `docker run --env-file`. What
each does with a character, as their sources say (python-dotenv 1.2.4:
dotenv/parser.py, dotenv/main.py, dotenv/variables.py; compose-go e70e961, July
2026: dotenv/parser.go, dotenv/godotenv.go; systemd 0002453:
src/basic/env-file.c, src/basic/env-util.c; docker/cli 28f7560, August 2026:
pkg/kvfile/kvfile.go):

`docker run --env-file` takes everything after the first = to the end of the
line literally: no quotes, escapes, comments or trimming of the value (a line
whose first non-space character is # is a comment). So it reads a quoted value
with its quotes, and only a bare value means the same to it as to the others.
Bare, the other three:

| in a bare value | python-dotenv | compose-go | systemd | so bare only |
|---|---|---|---|---|
| ' or " first | starts a quoted value | starts a quoted value | starts a quoted value | if not first |
| ' or " later | literal | literal | literal | carried |
| \ | literal | literal | escapes the next character (dropped) | never |
| $ | ${NAME} expanded | $NAME, ${NAME} expanded, $$ gives $ | literal | never |
| # after whitespace | starts a comment (any \s before it) | starts a comment (a space before it) | literal | never |
| # otherwise | literal | literal | literal | carried |
| whitespace at either end | trimmed (str.strip's set) | trimmed (unicode.IsSpace) | space and tab trimmed | never |
| whitespace inside | literal | literal | literal | carried |
| control characters but tab | literal | literal | the assignment is ignored | never |

Quoted, the three agree as follows:

| in the value | python-dotenv | compose-go | systemd | so |
|---|---|---|---|---|
| ' in '...' | \' is an escaped quote; a bare ' ends the value | \' is an escaped quote; a bare ' ends it | any ' ends it (no escapes in '...') | double quotes |
| \ in '...' | \\ and \' are unescaped, other \x kept | \' unescaped, other \x kept; a trailing \ escapes the closing ' | literal | double quotes |
| ' in "..." | literal | literal | literal | carried |
| " in "..." | \" gives " | \" gives " | \" gives " | written \" |
| \ in "..." | \\ gives \ (also \n, \t, \' ... are escapes) | \\ gives \ (also \n, \t, \$, \0NNN ...) | \\ gives \ (\", \`, \$ too; other \x kept) | written \\ |
| $ in '...' | ${NAME} and ${NAME:-x} expanded, whatever the quotes | literal | literal | '...' without ${ |
| $ in "..." | ${...} expanded | $NAME, ${NAME} expanded; \$ and $$ give $ | literal; \$ gives $ | no spelling agrees: ${ refused; $ with ' or \ refused |
| newline | literal inside either quotes | literal inside quotes | literal inside quotes (env-util.c allows it; releases before it dropped any value with a control character but tab) | refused: older compose and systemd drop it |
| CR | the file is opened in text mode: a CR reads as a newline; "\r" gives CR | literal; "\r" gives CR | literal; "\r" stays \r | refused: no spelling agrees |
| NUL | literal | literal; "\0" gives NUL | the file is a C string: ends there | refused |
| #, ;, spaces, = | literal inside quotes | literal inside quotes | literal inside quotes | carried |

compose-go before 166f12c (July 2023) also misread a value ending in \
before the closing quote. A value no spelling carries through all three is
refused, naming the character, rather than written in a spelling one reader
misreads.
"""

import contextlib
import dataclasses
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from directory_api.errors import UserError

# Upper case only: compose reads a name starting with "export" as the word
# export plus a shorter name, and no reader treats A-Z, 0-9 and _ differently.
VARIABLE_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
CONFIG_KEYS = ("host_env_var_prefix", "file_path", "env_vars")
ENV_VARS_KEYS = ("required", "optional")

# Characters no spelling carries to all three readers (see the table above).
NO_SPELLING = (
    ("\n", "a newline"),
    ("\r", "a carriage return"),
    ("\0", "a NUL character"),
)
# Single quotes carry anything else but these; double quotes anything else but a $.
NOT_IN_SINGLE_QUOTES = (("'", "a single quote"), ("\\", "a backslash"), ("${", "'${'"))
# What some reader does not take literally in a bare value (see the second table).
NOT_BARE = {"\\": "a backslash", "$": "a '$'"}
QUOTES_FIRST = {"'": "a single quote first", '"': "a double quote first"}
# systemd ignores an assignment whose value holds one of these (env-util.c), quoted or not.
CONTROL = frozenset(chr(code) for code in [*range(32), 127]) - {"\t"}

DEFAULT_CONFIG = Path("env.json")
# build.sh packs the repository's env.json here, so the pyz alone can write a file of every setting.
BUILT_IN_CONFIG = Path(__file__).with_name("env.json")

USING_BUILT_IN = "no env.json in the current directory: using the one built into directory-api ({path})"
CONFIG_UNREADABLE = "{config}: cannot be read ({reason})"
CONFIG_NOT_JSON = "{config}: not valid JSON ({reason})"
CONFIG_TOO_DEEP = "{config}: nested too deeply to be an env-write config"
CONFIG_DUPLICATE_KEY = "{config}: key {key!r} is given twice; give it once"
CONFIG_NOT_OBJECT = "{config}: {key} must be a JSON object"
CONFIG_MISSING_KEY = "{config}: missing key {key!r}"
CONFIG_UNKNOWN_KEY = "{config}: unknown key {key!r} (expected {expected})"
CONFIG_WRONG_TYPE = "{config}: {key} must be {expected}"
CONFIG_BAD_NAME = (
    "{config}: {key}: {name!r} is not a variable name (A-Z, 0-9 and _, not starting with a digit)"
)
CONFIG_LISTED_TWICE = "{config}: env_vars: {name} is listed twice"
CONFIG_NO_DIRECTORY = "{config}: file_path {target}: the directory {directory} does not exist"
CONFIG_TARGET_IS_DIRECTORY = "{config}: file_path {target} is a directory"
CONFIG_TARGET_IS_CONFIG = (
    "{config}: file_path {target} is the config file {other}; it would be overwritten with the secrets"
)
CONFIG_SAME_TARGET = "{config}: file_path {target} is also written by {other}; give each config its own file"
MISSING_VARIABLE = "{host_name} is not set (required by {config})"
UNSAFE_VALUE = (
    "{host_name} holds {character}, which a .env file cannot carry to python-dotenv, "
    "docker compose and systemd alike"
)
NOT_UTF8 = "{host_name} is not valid UTF-8"
NOTHING_WRITTEN = "nothing was written"
WRITE_FAILED = "cannot write {target}: {reason}"
WROTE = "wrote {target} ({count} variables)"
QUOTED = (
    "{target}: {name} is written in quotes ({reason}): `docker run --env-file` would keep the quotes "
    "as part of the value (docker compose, systemd and python-dotenv read it right)"
)


@dataclasses.dataclass(frozen=True)
class Config:
    path: Path
    prefix: str
    target: Path
    required: tuple[str, ...]
    optional: tuple[str, ...]

    def host_name(self, name: str) -> str:
        return f"{self.prefix}_{name}"


def env_write(config_paths: list[Path], environ: Mapping[str, str], *, echo=print, warn=None) -> None:
    """Write every config's file, or none: raise UserError listing every problem first.

    `echo` gets a line for each file written; `warn` (default: stderr) one for each value written in quotes.
    """
    warn = warn or _to_stderr
    configs, problems = [], []
    for path in config_paths:
        try:
            configs.append(load_config(path))
        except UserError as error:
            problems.append(str(error))
    problems += target_is_config_problems(configs, config_paths)
    problems += same_target_problems(configs)
    files = {}
    for config in configs:
        variables, config_problems = collect(config, environ)
        problems += config_problems
        files[config.target] = variables
    if problems:
        raise UserError("\n".join(problems + [NOTHING_WRITTEN]))
    write_all({target: render(variables) for target, variables in files.items()})
    for target, variables in files.items():
        echo(WROTE.format(target=target, count=len(variables)))
        for name, value in variables.items():
            reason = why_not_bare(value)
            if reason:
                warn(QUOTED.format(target=target, name=name, reason=f"it holds {reason}"))


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr)


def default_configs(*, warn=None) -> list[Path]:
    """The config env-write reads when none is given: ./env.json, else the built-in one (saying so)."""
    if DEFAULT_CONFIG.exists() or not BUILT_IN_CONFIG.is_file():
        return [DEFAULT_CONFIG]
    (warn or _to_stderr)(USING_BUILT_IN.format(path=BUILT_IN_CONFIG))
    return [BUILT_IN_CONFIG]


def load_config(path: Path) -> Config:
    """Read and validate one config file; UserError names the file and the key."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or error
        raise UserError(CONFIG_UNREADABLE.format(config=path, reason=reason)) from None
    try:
        data = json.loads(text, object_pairs_hook=_refuse_duplicate_keys)
    except json.JSONDecodeError as error:
        raise UserError(CONFIG_NOT_JSON.format(config=path, reason=error)) from None
    except RecursionError:
        raise UserError(CONFIG_TOO_DEEP.format(config=path)) from None
    except _DuplicateKey as duplicate:
        raise UserError(CONFIG_DUPLICATE_KEY.format(config=path, key=duplicate.key)) from None
    return parse_config(path, data)


class _DuplicateKey(Exception):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _refuse_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    # json keeps the last of two equal keys: a second "required": [] would silently drop the first list.
    data = {}
    for key, value in pairs:
        if key in data:
            raise _DuplicateKey(key)
        data[key] = value
    return data


def parse_config(path: Path, data: object) -> Config:
    """The Config a decoded JSON document describes."""
    config = _checked_keys(path, data, "the config", CONFIG_KEYS, CONFIG_KEYS)
    prefix = config["host_env_var_prefix"]
    if not isinstance(prefix, str) or not VARIABLE_NAME.fullmatch(prefix):
        raise UserError(CONFIG_BAD_NAME.format(config=path, key="host_env_var_prefix", name=prefix))
    file_path = config["file_path"]
    if not isinstance(file_path, str) or not file_path:
        raise UserError(CONFIG_WRONG_TYPE.format(config=path, key="file_path", expected="a non-empty string"))
    env_vars = _checked_keys(path, config["env_vars"], "env_vars", (), ENV_VARS_KEYS)
    lists = {kind: _names(path, f"env_vars.{kind}", env_vars.get(kind, [])) for kind in ENV_VARS_KEYS}
    seen: set[str] = set()
    for name in lists["required"] + lists["optional"]:
        if name in seen:
            raise UserError(CONFIG_LISTED_TWICE.format(config=path, name=name))
        seen.add(name)
    target = Path(file_path)
    if target.is_dir():
        raise UserError(CONFIG_TARGET_IS_DIRECTORY.format(config=path, target=target))
    if not target.absolute().parent.is_dir():
        raise UserError(CONFIG_NO_DIRECTORY.format(config=path, target=target, directory=target.parent))
    return Config(path, prefix, target, lists["required"], lists["optional"])


def _checked_keys(
    path: Path, data: object, key: str, required: Iterable[str], allowed: tuple[str, ...]
) -> dict[str, object]:
    """`data`, a JSON object holding every key of `required` and no key outside `allowed`; else UserError."""
    if not isinstance(data, dict):
        raise UserError(CONFIG_NOT_OBJECT.format(config=path, key=key))
    for name in required:
        if name not in data:
            raise UserError(CONFIG_MISSING_KEY.format(config=path, key=name))
    for name in data:
        if name not in allowed:
            # A misspelt "optional" would otherwise drop its variables without a word.
            expected = ", ".join(allowed)
            raise UserError(CONFIG_UNKNOWN_KEY.format(config=path, key=name, expected=expected))
    return data


def _names(path: Path, key: str, names: object) -> tuple[str, ...]:
    if not isinstance(names, list):
        raise UserError(CONFIG_WRONG_TYPE.format(config=path, key=key, expected="a list of variable names"))
    for name in names:
        if not isinstance(name, str) or not VARIABLE_NAME.fullmatch(name):
            raise UserError(CONFIG_BAD_NAME.format(config=path, key=key, name=name))
    return tuple(names)


def target_is_config_problems(configs: list[Config], config_paths: list[Path]) -> list[str]:
    """A config's file_path naming a config of this run would overwrite that config with the secrets."""
    config_files = {os.path.realpath(path): path for path in config_paths}
    return [
        CONFIG_TARGET_IS_CONFIG.format(config=config.path, target=config.target, other=config_files[key])
        for config in configs
        if (key := os.path.realpath(config.target)) in config_files
    ]


def same_target_problems(configs: list[Config]) -> list[str]:
    """Two configs writing one file would leave only the second's variables."""
    problems: list[str] = []
    writers: dict[str, Path] = {}
    for config in configs:
        key = os.path.realpath(config.target)
        if key in writers:
            problems.append(CONFIG_SAME_TARGET.format(config=config.path, target=config.target, other=writers[key]))
        else:
            writers[key] = config.path
    return problems


def collect(config: Config, environ: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """The variables to write for one config, and every problem with the host's values."""
    variables, problems = {}, []
    for name in config.required + config.optional:
        host_name = config.host_name(name)
        value = environ.get(host_name, "")
        if value == "":  # empty counts as unset, as in the 2016 tool
            if name in config.required:
                problems.append(MISSING_VARIABLE.format(host_name=host_name, config=config.path))
            continue
        character = unsafe_character(value)
        if character:
            problems.append(UNSAFE_VALUE.format(host_name=host_name, character=character))
        elif not encodes_as_utf8(value):
            problems.append(NOT_UTF8.format(host_name=host_name))
        else:
            variables[name] = value
    return variables, problems


def unsafe_character(value: str) -> str | None:
    """The readable name of what makes `value` impossible to write for all three readers, else None."""
    for text, character in NO_SPELLING:
        if text in value:
            return character
    if "$" not in value:
        return None
    for text, character in NOT_IN_SINGLE_QUOTES:
        if text in value:
            return character if text == "${" else f"a '$' together with {character}"
    return None


def encodes_as_utf8(value: str) -> bool:
    # Bytes of the host environment that are not UTF-8 reach Python as lone surrogates.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def render(variables: Mapping[str, str]) -> str:
    """The file text: one VAR=value line each, bare where it can be, values already known to be writable."""
    return "".join(f"{name}={spelled(value)}\n" for name, value in variables.items())


def spelled(value: str) -> str:
    """`value` bare when all four readers take it back so, else quoted."""
    return quoted(value) if why_not_bare(value) else value


def why_not_bare(value: str) -> str | None:
    """What in `value` some reader would not take literally if it were written bare, else None."""
    if value != value.strip():  # str.strip's whitespace holds every reader's
        return "whitespace at one end"
    if value[:1] in QUOTES_FIRST:
        return QUOTES_FIRST[value[0]]
    for index, char in enumerate(value):
        if char in NOT_BARE:
            return NOT_BARE[char]
        if char in CONTROL:
            return "a control character"
        if char == "#" and index and value[index - 1].isspace():
            return "a '#' after whitespace"
    return None


def quoted(value: str) -> str:
    """`value` in the one spelling all three readers take back unchanged: single quotes, else double."""
    if not any(text in value for text, _ in NOT_IN_SINGLE_QUOTES):
        return f"'{value}'"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_all(contents: Mapping[Path, str]) -> None:
    """Write every file to a temp file first, then rename them all into place; UserError names the target."""
    staged: list[tuple[str, Path]] = []
    try:
        for target, text in contents.items():
            with _naming(target):
                staged.append((_write_temp(target, text), target))
        for temp, target in staged:
            with _naming(target):
                os.replace(temp, target)
                _sync_directory(target)
    finally:
        for temp, _ in staged:
            if os.path.exists(temp):
                os.unlink(temp)


@contextlib.contextmanager
def _naming(target: Path):
    # An OSError names the temp file (or nothing); the user knows only the file_path they asked for.
    try:
        yield
    except OSError as error:
        raise UserError(WRITE_FAILED.format(target=target, reason=error.strerror or error)) from None


def _write_temp(target: Path, text: str) -> str:
    """A 0600 temp file beside `target` holding `text`, synced to disk; returns its path."""
    # mkstemp creates the file 0600 before a byte of the secrets is in it.
    fd, temp = tempfile.mkstemp(dir=target.absolute().parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        os.unlink(temp)
        raise
    return temp


def _sync_directory(target: Path) -> None:
    """Make the rename itself durable."""
    fd = os.open(target.absolute().parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
