"""``make demo`` run again starts clean and says so; a busy UI port is replaced, not reused."""

import socket
from pathlib import Path

import pytest

from dynamo_cdc.demo import start_clean, ui_port_to_use
from dynamo_cdc.errors import DynamoCdcError


def test_a_first_demo_says_it_starts_clean(tmp_path: Path, capsys) -> None:
    start_clean(tmp_path / ".demo", tmp_path / "lake")
    assert "Starting clean: no earlier demo here." in capsys.readouterr().out


def test_a_restart_removes_the_earlier_demos_tables_and_dagster_home_and_says_so(
    tmp_path: Path, capsys
) -> None:
    home, lake = tmp_path / ".demo", tmp_path / "lake"
    home.mkdir()
    start_clean(home, lake)
    for table in ("orders", "app-events.v1"):
        (lake / table / "current").mkdir(parents=True)  # what the earlier demo wrote
    (lake / "mine").mkdir()
    (home / "dagster_home").mkdir()
    capsys.readouterr()

    start_clean(home, lake)

    out = capsys.readouterr().out
    assert "Starting clean" in out and "cannot be resumed" in out and str(lake / "orders") in out
    assert not (lake / "orders").exists() and not (lake / "app-events.v1").exists()
    assert not (home / "dagster_home").exists()
    assert (lake / "mine").exists()  # not a demo table: left alone


def test_a_demo_table_folder_no_demo_wrote_is_refused_not_removed(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    (lake / "orders").mkdir(parents=True)
    with pytest.raises(DynamoCdcError, match="no earlier demo wrote it.*--lake-root"):
        start_clean(tmp_path / ".demo", lake)
    assert (lake / "orders").exists()


def test_a_busy_ui_port_is_replaced_by_a_free_one_and_said(capsys) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        port = ui_port_to_use(taken)
    assert port != taken
    assert f"Port {taken} is busy" in capsys.readouterr().out
