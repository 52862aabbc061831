"""Deterministic generator of realistic DynamoDB full exports in AWS's layout.

The output is what ``ExportTableToPointInTime`` leaves in S3 (full export)::

    <out>/AWSDynamoDB/<ExportId>/_started                   (empty)
    <out>/AWSDynamoDB/<ExportId>/manifest-summary.json      (one JSON object)
    <out>/AWSDynamoDB/<ExportId>/manifest-summary.md5       (base64 MD5 of the file above)
    <out>/AWSDynamoDB/<ExportId>/manifest-files.json        (JSON lines, one per data file)
    <out>/AWSDynamoDB/<ExportId>/manifest-files.md5
    <out>/AWSDynamoDB/<ExportId>/data/<26 base32 chars>.json.gz   (or .ion.gz)

Data lines are ``{"Item":{...}}`` (DynamoDB JSON) or ``$ion_1_0 {Item:{...}}`` (ION).
``manifest-files.json`` lines carry ``itemCount``, ``md5Checksum`` (base64 of the data file's
MD5), ``etag`` (S3 multipart style) and ``dataFileS3Key`` (relative to the bucket, i.e. it starts
at ``AWSDynamoDB/``; the ``s3Prefix`` in the summary is empty here).

The items model an "orders" table: about 970 bytes of DynamoDB JSON and about 15 attributes per
item, with every DynamoDB type, nested maps, a list of maps, 38-digit numbers, sparse attributes
(``coupon``, ``gift_message``, ``promo`` in about 10% of items), a mixed-type list (``dims``) and
an attribute whose type differs between items (``revision``: N in most, S in 0.1%).

Everything is a function of ``seed``: the same seed gives byte-identical files (gzip mtime 0).

Usage::

    python -m bench.generate OUT [--items N] [--files F] [--seed S] [--format json|ion]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
from isal import isal_zlib

Item = dict[str, dict[str, Any]]

# The attribute whose type is N in most items and S in a few: the type-conflict case.
CONFLICT_ATTRIBUTE = "revision"
CONFLICT_RATE = 0.001
SPARSE_ATTRIBUTES = ("coupon", "gift_message", "promo")
SPARSE_RATE = 0.10

_FIRST = (
    "Ada Alan Grace Linus Margaret Dennis Barbara Ken Frances Edsger Radia John Hedy Donald "
    "Katherine Tim Annie Claude Sophie Guido Yukihiro Bjarne Anders Rasmus"
).split()
_LAST = (
    "Lovelace Turing Hopper Torvalds Hamilton Ritchie Liskov Thompson Allen Dijkstra Perlman "
    "McCarthy Lamarr Knuth Johnson Berners-Lee Easley Shannon Wilson Rossum Matsumoto Stroustrup"
).split()
_CITIES = (
    ("Berlin", "DE"),
    ("Lyon", "FR"),
    ("Osaka", "JP"),
    ("Austin", "US"),
    ("Leeds", "GB"),
    ("Porto", "PT"),
    ("Gdansk", "PL"),
    ("Quebec", "CA"),
    ("Sao Paulo", "BR"),
    ("Zurich", "CH"),
)
_STATUSES = ("PENDING", "PAID", "SHIPPED", "DELIVERED", "CANCELLED", "RETURNED")
_TAGS = (
    "priority express fragile gift bulk international wholesale subscription "
    "promo loyalty backorder preorder refurbished clearance"
).split()
_CARRIERS = ("DHL", "UPS", "FedEx", "La Poste", "Royal Mail", "Japan Post")
# 2026-01-01T00:00:00Z: items' timestamps count from here.
_EPOCH = 1767225600


def _iso(ts: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def make_item(rng: random.Random, index: int, sk_type: str = "S") -> Item:
    """Build one "orders" item in the internal representation.

    Args:
        rng: The random source (advanced by this call).
        index: The item's position; it makes the primary key unique.
        sk_type: ``"S"`` (``ORDER#<time>#<n>``) or ``"N"`` (the order number) for the sort key.

    Returns:
        A dict attribute name -> DynamoDB JSON value; binary values are base64 text.
    """
    r = rng.random
    ri = rng.randrange
    ts = _EPOCH + ri(0, 31_536_000)
    customer_no = ri(0, 250_000)
    first = _FIRST[ri(0, len(_FIRST))]
    last = _LAST[ri(0, len(_LAST))]
    city, country = _CITIES[ri(0, len(_CITIES))]
    lines = []
    total_cents = 0
    for _ in range(ri(1, 4)):
        qty = ri(1, 6)
        cents = ri(199, 250_000)
        total_cents += qty * cents
        lines.append(
            {
                "M": {
                    "sku": {"S": f"SKU-{ri(0, 100_000):05d}"},
                    "qty": {"N": str(qty)},
                    "unit_price": {"N": f"{cents // 100}.{cents % 100:02d}"},
                }
            }
        )
    if sk_type == "S":
        sk: dict[str, Any] = {"S": f"ORDER#{_iso(ts)}#{index:09d}"}
    else:
        sk = {"N": str(index)}
    item: Item = {
        "pk": {"S": f"CUSTOMER#{customer_no:08d}"},
        "sk": sk,
        "order_id": {"S": f"{rng.getrandbits(48):012x}"},
        "status": {"S": _STATUSES[ri(0, len(_STATUSES))]},
        "created_at": {"S": _iso(ts)},
        "total": {"N": f"{total_cents // 100}.{total_cents % 100:02d}"},
        # 38 significant digits: the most DynamoDB keeps; float64 would lose most of them.
        "ledger_id": {"N": str(10**37 + rng.getrandbits(122))},
        "customer": {
            "M": {
                "name": {"S": f"{first} {last}"},
                "email": {"S": f"{first.lower()}.{last.lower()}@example.com"},
                "tier": {"N": str(ri(0, 4))},
                "address": {
                    "M": {
                        "city": {"S": city},
                        "zip": {"S": f"{ri(1000, 99999):05d}"},
                        "country": {"S": country},
                    }
                },
            }
        },
        "line_items": {"L": lines},
        "tags": {"SS": sorted(rng.sample(_TAGS, ri(1, 4)))},
        "ratings": {"NS": sorted({str(ri(1, 6)) for _ in range(ri(1, 4))} | {"4.5"})},
        "is_paid": {"BOOL": r() < 0.8},
        "shipping": {
            "M": {
                "carrier": {"S": _CARRIERS[ri(0, len(_CARRIERS))]},
                "weight_kg": {"N": f"{ri(1, 30_000) / 1000:.3f}"},
                "delivered_at": {"NULL": True} if r() < 0.7 else {"S": _iso(ts + 259_200)},
            }
        },
        # A mixed-type list: numbers and a unit string, as loosely typed apps write them.
        "dims": {"L": [{"N": str(ri(5, 120))}, {"N": str(ri(5, 80))}, {"S": "cm"}]},
        "thumbnail": {"B": base64.b64encode(rng.randbytes(ri(16, 33))).decode("ascii")},
    }
    if r() < CONFLICT_RATE:
        item[CONFLICT_ATTRIBUTE] = {"S": f"v{ri(1, 100)}-draft"}
    else:
        item[CONFLICT_ATTRIBUTE] = {"N": str(ri(1, 100))}
    if r() < SPARSE_RATE:
        item["coupon"] = {"S": f"SAVE{ri(5, 50)}"}
    if r() < SPARSE_RATE:
        item["gift_message"] = {"S": "Happy birthday! Enjoy the new gear."}
    if r() < SPARSE_RATE:
        item["promo"] = {
            "M": {
                "campaign": {"S": f"CMP-{ri(0, 500):04d}"},
                "discount": {"N": f"0.{ri(5, 40):02d}"},
                "codes": {"BS": [base64.b64encode(rng.randbytes(8)).decode("ascii")]},
            }
        }
    return item


def generate_items(n: int, seed: int = 42, sk_type: str = "S") -> Iterator[Item]:
    """Yield ``n`` items in the internal representation, the same ones for the same seed.

    Args:
        n: How many items.
        seed: The random seed.
        sk_type: The sort key's type, ``"S"`` or ``"N"``.

    Yields:
        Dicts attribute name -> DynamoDB JSON value (binary as base64 text).
    """
    rng = random.Random(seed)
    for i in range(n):
        yield make_item(rng, i, sk_type)


# ---- ION text -------------------------------------------------------------------------------


def _ion_string(s: str) -> str:
    # JSON string escapes are valid Ion string escapes (\uXXXX, \n, \", \\).
    return json.dumps(s, ensure_ascii=False)


def _ion_decimal(n: str) -> str:
    """DynamoDB N text -> Ion decimal text (``42`` is an Ion int, so write ``42.``)."""
    mantissa, _, exponent = n.lower().partition("e")
    if "." not in mantissa:
        mantissa += "."
    return f"{mantissa}d{int(exponent)}" if exponent else mantissa


def _ion_symbol(name: str) -> str:
    if name.isidentifier() and name.isascii() and name not in ("null", "true", "false", "nan"):
        return name
    return "'" + json.dumps(name, ensure_ascii=False)[1:-1].replace("'", "\\'") + "'"


def _ion_value(value: dict[str, Any]) -> str:
    ((tag, v),) = value.items()
    if tag == "S":
        return _ion_string(v)
    if tag == "N":
        return _ion_decimal(v)
    if tag == "B":
        return "{{" + v + "}}"
    if tag == "BOOL":
        return "true" if v else "false"
    if tag == "NULL":
        return "null"
    if tag == "M":
        return "{" + ",".join(f"{_ion_symbol(k)}:{_ion_value(x)}" for k, x in v.items()) + "}"
    if tag == "L":
        return "[" + ",".join(_ion_value(x) for x in v) + "]"
    if tag == "SS":
        return "$dynamodb_SS::[" + ",".join(_ion_string(x) for x in v) + "]"
    if tag == "NS":
        return "$dynamodb_NS::[" + ",".join(_ion_decimal(x) for x in v) + "]"
    if tag == "BS":
        return "$dynamodb_BS::[" + ",".join("{{" + x + "}}" for x in v) + "]"
    raise ValueError(f"unknown DynamoDB type tag {tag!r}")


def bench_item_to_ion_text(item: Item) -> str:
    """One ION export line for ``item`` (no newline): the bench's own small encoder."""
    body = ",".join(f"{_ion_symbol(k)}:{_ion_value(v)}" for k, v in item.items())
    return "$ion_1_0 {Item:{" + body + "}}"


def _ion_encoder() -> Callable[[Item], str]:
    """The project's encoder (dynamo_cdc.codec.item_to_ion_text) when it exists, else ours."""
    try:
        from dynamo_cdc.codec import item_to_ion_text
    except ImportError:
        return bench_item_to_ion_text
    return item_to_ion_text  # type: ignore[no-any-return]


# ---- the export layout ----------------------------------------------------------------------


@dataclass
class ExportInfo:
    """What was generated: enough for the runner to compute rates without re-reading."""

    export_dir: str
    export_id: str
    items: int
    files: int
    seed: int
    format: str
    uncompressed_bytes: int
    compressed_bytes: int
    seconds: float


def _export_id(seed: int) -> str:
    digest = hashlib.sha256(f"export-{seed}".encode()).hexdigest()
    return f"{(_EPOCH + seed) * 1000:014d}-{digest[:8]}"


def _data_file_name(seed: int, index: int) -> str:
    digest = hashlib.sha256(f"data-{seed}-{index}".encode()).digest()
    return base64.b32encode(digest).decode("ascii").lower()[:26]


def _multipart_etag(md5_digest: bytes) -> str:
    # S3 etag of a one-part multipart upload: md5 of the part's md5, then "-1".
    return hashlib.md5(md5_digest).hexdigest() + "-1"


def generate_export(
    out: str | Path,
    items: int = 100_000,
    files: int = 8,
    seed: int = 42,
    fmt: str = "json",
    sk_type: str = "S",
    table_name: str = "orders",
    level: int = 1,
) -> ExportInfo:
    """Write a full export of ``items`` generated items over ``files`` gzip data files.

    Args:
        out: The folder standing for the bucket/prefix; ``AWSDynamoDB/<ExportId>/`` goes in it.
        items: Number of items.
        files: Number of data files (items are split in contiguous, near-equal slices).
        seed: Random seed; the same arguments give byte-identical output.
        fmt: ``"json"`` (DYNAMODB_JSON) or ``"ion"`` (ION).
        sk_type: The sort key's type, ``"S"`` or ``"N"``.
        table_name: The table name used in the ARNs.
        level: isal deflate level (0-3); 1 keeps a million items well under a minute.

    Returns:
        An ExportInfo describing what was written.
    """
    if fmt not in ("json", "ion"):
        raise ValueError(f"format must be 'json' or 'ion', not {fmt!r}")
    if files < 1:
        raise ValueError("files must be at least 1")
    started = time.perf_counter()
    export_id = _export_id(seed)
    rel_root = f"AWSDynamoDB/{export_id}"
    root = Path(out) / rel_root
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "_started").write_bytes(b"")
    suffix = ".json.gz" if fmt == "json" else ".ion.gz"
    to_ion = _ion_encoder() if fmt == "ion" else None
    dumps = orjson.dumps

    rng = random.Random(seed)
    index = 0
    uncompressed = 0
    compressed = 0
    manifest_lines = []
    for f in range(files):
        count = items * (f + 1) // files - items * f // files
        key = f"{rel_root}/data/{_data_file_name(seed, f)}{suffix}"
        md5 = hashlib.md5()
        comp = isal_zlib.compressobj(level, isal_zlib.DEFLATED, 31)  # 31: gzip wrapper, mtime 0
        with open(Path(out) / key, "wb") as fh:
            batch: list[bytes] = []
            batch_bytes = 0
            for _ in range(count):
                item = make_item(rng, index, sk_type)
                index += 1
                if to_ion is None:
                    line = b'{"Item":' + dumps(item) + b"}\n"
                else:
                    line = (to_ion(item) + "\n").encode("utf-8")
                batch.append(line)
                batch_bytes += len(line)
                if batch_bytes >= 1 << 20:
                    chunk = comp.compress(b"".join(batch))
                    md5.update(chunk)
                    fh.write(chunk)
                    uncompressed += batch_bytes
                    batch, batch_bytes = [], 0
            chunk = comp.compress(b"".join(batch)) + comp.flush()
            uncompressed += batch_bytes
            md5.update(chunk)
            fh.write(chunk)
            compressed += fh.tell()
        digest = md5.digest()
        manifest_lines.append(
            dumps(
                {
                    "itemCount": count,
                    "md5Checksum": base64.b64encode(digest).decode("ascii"),
                    "etag": _multipart_etag(digest),
                    "dataFileS3Key": key,
                }
            )
        )

    account = "123456789012"
    table_arn = f"arn:aws:dynamodb:us-east-1:{account}:table/{table_name}"
    export_time = _iso(_EPOCH + seed).replace("Z", ".000Z")
    manifest_files = b"\n".join(manifest_lines) + b"\n"
    summary = {
        "version": "2020-06-30",
        "exportArn": f"{table_arn}/export/{export_id}",
        "startTime": export_time,
        "endTime": _iso(_EPOCH + seed + 300).replace("Z", ".000Z"),
        "tableArn": table_arn,
        "tableId": str(_uuid_from(seed)),
        "exportTime": export_time,
        "s3Bucket": "bench-exports",
        "s3Prefix": None,
        "s3SseAlgorithm": "AES256",
        "s3SseKmsKeyId": None,
        "manifestFilesS3Key": f"{rel_root}/manifest-files.json",
        "billedSizeBytes": uncompressed,
        "itemCount": items,
        "outputFormat": "DYNAMODB_JSON" if fmt == "json" else "ION",
    }
    summary_bytes = json.dumps(summary).encode("utf-8")
    for name, body in (("manifest-files", manifest_files), ("manifest-summary", summary_bytes)):
        (root / f"{name}.json").write_bytes(body)
        md5_b64 = base64.b64encode(hashlib.md5(body).digest())
        (root / f"{name}.md5").write_bytes(md5_b64)
    return ExportInfo(
        export_dir=str(root),
        export_id=export_id,
        items=items,
        files=files,
        seed=seed,
        format=fmt,
        uncompressed_bytes=uncompressed,
        compressed_bytes=compressed,
        seconds=time.perf_counter() - started,
    )


def _uuid_from(seed: int) -> str:
    h = hashlib.sha256(f"table-{seed}".encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m bench.generate OUT [--items N] [--files F] ...``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder that stands for the export bucket/prefix")
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--format", choices=("json", "ion"), default="json")
    parser.add_argument("--sk-type", choices=("S", "N"), default="S")
    args = parser.parse_args(argv)
    info = generate_export(
        args.out, args.items, args.files, args.seed, args.format, sk_type=args.sk_type
    )
    print(json.dumps(asdict(info), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
