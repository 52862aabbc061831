"""bench/shards.py at a tiny size: every record lands once, and it prints its figures."""

from __future__ import annotations

import re

from bench import shards


def test_the_shards_load_test_lands_every_record_once_and_prints_its_figures(
    tmp_path, capsys
) -> None:
    argv = ["--shards", "12", "--rate", "400", "--seconds", "2", "--latency-ms", "1,3"]
    argv += ["--per-shard", "2000:600,300000:5", "--steps-records", "600"]
    argv += ["--threads", "4", "--out", str(tmp_path)]

    code = shards.main(argv)

    out = capsys.readouterr().out
    assert code == 0, out
    written, landed = re.search(r"records written / landed\s+([\d,]+) / ([\d,]+)", out).groups()
    assert int(written.replace(",", "")) > 400 and written == landed
    assert re.search(r"duplicates / lost\s+0 / 0", out)
    assert re.search(r"shards \(open\)\s+12\n", out)
    assert re.search(r"lag s median / p95 / max\s+[\d.]+ / [\d.]+ / [\d.]+", out)
    assert re.search(r"API calls\s+DescribeStream \d+, GetRecords \d+, GetShardIterator \d+", out)
    rows = re.findall(r"^\| ([\d,]+) \| ([\d,]+) \| [\d.]+ \| [\d,]+ \|", out, re.M)
    assert rows == [("2,000", "600"), ("300,000", "5")]
    assert re.search(r"over 12 shards, step by step: read 600 records in [\d.]+ s", out)


def test_the_load_test_measures_a_lag_for_every_record_it_wrote(tmp_path) -> None:
    result = shards.run_load(
        shards=3,
        rate=100,
        seconds=1,
        latency_ms=(0, 0),
        threads=2,
        item_bytes=200,
        lake_root=tmp_path / "lake",
    )
    assert result.ok and result.landed == result.written > 50
    assert len(result.lags) == result.written and min(result.lags) > 0
