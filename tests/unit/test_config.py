"""Settings: spec defaults, YAML file, RECLOOP_* environment, refusals (recloop.config)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from recloop.cli import app as cli
from recloop.config import load_settings
from recloop.core.errors import ConfigError
from recloop.core.events import FEEDBACK_TYPES


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("RECLOOP_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recloop.yaml"
    path.write_text(text)
    return path


def test_defaults_are_the_spec_values() -> None:
    s = load_settings()
    assert (s.feedback.base_alpha, s.feedback.alpha_max) == (0.1, 0.5)
    assert (s.feedback.apply_batch_max, s.feedback.implicit_max_buffer) == (20_000, 100_000)
    assert s.feedback.implicit_flush_seconds == 300.0
    assert s.feedback.max_future_seconds == 300.0
    assert s.feedback.dwell_full_seconds == 300.0
    assert s.feedback.max_batch_events == 1_000
    assert s.vectors.dim == 64
    assert s.storage.url == "sqlite+aiosqlite:///./data/recloop.db"
    assert (s.server.host, s.server.port) == ("127.0.0.1", 8000)


def test_default_feedback_types() -> None:
    types = load_settings().feedback.types
    assert set(types) == FEEDBACK_TYPES
    assert (types["like"].strength, types["like"].multiplier) == (1.0, 1.0)
    assert types["dislike"].strength == -1.0
    assert types["skip"].strength < 0.0
    assert types["impression"].strength * types["impression"].multiplier == 0.0
    assert (types["share"].strength, types["share"].multiplier) == (1.0, 1.2)


def test_yaml_file_is_loaded(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "feedback:\n  implicit_flush_seconds: 60\n  apply_batch_max: 3\n"
        "vectors:\n  dim: 16\nstorage:\n  url: 'sqlite+aiosqlite:///:memory:'\n",
    )
    s = load_settings(path)
    assert (s.feedback.implicit_flush_seconds, s.feedback.apply_batch_max) == (60.0, 3)
    assert s.feedback.implicit_max_buffer == 100_000  # untouched keys keep their default
    assert s.vectors.dim == 16
    assert s.storage.url == "sqlite+aiosqlite:///:memory:"


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, "")).vectors.dim == 64


def test_file_may_override_some_feedback_types(tmp_path: Path) -> None:
    path = write(tmp_path, "feedback:\n  types:\n    like: {strength: 0.5, multiplier: 2.0}\n")
    types = load_settings(path).feedback.types
    assert (types["like"].strength, types["like"].multiplier) == (0.5, 2.0)
    assert set(types) == FEEDBACK_TYPES
    assert types["dislike"].strength == -1.0


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "feedback:\n  implicit_flush_seconds: 60\n  apply_batch_max: 3\n")
    monkeypatch.setenv("RECLOOP_FEEDBACK__IMPLICIT_FLUSH_SECONDS", "1.5")
    s = load_settings(path)
    assert s.feedback.implicit_flush_seconds == 1.5
    assert s.feedback.apply_batch_max == 3  # the rest of the file's section is kept


def test_environment_without_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECLOOP_VECTORS__DIM", "32")
    assert load_settings().vectors.dim == 32


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("bogus: 1\n", "'bogus'"),
        ("feedback:\n  bogus: 1\n", "'feedback.bogus'"),
        (
            "feedback:\n  types:\n    like: {strength: 1, multiplier: 1, extra: 2}\n",
            "'feedback.types.like.extra'",
        ),
    ],
)
def test_unknown_key_in_file(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError, match="unknown config key") as info:
        load_settings(write(tmp_path, text))
    assert key in str(info.value)


def test_unknown_key_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECLOOP_FEEDBACK__BOGUS", "1")
    with pytest.raises(ConfigError, match=re.escape("unknown config key 'feedback.bogus'")):
        load_settings()


def test_misspelt_environment_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # bug: a RECLOOP_ variable naming no section (one "_" instead of "__") is silently ignored
    monkeypatch.setenv("RECLOOP_FEEDBACK_IMPLICIT_FLUSH_SECONDS", "1")
    with pytest.raises(ConfigError, match=r"(?i)feedback_implicit_flush_seconds"):
        load_settings()


def test_the_clients_variables_do_not_stop_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    # bug: RECLOOP_API_KEY (recloop-client's) read as a misspelt RECLOOP_API__KEY
    monkeypatch.setenv("RECLOOP_API_KEY", "a-key")
    monkeypatch.setenv("RECLOOP_URL", "http://127.0.0.1:8000")
    assert load_settings().api.max_body_bytes > 0


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("feedback:\n  base_alpha: 2\n", "'feedback.base_alpha'"),
        ("feedback:\n  apply_batch_max: 0\n", "'feedback.apply_batch_max'"),
        ("vectors:\n  dim: 1\n", "'vectors.dim'"),
        ("vectors:\n  dim: many\n", "'vectors.dim'"),
        ("storage:\n  sqlite_synchronous: OFF\n", "'storage.sqlite_synchronous'"),
        (
            "feedback:\n  types:\n    like: {strength: 3, multiplier: 1}\n",
            "'feedback.types.like.strength'",
        ),
    ],
)
def test_bad_value_in_file(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text))
    assert f"config key {key}" in str(info.value)


def test_bad_value_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECLOOP_FEEDBACK__APPLY_BATCH_MAX", "abc")
    with pytest.raises(ConfigError, match=r"'feedback\.apply_batch_max'.*'abc'"):
        load_settings()


def test_every_bad_key_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "feedback:\n  base_alpha: 2\nvectors:\n  dim: 1\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert "'feedback.base_alpha'" in str(info.value)
    assert "'vectors.dim'" in str(info.value)


def test_unknown_feedback_type_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "feedback:\n  types:\n    bogus: {strength: 1, multiplier: 1}\n")
    with pytest.raises(ConfigError, match=r"unknown feedback type.*bogus"):
        load_settings(path)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="does not exist") as info:
        load_settings(missing)
    assert str(missing) in str(info.value)


def test_file_must_hold_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(write(tmp_path, "- a\n- b\n"))


def test_settings_are_frozen() -> None:
    s = load_settings()
    with pytest.raises(ValidationError):
        s.feedback.base_alpha = 0.2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("feedback:\n  base_alpha: [0.1\n", "line 3"),
        ("feedback:\n\tbase_alpha: 0.1\n", "line 2"),
        ("a: b: c\n", "line 1, column 5"),
    ],
)
def test_a_yaml_syntax_error_is_a_config_error(tmp_path: Path, text: str, where: str) -> None:
    """Issue 16: one line naming the file and the place, not a parser's traceback."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    message = str(info.value)
    assert message.startswith(f"invalid configuration: {path}: not valid YAML")
    assert where in message
    assert "\n" not in message


def test_an_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "recloop.yaml"
    path.write_bytes(b"feedback:\n  base_alpha: \xff\n")
    with pytest.raises(ConfigError, match=r"invalid configuration: .*not UTF-8"):
        load_settings(path)


def test_the_cli_says_so_in_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  port: [8000\n")
    result = CliRunner().invoke(cli, ["config", "--config", str(path)])
    assert result.exit_code == 2
    assert result.output.startswith(f"error: invalid configuration: {path}: not valid YAML")
    assert len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output


# -- one definition per setting: the spam model's numbers -----------------------------------


def test_every_number_of_the_spam_model_is_a_spam_key(tmp_path: Path) -> None:
    import dataclasses

    from recloop.core.spam import SpamConfig

    defaults = load_settings().spam
    assert defaults.detectors == SpamConfig()
    dumped = defaults.model_dump()
    assert {f.name for f in dataclasses.fields(SpamConfig)} <= set(dumped)  # flat
    assert "detectors" not in dumped
    path = write(tmp_path, "spam:\n  rate_max: 2.5\n  w_group: 0\n  enabled: false\n")
    spam = load_settings(path).spam
    assert (spam.detectors.rate_max, spam.detectors.w_group, spam.enabled) == (2.5, 0.0, False)
    assert spam.detectors.cv_min == SpamConfig().cv_min  # the others keep their defaults


def test_spam_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECLOOP_SPAM__RATE_MAX", "3")
    monkeypatch.setenv("RECLOOP_SPAM__GROUP_ARRIVAL_SECONDS", "[3600, 86400]")
    spam = load_settings().spam.detectors
    assert spam.rate_max == 3.0
    assert spam.group_arrival_seconds == (3600.0, 86400.0)


@pytest.mark.parametrize(
    ("spam", "message"),
    [
        ({"block_threshold": 70}, "config key 'spam.block_threshold': must be <= suspect"),
        ({"rate_max": "fast"}, "config key 'spam.rate_max'"),
        ({"recent_actions": 1}, "config key 'spam.recent_actions': must be >= 2"),
        ({"rate_maxx": 1}, "unknown config key 'spam.rate_maxx'"),
        ({"detectors": {"rate_max": 1}}, "flat under spam"),
    ],
)
def test_bad_spam_keys_are_named(spam: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(spam=spam)


def test_checks_across_sections_run_when_the_settings_load() -> None:
    with pytest.raises(ConfigError, match=r"learning\.training_days \(14\) must not exceed"):
        load_settings(privacy={"event_retention_days": 7})
    with pytest.raises(ConfigError, match=r"experiments\.cuped_days \(30\) must not exceed"):
        load_settings(experiments={"cuped_days": 30}, privacy={"event_retention_days": 20})
    load_settings(
        privacy={"event_retention_days": 7},
        learning={"enabled": False},
        experiments={"cuped_days": 7},
    )
