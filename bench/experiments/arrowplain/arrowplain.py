"""Design (e): Arrow C++ does everything per value. pyarrow.json.read_json (schema INFERRED: DynamoDB
JSON infers cleanly because every scalar is a string/bool under its tag) turns each M/L attribute
into nested struct/list arrays; the plain JSON text of M/L is then assembled column-wise with Arrow
compute string kernels (sorted keys known from the inferred type), typed scalar columns are
casts/field picks, _item is a binary_slice of the lines. Python runs per column and per block,
never per value (except B base64 decode and SS/NS sort, one C-level map each).
Raises Unsupported where the result would not be exactly the reference's (caller falls back).
"""
import binascii, io
from itertools import repeat
import orjson
import pyarrow as pa, pyarrow.compute as pc, pyarrow.json as pj

class Unsupported(Exception):
    pass

CANON = r"^(?:0|-?(?:[1-9]\d{0,38}(?:\.\d*[1-9])?|0\.0{0,6}[1-9](?:\d*[1-9])?))$"
TAGS = {"S", "N", "B", "BOOL", "NULL", "M", "L", "SS", "NS", "BS"}

def _canon(c):
    """Canonical number text (codec.canonical_number_text) for plain decimals; else Unsupported."""
    if pc.all(pc.match_substring_regex(c, CANON)).as_py() is not False:
        return c
    c = pc.replace_substring_regex(c, r"^(-?\d+\.\d*?)0+$", r"\1")
    c = pc.replace_substring_regex(c, r"\.$", "")
    if pc.all(pc.match_substring_regex(c, CANON)).as_py() is False:
        raise Unsupported("non-canonical number")
    return c

_NO_ESCAPES = [False]  # set per block: the raw block holds no backslash at all

def _esc(strs):
    """JSON string literal (orjson's escaping) of each string; Unsupported on control chars."""
    if _NO_ESCAPES[0]:  # no backslash in the block: no string holds '"', '\\' or a control char
        return pc.binary_join_element_wise('"', strs, '"', "")
    if pc.any(pc.match_substring_regex(strs, r"[\x00-\x1f]")).as_py():
        raise Unsupported("control character in a string")
    s = pc.replace_substring(strs, "\\", "\\\\")
    s = pc.replace_substring(s, '"', '\\"')
    return pc.binary_join_element_wise('"', s, '"', "")

def render(w):
    """Plain JSON text of a wrapper StructArray ({tag: value}); null where w is null."""
    if pa.types.is_null(w.type):
        return pa.nulls(len(w), pa.string())
    n = len(w)
    alts = []
    valid = []
    flat = w.flatten()
    for i, f in enumerate(w.type):
        tag = f.name
        c = flat[i]
        if tag not in TAGS:
            raise Unsupported(f"tag {tag}")
        if c.null_count == n:
            continue
        if tag == "S":
            r = _esc(c)
        elif tag == "N":
            r = _canon(c)
        elif tag == "BOOL":
            r = pc.if_else(c, "true", "false")
        elif tag == "NULL":
            r = pc.if_else(pc.is_valid(c), "null", pa.scalar(None, pa.string()))
        elif tag == "M":
            r = render_map(c)
        elif tag == "L":
            r = render_list(c)
        else:  # B, SS, NS, BS nested in a map/list: rare; the reference text per present row
            from dynamo_cdc import codec
            vals = c.to_pylist()
            r = pa.array([None if v is None else codec.value_to_plain_json({tag: v}) for v in vals], pa.string())
        alts.append(r)
        valid.append(c)
    if not alts:
        return pa.nulls(n, pa.string())
    if len(alts) > 1:
        present = pc.cast(pc.is_valid(valid[0]), pa.int8())
        for c in valid[1:]:
            present = pc.add(present, pc.cast(pc.is_valid(c), pa.int8()))
        if pc.max(present).as_py() > 1:
            raise Unsupported("a value with several tags")
    return alts[0] if len(alts) == 1 else pc.coalesce(*alts)

def render_map(m):
    n = len(m)
    names = sorted(f.name for f in m.type)
    if not names:
        return pc.if_else(pc.is_valid(m), "{}", pa.scalar(None, pa.string()))
    flat = dict(zip([f.name for f in m.type], m.flatten()))
    members = []
    for name in names:
        key = "," + orjson.dumps(name).decode() + ":"
        members.append(pc.binary_join_element_wise(key, render(flat[name]), ""))
    # (null_handling="skip" returned a wrong-length array on pyarrow 26: avoid it)
    body = pc.binary_join_element_wise(*members, "", null_handling="replace", null_replacement="")
    out = pc.binary_join_element_wise("{", pc.utf8_slice_codeunits(body, 1), "}", "")
    if len(out) != n:
        raise Unsupported("arrow join length")
    if m.null_count:
        out = pc.if_else(pc.is_valid(m), out, pa.scalar(None, pa.string()))
    return out

def render_list(l):
    offs = l.offsets
    base = offs[0].as_py()
    vals = l.values.slice(base, offs[-1].as_py() - base)
    r = render(vals) if len(vals) else pa.array([], pa.string())
    if r.null_count:
        raise Unsupported("null list member")
    lst = pa.ListArray.from_arrays(pc.subtract(offs, base), r, mask=l.is_null())
    return pc.binary_join_element_wise("[", pc.binary_join(lst, ","), "]", "")

def _b64(strs):
    vals = strs.to_pylist()
    a2b = binascii.a2b_base64
    return pa.array([None if v is None else a2b(v, strict_mode=True) for v in vals], pa.binary())

def _sorted_lists(l, value_type, key=None):
    """Members sorted per row, in C: already-sorted check, else sort by (row, value)."""
    vals = l.values.slice(l.offsets[0].as_py(), l.offsets[-1].as_py() - l.offsets[0].as_py())
    offs = pc.subtract(l.offsets, l.offsets[0])
    typed = pc.cast(vals, value_type) if key else vals
    lst = pa.ListArray.from_arrays(offs, typed, mask=l.is_null())
    n = len(typed)
    if n > 1:
        parent = pc.list_parent_indices(lst)
        same = pc.equal(parent.slice(0, n - 1), parent.slice(1))
        ok = pc.or_(pc.invert(same), pc.less_equal(typed.slice(0, n - 1), typed.slice(1)))
        if not pc.all(ok).as_py():
            idx = pc.sort_indices(pa.table({"p": parent, "v": typed}), [("p", "ascending"), ("v", "ascending")])
            lst = pa.ListArray.from_arrays(offs, typed.take(idx), mask=l.is_null())
    return lst

def typed_column(w, field):
    """One top-level typed column from its wrapper struct, for the target field."""
    kind = field.metadata[b"dynamodb_type"].decode() if field.metadata else None
    t = field.type
    names = [f.name for f in w.type]
    if kind in ("M", "L", "MIXED"):
        if kind == "MIXED":
            alts = []
            flat = w.flatten()
            for i, tag in enumerate(names):
                c = flat[i]
                if tag == "S": alts.append(c)
                elif tag == "N":
                    alts.append(_canon(c))
                elif tag == "BOOL": alts.append(pc.if_else(c, "true", "false"))
                elif tag == "NULL": pass
                elif tag in ("M", "L"): alts.append(render(pa.StructArray.from_arrays([c], [tag])))
                else: raise Unsupported(f"MIXED with {tag}")
            return pc.coalesce(*alts) if len(alts) > 1 else alts[0]
        return render(w)
    other = [x for x in names if x not in (kind, "NULL")]
    if other and any(w.field(x).null_count != len(w) for x in other):
        raise Unsupported("another tag in a typed column")
    c = w.field(kind) if kind in names else pa.nulls(len(w), t)
    if kind in ("S", "BOOL"):
        return c
    if kind == "N":
        return pc.cast(c, t)
    if kind == "B":
        return _b64(c)
    if kind == "SS":
        return _sorted_lists(c, t)
    if kind == "NS":
        return _sorted_lists(c, t.value_type, key=True)
    if kind == "NULL":
        return pa.nulls(len(w), t)
    raise Unsupported(kind)

def _no_ts(t):
    """The type with every timestamp (Arrow infers ISO-8601 strings as timestamps) -> string."""
    if pa.types.is_timestamp(t):
        return pa.string(), True
    if pa.types.is_struct(t):
        fs, ch = [], False
        for f in t:
            nt, c = _no_ts(f.type); ch |= c; fs.append(f.with_type(nt))
        return pa.struct(fs), ch
    if pa.types.is_list(t):
        nt, c = _no_ts(t.value_type)
        return pa.list_(nt), c
    return t, False

_SCHEMA = [None]  # explicit schema learned from earlier blocks (timestamps -> string)

def _read(block, use_threads):
    ro = pj.ReadOptions(use_threads=use_threads, block_size=1 << 26)
    po = pj.ParseOptions(explicit_schema=_SCHEMA[0], unexpected_field_behavior="infer") if _SCHEMA[0] else None
    t = pj.read_json(io.BytesIO(block), read_options=ro, parse_options=po)
    st, changed = _no_ts(pa.struct(list(t.schema)))
    if changed:  # a new timestamp-looking string field: learn it and parse the block again
        _SCHEMA[0] = pa.schema(list(st))
        po = pj.ParseOptions(explicit_schema=_SCHEMA[0], unexpected_field_behavior="infer")
        t = pj.read_json(io.BytesIO(block), read_options=ro, parse_options=po)
        if _no_ts(pa.struct(list(t.schema)))[1]:
            raise Unsupported("timestamps keep being inferred")
    elif _SCHEMA[0] is None or t.schema != _SCHEMA[0]:
        _SCHEMA[0] = t.schema
    return t

def block_table(block: bytes, target: pa.Schema, use_threads=False):
    """Decompressed, line-aligned block of {"Item":{...}} lines -> table of `target`."""
    if block.endswith(b"\n"):
        block = block[:-1]
    _NO_ESCAPES[0] = b"\\" not in block
    arr = pc.split_pattern(pa.array([block], pa.large_binary()), b"\n").values
    lines = arr
    t = _read(block, use_threads)
    if t.num_rows != len(lines) or t.column_names != ["Item"]:
        raise Unsupported("not plain item lines")
    item = t.column("Item").combine_chunks()
    if item.null_count:
        raise Unsupported("line without Item")
    if not pc.all(pc.starts_with(arr, b'{"Item":')).as_py() or not pc.all(pc.ends_with(arr, b"}")).as_py():
        raise Unsupported("line shape")
    cols = []
    for f in target:
        if f.name == "_item":
            cols.append(pc.binary_slice(arr, 8, -1).cast(pa.large_string()).cast(pa.string()))
        elif item.type.get_field_index(f.name) < 0:
            cols.append(pa.nulls(len(lines), f.type))
        else:
            cols.append(typed_column(item.field(f.name), f))
    return pa.Table.from_arrays(cols, schema=target)
