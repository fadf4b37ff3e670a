"""env-write: what it writes reads back identically, and a problem anywhere means nothing is written."""

import json
import os
import re
import stat
from pathlib import Path

import pytest
from dotenv import dotenv_values

from directory_api import envwrite
from directory_api.envwrite import env_write
from directory_api.errors import UserError
from directory_api.settings import VARIABLES

PREFIX = "DIRECTORY_API"


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path, monkeypatch):
    """Relative file_paths land in the test's own directory."""
    monkeypatch.chdir(tmp_path)


def write_config(path, *, required=(), optional=(), file_path=".env", prefix=PREFIX, **extra):
    config = {
        "host_env_var_prefix": prefix,
        "file_path": file_path,
        "env_vars": {"required": list(required), "optional": list(optional)},
        **extra,
    }
    Path(path).write_text(json.dumps(config))
    return Path(path)


def refused(config_paths, environ) -> list[str]:
    """The problem lines env-write raises (without the closing 'nothing was written')."""
    with pytest.raises(UserError) as raised:
        env_write(config_paths, environ, echo=lambda line: None)
    lines = str(raised.value).splitlines()
    assert lines[-1] == envwrite.NOTHING_WRITTEN
    return lines[:-1]


def written(value: str) -> dict:
    """What python-dotenv reads back after env-write wrote VALUE from DIRECTORY_API_VALUE."""
    config = write_config("env.json", required=["VALUE"])
    env_write([config], {f"{PREFIX}_VALUE": value}, echo=lambda line: None)
    return dotenv_values(".env")


# What it writes


def test_writes_each_set_variable_without_its_prefix():
    config = write_config("env.json", required=["DATABASE_URL"], optional=["PORT"])

    env_write([config], {"DIRECTORY_API_DATABASE_URL": "sqlite:///x.sqlite3", "DIRECTORY_API_PORT": "8000"})

    assert dotenv_values(".env") == {"DATABASE_URL": "sqlite:///x.sqlite3", "PORT": "8000"}


def test_leaves_out_unset_optional_variables():
    config = write_config("env.json", optional=["PORT", "SQS_WAIT_TIME"])

    env_write([config], {"DIRECTORY_API_PORT": "8000"})

    assert dotenv_values(".env") == {"PORT": "8000"}


def test_an_empty_optional_variable_counts_as_unset():
    config = write_config("env.json", optional=["PORT"])

    env_write([config], {"DIRECTORY_API_PORT": ""})

    assert dotenv_values(".env") == {}


def test_ignores_host_variables_without_the_prefix():
    config = write_config("env.json", optional=["PORT"])

    env_write([config], {"PORT": "9000"})

    assert dotenv_values(".env") == {}


def test_writes_ordinary_values_bare_so_docker_run_reads_them_too():
    # SPEC changed (issue 22): lines were single-quoted, which `docker run --env-file` keeps in the value.
    config = write_config("env.json", required=["UI_SECRET", "DATABASE_URL"], optional=["PORT"])

    env_write([config], {
        "DIRECTORY_API_UI_SECRET": "not-a-real-secret+/=_.:@-",
        "DIRECTORY_API_DATABASE_URL": "postgres://u:p%40ss@db.example.invalid:5432/directory_api?sslmode=require",
        "DIRECTORY_API_PORT": "8000",
    })

    assert Path(".env").read_text() == (
        "UI_SECRET=not-a-real-secret+/=_.:@-\n"
        "DATABASE_URL=postgres://u:p%40ss@db.example.invalid:5432/directory_api?sslmode=require\n"
        "PORT=8000\n"
    )


@pytest.mark.parametrize(
    "value",
    ["Your company's trade profile", 'say "hi"', "Export Directory <noreply@example.invalid>", "abc#123", "#first",
     "a=b=c", "naïve café", "100%", "`tick`", "tab\tinside", "line\u2028separator"],
)
def test_quotes_hash_and_spaces_inside_a_value_are_written_bare(value):
    config = write_config("env.json", required=["VALUE"])

    env_write([config], {"DIRECTORY_API_VALUE": value}, echo=lambda line: None, warn=pytest.fail)

    assert Path(".env").read_text() == f"VALUE={value}\n"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (" padded", "whitespace at one end"),
        ("padded\t", "whitespace at one end"),
        ("'quoted'", "a single quote first"),
        ('"quoted"', "a double quote first"),
        ("C:\\path", "a backslash"),
        ("$5 off", "a '$'"),
        ("a #comment", "a '#' after whitespace"),
        ("bell\x07", "a control character"),
    ],
)
def test_a_value_bare_would_change_is_quoted_and_named_on_stderr(value, reason, capsys):
    config = write_config("env.json", required=["UI_SECRET"])

    env_write([config], {"DIRECTORY_API_UI_SECRET": value}, echo=lambda line: None)

    assert dotenv_values(".env") == {"UI_SECRET": value}
    assert Path(".env").read_text()[len("UI_SECRET=")] in "'\""
    assert capsys.readouterr().err == envwrite.QUOTED.format(
        target=Path(".env"), name="UI_SECRET", reason=f"it holds {reason}"
    ) + "\n"


def test_the_quoted_warning_never_shows_the_value(capsys):
    config = write_config("env.json", required=["UI_SECRET"])

    env_write([config], {"DIRECTORY_API_UI_SECRET": "not-a-real-secret\\x"}, echo=lambda line: None)

    assert "not-a-real-secret" not in capsys.readouterr().err


def test_no_warning_when_every_value_is_bare(capsys):
    config = write_config("env.json", required=["UI_SECRET"])

    env_write([config], {"DIRECTORY_API_UI_SECRET": "not-a-real-secret"}, echo=lambda line: None)

    assert capsys.readouterr().err == ""


def test_prints_one_line_per_file_written():
    first = write_config("a.json", optional=["PORT"], file_path="a.env")
    second = write_config("b.json", optional=["PORT"], file_path="b.env")
    lines = []

    env_write([first, second], {"DIRECTORY_API_PORT": "8000"}, echo=lines.append)

    assert lines == [
        envwrite.WROTE.format(target=Path("a.env"), count=1),
        envwrite.WROTE.format(target=Path("b.env"), count=1),
    ]


def test_writes_the_file_path_of_each_config():
    first = write_config("a.json", required=["PORT"], file_path="a.env")
    second = write_config("b.json", required=["UI_SECRET"], file_path="sub/b.env")
    Path("sub").mkdir()

    env_write([first, second], {"DIRECTORY_API_PORT": "8000", "DIRECTORY_API_UI_SECRET": "debug"})

    assert dotenv_values("a.env") == {"PORT": "8000"}
    assert dotenv_values("sub/b.env") == {"UI_SECRET": "debug"}


def test_replaces_an_existing_file_whole():
    Path(".env").write_text("OLD='stale'\n")
    config = write_config("env.json", required=["PORT"])

    env_write([config], {"DIRECTORY_API_PORT": "8000"})

    assert dotenv_values(".env") == {"PORT": "8000"}


def test_the_file_is_readable_by_its_owner_only():
    config = write_config("env.json", required=["UI_SECRET"])

    env_write([config], {"DIRECTORY_API_UI_SECRET": "not-a-real-secret"})

    assert stat.S_IMODE(os.stat(".env").st_mode) == 0o600


def test_an_existing_world_readable_file_becomes_owner_only():
    Path(".env").write_text("")
    os.chmod(".env", 0o644)
    config = write_config("env.json", required=["UI_SECRET"])

    env_write([config], {"DIRECTORY_API_UI_SECRET": "not-a-real-secret"})

    assert stat.S_IMODE(os.stat(".env").st_mode) == 0o600


def test_leaves_no_temporary_file_behind(tmp_path):
    config = write_config("env.json", required=["PORT"])

    env_write([config], {"DIRECTORY_API_PORT": "8000"})

    assert sorted(path.name for path in tmp_path.iterdir()) == [".env", "env.json"]


def test_a_file_it_cannot_write_is_a_user_error_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    def denied(source, target):
        raise PermissionError(13, "Permission denied", str(target))

    monkeypatch.setattr(envwrite.os, "replace", denied)
    config = write_config("env.json", required=["PORT"])

    with pytest.raises(UserError) as raised:
        env_write([config], {"DIRECTORY_API_PORT": "8000"})

    assert str(raised.value) == envwrite.WRITE_FAILED.format(target=Path(".env"), reason="Permission denied")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["env.json"]


# Values read back exactly as set


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("  padded  ", id="leading and trailing spaces"),
        pytest.param("\tindented\t", id="tabs"),
        pytest.param("a # not a comment", id="hash after a space"),
        pytest.param("#starts-with-hash", id="hash first"),
        pytest.param("a=b=c", id="equals signs"),
        pytest.param("$HOME and $$ and $", id="dollar signs"),
        pytest.param("{braces} $ {", id="braces without dollar-brace"),
        pytest.param('say "hi"', id="double quotes"),
        pytest.param('"', id="a lone double quote"),
        pytest.param("postgres://user:p%40ss@db:5432/directory_api?sslmode=require", id="database URL"),
        pytest.param("naïve café ✓ 東京 🙂", id="unicode"),
        pytest.param("export OTHER=1", id="looks like an export line"),
        pytest.param("OTHER=injected", id="looks like an assignment"),
        pytest.param(";semicolon first", id="systemd comment character"),
        pytest.param(" ", id="a single space"),
        pytest.param("%i %n", id="systemd specifiers"),
        pytest.param("x" * 10_000, id="long"),
        pytest.param("it's", id="a single quote"),
        pytest.param("C:\\path", id="a backslash"),
        pytest.param("ends with \\", id="a trailing backslash"),
        pytest.param("\\", id="a lone backslash"),
        pytest.param('\\"', id="a backslash before a double quote"),
        pytest.param("\\n \\t \\' \\u00e9 \\x41 \\0101", id="escape sequences of the readers, literally"),
        pytest.param("q'\"`#;= \\", id="every quote and backslash at once"),
    ],
)
def test_reads_back_identically_with_python_dotenv(value):
    assert written(value) == {"VALUE": value}


def test_a_value_single_quotes_cannot_carry_is_double_quoted_with_quote_and_backslash_escaped():
    config = write_config("env.json", required=["UI_SECRET"])

    env_write([config], {"DIRECTORY_API_UI_SECRET": 'it\'s "a" C:\\'}, echo=lambda line: None, warn=lambda line: None)

    assert Path(".env").read_text() == 'UI_SECRET="it\'s \\"a\\" C:\\\\"\n'


# Values refused, naming the variable and the character


@pytest.mark.parametrize(
    ("value", "character"),
    [
        ("${HOME}", "'${'"),
        ("it's $5", "a '$' together with a single quote"),
        ("C:\\$path", "a '$' together with a backslash"),
        ("line one\nline two", "a newline"),
        ("x\nOTHER=injected", "a newline"),
        ("windows\r", "a carriage return"),
        ("nul\0byte", "a NUL character"),
    ],
)
def test_refuses_a_value_no_spelling_carries_through_all_readers(value, character):
    config = write_config("env.json", required=["UI_SECRET"])

    problems = refused([config], {"DIRECTORY_API_UI_SECRET": value})

    assert problems == [envwrite.UNSAFE_VALUE.format(host_name="DIRECTORY_API_UI_SECRET", character=character)]
    assert not Path(".env").exists()


def test_a_refused_message_never_shows_the_value():
    config = write_config("env.json", required=["UI_SECRET"])

    problems = refused([config], {"DIRECTORY_API_UI_SECRET": "not-a-real-secret'$"})

    assert "not-a-real-secret" not in "\n".join(problems)


def test_refuses_a_value_that_is_not_utf8():
    config = write_config("env.json", required=["UI_SECRET"])
    undecodable = os.fsdecode(b"caf\xe9")  # what os.environ holds for Latin-1 bytes

    problems = refused([config], {"DIRECTORY_API_UI_SECRET": undecodable})

    assert problems == [envwrite.NOT_UTF8.format(host_name="DIRECTORY_API_UI_SECRET")]


def test_an_unsafe_optional_value_also_stops_every_file():
    config = write_config("env.json", optional=["UI_SECRET"])

    refused([config], {"DIRECTORY_API_UI_SECRET": "it's $5"})

    assert not Path(".env").exists()


# Missing required variables


def test_lists_every_missing_required_variable_and_writes_nothing():
    config = write_config("env.json", required=["DATABASE_URL", "UI_SECRET", "PORT"])

    problems = refused([config], {"DIRECTORY_API_PORT": "8000"})

    assert problems == [
        envwrite.MISSING_VARIABLE.format(host_name="DIRECTORY_API_DATABASE_URL", config=config),
        envwrite.MISSING_VARIABLE.format(host_name="DIRECTORY_API_UI_SECRET", config=config),
    ]
    assert not Path(".env").exists()


def test_an_empty_required_variable_counts_as_missing():
    config = write_config("env.json", required=["UI_SECRET"])

    problems = refused([config], {"DIRECTORY_API_UI_SECRET": ""})

    assert problems == [envwrite.MISSING_VARIABLE.format(host_name="DIRECTORY_API_UI_SECRET", config=config)]


def test_a_missing_variable_in_one_config_stops_every_config():
    good = write_config("good.json", required=["PORT"], file_path="good.env")
    bad = write_config("bad.json", required=["UI_SECRET"], file_path="bad.env")

    problems = refused([good, bad], {"DIRECTORY_API_PORT": "8000"})

    assert problems == [envwrite.MISSING_VARIABLE.format(host_name="DIRECTORY_API_UI_SECRET", config=bad)]
    assert not Path("good.env").exists()
    assert not Path("bad.env").exists()


def test_a_failed_run_leaves_an_existing_file_untouched():
    Path(".env").write_text("PORT='8000'\n")
    config = write_config("env.json", required=["PORT", "UI_SECRET"])

    refused([config], {"DIRECTORY_API_PORT": "9000"})

    assert Path(".env").read_text() == "PORT='8000'\n"


def test_each_config_reads_its_own_prefix():
    config = write_config("env.json", required=["PORT"], prefix="OTHER_APP")

    problems = refused([config], {"DIRECTORY_API_PORT": "8000"})

    assert problems == [envwrite.MISSING_VARIABLE.format(host_name="OTHER_APP_PORT", config=config)]


# Malformed config files: one line naming the file and the key


def test_a_config_that_does_not_exist():
    (problem,) = refused([Path("absent.json")], {})

    assert problem.startswith("absent.json: cannot be read")


def test_a_config_that_is_not_json():
    Path("env.json").write_text("{not json")

    (problem,) = refused([Path("env.json")], {})

    assert problem.startswith("env.json: not valid JSON")


def test_a_config_that_is_not_an_object():
    Path("env.json").write_text("[]")

    assert refused([Path("env.json")], {}) == [envwrite.CONFIG_NOT_OBJECT.format(config="env.json", key="the config")]


@pytest.mark.parametrize("key", envwrite.CONFIG_KEYS)
def test_a_config_missing_a_key(key):
    config = write_config("env.json", required=["PORT"])
    data = json.loads(config.read_text())
    del data[key]
    config.write_text(json.dumps(data))

    assert refused([config], {}) == [envwrite.CONFIG_MISSING_KEY.format(config=config, key=key)]


def test_a_config_with_an_unknown_key():
    config = write_config("env.json", required=["PORT"], file_pth=".env")

    assert refused([config], {}) == [
        envwrite.CONFIG_UNKNOWN_KEY.format(config=config, key="file_pth", expected=", ".join(envwrite.CONFIG_KEYS))
    ]


def test_a_misspelt_env_vars_list_is_refused_not_ignored():
    config = write_config("env.json")
    data = json.loads(config.read_text())
    data["env_vars"] = {"required": [], "optonal": ["PORT"]}
    config.write_text(json.dumps(data))

    (problem,) = refused([config], {})

    assert problem == envwrite.CONFIG_UNKNOWN_KEY.format(config=config, key="optonal", expected="required, optional")


def test_env_vars_lists_may_be_left_out():
    config = write_config("env.json")
    data = json.loads(config.read_text())
    data["env_vars"] = {"optional": ["PORT"]}
    config.write_text(json.dumps(data))

    env_write([config], {"DIRECTORY_API_PORT": "8000"}, echo=lambda line: None)

    assert dotenv_values(".env") == {"PORT": "8000"}


def test_env_vars_that_is_not_an_object():
    config = write_config("env.json", env_vars=["PORT"])

    assert refused([config], {}) == [envwrite.CONFIG_NOT_OBJECT.format(config=config, key="env_vars")]


def test_a_variable_list_that_is_not_a_list():
    config = write_config("env.json")
    data = json.loads(config.read_text())
    data["env_vars"]["required"] = "PORT"
    config.write_text(json.dumps(data))

    assert refused([config], {}) == [
        envwrite.CONFIG_WRONG_TYPE.format(config=config, key="env_vars.required", expected="a list of variable names")
    ]


@pytest.mark.parametrize("name", ["port", "9LIVES", "A-B", "A B", "A=B", "X\nY", "export_X", "", 8000])
def test_a_variable_name_no_reader_takes_as_is(name):
    config = write_config("env.json", optional=[name])

    assert refused([config], {}) == [
        envwrite.CONFIG_BAD_NAME.format(config=config, key="env_vars.optional", name=name)
    ]


@pytest.mark.parametrize("prefix", ["", "directory_api", "DIRECTORY-API", None])
def test_a_bad_prefix(prefix):
    config = write_config("env.json", prefix=prefix)

    assert refused([config], {}) == [
        envwrite.CONFIG_BAD_NAME.format(config=config, key="host_env_var_prefix", name=prefix)
    ]


@pytest.mark.parametrize("file_path", ["", None, 3])
def test_a_file_path_that_is_not_a_path(file_path):
    config = write_config("env.json", file_path=file_path)

    assert refused([config], {}) == [
        envwrite.CONFIG_WRONG_TYPE.format(config=config, key="file_path", expected="a non-empty string")
    ]


def test_a_file_path_in_a_directory_that_does_not_exist():
    config = write_config("env.json", file_path="nowhere/.env")

    assert refused([config], {}) == [
        envwrite.CONFIG_NO_DIRECTORY.format(config=config, target=Path("nowhere/.env"), directory=Path("nowhere"))
    ]


def test_a_file_path_that_is_a_directory():
    Path("adir").mkdir()
    config = write_config("env.json", file_path="adir")

    assert refused([config], {}) == [envwrite.CONFIG_TARGET_IS_DIRECTORY.format(config=config, target=Path("adir"))]


def test_a_variable_listed_twice():
    config = write_config("env.json", required=["PORT"], optional=["PORT"])

    assert refused([config], {}) == [envwrite.CONFIG_LISTED_TWICE.format(config=config, name="PORT")]


def test_two_configs_writing_one_file():
    first = write_config("a.json", optional=["PORT"])
    second = write_config("b.json", optional=["UI_SECRET"])

    assert refused([first, second], {}) == [
        envwrite.CONFIG_SAME_TARGET.format(config=second, target=Path(".env"), other=first)
    ]


def test_a_bad_config_stops_the_good_ones_and_every_problem_is_listed():
    good = write_config("good.json", required=["PORT"], file_path="good.env")
    Path("bad.json").write_text("{")
    short = write_config("short.json", required=["UI_SECRET"], file_path="short.env")

    problems = refused([good, Path("bad.json"), short], {"DIRECTORY_API_PORT": "8000"})

    assert len(problems) == 2
    assert problems[0].startswith("bad.json: not valid JSON")
    assert problems[1] == envwrite.MISSING_VARIABLE.format(host_name="DIRECTORY_API_UI_SECRET", config=short)
    assert not Path("good.env").exists()


# The repository's env.json


def test_the_repository_env_json_lists_every_setting():
    config = envwrite.load_config(Path(__file__).parents[1] / "env.json")

    assert sorted(config.required + config.optional) == sorted(variable.name for variable in VARIABLES)


def test_the_repository_env_json_requires_what_production_cannot_default():
    config = envwrite.load_config(Path(__file__).parents[1] / "env.json")

    assert config.prefix == "DIRECTORY_API"
    assert set(config.required) == {
        "DATABASE_URL",
        "UI_SECRET",
        "SQS_ENROLMENT_QUEUE_NAME",
        "SQS_INVALID_ENROLMENT_QUEUE_NAME",
    }


# Defects found by hand (issue 10): each refused with one line, nothing written


def test_a_config_nested_100000_deep_is_refused_not_a_traceback():
    Path("env.json").write_text("[" * 100_000 + "]" * 100_000)

    assert refused([Path("env.json")], {}) == [envwrite.CONFIG_TOO_DEEP.format(config="env.json")]


def test_a_duplicate_key_is_refused_not_last_wins():
    # A second "required": [] used to drop the first list's UI_SECRET without a word.
    Path("env.json").write_text(
        '{"host_env_var_prefix": "DIRECTORY_API", "file_path": ".env",'
        ' "env_vars": {"required": ["UI_SECRET"], "optional": ["PORT"], "required": []}}'
    )

    assert refused([Path("env.json")], {"DIRECTORY_API_PORT": "8000"}) == [
        envwrite.CONFIG_DUPLICATE_KEY.format(config="env.json", key="required")
    ]
    assert not Path(".env").exists()


def test_a_config_whose_file_path_is_itself_is_refused_not_overwritten():
    config = write_config("env.json", required=["UI_SECRET"], file_path="env.json")
    before = config.read_text()

    assert refused([config], {"DIRECTORY_API_UI_SECRET": "not-a-real-secret"}) == [
        envwrite.CONFIG_TARGET_IS_CONFIG.format(config=config, target=Path("env.json"), other=config)
    ]
    assert config.read_text() == before


def test_a_config_whose_file_path_is_another_config_of_the_run_is_refused():
    first = write_config("a.json", optional=["PORT"], file_path="b.json")
    second = write_config("b.json", optional=["PORT"], file_path="b.env")

    assert refused([first, second], {"DIRECTORY_API_PORT": "8000"}) == [
        envwrite.CONFIG_TARGET_IS_CONFIG.format(config=first, target=Path("b.json"), other=second)
    ]


def test_an_unwritable_directory_names_the_target_not_the_temp_file(tmp_path, monkeypatch):
    # As root the tests cannot make a directory unwritable; this raises what mkstemp raises there.
    def denied(dir, prefix, suffix):
        raise PermissionError(13, "Permission denied", os.path.join(dir, f"{prefix}abc123{suffix}"))

    monkeypatch.setattr(envwrite.tempfile, "mkstemp", denied)
    config = write_config("env.json", required=["PORT"])

    with pytest.raises(UserError) as raised:
        env_write([config], {"DIRECTORY_API_PORT": "8000"})

    assert str(raised.value) == envwrite.WRITE_FAILED.format(target=Path(".env"), reason="Permission denied")


# The default config (issue 22.7)


def test_the_default_config_is_env_json_of_the_current_directory(monkeypatch, tmp_path):
    write_config("env.json", optional=["PORT"])
    monkeypatch.setattr(envwrite, "BUILT_IN_CONFIG", write_config(tmp_path / "built-in.json", optional=["PORT"]))

    assert envwrite.default_configs(warn=pytest.fail) == [Path("env.json")]


def test_without_env_json_here_the_built_in_one_is_used_and_named(monkeypatch, tmp_path):
    Path("elsewhere").mkdir()
    built_in = write_config(tmp_path / "elsewhere" / "env.json", optional=["PORT"])
    monkeypatch.setattr(envwrite, "BUILT_IN_CONFIG", built_in)
    warned = []

    assert envwrite.default_configs(warn=warned.append) == [built_in]
    assert warned == [envwrite.USING_BUILT_IN.format(path=built_in)]


def test_without_either_the_default_is_env_json_here_so_the_error_names_it(monkeypatch, tmp_path):
    monkeypatch.setattr(envwrite, "BUILT_IN_CONFIG", tmp_path / "absent.json")

    assert envwrite.default_configs(warn=pytest.fail) == [Path("env.json")]


def test_the_example_env_file_is_written_bare_so_docker_run_reads_it_as_the_others_do():
    example = Path(__file__).parents[1] / "docs" / "directory-api.env.example"
    # Commented-out variables too: an operator uncomments them as they are.
    variables = re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=(.*)$", example.read_text(), flags=re.MULTILINE)

    assert len(variables) > 10
    for name, value in variables:
        assert envwrite.spelled(value) == value, f"{name} in {example.name} is not bare"
