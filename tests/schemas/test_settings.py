"""The settings declaration: parsing, --help and the README's tables all come from it."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from schemas.settings import (
    Settings,
    SettingsError,
    add_arguments,
    declared,
    load_settings,
    redacted,
    settings_table,
    sqlite_path,
)

README = Path(__file__).parents[2] / "README.md"


def load(*flags: str, **environ: str) -> Settings:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return load_settings(parser.parse_args(list(flags)), environ)


def test_nothing_given_is_the_declared_defaults() -> None:
    assert load() == Settings()
    assert Settings().address == ("", 8888)
    assert Settings().store == "sqlite:///frpa.db"


def test_every_setting_is_read_from_its_variable_and_its_flag_wins() -> None:
    settings = load("--heartbeat-timeout", "30", FRPA_HEARTBEAT_TIMEOUT="45", FRPA_SSH_USER="ops")
    assert settings.heartbeat_timeout == 30.0
    assert settings.ssh_user == "ops"


def test_a_bad_value_names_what_was_given_flag_or_variable() -> None:
    with pytest.raises(SettingsError, match=r"^--heartbeat-timeout: must be seconds"):
        load("--heartbeat-timeout", "soon")
    with pytest.raises(SettingsError, match=r"^FRPA_HEARTBEAT_TIMEOUT: must be seconds"):
        load(FRPA_HEARTBEAT_TIMEOUT="soon")


def test_secrets_have_no_flag_and_never_show_in_a_repr() -> None:
    secrets = {f.name for f, setting in declared() if setting.secret}
    assert secrets == {
        "frps_api_password",
        "plugin_secret",
        "ssh_password",
        "dingtalk_webhook",
        "notify_url",
    }
    settings = load(
        FRP_SERVER_HTTPAUTHPASSWORD="pw-one-1234",
        FRPA_PLUGIN_SECRET="secret-two-12345",
        FRPA_SSH_PASSWORD="pw-three-5678",
        FRP_SERVER_WEBHOOK="https://oapi.dingtalk.com/robot/send?access_token=token-four",
        FRPA_NOTIFY_URL="https://hooks.example.org/token-five",
    )
    assert settings.plugin_secret == "secret-two-12345"
    for secret in ("pw-one", "secret-two", "pw-three", "token-four", "token-five"):
        assert secret not in repr(settings)
    with pytest.raises(SystemExit):
        load("--plugin-secret", "x" * 16)


def test_help_shows_every_flag_and_every_variable() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    text = parser.format_help()
    for f, setting in declared():
        assert setting.env in text
        flag = setting.flag(f.name)
        assert flag is None or flag in text


def test_the_readme_settings_tables_are_the_declaration() -> None:
    readme = README.read_text()
    found = re.search(r"<!-- settings -->\n(.*?)<!-- /settings -->", readme, re.S)
    assert found is not None, "README.md has no <!-- settings --> block"
    assert found[1].strip() == settings_table().strip(), (
        "README.md's settings differ from schemas/settings.py: paste the output of "
        "`python -c 'from schemas.settings import settings_table; print(settings_table())'`"
    )


@pytest.mark.parametrize("url", ["sqlite://x.db", "postgres:///x", "sqlite:///", "frpa.db"])
def test_unsupported_store_urls_are_refused(url: str) -> None:
    with pytest.raises(SettingsError, match="FRPA_STORE: must be kubernetes"):
        load(FRPA_STORE=url)


def test_store_urls_name_kubernetes_or_relative_and_absolute_files() -> None:
    assert load(FRPA_STORE="kubernetes").store == "kubernetes"
    assert sqlite_path("sqlite:///frpa.db") == "frpa.db"
    assert sqlite_path("sqlite:////var/lib/frpa.db") == "/var/lib/frpa.db"


def test_redacted_drops_the_userinfo_of_every_url_in_a_text() -> None:
    text = "a=http://u:p@h:1/x, b=https://tok@example.org/y@z"
    assert redacted(text) == "a=http://h:1/x, b=https://example.org/y@z"


def test_redacted_keeps_only_the_names_of_a_urls_query() -> None:
    text = "to 'https://oapi.dingtalk.com/robot/send?access_token=s3cr3t&x=1#top' failed"
    assert (
        redacted(text)
        == "to 'https://oapi.dingtalk.com/robot/send?access_token=***&x=***#top' failed"
    )
    assert redacted("http://h/hook?s3cr3t") == "http://h/hook?***"


def test_a_webhook_must_be_an_http_url_and_its_error_shows_no_secret() -> None:
    with pytest.raises(SettingsError, match=r"^FRP_SERVER_WEBHOOK: must be an http\(s\) URL") as e:
        load(FRP_SERVER_WEBHOOK="oapi.dingtalk.com/robot/send?access_token=s3cr3t")
    assert "s3cr3t" not in str(e.value)


def test_each_frps_may_name_its_bind_port_after_its_address() -> None:
    settings = load(
        FRPA_FRPS_SERVERS="east=frps-east=http://frps-east:7500,west=10.0.0.2:7001,"
        "v6=[fd00::2]:7002,bare=fd00::3"
    )
    assert [(s.name, s.address, s.bind_port) for s in settings.servers()] == [
        ("east", "frps-east", 7000),
        ("west", "10.0.0.2", 7001),
        ("v6", "fd00::2", 7002),
        ("bare", "fd00::3", 7000),
    ]
    assert load(FRPA_FRPS_BIND_PORT="7100").servers()[0].bind_port == 7100
    with pytest.raises(SettingsError, match="must be host:port"):
        load(FRPA_FRPS_SERVERS="a=10.0.0.2:ssh")
    with pytest.raises(SettingsError, match="drop FRPA_FRPS_ADDRESS, FRPA_FRPS_BIND_PORT"):
        load(FRPA_FRPS_SERVERS="a=10.0.0.2", FRPA_FRPS_BIND_PORT="7100")


def test_port_is_where_to_listen_when_no_address_is_given() -> None:
    """The original's `http` build (main/main.go) listened on :$PORT."""
    assert load(PORT="9090").address == ("", 9090)
    assert load(PORT="9090", FRP_ADAPTER_ADDRESS="127.0.0.1:7000").address == ("127.0.0.1", 7000)
    assert load("--address", "127.0.0.1:7001", PORT="9090").address == ("127.0.0.1", 7001)
    with pytest.raises(SettingsError, match="PORT: "):
        load(PORT="http")
