"""The wheel as users install it: the core without extras converts an export with
``dynamo-cdc export-to-parquet`` and pulls in no Dagster, moto or DuckDB; with the ``dagster``
extra, the component loads. Builds the wheel and installs it into clean venvs (pip may use the
package registry)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from bench.generate import generate_export
from tests.e2e.helpers import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NOT_IN_THE_CORE = ("dagster", "moto", "duckdb", "pandas", "dagster-webserver", "dagster-aws")


def _run(cmd: list[str], cwd: Path | None = None, timeout: float = 900) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"{' '.join(map(str, cmd))}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    )
    return proc.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a copy of the sources (the build leaves nothing in the repo)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(
        REPO / "dynamo_cdc",
        src / "dynamo_cdc",
        ignore=shutil.ignore_patterns("__pycache__", "*.so"),
    )
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(src)])
    (built,) = dist.glob("dynamo_cdc-*.whl")
    return built


def _venv(path: Path) -> Path:
    _run([sys.executable, "-m", "venv", str(path)])
    return path / "bin"


def test_the_core_install_converts_an_export_without_dagster_moto_or_duckdb(wheel, tmp_path):
    bin_ = _venv(tmp_path / "venv")
    _run([str(bin_ / "pip"), "install", "-q", str(wheel)])
    installed = _run([str(bin_ / "pip"), "list", "--format=freeze"]).lower()
    names = {line.split("==")[0] for line in installed.splitlines()}
    assert not names & set(NOT_IN_THE_CORE), names & set(NOT_IN_THE_CORE)

    export = generate_export(tmp_path / "bucket", items=300, files=2, seed=7)
    out = tmp_path / "lake"
    _run(
        [str(bin_ / "dynamo-cdc"), "export-to-parquet", export.export_dir, str(out)]
        + ["--keys", "pk,sk", "--table", "orders"]
    )
    table = ds.dataset(
        out / "orders" / "snapshot", format="parquet", partitioning="hive"
    ).to_table()
    assert table.num_rows == 300
    assert {"pk", "sk", "_item"} <= set(table.column_names)


def test_with_the_dagster_extra_the_component_loads(wheel, tmp_path):
    bin_ = _venv(tmp_path / "venv")
    _run([str(bin_ / "pip"), "install", "-q", f"{wheel}[dagster]"])
    code = (
        "import dagster as dg\n"
        "from dynamo_cdc.dagster import DynamoCdcComponent\n"
        "c = DynamoCdcComponent.resolve_from_yaml('tables: [orders]')\n"
        "defs = dg.component_defs(component=c)\n"
        "print(sorted(k.to_user_string() for k in defs.resolve_all_asset_keys()))\n"
    )
    out = _run([str(bin_ / "python"), "-c", code], cwd=tmp_path)
    assert "dynamodb/orders/changes" in out
    listed = _run([str(bin_ / "dg"), "list", "components", "--json"], cwd=tmp_path)
    assert "dynamo_cdc.dagster.DynamoCdcComponent" in listed
