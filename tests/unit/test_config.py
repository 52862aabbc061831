"""The table list and settings, as a user writes them."""

from __future__ import annotations

import pytest

from dynamo_cdc.config import (
    Settings,
    TableSpec,
    dagster_safe_name,
    load_table_list,
    parse_table_list,
    table_from_dagster_name,
)
from dynamo_cdc.errors import ConfigError, TableListError


def test_table_list_reads_one_table_a_row_skipping_blanks_and_comments() -> None:
    text = "# my tables\norders\n\n  users  \napp-events.v1,on_gap=fail;snapshot_schedule=daily\n"
    assert parse_table_list(text) == [
        TableSpec("orders"),
        TableSpec("users"),
        TableSpec("app-events.v1", snapshot_schedule="daily", on_gap="fail"),
    ]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "names no table"),
        ("# only a comment\n\n", "names no table"),
        ("table\norders\n", "line 1.*header row"),
        ("orders\nusers\norders\n", "line 3.*listed twice \\(first on line 1\\)"),
        ("ab\n", "line 1.*not a valid DynamoDB table name"),
        ("x" * 256 + "\n", "line 1.*not a valid DynamoDB table name"),
        ("orders\nbad name\n", "line 2.*not a valid DynamoDB table name"),
        ("../x\n", "line 1.*not a valid DynamoDB table name"),
        ("/etc/passwd\n", "line 1.*not a valid DynamoDB table name"),
        ("...\n", "line 1.*only of dots"),
        ("orders,colour=red\n", "line 1.*unknown option"),
        ("orders,on_gap=maybe\n", "line 1.*on_gap must be one of"),
        ("orders,a,b\n", "line 1.*3 columns"),
    ],
)
def test_malformed_table_list_names_the_file_line_and_rule(text: str, match: str) -> None:
    with pytest.raises(TableListError, match=match) as info:
        parse_table_list(text, source="tables.csv")
    assert "tables.csv" in str(info.value)
    assert "Fix:" in str(info.value)


def test_missing_table_list_file_says_how_to_fix(tmp_path) -> None:
    with pytest.raises(TableListError, match="does not exist.*DYNAMO_CDC_TABLES"):
        load_table_list(tmp_path / "nope.csv")


def test_table_list_with_byte_order_mark_reads(tmp_path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes("\ufefforders\r\nusers\r\n".encode())
    assert [t.name for t in load_table_list(path)] == ["orders", "users"]


@pytest.mark.parametrize(
    ("table", "safe"),
    [
        ("orders", "orders"),
        ("app-events.v1", "app_devents_pv1"),
        ("a_b", "a__b"),
        ("a-b", "a_db"),
        ("a.b", "a_pb"),
    ],
)
def test_dagster_safe_name_is_documented_mapping(table: str, safe: str) -> None:
    assert dagster_safe_name(table) == safe
    assert table_from_dagster_name(safe) == table


def test_dagster_safe_names_never_collide() -> None:
    names = ["a_b", "a-b", "a.b", "a__b", "a_db", "a_pb", "a-_b", "a_-b", "a._", "a_.", "abc"]
    safe = {dagster_safe_name(n) for n in names}
    assert len(safe) == len(names)
    assert all(s.replace("_", "").isalnum() for s in safe)


def test_settings_read_prefixed_environment(monkeypatch) -> None:
    monkeypatch.setenv("DYNAMO_CDC_LAKE_ROOT", "s3://b/p")
    monkeypatch.setenv("DYNAMO_CDC_EXPORT_BUCKET", "exports")
    monkeypatch.setenv("DYNAMO_CDC_EXPORT_PREFIX", "/x/y/")
    s = Settings.from_env()
    assert (s.lake_root, s.export_bucket, s.export_prefix) == ("s3://b/p", "exports", "x/y")


def test_settings_refuse_half_explicit_credentials_without_echoing_them(monkeypatch) -> None:
    monkeypatch.setenv("DYNAMO_CDC_AWS_SECRET_ACCESS_KEY", "SECRET-sentinel-123")
    with pytest.raises(ConfigError) as info:
        Settings.from_env()
    assert "SECRET-sentinel-123" not in str(info.value)


def test_settings_repr_hides_the_secret() -> None:
    s = Settings(access_key_id="AKIA", secret_access_key="SECRET-sentinel-123")
    assert "SECRET-sentinel-123" not in repr(s)


def test_library_does_not_import_dagster() -> None:
    """Every module but the integration's own subpackage, dynamo_cdc.dagster."""
    import subprocess
    import sys

    code = (
        "import sys, dynamo_cdc, dynamo_cdc.config, dynamo_cdc.lake, dynamo_cdc.export, "
        "dynamo_cdc.aws, dynamo_cdc.cli; import pkgutil, importlib, dynamo_cdc as p\n"
        "for m in pkgutil.iter_modules(p.__path__, 'dynamo_cdc.'):\n"
        "    if m.name == 'dynamo_cdc.dagster':\n"
        "        continue\n"
        "    mod = importlib.import_module(m.name)\n"
        "    for sub in pkgutil.walk_packages(getattr(mod, '__path__', []), m.name + '.'):\n"
        "        importlib.import_module(sub.name)\n"
        "assert 'dagster' not in sys.modules, sorted(k for k in sys.modules if 'dagster' in k)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
