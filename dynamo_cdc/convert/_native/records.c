/*
 * The stream front ends of dynamo_cdc.convert._native (see common.h).
 *
 * scan_records(body) reads a GetRecords response ({"Records":[...],"NextShardIterator":...},
 * compact JSON as AWS sends it) and returns its records' change-row columns as Arrow buffers, so
 * that dynamo_cdc.convert builds change rows with no Python object per record (a
 * dynamo_cdc.stream.RecordPage). A dict of:
 *   count, records_at, records_end   the records, and the byte span of the Records array
 *   size_bytes                       the sum of their SizeBytes
 *   first/last_sequence_number       as written; last_creation_time: the last record's seconds
 *   event_id, event_name             (validity, offsets, data, null count), unescaped
 *   sequence_number                  the same, padded with zeros to 40 digits
 *   micros                           int64 a record: round(ApproximateCreationDateTime * 1e6)
 *   ttl_delete                       bitmap: userIdentity is Service / dynamodb.amazonaws.com
 *   _keys, _new_image, _old_image    the images' canonical DynamoDB JSON (convert.records.image_text:
 *                                    keys sorted by code point at every level, strings escaped
 *                                    as orjson escapes them, numbers canonical, sets sorted),
 *                                    null where absent
 *   key_attributes                   the attributes of Keys, as scan_block gives attributes
 * It refuses (ValueError) what it does not read exactly as orjson and the reference
 * (dynamo_cdc/convert/records.py) do: whitespace, invalid UTF-8 or JSON, a number that needs more than cutting trailing zeros
 * to be canonical, non-canonical base64, NULL:false, duplicate keys in an image or among the
 * fields it reads, a record without eventID, eventName, ApproximateCreationDateTime or a
 * SequenceNumber of digits. tests/unit/convert/test_records_differential.py pins it.
 *
 * scan_record_dicts(records) returns the same columns from a list of record dicts (boto3's, or
 * orjson's reading of a response), walking the Python objects: see "Record dicts" below.
 * tests/unit/test_record_dicts_native.py pins it.
 */
#include "common.h"
#include <datetime.h>

/* ---------------------------------------------------------------------------------------- */
/* GetRecords responses */

/* JSON number grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?; the position after it. */
static const char *scan_number(state_t *st, const char *p, const char *end) {
    if (p < end && *p == '-') p++;
    if (p < end && *p == '0') {
        p++;
    } else if (p < end && *p >= '1' && *p <= '9') {
        while (p < end && *p >= '0' && *p <= '9') p++;
    } else {
        return FAIL(st, "a value that is not JSON");
    }
    if (p < end && *p == '.') {
        const char *d = ++p;
        while (p < end && *p >= '0' && *p <= '9') p++;
        if (p == d) return FAIL(st, "a number that is not JSON");
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        const char *d = p;
        while (p < end && *p >= '0' && *p <= '9') p++;
        if (p == d) return FAIL(st, "a number that is not JSON");
    }
    return p;
}

/* A JSON string whose escapes are checked (orjson refuses bad ones); raw, n and escaped as
 * scan_string sets them. */
static const char *checked_string(state_t *st, const char *p, const char *end, const char **raw,
                                  size_t *n, int *escaped) {
    p = scan_string(st, p, end, raw, n, escaped);
    if (p && *escaped) {
        st->key.len = 0;
        if (unescape(st, *raw, *n, &st->key)) return NULL;
    }
    return p;
}

/* Skips any JSON value. */
static const char *skip_value(state_t *st, const char *p, const char *end, int depth) {
    const char *raw;
    size_t n;
    int escaped;
    if (depth >= MAX_DEPTH) return FAIL(st, "nesting deeper than the native path takes");
    if (p >= end) return FAIL(st, "unexpected end of the response");
    switch (*p) {
    case '"':
        return checked_string(st, p, end, &raw, &n, &escaped);
    case '{':
    case '[': {
        char close = *p == '{' ? '}' : ']';
        int object = *p == '{';
        p++;
        if (p < end && *p == close) return p + 1;
        for (;;) {
            if (object) {
                p = checked_string(st, p, end, &raw, &n, &escaped);
                if (!p) return NULL;
                if (p >= end || *p != ':') return FAIL(st, "expected ':' after a key");
                p++;
            }
            p = skip_value(st, p, end, depth + 1);
            if (!p) return NULL;
            if (p >= end) return FAIL(st, "unexpected end of the response");
            if (*p == close) return p + 1;
            if (*p != ',') return FAIL(st, "expected ',' between values");
            p++;
        }
    }
    case 't':
        if (end - p >= 4 && memcmp(p, "true", 4) == 0) return p + 4;
        break;
    case 'f':
        if (end - p >= 5 && memcmp(p, "false", 5) == 0) return p + 5;
        break;
    case 'n':
        if (end - p >= 4 && memcmp(p, "null", 4) == 0) return p + 4;
        break;
    default:
        return scan_number(st, p, end);
    }
    return FAIL(st, "a value that is not JSON");
}

static int is_null(const char *p, const char *end) { return end - p >= 4 && memcmp(p, "null", 4) == 0; }

/* Names the key whose string starts at p: sets name and len (unescaped into st->key if need be). */
static const char *read_key(state_t *st, const char *p, const char *end, const char **name,
                            size_t *len) {
    int escaped;
    p = scan_string(st, p, end, name, len, &escaped);
    if (!p) return NULL;
    if (escaped) {
        st->key.len = 0;
        if (unescape(st, *name, *len, &st->key)) return NULL;
        *name = st->key.p;
        *len = st->key.len;
    }
    if (p >= end || *p != ':') return FAIL(st, "expected ':' after a key");
    return p + 1;
}

/* Whether the key (name, len) is the string literal want. */
#define key_is(name, len, want) ((len) == sizeof(want) - 1 && memcmp((name), (want), sizeof(want) - 1) == 0)

/* The columns of a response's records (change rows less the key columns, which are the
 * attributes of st). */
typedef struct {
    column_t *event_id, *event_name, *sequence, *images[3]; /* images: Keys, NewImage, OldImage */
    buf_t micros; /* int64 a record */
    buf_t ttl;    /* one byte a record */
    size_t rows;
    uint64_t size_bytes;
    const char *first_seq, *last_seq;
    size_t first_seq_len, last_seq_len;
    double last_seconds;
} records_t;

/* Ends the value just written into c->data as row c->rows. */
static int end_text(column_t *c) {
    if (buf_byte(&c->valid, 1) || buf_i32(&c->offsets, c->data.len)) return -1;
    c->rows++;
    return 0;
}

/* A JSON string, unescaped, as the next value of c. */
static const char *read_text(state_t *st, const char *p, const char *end, column_t *c) {
    const char *raw;
    size_t n;
    int escaped;
    p = scan_string(st, p, end, &raw, &n, &escaped);
    if (!p) return NULL;
    if (escaped ? unescape(st, raw, n, &c->data) : buf_put(&c->data, raw, n)) return st->error ? NULL : NOMEM(st);
    if (end_text(c)) return NOMEM(st);
    return p;
}

/* The attributes of Keys (the text [p, q), as written or as rendered) as the row's values of st's
 * attribute columns (the key columns), as scan_block gives them. 0, or -1 (st->error set). */
static int key_columns(state_t *st, records_t *r, const char *p, const char *q) {
    if (q - p <= 2) return 0; /* {} */
    p++;
    for (;;) {
        const char *name;
        size_t n;
        p = read_key(st, p, q, &name, &n);
        if (!p) return -1;
        attribute_t *a = find_attribute(st, name, n);
        if (!a) return -1;
        a->last_row = r->rows + 1;
        p = read_value(st, a, r->rows, p, q);
        if (!p) return -1;
        if (*p == '}') return 0;
        p++; /* ',' (render_map checked the shape) */
    }
}

/* An image ({name: value, ...} or null) as the row's canonical DynamoDB JSON text; with keys,
 * its attributes also go to st's attribute columns (the key columns). */
static const char *read_image(state_t *st, records_t *r, int which, const char *p, const char *end) {
    column_t *c = r->images[which];
    if (c->rows > r->rows) return FAIL(st, "an image given twice in a record");
    if (is_null(p, end)) return p + 4; /* padded as a null at the record's end */
    if (pad(c, r->rows)) return NOMEM(st);
    st->typed = 1;
    const char *q = render_map(st, p, end, &c->data, 0);
    st->typed = 0;
    if (!q) return NULL;
    if (end_text(c)) return NOMEM(st);
    if (which == 0 && key_columns(st, r, p, q)) return NULL;
    return q;
}

static locale_t c_locale_value;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;
static void make_c_locale(void) { c_locale_value = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0); }

static locale_t c_locale(void) {
    (void)pthread_once(&c_locale_once, make_c_locale);
    return c_locale_value;
}

/* Appends the microseconds of a creation time of `seconds` (a double) as convert.records.creation_micros computes
 * them: round(seconds * 1e6), halves to even. -1 (st->error set) beyond +-1e11 s or NaN. */
static int put_micros(state_t *st, records_t *r, double seconds) {
    if (!(seconds > -1e11 && seconds < 1e11)) {
        st->error = "a creation time the native path does not take";
        return -1;
    }
    int64_t micros = (int64_t)nearbyint(seconds * 1e6);
    if (buf_put(&r->micros, &micros, sizeof micros)) {
        st->error = "out of memory";
        return -1;
    }
    return 0;
}

/* ApproximateCreationDateTime (epoch seconds) -> microseconds, as convert.records.creation_micros computes them
 * from the number orjson reads: round(float(seconds) * 1e6), halves to even. */
static const char *read_time(state_t *st, records_t *r, const char *p, const char *end) {
    const char *q = scan_number(st, p, end);
    if (!q) return NULL;
    char text[64];
    size_t n = (size_t)(q - p);
    if (n >= sizeof text) return FAIL(st, "a creation time the native path does not take");
    memcpy(text, p, n);
    text[n] = 0;
    locale_t c = c_locale();
    if (!c) return FAIL(st, "no C locale to read a creation time with");
    double seconds = strtod_l(text, NULL, c); /* '.' whatever LC_NUMERIC says */
    if (put_micros(st, r, seconds)) return NULL;
    r->last_seconds = seconds;
    return q;
}

/* SequenceNumber: decimal digits, padded with zeros to SEQUENCE_DIGITS (str.zfill). */
#define SEQUENCE_DIGITS 40
static int put_sequence(state_t *st, records_t *r, const char *raw, size_t n) {
    if (n == 0 || n > SEQUENCE_DIGITS) goto refuse;
    for (size_t i = 0; i < n; i++)
        if (raw[i] < '0' || raw[i] > '9') goto refuse;
    column_t *c = r->sequence;
    if (buf_grow(&c->data, SEQUENCE_DIGITS)) goto nomem;
    memset(c->data.p + c->data.len, '0', SEQUENCE_DIGITS - n);
    c->data.len += SEQUENCE_DIGITS - n;
    if (buf_put(&c->data, raw, n) || end_text(c)) goto nomem;
    return 0;
refuse:
    st->error = "a sequence number the native path does not take";
    return -1;
nomem:
    st->error = "out of memory";
    return -1;
}

static const char *read_sequence(state_t *st, records_t *r, const char *p, const char *end) {
    const char *raw;
    size_t n;
    int escaped;
    p = scan_string(st, p, end, &raw, &n, &escaped);
    if (!p) return NULL;
    if (escaped) return FAIL(st, "a sequence number the native path does not take");
    if (put_sequence(st, r, raw, n)) return NULL;
    if (!r->first_seq) {
        r->first_seq = raw;
        r->first_seq_len = n;
    }
    r->last_seq = raw;
    r->last_seq_len = n;
    return p;
}

static const char *read_size(state_t *st, records_t *r, const char *p, const char *end) {
    const char *q = p;
    uint64_t v = 0;
    while (q < end && *q >= '0' && *q <= '9' && q - p < 18) v = v * 10 + (uint64_t)(*q++ - '0');
    if (q == p || (q < end && ((*q >= '0' && *q <= '9') || *q == '.' || *q == 'e' || *q == 'E')) ||
        (*p == '0' && q - p > 1))
        return FAIL(st, "a SizeBytes the native path does not take");
    r->size_bytes += v;
    return q;
}

/* Reads one member's value of an object being walked (the member is named name/n); returns the
 * position after the value, or NULL (st->error set). */
typedef const char *(*member_fn)(state_t *st, void *ctx, const char *name, size_t n, const char *p,
                                 const char *end);

/* Walks the object at p, {"name":value,...}, calling `member` for each member; returns the
 * position after its closing brace. `what` names it in the errors. */
static const char *walk_object(state_t *st, const char *p, const char *end, member_fn member,
                               void *ctx, const char *what) {
    if (p >= end || *p != '{') return FAIL(st, what);
    p++;
    if (p < end && *p == '}') return p + 1;
    for (;;) {
        const char *name;
        size_t n;
        p = read_key(st, p, end, &name, &n);
        if (!p) return NULL;
        p = member(st, ctx, name, n, p, end);
        if (!p) return NULL;
        if (p >= end) return FAIL(st, "unexpected end of the response");
        if (*p == '}') return p + 1;
        if (*p != ',') return FAIL(st, "expected ',' or '}' in an object");
        p++;
    }
}

/* Marks a member seen; 0 the first time, -1 (st->error set) if it was given twice. */
static int first_time(state_t *st, int *seen) {
    if ((*seen)++) {
        st->error = "a key given twice in a record";
        return -1;
    }
    return 0;
}

typedef struct {
    records_t *r;
    int time, seq, size;
} stream_record_t;

/* A member of the record's "dynamodb" object. */
static const char *stream_record_member(state_t *st, void *ctx, const char *name, size_t n,
                                        const char *p, const char *end) {
    stream_record_t *c = ctx;
    if (key_is(name, n, "ApproximateCreationDateTime"))
        return first_time(st, &c->time) ? NULL : read_time(st, c->r, p, end);
    if (key_is(name, n, "SequenceNumber"))
        return first_time(st, &c->seq) ? NULL : read_sequence(st, c->r, p, end);
    if (key_is(name, n, "SizeBytes"))
        return first_time(st, &c->size) ? NULL : read_size(st, c->r, p, end);
    if (key_is(name, n, "Keys")) return read_image(st, c->r, 0, p, end);
    if (key_is(name, n, "NewImage")) return read_image(st, c->r, 1, p, end);
    if (key_is(name, n, "OldImage")) return read_image(st, c->r, 2, p, end);
    return skip_value(st, p, end, 2);
}

typedef struct {
    int service, principal;
} identity_t;

/* A member of userIdentity: Type and PrincipalId are read, the rest skipped. */
static const char *identity_member(state_t *st, void *ctx, const char *name, size_t n,
                                   const char *p, const char *end) {
    identity_t *c = ctx;
    int is_type = key_is(name, n, "Type"), is_principal = key_is(name, n, "PrincipalId");
    if (!is_type && !is_principal) return skip_value(st, p, end, 3);
    const char *raw;
    size_t len;
    int escaped;
    if (p >= end || *p != '"') return FAIL(st, "a userIdentity the native path does not take");
    p = scan_string(st, p, end, &raw, &len, &escaped);
    if (!p) return NULL;
    if (escaped) return FAIL(st, "an escaped userIdentity");
    if (is_type)
        c->service = key_is(raw, len, "Service");
    else
        c->principal = key_is(raw, len, "dynamodb.amazonaws.com");
    return p;
}

typedef struct {
    records_t *r;
    int id, name, ddb, identity, ttl;
} record_t;

/* A member of a record. */
static const char *record_member(state_t *st, void *ctx, const char *name, size_t n,
                                 const char *p, const char *end) {
    record_t *c = ctx;
    if (key_is(name, n, "eventID"))
        return first_time(st, &c->id) ? NULL : read_text(st, p, end, c->r->event_id);
    if (key_is(name, n, "eventName"))
        return first_time(st, &c->name) ? NULL : read_text(st, p, end, c->r->event_name);
    if (key_is(name, n, "dynamodb")) {
        if (first_time(st, &c->ddb)) return NULL;
        stream_record_t sr = {c->r, 0, 0, 0};
        p = walk_object(st, p, end, stream_record_member, &sr, "a dynamodb value that is not an object");
        if (p && (!sr.time || !sr.seq))
            return FAIL(st, "a record without ApproximateCreationDateTime or SequenceNumber");
        return p;
    }
    if (key_is(name, n, "userIdentity")) {
        if (first_time(st, &c->identity)) return NULL;
        if (is_null(p, end)) return p + 4; /* userIdentity null: not a TTL delete */
        identity_t id = {0, 0};
        p = walk_object(st, p, end, identity_member, &id, "a userIdentity that is not an object");
        c->ttl = id.service && id.principal;
        return p;
    }
    return skip_value(st, p, end, 2);
}

static const char *read_record(state_t *st, records_t *r, const char *p, const char *end) {
    record_t c = {r, 0, 0, 0, 0, 0};
    p = walk_object(st, p, end, record_member, &c, "a record that is not an object");
    if (!p) return NULL;
    if (!c.id || !c.name || !c.ddb) return FAIL(st, "a record without eventID, eventName or dynamodb");
    if (buf_byte(&r->ttl, (char)c.ttl)) return NOMEM(st);
    r->rows++;
    for (int i = 0; i < 3; i++)
        if (pad(r->images[i], r->rows)) return NOMEM(st);
    return p;
}

typedef struct {
    records_t *r;
    const char *records_at, *records_end;
} response_t;

/* A member of the response: Records is read, the rest (NextShardIterator) skipped. */
static const char *response_member(state_t *st, void *ctx, const char *name, size_t n,
                                   const char *p, const char *end) {
    response_t *c = ctx;
    if (!key_is(name, n, "Records")) return skip_value(st, p, end, 1);
    if (c->records_at) return FAIL(st, "Records given twice");
    if (p >= end || *p != '[') return FAIL(st, "Records that is not an array");
    c->records_at = p++;
    if (p < end && *p == ']') {
        c->records_end = p + 1;
        return c->records_end;
    }
    for (;;) {
        p = read_record(st, c->r, p, end);
        if (!p) return NULL;
        if (p >= end) return FAIL(st, "unexpected end of the response");
        if (*p == ']') break;
        if (*p != ',') return FAIL(st, "expected ',' or ']' between records");
        p++;
    }
    c->records_end = p + 1;
    return c->records_end;
}

/* The response object; sets records_at and records_end to the span of its Records array. */
static int read_response(state_t *st, records_t *r, const char *p, const char *end,
                         const char **records_at, const char **records_end) {
    response_t c = {r, NULL, NULL};
    p = walk_object(st, p, end, response_member, &c, "a response that is not an object");
    if (!p) return -1;
    if (p != end) return st->error = "text after the response", -1;
    if (!c.records_at) return st->error = "a response without Records", -1;
    *records_at = c.records_at;
    *records_end = c.records_end;
    return 0;
}

/* A buffer handed to Python without a copy: it owns the memory (freed with it) and exports it
 * read-only through the buffer protocol (pyarrow.py_buffer takes it as it is). */
typedef struct {
    PyObject_HEAD
    char *p;
    Py_ssize_t len;
    size_t cap;
} buffer_object;

static int buffer_get(PyObject *self, Py_buffer *view, int flags) {
    buffer_object *b = (buffer_object *)self;
    return PyBuffer_FillInfo(view, self, b->p, b->len, 1, flags);
}

static void buffer_dealloc(PyObject *self) {
    release(((buffer_object *)self)->p, ((buffer_object *)self)->cap);
    Py_TYPE(self)->tp_free(self);
}

static PyBufferProcs BUFFER_PROCS = {buffer_get, NULL};

static PyTypeObject BUFFER_TYPE = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "dynamo_cdc._native.Buffer",
    .tp_basicsize = sizeof(buffer_object),
    .tp_dealloc = buffer_dealloc,
    .tp_as_buffer = &BUFFER_PROCS,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Bytes the C reader wrote, exported read-only through the buffer protocol.",
};

/* A column's buffer for Python: bytes (a copy; the buffer is kept for the next call), or over
 * `copy_max` bytes the buffer itself, taken from b (a copy would cost a page fault a page; its
 * memory comes back to big_blocks when Python frees it). */
static PyObject *column_bytes(buf_t *b, size_t copy_max) {
    if (b->len <= copy_max) return bytes_of(b);
    buffer_object *o = PyObject_New(buffer_object, &BUFFER_TYPE);
    if (!o) return NULL;
    o->p = b->p;
    o->len = (Py_ssize_t)b->len;
    o->cap = b->cap;
    b->p = NULL;
    b->len = b->cap = 0;
    return (PyObject *)o;
}

/* (valid bitmap, offsets, data, null count) of a string column (see column_bytes). */
static PyObject *texts_tuple(column_t *c, size_t copy_max) {
    size_t nulls = 0;
    for (size_t i = 0; i < c->valid.len; i++) nulls += !c->valid.p[i];
    PyObject *valid = bitmap_of(&c->valid), *offsets = column_bytes(&c->offsets, copy_max),
             *data = column_bytes(&c->data, copy_max), *count = PyLong_FromSize_t(nulls), *t = NULL;
    if (valid && offsets && data && count) t = PyTuple_Pack(4, valid, offsets, data, count);
    Py_XDECREF(valid);
    Py_XDECREF(offsets);
    Py_XDECREF(data);
    Py_XDECREF(count);
    return t;
}

/* Buffers kept from one scan_records call to the next on the same thread: a response's
 * columns are a few MB, and buffers that malloc hands back to the OS after each call are faulted
 * in again page by page on the next (a third of the scan's time, measured). Kept per thread
 * (freed when it exits), so calls on several threads never share them. */
#define RECORD_COLUMNS 6
typedef struct {
    column_t *columns[RECORD_COLUMNS];
    buf_t micros, ttl, key;
    level_t levels[MAX_DEPTH + 1];
} spare_t;

static pthread_key_t spare_key;
static pthread_once_t spare_once = PTHREAD_ONCE_INIT;

static void free_spare(void *p) {
    spare_t *sp = p;
    if (!sp) return;
    for (int i = 0; i < RECORD_COLUMNS; i++) free_column(sp->columns[i]);
    buf_free(&sp->micros);
    buf_free(&sp->ttl);
    buf_free(&sp->key);
    for (int d = 0; d <= MAX_DEPTH; d++) {
        buf_free(&sp->levels[d].scratch);
        free(sp->levels[d].entries);
    }
    free(sp);
}

static void make_spare_key(void) { (void)pthread_key_create(&spare_key, free_spare); }

/* An empty string column, reusing `c`'s buffers when there is one. */
static column_t *empty_column(column_t *c) {
    if (!c) return new_column(T_S);
    c->rows = c->members = 0;
    c->valid.len = c->values.len = c->data.len = c->member_offsets.len = c->offsets.len = 0;
    if (buf_i32(&c->offsets, 0)) {
        free_column(c);
        return NULL;
    }
    return c;
}

/* The record columns of r, in the order of spare_t's columns. */
#define RECORD_SLOTS(r)                                                                          \
    {&(r)->event_id, &(r)->event_name, &(r)->sequence, &(r)->images[0], &(r)->images[1],           \
     &(r)->images[2]}

static void trim(buf_t *b) {
    if (b->cap > SPARE_MAX) {
        release(b->p, b->cap);
        b->p = NULL;
        b->len = b->cap = 0;
    }
}

/* Sets up st and r to read records into, with the thread's spare buffers if it has some (taken
 * from it until end_records). 0, or -1 (st->error set) when out of memory; end_records frees
 * what was set up either way. */
static int begin_records(state_t *st, records_t *r, spare_t **spare_out) {
    memset(st, 0, sizeof *st);
    memset(r, 0, sizeof *r);
    int ok = 1;
    st->n_slots = 4096; /* > 2 * MAX_ATTRIBUTES: the probe always finds an empty slot */
    st->slots = calloc(st->n_slots, sizeof *st->slots);
    column_t **cols[RECORD_COLUMNS] = RECORD_SLOTS(r);
    (void)pthread_once(&spare_once, make_spare_key);
    spare_t *spare = pthread_getspecific(spare_key);
    if (spare) { /* take the thread's buffers (set back at the end) */
        (void)pthread_setspecific(spare_key, NULL);
        r->micros = spare->micros;
        r->ttl = spare->ttl;
        st->key = spare->key;
        memcpy(st->levels, spare->levels, sizeof st->levels);
        /* now owned by r and st: the spare must not free them too */
        memset(&spare->micros, 0, sizeof spare->micros);
        memset(&spare->ttl, 0, sizeof spare->ttl);
        memset(&spare->key, 0, sizeof spare->key);
        memset(spare->levels, 0, sizeof spare->levels);
        for (int d = 0; d <= MAX_DEPTH; d++) {
            st->levels[d].scratch.len = 0;
            st->levels[d].n_entries = 0;
        }
        r->micros.len = r->ttl.len = st->key.len = 0;
    } else if (!(spare = calloc(1, sizeof *spare))) {
        ok = 0;
    }
    for (size_t i = 0; i < RECORD_COLUMNS; i++) {
        *cols[i] = empty_column(spare ? spare->columns[i] : NULL);
        if (spare) spare->columns[i] = NULL;
        if (!*cols[i]) ok = 0;
    }
    *spare_out = spare;
    if (!ok || !st->slots) {
        st->error = "out of memory";
        return -1;
    }
    return 0;
}

/* Frees what begin_records set up, keeping the buffers (up to SPARE_MAX each) for the thread's
 * next call. */
static void end_records(state_t *st, records_t *r, spare_t *spare) {
    column_t **cols[RECORD_COLUMNS] = RECORD_SLOTS(r);
    if (spare && !pthread_getspecific(spare_key)) { /* keep the buffers for the next call */
        for (size_t i = 0; i < RECORD_COLUMNS; i++) {
            spare->columns[i] = *cols[i];
            *cols[i] = NULL;
            column_t *c = spare->columns[i];
            if (c) {
                trim(&c->valid);
                trim(&c->values);
                trim(&c->offsets);
                trim(&c->data);
                trim(&c->member_offsets);
            }
        }
        spare->micros = r->micros;
        spare->ttl = r->ttl;
        spare->key = st->key;
        memcpy(spare->levels, st->levels, sizeof st->levels);
        memset(&r->micros, 0, sizeof r->micros);
        memset(&r->ttl, 0, sizeof r->ttl);
        memset(&st->key, 0, sizeof st->key);
        memset(st->levels, 0, sizeof st->levels);
        trim(&spare->micros);
        trim(&spare->ttl);
        trim(&spare->key);
        for (int d = 0; d <= MAX_DEPTH; d++) trim(&spare->levels[d].scratch);
        if (pthread_setspecific(spare_key, spare)) free_spare(spare);
    } else {
        free_spare(spare);
    }
    for (size_t i = 0; i < RECORD_COLUMNS; i++) free_column(*cols[i]);
    buf_free(&r->micros);
    buf_free(&r->ttl);
    free_state(st);
}

/* The change-row columns of the records read (see the top): a new dict, or NULL (a Python
 * exception set). Buffers over copy_max bytes are handed over as they are (column_bytes). */
static PyObject *records_dict(state_t *st, records_t *r, size_t copy_max) {
    PyObject *result = NULL;
    PyObject *attrs = attributes_list(st);
    PyObject *ids = texts_tuple(r->event_id, copy_max), *names = texts_tuple(r->event_name, copy_max),
             *seqs = texts_tuple(r->sequence, copy_max), *keys = texts_tuple(r->images[0], copy_max),
             *news = texts_tuple(r->images[1], copy_max), *olds = texts_tuple(r->images[2], copy_max),
             *micros = column_bytes(&r->micros, copy_max), *ttl = bitmap_of(&r->ttl);
    if (attrs && ids && names && seqs && keys && news && olds && micros && ttl)
        result = Py_BuildValue("{sn,sO,sO,sO,sO,sO,sO,sO,sO,sO}", "count", (Py_ssize_t)r->rows,
                               "event_id", ids, "event_name", names, "sequence_number", seqs,
                               "micros", micros, "ttl_delete", ttl, "_keys", keys,
                               "_new_image", news, "_old_image", olds, "key_attributes", attrs);
    Py_XDECREF(attrs);
    Py_XDECREF(ids);
    Py_XDECREF(names);
    Py_XDECREF(seqs);
    Py_XDECREF(keys);
    Py_XDECREF(news);
    Py_XDECREF(olds);
    Py_XDECREF(micros);
    Py_XDECREF(ttl);
    return result;
}

PyObject *scan_records(PyObject *self, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE)) return NULL;
    const char *body = view.buf, *end = body + view.len;
    state_t st;
    records_t r;
    spare_t *spare = NULL;
    PyObject *result = NULL;
    const char *records_at = NULL, *records_end = NULL;
    int ok = begin_records(&st, &r, &spare) == 0;
    Py_BEGIN_ALLOW_THREADS;
    if (ok && !valid_utf8((const unsigned char *)body, (size_t)view.len)) {
        st.error = "text that is not UTF-8";
        ok = 0;
    }
    if (ok && read_response(&st, &r, body, end, &records_at, &records_end)) ok = 0;
    if (ok && pad_attributes(&st, r.rows)) ok = 0;
    Py_END_ALLOW_THREADS;
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, st.error ? st.error : "unsupported response");
        goto done;
    }
    result = records_dict(&st, &r, SPARE_MAX); /* a response's buffers: kept for the next */
    if (!result) goto done;
    {
        PyObject *at = PyLong_FromSsize_t((Py_ssize_t)(records_at - body));
        PyObject *stop = PyLong_FromSsize_t((Py_ssize_t)(records_end - body));
        PyObject *size = PyLong_FromUnsignedLongLong((unsigned long long)r.size_bytes);
        PyObject *first = r.first_seq ? PyUnicode_FromStringAndSize(r.first_seq, (Py_ssize_t)r.first_seq_len) : Py_NewRef(Py_None);
        PyObject *last = r.last_seq ? PyUnicode_FromStringAndSize(r.last_seq, (Py_ssize_t)r.last_seq_len) : Py_NewRef(Py_None);
        PyObject *when = r.rows ? PyFloat_FromDouble(r.last_seconds) : Py_NewRef(Py_None);
        if (!at || !stop || !size || !first || !last || !when ||
            PyDict_SetItemString(result, "records_at", at) ||
            PyDict_SetItemString(result, "records_end", stop) ||
            PyDict_SetItemString(result, "size_bytes", size) ||
            PyDict_SetItemString(result, "first_sequence_number", first) ||
            PyDict_SetItemString(result, "last_sequence_number", last) ||
            PyDict_SetItemString(result, "last_creation_time", when))
            Py_CLEAR(result);
        Py_XDECREF(at);
        Py_XDECREF(stop);
        Py_XDECREF(size);
        Py_XDECREF(first);
        Py_XDECREF(last);
        Py_XDECREF(when);
    }
done:
    end_records(&st, &r, spare);
    PyBuffer_Release(&view);
    return result;
}

/* ---------------------------------------------------------------------------------------- */
/* Record dicts
 *
 * scan_record_dicts(records) reads a list of stream records as Python dicts, as boto3 returns
 * them (binary values bytes, ApproximateCreationDateTime a datetime) or as orjson reads a
 * response (binary values base64 text, the time epoch seconds), and returns the same columns as
 * scan_records (count, event_id, event_name, sequence_number, micros, ttl_delete, _keys,
 * _new_image, _old_image, key_attributes; not the response's records_at, records_end, size_bytes,
 * first/last_sequence_number, last_creation_time). It is a second front end (Python objects
 * rather than JSON tokens) over the same output code: the records' columns, strings escaped by
 * put_json_string, numbers by put_typed_number, binary text by put_b64_text, sets by add_member
 * and finish_set, map keys by sort_entries and put_key (the values, objects here, are then written
 * straight into the output in key order rather than into the level's scratch first), the micros
 * by put_micros, sequence numbers by put_sequence, and the key columns read from the rendered
 * Keys text (key_columns).
 *
 * It refuses (ValueError) what it does not render exactly as the reference
 * (dynamo_cdc/convert/records.py): a value of another type than those boto3 and orjson give (exact dict, list, bytes,
 * bytearray, bool; str or a str subclass for texts; a dict key that is not an exact str), a
 * value that is not one {tag: value}, an unknown tag, NULL other than True, a number that needs
 * more than cutting trailing zeros to be canonical, binary text that is not canonical base64, a
 * string with a lone surrogate, a dict nested deeper than MAX_DEPTH, a datetime whose tzinfo is
 * not None, a datetime.timezone or a zoneinfo.ZoneInfo, whose utcoffset has microseconds, or whose microseconds from 1970 a
 * double does not hold exactly (beyond about 285 years), a creation time of another type than
 * datetime, int or float, or beyond +-1e11 s, a record without eventID, eventName (str), dynamodb
 * or ApproximateCreationDateTime, a SequenceNumber other than 1 to 40 digits, a userIdentity
 * other than a dict whose Type and PrincipalId are str or None. A Python exception other than
 * those refusals (MemoryError) propagates; a refusal leaves nothing behind. It holds the GIL
 * throughout: it reads the objects in place, calling no Python code but a timezone's or a
 * ZoneInfo's utcoffset (C code), holding a reference to each record field it reads until the
 * record is read. */

enum {
    K_EVENT_ID, K_EVENT_NAME, K_DYNAMODB, K_USER_IDENTITY, K_TIME, K_SEQUENCE, K_KEYS, K_NEW_IMAGE,
    K_OLD_IMAGE, K_TYPE, K_PRINCIPAL, K_COUNT
};
static const char *const FIELD_NAMES[K_COUNT] = {
    "eventID", "eventName", "dynamodb", "userIdentity", "ApproximateCreationDateTime",
    "SequenceNumber", "Keys", "NewImage", "OldImage", "Type", "PrincipalId"};
static PyObject *FIELDS[K_COUNT]; /* interned, made at import */
static PyObject *UTCOFFSET;       /* "utcoffset" */
static PyTypeObject *ZONEINFO;    /* zoneinfo.ZoneInfo, or NULL */

static int refuse(state_t *st, const char *why) {
    st->error = why;
    return -1;
}

/* After a failed C API call: a MemoryError stays set (it propagates, st->error NULL); any other
 * exception is cleared and the records refused (the reference meets it again). */
static int py_refuse(state_t *st, const char *why) {
    if (PyErr_ExceptionMatches(PyExc_MemoryError)) return -1;
    PyErr_Clear();
    return refuse(st, why);
}

/* The UTF-8 text of a str, or of a str subclass (orjson and pyarrow read its text). */
static int str_text(state_t *st, PyObject *o, const char **s, size_t *n) {
    if (!PyUnicode_Check(o)) return refuse(st, "a value of a type the native path does not take");
    Py_ssize_t len;
    const char *p;
    if (PyUnicode_IS_COMPACT_ASCII(o)) {
        p = (const char *)PyUnicode_DATA(o);
        len = PyUnicode_GET_LENGTH(o);
    } else if (!(p = PyUnicode_AsUTF8AndSize(o, &len))) {
        return py_refuse(st, "a string that is not UTF-8 (a lone surrogate)");
    }
    *s = p;
    *n = (size_t)len;
    return 0;
}

static int obj_value(state_t *st, PyObject *av, buf_t *out, int depth);

/* The walk is bound by the latency of reading the objects (a value's dict, then its keys table,
 * then its payload, each known only once the one before is read), most of them not in the CPU
 * cache: they are read ahead (prefetched) where their addresses are known early, a batch at a
 * time, so that the reads overlap (see prefetch_records). Prefetching changes no result. */
#define BATCH 32
#if defined(__GNUC__)
#define PREFETCH(p) __builtin_prefetch((const void *)(p))
#else
#define PREFETCH(p) ((void)(p))
#endif

/* Prefetches the keys tables of the values (already prefetched) about to be rendered. */
static void prefetch_values(PyObject *const *values, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++)
        if (PyDict_CheckExact(values[i])) PREFETCH(((PyDictObject *)values[i])->ma_keys);
}

/* The key order of maps met: a map whose keys are the same str objects in the same dict order
 * as one met before (the images of one table's records mostly are) is written in that order,
 * with the keys' text written then, without sorting or escaping them again. The keys are held
 * (references), so an address stays that object's. */
#define ORDER_SLOTS 8
#define ORDER_MAX 64 /* keys of the maps remembered */
typedef struct {
    Py_ssize_t n;
    PyObject *keys[ORDER_MAX];      /* in dict order */
    unsigned char order[ORDER_MAX]; /* the dict positions in sorted order */
    buf_t text;                     /* the keys as put_key writes them, in sorted order */
    size_t text_at[ORDER_MAX + 1];
    int busy; /* its map is being written (maps nested in it must not replace it) */
} order_t;

/* The tag of a value's key, by the key's address: the few tag strings recur, the same objects
 * (held, like the keys of order_t). */
#define TAG_SLOTS 16
typedef struct {
    PyObject *key;
    int tag;
} tag_slot_t;

struct orders {
    order_t slots[ORDER_SLOTS];
    unsigned next; /* the slot to replace next */
    tag_slot_t tags[TAG_SLOTS];
};

static void free_orders(struct orders *o) {
    for (int i = 0; i < ORDER_SLOTS; i++) {
        for (Py_ssize_t j = 0; j < o->slots[i].n; j++) Py_DECREF(o->slots[i].keys[j]);
        buf_free(&o->slots[i].text);
    }
    for (int i = 0; i < TAG_SLOTS; i++) Py_XDECREF(o->tags[i].key);
}

/* The tag a key names (T_NONE: none). */
static int tag_of(struct orders *o, PyObject *key) {
    tag_slot_t *slot = &o->tags[((uintptr_t)key >> 4) % TAG_SLOTS];
    if (slot->key == key) return slot->tag;
    int tag = T_NONE;
    if (PyUnicode_CheckExact(key) && PyUnicode_IS_COMPACT_ASCII(key))
        tag = tag_named((const char *)PyUnicode_DATA(key), (size_t)PyUnicode_GET_LENGTH(key));
    if (tag != T_NONE) {
        Py_XSETREF(slot->key, Py_NewRef(key));
        slot->tag = tag;
    }
    return tag;
}

static order_t *known_order(struct orders *o, PyObject *const *keys, Py_ssize_t n) {
    for (int i = 0; i < ORDER_SLOTS; i++)
        if (o->slots[i].n == n && memcmp(o->slots[i].keys, keys, (size_t)n * sizeof *keys) == 0)
            return &o->slots[i];
    return NULL;
}

/* Remembers the order of the sorted entries ents (keys in base) of a map whose keys are keys
 * (in dict order). 0, or -1 when out of memory. */
static int remember_order(struct orders *o, PyObject *const *keys, const entry_t *ents,
                          const char *base, Py_ssize_t n) {
    order_t *slot = NULL;
    for (int tries = 0; tries < ORDER_SLOTS && !slot; tries++) {
        slot = &o->slots[o->next++ % ORDER_SLOTS];
        if (slot->busy) slot = NULL;
    }
    if (!slot) return 0; /* every slot's map is being written */
    for (Py_ssize_t j = 0; j < slot->n; j++) Py_DECREF(slot->keys[j]);
    slot->n = 0;
    slot->text.len = 0;
    for (Py_ssize_t j = 0; j < n; j++) {
        slot->text_at[j] = slot->text.len;
        if (put_key(&slot->text, base, &ents[j], j > 0)) return -1;
        slot->order[j] = (unsigned char)ents[j].pos;
    }
    slot->text_at[n] = slot->text.len;
    for (Py_ssize_t j = 0; j < n; j++) slot->keys[j] = Py_NewRef(keys[j]);
    slot->n = n;
    return 0;
}

/* An image or an M value (a dict of name: value) as render_map renders it. The keys are sorted
 * (sort_entries) before the values are rendered, straight into out; or their order is known. */
static int obj_map(state_t *st, PyObject *map, buf_t *out, int depth) {
    if (depth >= MAX_DEPTH) return refuse(st, "nesting deeper than the native path takes");
    if (!PyDict_CheckExact(map)) return refuse(st, "a map that is not a dict");
    Py_ssize_t size = PyDict_GET_SIZE(map), pos = 0, n = 0;
    if (size == 0) return buf_put(out, "{}", 2) ? refuse(st, "out of memory") : 0;
    PyObject *keys[ORDER_MAX], *values[ORDER_MAX], *key, *value;
    if (size <= ORDER_MAX) {
        while (n < ORDER_MAX && PyDict_Next(map, &pos, &keys[n], &values[n])) PREFETCH(values[n++]);
        order_t *known = known_order(st->orders, keys, n);
        if (known) {
            prefetch_values(values, n);
            int rc = buf_byte(out, '{') ? refuse(st, "out of memory") : 0;
            known->busy++;
            for (Py_ssize_t i = 0; i < n && !rc; i++) {
                const char *text = known->text.p + known->text_at[i];
                if (buf_put(out, text, known->text_at[i + 1] - known->text_at[i]))
                    rc = refuse(st, "out of memory");
                else
                    rc = obj_value(st, values[known->order[i]], out, depth + 1);
            }
            known->busy--;
            if (!rc && buf_byte(out, '}')) rc = refuse(st, "out of memory");
            return rc;
        }
        pos = n = 0;
    }
    level_t *lv = &st->levels[depth];
    size_t scratch_start = lv->scratch.len, first = lv->n_entries;
    while (PyDict_Next(map, &pos, &key, &value)) {
        const char *s;
        size_t len;
        if (!PyUnicode_CheckExact(key)) return refuse(st, "a key that is not a str");
        if (str_text(st, key, &s, &len)) return -1;
        entry_t *e = push_entry(lv);
        if (!e) return refuse(st, "out of memory");
        e->key_at = lv->scratch.len;
        e->key_len = len;
        e->escaped = 1; /* the text itself: put_key escapes it as orjson does */
        e->value = value;
        e->pos = (uint32_t)n++;
        if (buf_put(&lv->scratch, s, len)) return refuse(st, "out of memory");
    }
    entry_t *ents = lv->entries + first;
    sort_entries(ents, (size_t)n, lv->scratch.p, T_M);
    if (n <= ORDER_MAX && remember_order(st->orders, keys, ents, lv->scratch.p, n))
        return refuse(st, "out of memory");
    if (buf_byte(out, '{')) return refuse(st, "out of memory");
    for (Py_ssize_t i = 0; i < n; i++) {
        /* lv->entries stays put: the values' maps use the next level */
        if (put_key(out, lv->scratch.p, &ents[i], i > 0)) return refuse(st, "out of memory");
        if (obj_value(st, ents[i].value, out, depth + 1)) return -1;
    }
    if (buf_byte(out, '}')) return refuse(st, "out of memory");
    lv->scratch.len = scratch_start;
    lv->n_entries = first;
    return 0;
}

static int obj_list(state_t *st, PyObject *list, buf_t *out, int depth) {
    if (depth >= MAX_DEPTH) return refuse(st, "nesting deeper than the native path takes");
    if (!PyList_CheckExact(list)) return refuse(st, "an L value that is not a list");
    if (buf_byte(out, '[')) return refuse(st, "out of memory");
    for (Py_ssize_t lo = 0; lo < PyList_GET_SIZE(list); lo += BATCH) {
        PyObject **items = ((PyListObject *)list)->ob_item + lo;
        Py_ssize_t n = PyList_GET_SIZE(list) - lo < BATCH ? PyList_GET_SIZE(list) - lo : BATCH;
        for (Py_ssize_t i = 0; i < n; i++) PREFETCH(items[i]);
        prefetch_values(items, n);
        for (Py_ssize_t i = 0; i < n; i++) {
            if ((lo + i) && buf_byte(out, ',')) return refuse(st, "out of memory");
            if (obj_value(st, items[i], out, depth + 1)) return -1;
        }
    }
    return buf_byte(out, ']') ? refuse(st, "out of memory") : 0;
}

/* The bytes of a bytes or bytearray (a B value as boto3 gives it); 0 if o is neither. */
static int bytes_view(PyObject *o, const char **s, size_t *n) {
    if (PyBytes_CheckExact(o)) {
        *s = PyBytes_AS_STRING(o);
        *n = (size_t)PyBytes_GET_SIZE(o);
        return 1;
    }
    if (PyByteArray_CheckExact(o)) {
        *s = PyByteArray_AS_STRING(o);
        *n = (size_t)PyByteArray_GET_SIZE(o);
        return 1;
    }
    return 0;
}

/* An SS, NS or BS value (a list of members) as render_set renders it. */
static int obj_set(state_t *st, int tag, PyObject *list, buf_t *out, int depth) {
    if (depth >= MAX_DEPTH) return refuse(st, "nesting deeper than the native path takes");
    if (!PyList_CheckExact(list)) return refuse(st, "a set that is not a list");
    if (PyList_GET_SIZE(list) == 0) return buf_put(out, "[]", 2) ? refuse(st, "out of memory") : 0;
    level_t *lv = &st->levels[depth];
    size_t scratch_start = lv->scratch.len, first = lv->n_entries;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); i++) {
        PyObject *m = PyList_GET_ITEM(list, i);
        const char *s;
        size_t n;
        int bytes = tag == T_BS && bytes_view(m, &s, &n);
        if (!bytes && str_text(st, m, &s, &n)) return -1;
        if (add_member(st, tag, lv, s, n, bytes)) return -1;
    }
    return finish_set(st, tag, lv, first, scratch_start, out);
}

/* One {tag: value} as render_plain renders it in typed mode (convert.records.image_text). */
static int obj_value(state_t *st, PyObject *av, buf_t *out, int depth) {
    if (!PyDict_CheckExact(av) || PyDict_GET_SIZE(av) != 1)
        return refuse(st, "a value that is not one {tag: value}");
    Py_ssize_t pos = 0;
    PyObject *key, *v;
    (void)PyDict_Next(av, &pos, &key, &v);
    int tag = tag_of(st->orders, key);
    if (tag == T_NONE) return refuse(st, "an unknown type tag");
    if (buf_grow(out, 8)) return refuse(st, "out of memory");
    memcpy(out->p + out->len, TAG_OPEN[tag], 8); /* padded: see TAG_OPEN */
    out->len += TAG_OPEN_LEN[tag];
    const char *s;
    size_t n;
    int rc = 0;
    switch (tag) {
    case T_S:
        if (str_text(st, v, &s, &n)) return -1;
        if (put_json_string(out, s, n)) return refuse(st, "out of memory");
        break;
    case T_N:
        if (str_text(st, v, &s, &n) || put_typed_number(st, s, n, out)) return -1;
        break;
    case T_B:
        if (bytes_view(v, &s, &n)) {
            if (put_b64(out, (const unsigned char *)s, n)) return refuse(st, "out of memory");
        } else if (str_text(st, v, &s, &n) || put_b64_text(st, s, n, out)) {
            return -1;
        }
        break;
    case T_BOOL:
        if (v != Py_True && v != Py_False) return refuse(st, "a BOOL that is not a bool");
        if (v == Py_True ? buf_put(out, "true", 4) : buf_put(out, "false", 5))
            return refuse(st, "out of memory");
        break;
    case T_NULL:
        if (v != Py_True) return refuse(st, "NULL other than True");
        if (buf_put(out, "true", 4)) return refuse(st, "out of memory");
        break;
    case T_M:
        rc = obj_map(st, v, out, depth);
        break;
    case T_L:
        rc = obj_list(st, v, out, depth);
        break;
    default:
        rc = obj_set(st, tag, v, out, depth);
    }
    if (rc) return -1;
    return buf_byte(out, '}') ? refuse(st, "out of memory") : 0;
}

/* Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, int m, int d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

typedef struct {
    PyObject **p;
    size_t n, cap;
} objects_t;

/* Room for `more` objects in v. */
static int reserve_objects(objects_t *v, size_t more) {
    if (v->n + more <= v->cap) return 0;
    size_t cap = v->cap ? v->cap : 1024;
    while (cap < v->n + more) cap *= 2;
    PyObject **p = realloc(v->p, cap * sizeof *p);
    if (!p) return -1;
    v->p = p;
    v->cap = cap;
    return 0;
}

typedef struct {
    PyObject *tz;      /* the last datetime.timezone met (a reference), and its offset */
    int64_t tz_offset; /* microseconds */
    objects_t frontier[2], dicts, lists; /* prefetch_records' */
} dicts_t;

/* Prefetches the keys table of an exact dict (its header, indices and entries). */
static void prefetch_table(PyObject *dict) {
    const char *keys = (const char *)((PyDictObject *)dict)->ma_keys;
    size_t bytes = 48 + (size_t)PyDict_GET_SIZE(dict) * 18;
    for (size_t at = 0; at < bytes; at += 64) PREFETCH(keys + at);
}

/* Reads the objects of records[lo:hi] into the CPU cache ahead of their rendering, breadth
 * first: the objects of a depth are prefetched together, so that their reads overlap (the walk
 * is bound by the latency of reading the objects: a value's dict, then its keys table, then its
 * payload, each known only once the one before is read). The payload of a scalar value (S, N, B,
 * BOOL, NULL) is prefetched, not walked. Only reads: it changes no result. */
static int prefetch_records(dicts_t *d, struct orders *orders, PyObject *records, Py_ssize_t lo,
                            Py_ssize_t hi) {
    objects_t *cur = &d->frontier[0], *next = &d->frontier[1];
    if (reserve_objects(cur, (size_t)(hi - lo))) return -1;
    cur->n = 0;
    for (Py_ssize_t i = lo; i < hi; i++) {
        PyObject *o = PyList_GET_ITEM(records, i);
        PREFETCH(o);
        cur->p[cur->n++] = o;
    }
    while (cur->n) {
        d->dicts.n = d->lists.n = 0;
        size_t more = 0;
        if (reserve_objects(&d->dicts, cur->n) || reserve_objects(&d->lists, cur->n)) return -1;
        for (size_t i = 0; i < cur->n; i++) {
            PyObject *o = cur->p[i];
            if (PyDict_CheckExact(o)) {
                prefetch_table(o);
                d->dicts.p[d->dicts.n++] = o;
                more += (size_t)PyDict_GET_SIZE(o);
            } else if (PyList_CheckExact(o)) {
                PyObject **items = ((PyListObject *)o)->ob_item;
                for (Py_ssize_t at = 0; at < PyList_GET_SIZE(o); at += 8) PREFETCH(items + at);
                d->lists.p[d->lists.n++] = o;
                more += (size_t)PyList_GET_SIZE(o);
            }
        }
        next->n = 0;
        if (reserve_objects(next, more)) return -1;
        for (size_t i = 0; i < d->dicts.n; i++) {
            PyObject *dict = d->dicts.p[i], *k, *v;
            Py_ssize_t pos = 0;
            if (PyDict_GET_SIZE(dict) == 1) { /* a value {tag: payload}, most likely */
                (void)PyDict_Next(dict, &pos, &k, &v);
                PREFETCH(v);
                PREFETCH((const char *)v + 64);
                int tag = tag_of(orders, k);
                if (tag == T_NONE || tag == T_M || tag == T_L || is_list(tag)) next->p[next->n++] = v;
                continue;
            }
            while (PyDict_Next(dict, &pos, &k, &v)) {
                PREFETCH(v);
                next->p[next->n++] = v;
            }
        }
        for (size_t i = 0; i < d->lists.n; i++) {
            PyObject *l = d->lists.p[i];
            for (Py_ssize_t j = 0; j < PyList_GET_SIZE(l); j++) {
                PyObject *v = PyList_GET_ITEM(l, j);
                PREFETCH(v);
                PREFETCH((const char *)v + 64);
                next->p[next->n++] = v;
            }
        }
        objects_t *t = cur;
        cur = next;
        next = t;
    }
    return 0;
}

/* The epoch seconds of a datetime as datetime.timestamp() gives them (naive taken as UTC, as
 * convert.records.creation_micros does): (dt - epoch) in exact microseconds, less the tzinfo's utcoffset, then
 * divided by 1e6 in double arithmetic, which is the correctly rounded quotient Python's int true
 * division gives while the microseconds are below 2**53. */
static int datetime_seconds(state_t *st, dicts_t *d, PyObject *when, double *seconds) {
    int64_t days = days_from_civil(PyDateTime_GET_YEAR(when), PyDateTime_GET_MONTH(when),
                                   PyDateTime_GET_DAY(when));
    int64_t us = (days * 86400 + PyDateTime_DATE_GET_HOUR(when) * 3600 +
                  PyDateTime_DATE_GET_MINUTE(when) * 60 + PyDateTime_DATE_GET_SECOND(when)) *
                     1000000 +
                 PyDateTime_DATE_GET_MICROSECOND(when);
    PyObject *tz = PyDateTime_DATE_GET_TZINFO(when);
    if (tz != Py_None && tz != PyDateTime_TimeZone_UTC) {
        int64_t offset;
        if (tz == d->tz) {
            offset = d->tz_offset;
        } else {
            int fixed = Py_TYPE(tz) == Py_TYPE(PyDateTime_TimeZone_UTC);
            if (!fixed && (!ZONEINFO || Py_TYPE(tz) != ZONEINFO))
                return refuse(st, "a datetime with a tzinfo the native path does not take");
            PyObject *delta = PyObject_CallMethodOneArg(tz, UTCOFFSET, when);
            if (!delta) return py_refuse(st, "a tzinfo whose utcoffset failed");
            /* an offset with microseconds (no real zone has one): the reference's */
            if (!PyDelta_Check(delta) || PyDateTime_DELTA_GET_MICROSECONDS(delta)) {
                Py_DECREF(delta);
                return refuse(st, "a utcoffset that is not a timedelta of whole seconds");
            }
            offset = ((int64_t)PyDateTime_DELTA_GET_DAYS(delta) * 86400 +
                      PyDateTime_DELTA_GET_SECONDS(delta)) *
                         1000000 +
                     PyDateTime_DELTA_GET_MICROSECONDS(delta);
            Py_DECREF(delta);
            if (offset <= -86400000000LL || offset >= 86400000000LL)
                return refuse(st, "a utcoffset of a day or more");
            if (fixed) { /* a timezone's offset is the same for every datetime */
                Py_INCREF(tz);
                Py_XSETREF(d->tz, tz);
                d->tz_offset = offset;
            }
        }
        us -= offset;
    }
    if (us <= -((int64_t)1 << 53) || us >= ((int64_t)1 << 53))
        return refuse(st, "a datetime too far from 1970 for a double to hold its microseconds");
    *seconds = (double)us / 1e6;
    return 0;
}

/* ApproximateCreationDateTime: a datetime, an int or a float (convert.records.creation_micros). */
static int obj_micros(state_t *st, records_t *r, dicts_t *d, PyObject *when) {
    double seconds;
    if (!when) return refuse(st, "a record without ApproximateCreationDateTime");
    if (PyFloat_CheckExact(when)) {
        seconds = PyFloat_AS_DOUBLE(when);
    } else if (PyLong_CheckExact(when)) {
        seconds = PyLong_AsDouble(when);
        if (seconds == -1.0 && PyErr_Occurred()) return py_refuse(st, "a creation time beyond a double");
    } else if (PyDateTime_CheckExact(when)) {
        if (datetime_seconds(st, d, when, &seconds)) return -1;
    } else {
        return refuse(st, "a creation time of a type the native path does not take");
    }
    return put_micros(st, r, seconds);
}

/* Ends the text just written into c->data as a row, refusing text past Arrow's int32 offsets. */
static int end_row(state_t *st, column_t *c) {
    if (c->data.len > INT32_MAX) return refuse(st, "more text than an Arrow string array holds");
    return end_text(c) ? refuse(st, "out of memory") : 0;
}

/* eventID, eventName: a str as the row's value of c. */
static int obj_text(state_t *st, column_t *c, PyObject *v) {
    const char *s;
    size_t n;
    if (!v || !PyUnicode_Check(v)) return refuse(st, "a record without eventID or eventName");
    if (str_text(st, v, &s, &n)) return -1;
    if (buf_put(&c->data, s, n)) return refuse(st, "out of memory");
    return end_row(st, c);
}

/* Whether v (absent, None or a str) == want, as Python compares them; -1 for other types. */
static int text_is(state_t *st, PyObject *v, const char *want, int *is) {
    if (!v || v == Py_None) {
        *is = 0;
        return 0;
    }
    if (!PyUnicode_CheckExact(v)) return refuse(st, "a userIdentity field that is not a str");
    *is = PyUnicode_CompareWithASCIIString(v, want) == 0;
    return 0;
}

/* The value of the field `key` of an exact dict (borrowed, NULL if absent) into held[*n_held],
 * with a reference held until the record is read. */
static int field(state_t *st, PyObject *dict, int key, PyObject **value, PyObject **held,
                 int *n_held) {
    *value = PyDict_GetItemWithError(dict, FIELDS[key]);
    if (!*value) return PyErr_Occurred() ? py_refuse(st, "a record the native path does not read") : 0;
    Py_INCREF(*value);
    held[(*n_held)++] = *value;
    return 0;
}

/* One record dict as the next row. */
static int obj_record(state_t *st, records_t *r, dicts_t *d, PyObject *rec) {
    PyObject *held[K_COUNT];
    int n_held = 0, rc = -1, ttl = 0;
    PyObject *v[K_COUNT] = {NULL};
    if (!PyDict_CheckExact(rec)) return refuse(st, "a record that is not a dict");
    if (field(st, rec, K_EVENT_ID, &v[K_EVENT_ID], held, &n_held) ||
        field(st, rec, K_EVENT_NAME, &v[K_EVENT_NAME], held, &n_held) ||
        field(st, rec, K_DYNAMODB, &v[K_DYNAMODB], held, &n_held) ||
        field(st, rec, K_USER_IDENTITY, &v[K_USER_IDENTITY], held, &n_held))
        goto done;
    PyObject *ddb = v[K_DYNAMODB], *ident = v[K_USER_IDENTITY];
    if (!ddb || !PyDict_CheckExact(ddb)) {
        refuse(st, "a record without a dynamodb dict");
        goto done;
    }
    for (int k = K_TIME; k <= K_OLD_IMAGE; k++)
        if (field(st, ddb, k, &v[k], held, &n_held)) goto done;
    if (ident && ident != Py_None) {
        int service, principal;
        if (!PyDict_CheckExact(ident)) {
            refuse(st, "a userIdentity that is not a dict");
            goto done;
        }
        if (field(st, ident, K_TYPE, &v[K_TYPE], held, &n_held) ||
            field(st, ident, K_PRINCIPAL, &v[K_PRINCIPAL], held, &n_held) ||
            text_is(st, v[K_TYPE], "Service", &service) ||
            text_is(st, v[K_PRINCIPAL], "dynamodb.amazonaws.com", &principal))
            goto done;
        ttl = service && principal;
    }
    /* first the time (the one call of Python code, a utcoffset), then the rest: plain reads */
    if (obj_micros(st, r, d, v[K_TIME])) goto done;
    if (obj_text(st, r->event_id, v[K_EVENT_ID]) || obj_text(st, r->event_name, v[K_EVENT_NAME]))
        goto done;
    PyObject *seq = v[K_SEQUENCE];
    if (seq && seq != Py_None) {
        const char *s;
        size_t n;
        if (str_text(st, seq, &s, &n) || put_sequence(st, r, s, n)) goto done;
        if (r->sequence->data.len > INT32_MAX) {
            refuse(st, "more text than an Arrow string array holds");
            goto done;
        }
    }
    for (int which = 0; which < 3; which++) {
        PyObject *image = v[K_KEYS + which];
        if (!image || image == Py_None) continue;
        column_t *c = r->images[which];
        if (pad(c, r->rows)) {
            refuse(st, "out of memory");
            goto done;
        }
        size_t start = c->data.len;
        st->typed = 1;
        int failed = obj_map(st, image, &c->data, 0);
        st->typed = 0;
        if (failed || end_row(st, c)) goto done;
        if (which == 0 && key_columns(st, r, c->data.p + start, c->data.p + c->data.len)) goto done;
    }
    if (buf_byte(&r->ttl, (char)ttl)) {
        refuse(st, "out of memory");
        goto done;
    }
    r->rows++;
    for (int i = 0; i < 3; i++)
        if (pad(r->images[i], r->rows)) {
            refuse(st, "out of memory");
            goto done;
        }
    if (pad(r->sequence, r->rows)) {
        refuse(st, "out of memory");
        goto done;
    }
    rc = 0;
done:
    for (int i = 0; i < n_held; i++) Py_DECREF(held[i]);
    return rc;
}

#define RECORD_BATCH 16

PyObject *scan_record_dicts(PyObject *self, PyObject *records) {
    if (!PyList_CheckExact(records)) {
        PyErr_SetString(PyExc_ValueError, "records that are not a list");
        return NULL;
    }
    state_t st;
    records_t r;
    spare_t *spare = NULL;
    dicts_t d;
    memset(&d, 0, sizeof d);
    struct orders *orders = calloc(1, sizeof *orders);
    PyObject *result = NULL;
    int ok = begin_records(&st, &r, &spare) == 0;
    st.orders = orders;
    if (!orders) {
        st.error = "out of memory";
        ok = 0;
    }
    for (Py_ssize_t i = 0; ok && i < PyList_GET_SIZE(records); i++) {
        if (i % RECORD_BATCH == 0) {
            Py_ssize_t hi = i + RECORD_BATCH;
            if (hi > PyList_GET_SIZE(records)) hi = PyList_GET_SIZE(records);
            if (prefetch_records(&d, orders, records, i, hi)) {
                st.error = "out of memory";
                ok = 0;
                break;
            }
        }
        PyObject *rec = PyList_GET_ITEM(records, i);
        Py_INCREF(rec);
        if (obj_record(&st, &r, &d, rec)) ok = 0;
        Py_DECREF(rec);
    }
    if (ok && pad_attributes(&st, r.rows)) ok = 0;
    if (ok)
        result = records_dict(&st, &r, BIG_MIN);
    if (!ok && !PyErr_Occurred()) {
        if (st.error && strcmp(st.error, "out of memory") == 0)
            PyErr_NoMemory();
        else
            PyErr_SetString(PyExc_ValueError, st.error ? st.error : "unsupported records");
    }
    Py_XDECREF(d.tz);
    if (orders) free_orders(orders);
    free(orders);
    free(d.frontier[0].p);
    free(d.frontier[1].p);
    free(d.dicts.p);
    free(d.lists.p);
    end_records(&st, &r, spare);
    return result;
}

int records_init(void) {
    if (PyType_Ready(&BUFFER_TYPE)) return -1;
    PyDateTime_IMPORT;
    if (!PyDateTimeAPI) return -1;
    for (int k = 0; k < K_COUNT; k++)
        if (!FIELDS[k] && !(FIELDS[k] = PyUnicode_InternFromString(FIELD_NAMES[k]))) return -1;
    if (!UTCOFFSET && !(UTCOFFSET = PyUnicode_InternFromString("utcoffset"))) return -1;
    if (!ZONEINFO) { /* without it, datetimes in a ZoneInfo are refused */
        PyObject *module = PyImport_ImportModule("zoneinfo");
        PyObject *type = module ? PyObject_GetAttrString(module, "ZoneInfo") : NULL;
        Py_XDECREF(module);
        if (type && PyType_Check(type))
            ZONEINFO = (PyTypeObject *)type;
        else
            Py_XDECREF(type);
        PyErr_Clear();
    }
    return 0;
}
