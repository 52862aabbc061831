"""A local export's data files become Parquet parts of one schema, the same whether they are
converted in this process or by a pool of worker processes."""

from __future__ import annotations

import pyarrow.dataset as ds

from bench.generate import generate_export
from dynamo_cdc.export import open_manifest
from dynamo_cdc.snapshot import convert_manifest


def test_an_export_converts_to_the_same_parts_in_a_pool_as_in_this_process(tmp_path) -> None:
    info = generate_export(tmp_path / "export", items=600, files=3, seed=5)
    manifest = open_manifest(info.export_dir)
    said: list[str] = []
    for out in ("here", "pool"):
        (tmp_path / out).mkdir()

    here = convert_manifest(manifest, tmp_path / "here", ["pk", "sk"], workers=1)
    pool = convert_manifest(
        manifest, tmp_path / "pool", ["pk", "sk"], workers=2, progress=said.append
    )

    assert here.rows == pool.rows == 600
    assert here.parts == pool.parts and len(pool.parts) >= 3
    assert here.schema is not None and pool.schema is not None
    assert here.schema.equals(pool.schema)
    tables = [
        ds.dataset([str(root / p) for p in here.parts], format="parquet").to_table()
        for root in (tmp_path / "here", tmp_path / "pool")
    ]
    assert tables[0].equals(tables[1])
    assert len(said) == 3 and said[-1].startswith("orders: data file 3/3 converted")
