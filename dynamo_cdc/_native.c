/*
 * dynamo_cdc._native: one pass in C over a block of DynamoDB export lines, or over a GetRecords
 * response.
 *
 * scan_block(block) reads lines of the exact shape AWS writes, {"Item":{...}} with no
 * whitespace, and returns their values column by column as Arrow buffers, so that
 * dynamo_cdc.arrowconvert builds the same statistics and tables as its pyarrow.json path without
 * parsing the block in Python or through Arrow's generic JSON reader:
 *
 *   (rows, item_offsets, item_data, attributes)
 *
 * item_offsets/item_data: the string array of each line's item text (the line less its
 * {"Item": prefix and final brace), byte for byte.
 * attributes: [(name, [(tag, buffers...), ...]), ...] in order of first appearance; per tag
 * that the attribute holds in the block, one Arrow array of `rows` slots, valid where the item's
 * value has that tag:
 *   S, N, B              string: (validity, offsets, data); S unescaped, N and B as written
 *   BOOL, NULL           bool:   (validity, values)
 *   M, L                 string: the value's plain JSON (codec.value_to_plain_json: no type
 *                        tags, keys sorted by code point, strings escaped as orjson escapes
 *                        them, canonical numbers as number literals)
 *   SS, NS, BS           list<string>: (validity, list offsets, member offsets, member data),
 *                        members unescaped, in the order written
 *
 * Anything else raises ValueError with the reason, and the caller takes another path for the
 * block: invalid UTF-8, whitespace, CRLF or blank lines, another line shape, a value with no or
 * several tags, an unknown tag, NULL:false, a duplicate key, a lone surrogate, a number inside a
 * map or list that is not canonical, binary values and sets inside maps and lists, nesting deeper
 * than MAX_DEPTH, more than MAX_ATTRIBUTES top-level attributes in a block.
 *
 * tests/unit/test_arrowconvert.py pins the equality of both paths with the reference path.
 *
 * scan_records(body) reads a GetRecords response ({"Records":[...],"NextShardIterator":...},
 * compact JSON as AWS sends it) and returns its records' change-row columns as Arrow buffers, so
 * that dynamo_cdc.changes builds change rows with no Python object per record (a
 * dynamo_cdc.stream.RecordPage). A dict of:
 *   count, records_at, records_end   the records, and the byte span of the Records array
 *   size_bytes                       the sum of their SizeBytes
 *   first/last_sequence_number       as written; last_creation_time: the last record's seconds
 *   event_id, event_name             (validity, offsets, data, null count), unescaped
 *   sequence_number                  the same, padded with zeros to 40 digits
 *   micros                           int64 a record: round(ApproximateCreationDateTime * 1e6)
 *   ttl_delete                       bitmap: userIdentity is Service / dynamodb.amazonaws.com
 *   _keys, _new_image, _old_image    the images' canonical DynamoDB JSON (changes.image_text:
 *                                    keys sorted by code point at every level, strings escaped
 *                                    as orjson escapes them, numbers canonical, sets sorted),
 *                                    null where absent
 *   key_attributes                   the attributes of Keys, as scan_block gives attributes
 * It refuses (ValueError) what it does not read exactly as orjson and changes.records_to_table
 * do: whitespace, invalid UTF-8 or JSON, a number that needs more than cutting trailing zeros
 * to be canonical, non-canonical base64, NULL:false, duplicate keys in an image or among the
 * fields it reads, a record without eventID, eventName, ApproximateCreationDateTime or a
 * SequenceNumber of digits. tests/unit/test_record_pages.py pins it.
 *
 * scan_record_dicts(records) returns the same columns from a list of record dicts (boto3's, or
 * orjson's reading of a response), walking the Python objects: see "Record dicts" below.
 * tests/unit/test_record_dicts_native.py pins it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <stdint.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* Maps and lists nested deeper than DynamoDB's 32 levels are refused (dynamo_cdc/nesting.py). */
#define MAX_DEPTH 32
#define MAX_ATTRIBUTES 2000

enum { T_NONE, T_S, T_N, T_B, T_BOOL, T_NULL, T_M, T_L, T_SS, T_NS, T_BS, T_COUNT };
static const char *const TAG_NAMES[T_COUNT] = {"",  "S", "N",  "B",  "BOOL", "NULL",
                                               "M", "L", "SS", "NS", "BS"};
/* {"TAG": of each tag, as the typed rendering opens a value (padded to 8 bytes: copied 8 at a
 * time) */
static const char TAG_OPEN[T_COUNT][9] = {"\0\0\0\0\0\0\0", "{\"S\":\0\0\0", "{\"N\":\0\0\0", "{\"B\":\0\0\0",
                                          "{\"BOOL\":", "{\"NULL\":", "{\"M\":\0\0\0", "{\"L\":\0\0\0",
                                          "{\"SS\":\0\0", "{\"NS\":\0\0", "{\"BS\":\0\0"};
static const unsigned char TAG_OPEN_LEN[T_COUNT] = {0, 5, 5, 5, 8, 8, 5, 5, 6, 6, 6};

/* ---------------------------------------------------------------------------------------- */
/* Growable byte buffers */

typedef struct {
    char *p;
    size_t len, cap;
} buf_t;

/* Buffers over this many bytes are not kept for a thread's next call (a call over a big list of
 * record dicts; a response's columns are far smaller): they are handed to Python as they are
 * (column_bytes), and their memory is kept for the next buffer that grows that big (big_blocks). */
#define SPARE_MAX ((size_t)16 << 20)

/* Memory of big buffers freed (over SPARE_MAX), for the next buffers that grow past BIG_MIN:
 * memory fresh from the OS costs a page fault each 4 KB page on its first write (about 2 us a
 * page on a VM: a seventh of the time of a big scan_record_dicts call, measured). The biggest
 * BIG_BLOCKS blocks, at most BIG_KEEP bytes, are kept in the process, for any thread
 * (big_lock). */
#define BIG_MIN ((size_t)1 << 20)
#define BIG_BLOCKS 8
#define BIG_KEEP ((size_t)512 << 20)
static struct {
    char *p;
    size_t cap;
} big_blocks[BIG_BLOCKS];
static pthread_mutex_t big_lock = PTHREAD_MUTEX_INITIALIZER;

/* Frees the memory of a buffer of capacity cap, keeping it for later if it is big. */
static void release(char *p, size_t cap) {
    if (p && cap >= BIG_MIN) {
        (void)pthread_mutex_lock(&big_lock);
        size_t kept = 0;
        int slot = 0; /* an empty slot, else the smallest block's */
        for (int i = 0; i < BIG_BLOCKS; i++) {
            kept += big_blocks[i].cap;
            if (big_blocks[i].cap < big_blocks[slot].cap) slot = i;
        }
        if (big_blocks[slot].cap < cap && kept - big_blocks[slot].cap + cap <= BIG_KEEP) {
            char *out = big_blocks[slot].p;
            big_blocks[slot].p = p;
            big_blocks[slot].cap = cap;
            p = out;
        }
        (void)pthread_mutex_unlock(&big_lock);
    }
    free(p);
}

/* The smallest kept block of `need` to `most` bytes, or NULL. */
static char *take_block(size_t need, size_t most, size_t *cap) {
    char *p = NULL;
    (void)pthread_mutex_lock(&big_lock);
    int best = -1;
    for (int i = 0; i < BIG_BLOCKS; i++)
        if (big_blocks[i].p && big_blocks[i].cap >= need && big_blocks[i].cap <= most &&
            (best < 0 || big_blocks[i].cap < big_blocks[best].cap))
            best = i;
    if (best >= 0) {
        p = big_blocks[best].p;
        *cap = big_blocks[best].cap;
        big_blocks[best].p = NULL;
        big_blocks[best].cap = 0;
    }
    (void)pthread_mutex_unlock(&big_lock);
    return p;
}

static int buf_realloc(buf_t *b, size_t need);

static inline int buf_grow(buf_t *b, size_t extra) {
    size_t need = b->len + extra;
    return need <= b->cap ? 0 : buf_realloc(b, need);
}

static int buf_realloc(buf_t *b, size_t need) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) cap *= 2;
    if (cap >= BIG_MIN) { /* a kept block's pages are in memory already */
        /* (a buffer that may stay a thread's spare takes no block it would not be kept with) */
        size_t kept_cap;
        char *kept = take_block(cap, cap > SPARE_MAX ? (size_t)-1 : SPARE_MAX, &kept_cap);
        if (kept) {
            if (b->len) memcpy(kept, b->p, b->len);
            release(b->p, b->cap);
            b->p = kept;
            b->cap = kept_cap;
            return 0;
        }
    }
    char *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static inline int buf_put(buf_t *b, const void *src, size_t n) {
    if (!n) return 0;
    if (buf_grow(b, n)) return -1;
    memcpy(b->p + b->len, src, n);
    b->len += n;
    return 0;
}

static inline int buf_byte(buf_t *b, char c) {
    if (b->len == b->cap && buf_grow(b, 1)) return -1;
    b->p[b->len++] = c;
    return 0;
}

static inline int buf_i32(buf_t *b, size_t v) {
    if (v > INT32_MAX) return -1;
    int32_t x = (int32_t)v;
    return buf_put(b, &x, sizeof x);
}

static void buf_free(buf_t *b) {
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Parse state */

/* One key: value of a map being rendered: offsets into its level's scratch buffer of the
 * unescaped key and of the value's rendered plain JSON. */
typedef struct {
    size_t key_at, key_len, value_at, value_len;
    /* the dict front end (scan_record_dicts): the value, rendered once the keys are sorted, and
     * the entry's position in its dict */
    PyObject *value;
    uint32_t pos;
    int escaped; /* the key had an escape: re-escape it when written */
} entry_t;

struct orders;

typedef struct {
    buf_t scratch;    /* keys and rendered values of the maps at this depth */
    entry_t *entries; /* entries of the map being rendered at this depth */
    size_t n_entries, cap_entries;
} level_t;

/* One Arrow array under construction: one (attribute, tag) pair. */
typedef struct {
    int tag;
    size_t rows;         /* slots filled */
    buf_t valid;         /* one byte a slot, packed into a bitmap at the end */
    buf_t values;        /* BOOL/NULL: one byte a slot */
    buf_t offsets;       /* string: int32 offsets; list: int32 list offsets */
    buf_t data;          /* string data; list: member data */
    buf_t member_offsets; /* list: int32 member offsets */
    size_t members;
} column_t;

typedef struct {
    char *name;
    size_t name_len;
    size_t last_row; /* row of the last value + 1, 0 if none: duplicate keys */
    column_t *columns[T_COUNT];
} attribute_t;

typedef struct {
    const char *error;
    attribute_t **attributes;
    size_t n_attributes, cap_attributes;
    int32_t *slots; /* open-addressing hash: attribute index + 1, 0 = empty */
    size_t n_slots;
    buf_t key;      /* the key being decoded */
    int typed;      /* render DynamoDB JSON ({"TAG":value}) rather than plain JSON */
    struct orders *orders; /* scan_record_dicts': the key orders of maps met */
    level_t levels[MAX_DEPTH + 1];
} state_t;

#define FAIL(st, msg) ((st)->error = (msg), (const char *)NULL)
#define NOMEM(st) FAIL(st, "out of memory")

/* ---------------------------------------------------------------------------------------- */
/* UTF-8 */

static int valid_utf8(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        if (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (!(w & 0x8080808080808080ULL)) {
                i += 8;
                continue;
            }
        }
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
        } else if (c >= 0xC2 && c <= 0xDF) {
            if (i + 1 >= n || (s[i + 1] & 0xC0) != 0x80) return 0;
            i += 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            if (i + 2 >= n || (s[i + 1] & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80) return 0;
            if (c == 0xE0 && s[i + 1] < 0xA0) return 0; /* overlong */
            if (c == 0xED && s[i + 1] > 0x9F) return 0; /* surrogate */
            i += 3;
        } else if (c >= 0xF0 && c <= 0xF4) {
            if (i + 3 >= n || (s[i + 1] & 0xC0) != 0x80 || (s[i + 2] & 0xC0) != 0x80 ||
                (s[i + 3] & 0xC0) != 0x80)
                return 0;
            if (c == 0xF0 && s[i + 1] < 0x90) return 0; /* overlong */
            if (c == 0xF4 && s[i + 1] > 0x8F) return 0; /* above U+10FFFF */
            i += 4;
        } else {
            return 0;
        }
    }
    return 1;
}

static int put_utf8(buf_t *b, uint32_t cp) {
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        u[0] = (char)(0xF0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    return buf_put(b, u, n);
}

/* ---------------------------------------------------------------------------------------- */
/* JSON strings */

/* Scans the string starting at p (on its opening quote). Sets *raw and *raw_len to the bytes between
 * the quotes and *escaped if any backslash is among them; returns the position after the closing
 * quote, or NULL (st->error set). */
static const char *scan_string(state_t *st, const char *p, const char *end, const char **raw,
                               size_t *raw_len, int *escaped) {
    if (p >= end || *p != '"') return FAIL(st, "expected a string");
    const char *s = ++p;
    int esc = 0;
    for (;;) {
        /* find the next quote, backslash or control character */
        while (p < end) {
            unsigned char c = (unsigned char)*p;
            if (c == '"' || c == '\\' || c < 0x20) break;
            p++;
        }
        if (p >= end) return FAIL(st, "unterminated string");
        unsigned char c = (unsigned char)*p;
        if (c == '"') break;
        if (c < 0x20) return FAIL(st, "control character in a string");
        esc = 1; /* backslash: skip the escaped character (a quote does not end the string) */
        p += 2;
    }
    *raw = s;
    *raw_len = (size_t)(p - s);
    *escaped = esc;
    return p + 1;
}

static int hex4(const char *p, uint32_t *out) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (uint32_t)(c - 'A' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
}

/* Appends the unescaped text of a JSON string's raw bytes. Returns 0, or -1 (st->error set). */
static int unescape(state_t *st, const char *s, size_t n, buf_t *out) {
    const char *end = s + n;
    while (s < end) {
        const char *b = memchr(s, '\\', (size_t)(end - s));
        if (!b) b = end;
        if (b > s && buf_put(out, s, (size_t)(b - s))) goto nomem;
        if (b == end) break;
        s = b + 1;
        if (s >= end) goto bad;
        char c = *s++;
        char plain;
        switch (c) {
        case '"': plain = '"'; break;
        case '\\': plain = '\\'; break;
        case '/': plain = '/'; break;
        case 'b': plain = '\b'; break;
        case 'f': plain = '\f'; break;
        case 'n': plain = '\n'; break;
        case 'r': plain = '\r'; break;
        case 't': plain = '\t'; break;
        case 'u': {
            uint32_t cp;
            if (end - s < 4 || hex4(s, &cp)) goto bad;
            s += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                uint32_t low;
                if (end - s < 6 || s[0] != '\\' || s[1] != 'u' || hex4(s + 2, &low) ||
                    low < 0xDC00 || low > 0xDFFF) {
                    st->error = "a lone surrogate in a string";
                    return -1;
                }
                s += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                st->error = "a lone surrogate in a string";
                return -1;
            }
            if (put_utf8(out, cp)) goto nomem;
            continue;
        }
        default: goto bad;
        }
        if (buf_byte(out, plain)) goto nomem;
    }
    return 0;
bad:
    st->error = "an invalid escape in a string";
    return -1;
nomem:
    st->error = "out of memory";
    return -1;
}

static const char HEX[] = "0123456789abcdef";

/* Whether none of the n bytes at s needs escaping in a JSON string (a quote, a backslash, a
 * control character), eight bytes at a time. */
static int plain_json_text(const char *s, size_t n) {
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w, q, b;
        memcpy(&w, s + i, 8);
        q = w ^ (ones * '"');
        b = w ^ (ones * '\\');
        /* exact for "some byte": below 0x20 in w, zero in q (a quote) or in b (a backslash) */
        if ((((w - ones * 0x20) & ~w) | ((q - ones) & ~q) | ((b - ones) & ~b)) & highs) return 0;
    }
    for (; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == '"' || c == '\\') return 0;
    }
    return 1;
}

/* Appends "text" as orjson writes it: quotes, backslashes and control characters escaped. */
static int put_json_string(buf_t *out, const char *s, size_t n) {
    if (buf_grow(out, n + 2)) return -1;
    if (plain_json_text(s, n)) {
        char *w = out->p + out->len;
        *w++ = '"';
        memcpy(w, s, n);
        w[n] = '"';
        out->len += n + 2;
        return 0;
    }
    out->p[out->len++] = '"';
    const char *end = s + n;
    while (s < end) {
        const char *run = s;
        while (s < end) {
            unsigned char c = (unsigned char)*s;
            if (c == '"' || c == '\\' || c < 0x20) break;
            s++;
        }
        if (s > run && buf_put(out, run, (size_t)(s - run))) return -1;
        if (s >= end) break;
        unsigned char c = (unsigned char)*s++;
        char e[6] = {'\\', 0, 0, 0, 0, 0};
        size_t len = 2;
        switch (c) {
        case '"': e[1] = '"'; break;
        case '\\': e[1] = '\\'; break;
        case '\b': e[1] = 'b'; break;
        case '\t': e[1] = 't'; break;
        case '\n': e[1] = 'n'; break;
        case '\f': e[1] = 'f'; break;
        case '\r': e[1] = 'r'; break;
        default:
            e[1] = 'u';
            e[2] = '0';
            e[3] = '0';
            e[4] = HEX[c >> 4];
            e[5] = HEX[c & 15];
            len = 6;
        }
        if (buf_put(out, e, len)) return -1;
    }
    return buf_byte(out, '"');
}

/* A JSON string as plain JSON (unescaped, then escaped as orjson does). A string with no
 * backslash is already in that form: a raw control character was refused by scan_string. */
static int put_plain_string(state_t *st, buf_t *out, const char *raw, size_t n, int escaped) {
    if (!escaped) {
        if (buf_grow(out, n + 2)) goto nomem;
        out->p[out->len++] = '"';
        memcpy(out->p + out->len, raw, n);
        out->len += n;
        out->p[out->len++] = '"';
        return 0;
    }
    st->key.len = 0;
    if (unescape(st, raw, n, &st->key)) return -1;
    if (put_json_string(out, st->key.p, st->key.len)) goto nomem;
    return 0;
nomem:
    st->error = "out of memory";
    return -1;
}

/* codec._CANONICAL_PLAIN_RE: 0|-?(?:[1-9]\d{0,38}(?:\.\d*[1-9])?|0\.0{0,6}[1-9](?:\d*[1-9])?) */
static int canonical_number(const char *s, size_t n) {
    size_t i = 0;
    if (n == 1 && s[0] == '0') return 1;
    if (i < n && s[i] == '-') i++;
    if (i >= n) return 0;
    if (s[i] >= '1' && s[i] <= '9') {
        size_t start = i;
        while (i < n && s[i] >= '0' && s[i] <= '9') i++;
        if (i - start > 39) return 0;
        if (i == n) return 1;
        if (s[i] != '.') return 0;
        i++;
        if (i >= n) return 0;
        for (size_t j = i; j < n; j++)
            if (s[j] < '0' || s[j] > '9') return 0;
        return s[n - 1] != '0';
    }
    if (s[i] != '0' || i + 1 >= n || s[i + 1] != '.') return 0;
    i += 2;
    size_t zeros = 0;
    while (i < n && s[i] == '0') {
        zeros++;
        i++;
    }
    if (zeros > 6 || i >= n) return 0;
    for (size_t j = i; j < n; j++)
        if (s[j] < '0' || s[j] > '9') return 0;
    return s[n - 1] != '0';
}

/* A number text with trailing fraction zeros ("12.50", "2.0", "0.0") is canonical once they are
 * cut, as codec.canonical_number_text cuts them: returns the length of that prefix of s, or 0 if
 * s is another shape (leading zeros, exponents, ...), "-0" once cut, or has more significant
 * digits than DynamoDB keeps (the reference raises). */
static size_t significant_digits(const char *s, size_t len);

static size_t trimmed_number(const char *s, size_t n) {
    const char *point = memchr(s, '.', n);
    if (!point || s[n - 1] != '0') return 0;
    size_t len = n;
    while (s + len - 1 > point && s[len - 1] == '0') len--;
    if (s + len - 1 == point) len--; /* no fraction left: drop the point */
    if (len == 2 && s[0] == '-' && s[1] == '0') return 0;
    if (!canonical_number(s, len)) return 0;
    return significant_digits(s, len) <= 38 ? len : 0;
}

/* Significant digits of a plain number text, as codec._significant_digits counts them. */
static size_t significant_digits(const char *s, size_t len) {
    size_t first = 0, last = len, significant = 0;
    while (first < len && (s[first] == '-' || s[first] == '0' || s[first] == '.')) first++;
    while (last > first && (s[last - 1] == '0' || s[last - 1] == '.')) last--;
    for (size_t i = first; i < last; i++) significant += s[i] != '.';
    return significant;
}

/* The length of the canonical text of the number text s (codec.canonical_number_text) when that
 * is s or a prefix of it (trailing fraction zeros cut), else 0: the caller leaves the number to
 * another path. */
static size_t number_len(const char *s, size_t n) {
    return canonical_number(s, n) && significant_digits(s, n) <= 38 ? n : trimmed_number(s, n);
}

/* Orders two canonical plain number texts by value. */
static int number_cmp(const char *a, size_t na, const char *b, size_t nb) {
    int sa = a[0] == '-' ? -1 : (na == 1 && a[0] == '0') ? 0 : 1;
    int sb = b[0] == '-' ? -1 : (nb == 1 && b[0] == '0') ? 0 : 1;
    if (sa != sb) return sa < sb ? -1 : 1;
    if (sa == 0) return 0;
    if (sa < 0) {
        a++, na--, b++, nb--;
    }
    const char *pa = memchr(a, '.', na), *pb = memchr(b, '.', nb);
    size_t ia = pa ? (size_t)(pa - a) : na, ib = pb ? (size_t)(pb - b) : nb;
    size_t la = (ia == 1 && a[0] == '0') ? 0 : ia, lb = (ib == 1 && b[0] == '0') ? 0 : ib;
    int c = 0;
    if (la != lb) {
        c = la < lb ? -1 : 1;
    } else {
        c = memcmp(a, b, ia < ib ? ia : ib); /* same number of integer digits */
        if (!c) { /* fractions: without trailing zeros, a prefix is the smaller */
            const char *fa = pa ? pa + 1 : a + na, *fb = pb ? pb + 1 : b + nb;
            size_t ma = (size_t)(a + na - fa), mb = (size_t)(b + nb - fb);
            c = memcmp(fa, fb, ma < mb ? ma : mb);
            if (!c) c = ma < mb ? -1 : ma > mb;
        }
    }
    return sa < 0 ? -c : c;
}

static const char B64_ALPHABET[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static signed char B64[256];

static void init_b64(void) {
    memset(B64, -1, sizeof B64);
    for (int i = 0; i < 64; i++) B64[(unsigned char)B64_ALPHABET[i]] = (signed char)i;
}

/* Appends the bytes of canonical padded base64 text (what base64.b64encode writes); -1 if the
 * text is not that (the reference may still take it: the caller leaves it to another path). */
static int decode_b64(const char *s, size_t n, buf_t *out) {
    if (n % 4) return -1;
    for (size_t i = 0; i < n; i += 4) {
        int last = i + 4 == n;
        int v[4];
        int pads = 0;
        for (int j = 0; j < 4; j++) {
            unsigned char ch = (unsigned char)s[i + j];
            if (ch == '=' && last && j >= 2) {
                v[j] = 0;
                pads++;
            } else if (pads || B64[ch] < 0) {
                return -1;
            } else {
                v[j] = B64[ch];
            }
        }
        unsigned char bytes[3] = {(unsigned char)(v[0] << 2 | v[1] >> 4),
                                  (unsigned char)(v[1] << 4 | v[2] >> 2),
                                  (unsigned char)(v[2] << 6 | v[3])};
        if (pads == 2 && (v[1] & 15)) return -1; /* bits past the data: not canonical */
        if (pads == 1 && (v[2] & 3)) return -1;
        if (buf_put(out, bytes, (size_t)(3 - pads))) return -1;
    }
    return 0;
}

/* Appends "base64 of the n bytes at s" (padded, as base64.b64encode writes it). */
static int put_b64(buf_t *out, const unsigned char *s, size_t n) {
    if (buf_grow(out, (n + 2) / 3 * 4 + 2)) return -1;
    char *o = out->p + out->len;
    *o++ = '"';
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        *o++ = B64_ALPHABET[v >> 18];
        *o++ = B64_ALPHABET[(v >> 12) & 63];
        *o++ = B64_ALPHABET[(v >> 6) & 63];
        *o++ = B64_ALPHABET[v & 63];
    }
    if (n - i) {
        uint32_t v = (uint32_t)s[i] << 16 | (n - i == 2 ? (uint32_t)s[i + 1] << 8 : 0);
        *o++ = B64_ALPHABET[v >> 18];
        *o++ = B64_ALPHABET[(v >> 12) & 63];
        *o++ = n - i == 2 ? B64_ALPHABET[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    *o++ = '"';
    out->len = (size_t)(o - out->p);
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Values */

/* Appends "text" of a number as changes.image_text writes it: its canonical text when
 * number_len finds it; else -1 (st->error set): the number is left to another path. */
static int put_typed_number(state_t *st, const char *raw, size_t n, buf_t *out) {
    n = number_len(raw, n);
    if (!n) {
        st->error = "a number that is not canonical";
        return -1;
    }
    if (buf_byte(out, '"') || buf_put(out, raw, n) || buf_byte(out, '"')) {
        st->error = "out of memory";
        return -1;
    }
    return 0;
}

/* Appends "text" of a B value given as base64 text: canonical base64 stays as it is (checked by
 * decoding it into st->key); other text -1 (st->error set). */
static int put_b64_text(state_t *st, const char *raw, size_t n, buf_t *out) {
    st->key.len = 0;
    if (decode_b64(raw, n, &st->key)) {
        st->error = "a binary value that is not canonical base64";
        return -1;
    }
    if (buf_byte(out, '"') || buf_put(out, raw, n) || buf_byte(out, '"')) {
        st->error = "out of memory";
        return -1;
    }
    return 0;
}

/* The tag named by the n bytes at p (T_NONE: no tag). */
static inline int tag_named(const char *p, size_t n) {
    switch (n) {
    case 1:
        return p[0] == 'S' ? T_S : p[0] == 'N' ? T_N : p[0] == 'B' ? T_B : p[0] == 'M' ? T_M : p[0] == 'L' ? T_L : T_NONE;
    case 2:
        if (p[1] == 'S') return p[0] == 'S' ? T_SS : p[0] == 'N' ? T_NS : p[0] == 'B' ? T_BS : T_NONE;
        return T_NONE;
    case 4:
        return memcmp(p, "BOOL", 4) == 0 ? T_BOOL : memcmp(p, "NULL", 4) == 0 ? T_NULL : T_NONE;
    }
    return T_NONE;
}

/* Reads {"TAG": at p; returns the position of the payload and sets *tag. */
static const char *read_tag(state_t *st, const char *p, const char *end, int *tag) {
    if (end - p < 5 || p[0] != '{' || p[1] != '"') return FAIL(st, "a value that is not {\"TAG\":...}");
    p += 2;
    const char *q = p;
    while (q < end && *q != '"') q++;
    size_t n = (size_t)(q - p);
    if (q + 1 >= end || q[1] != ':') return FAIL(st, "a value that is not {\"TAG\":...}");
    int t = tag_named(p, n);
    if (t == T_NONE) return FAIL(st, "an unknown type tag");
    *tag = t;
    return q + 2;
}

static const char *render_plain(state_t *st, const char *p, const char *end, buf_t *out, int depth);

static int entry_cmp(const void *a, const void *b, const char *base) {
    const entry_t *x = a, *y = b;
    size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    int c = memcmp(base + x->key_at, base + y->key_at, n);
    if (c) return c;
    return x->key_len < y->key_len ? -1 : x->key_len > y->key_len;
}

/* Orders map keys and SS members by code point (their UTF-8 bytes), BS members by their bytes,
 * NS members by value. */
static int member_cmp(const entry_t *x, const entry_t *y, const char *base, int tag) {
    if (tag == T_NS)
        return number_cmp(base + x->key_at, x->key_len, base + y->key_at, y->key_len);
    return entry_cmp(x, y, base);
}

/* Insertion sort (maps and sets are small); stable, as Python's sorted is. */
static void sort_entries(entry_t *ents, size_t k, const char *base, int tag) {
    for (size_t i = 1; i < k; i++) {
        entry_t cur = ents[i];
        size_t j = i;
        while (j > 0 && member_cmp(&ents[j - 1], &cur, base, tag) > 0) {
            ents[j] = ents[j - 1];
            j--;
        }
        ents[j] = cur;
    }
}

static entry_t *push_entry(level_t *lv) {
    if (lv->n_entries == lv->cap_entries) {
        size_t cap = lv->cap_entries ? lv->cap_entries * 2 : 16;
        entry_t *e = realloc(lv->entries, cap * sizeof *e);
        if (!e) return NULL;
        lv->entries = e;
        lv->cap_entries = cap;
    }
    return &lv->entries[lv->n_entries++];
}

/* Appends the key of a map entry as `"key":` (`,"key":` after the first): escaped as orjson
 * escapes it if need be. */
static int put_key(buf_t *out, const char *base, const entry_t *e, int comma) {
    if (comma && buf_byte(out, ',')) return -1;
    if (e->escaped) return put_json_string(out, base + e->key_at, e->key_len) || buf_byte(out, ':');
    /* a key without escapes is its own JSON text (scan_string refused control characters) */
    if (buf_grow(out, e->key_len + 3)) return -1;
    char *w = out->p + out->len;
    *w++ = '"';
    memcpy(w, base + e->key_at, e->key_len);
    w += e->key_len;
    *w++ = '"';
    *w++ = ':';
    out->len = (size_t)(w - out->p);
    return 0;
}

/* Writes the map whose entries (first.. of level lv, keys and rendered values in its scratch
 * from scratch_start on) were just read: keys sorted by code point, as one JSON object; then
 * frees them from the level. 0, or -1 (st->error set). */
static int finish_map(state_t *st, level_t *lv, size_t first, size_t scratch_start, buf_t *out) {
    entry_t *ents = lv->entries + first;
    size_t k = lv->n_entries - first;
    const char *base = lv->scratch.p;
    sort_entries(ents, k, base, T_M);
    for (size_t i = 1; i < k; i++)
        if (entry_cmp(&ents[i - 1], &ents[i], base) == 0) {
            st->error = "a duplicate key in a map";
            return -1;
        }
    if (buf_byte(out, '{')) goto nomem;
    for (size_t i = 0; i < k; i++) {
        const entry_t *e = &ents[i];
        if (e->escaped) {
            if (put_key(out, base, e, i > 0) || buf_put(out, base + e->value_at, e->value_len))
                goto nomem;
            continue;
        }
        /* put_key's unescaped key, and the value, in one go (most keys) */
        if (buf_grow(out, e->key_len + e->value_len + 4)) goto nomem;
        char *w = out->p + out->len;
        if (i) *w++ = ',';
        *w++ = '"';
        memcpy(w, base + e->key_at, e->key_len);
        w += e->key_len;
        *w++ = '"';
        *w++ = ':';
        memcpy(w, base + e->value_at, e->value_len);
        out->len = (size_t)(w + e->value_len - out->p);
    }
    if (buf_byte(out, '}')) goto nomem;
    lv->scratch.len = scratch_start;
    lv->n_entries = first;
    return 0;
nomem:
    st->error = "out of memory";
    return -1;
}

/* Renders the payload of an M ({...} of key: value) into out as a plain JSON object. */
static const char *render_map(state_t *st, const char *p, const char *end, buf_t *out, int depth) {
    if (depth >= MAX_DEPTH) return FAIL(st, "nesting deeper than the native path takes");
    if (p >= end || *p != '{') return FAIL(st, "an M value that is not an object");
    p++;
    level_t *lv = &st->levels[depth];
    size_t scratch_start = lv->scratch.len, first = lv->n_entries;
    if (p < end && *p == '}') {
        if (buf_put(out, "{}", 2)) return NOMEM(st);
        return p + 1;
    }
    for (;;) {
        const char *raw;
        size_t raw_len;
        int escaped;
        p = scan_string(st, p, end, &raw, &raw_len, &escaped);
        if (!p) return NULL;
        if (p >= end || *p != ':') return FAIL(st, "expected ':' after a key");
        p++;
        entry_t *e = push_entry(lv);
        if (!e) return NOMEM(st);
        e->key_at = lv->scratch.len;
        e->escaped = escaped;
        if (escaped) {
            if (unescape(st, raw, raw_len, &lv->scratch)) return NULL;
        } else if (buf_put(&lv->scratch, raw, raw_len)) {
            return NOMEM(st);
        }
        e->key_len = lv->scratch.len - e->key_at;
        e->value_at = lv->scratch.len;
        p = render_plain(st, p, end, &lv->scratch, depth + 1);
        if (!p) return NULL;
        e->value_len = lv->scratch.len - e->value_at;
        if (p >= end) return FAIL(st, "unterminated map");
        if (*p == '}') {
            p++;
            break;
        }
        if (*p != ',') return FAIL(st, "expected ',' or '}' in a map");
        p++;
    }
    if (finish_map(st, lv, first, scratch_start, out)) return NULL;
    return p;
}

static const char *render_list(state_t *st, const char *p, const char *end, buf_t *out, int depth) {
    if (depth >= MAX_DEPTH) return FAIL(st, "nesting deeper than the native path takes");
    if (p >= end || *p != '[') return FAIL(st, "an L value that is not an array");
    p++;
    if (buf_byte(out, '[')) return NOMEM(st);
    if (p < end && *p == ']') {
        if (buf_byte(out, ']')) return NOMEM(st);
        return p + 1;
    }
    for (;;) {
        p = render_plain(st, p, end, out, depth + 1);
        if (!p) return NULL;
        if (p >= end) return FAIL(st, "unterminated list");
        if (*p == ']') {
            p++;
            break;
        }
        if (*p != ',') return FAIL(st, "expected ',' or ']' in a list");
        p++;
        if (buf_byte(out, ',')) return NOMEM(st);
    }
    if (buf_byte(out, ']')) return NOMEM(st);
    return p;
}

/* Writes the set whose members (first.. of level lv: sort key, then rendered text, in its scratch
 * from scratch_start on) were just read: sorted (SS by code point, NS by value, BS by their
 * bytes), as one JSON array; then frees them from the level. 0, or -1 (st->error set). */
static int finish_set(state_t *st, int tag, level_t *lv, size_t first, size_t scratch_start,
                      buf_t *out) {
    entry_t *ents = lv->entries + first;
    size_t k = lv->n_entries - first;
    const char *base = lv->scratch.p;
    sort_entries(ents, k, base, tag);
    int quote = tag == T_NS && st->typed; /* DynamoDB JSON writes numbers as strings */
    if (buf_byte(out, '[')) goto nomem;
    for (size_t i = 0; i < k; i++) {
        if (i && buf_byte(out, ',')) goto nomem;
        if ((quote && buf_byte(out, '"')) ||
            buf_put(out, base + ents[i].value_at, ents[i].value_len) ||
            (quote && buf_byte(out, '"')))
            goto nomem;
    }
    if (buf_byte(out, ']')) goto nomem;
    lv->scratch.len = scratch_start;
    lv->n_entries = first;
    return 0;
nomem:
    st->error = "out of memory";
    return -1;
}

/* Adds a member of a set being read to level lv: its sort key and its text (see finish_set).
 * s/n: the member's text (SS unescaped, NS as written, BS base64), or with `bytes` a BS
 * member's bytes. 0, or -1 (st->error set). */
static int add_member(state_t *st, int tag, level_t *lv, const char *s, size_t n, int bytes) {
    entry_t *e = push_entry(lv);
    if (!e) goto nomem;
    buf_t *sc = &lv->scratch;
    e->key_at = sc->len;
    if (tag == T_SS) {
        if (buf_put(sc, s, n)) goto nomem;
        e->key_len = n;
        e->value_at = sc->len;
        if (put_json_string(sc, s, n)) goto nomem;
    } else if (tag == T_NS) {
        size_t len = number_len(s, n);
        if (!len) {
            st->error = "a number in a set that is not canonical";
            return -1;
        }
        if (buf_put(sc, s, len)) goto nomem;
        e->key_len = len;
        e->value_at = e->key_at;
    } else if (bytes) { /* BS: sorted by the bytes, written as their base64 */
        if (buf_put(sc, s, n)) goto nomem;
        e->key_len = n;
        e->value_at = sc->len;
        if (put_b64(sc, (const unsigned char *)s, n)) goto nomem;
    } else { /* BS given as text: sorted by the bytes, written as the (canonical) text */
        if (decode_b64(s, n, sc)) {
            st->error = "a binary value that is not canonical base64";
            return -1;
        }
        e->key_len = sc->len - e->key_at;
        e->value_at = sc->len;
        if (buf_byte(sc, '"') || buf_put(sc, s, n) || buf_byte(sc, '"')) goto nomem;
    }
    e->value_len = sc->len - e->value_at;
    return 0;
nomem:
    st->error = "out of memory";
    return -1;
}

/* Renders the payload of a set nested in a map or list as codec renders it: a JSON array of the
 * members sorted (SS by code point, NS by value, BS by their bytes), numbers canonical. */
static const char *render_set(state_t *st, int tag, const char *p, const char *end, buf_t *out,
                              int depth) {
    if (depth >= MAX_DEPTH) return FAIL(st, "nesting deeper than the native path takes");
    if (p >= end || *p != '[') return FAIL(st, "a set that is not an array");
    p++;
    level_t *lv = &st->levels[depth];
    size_t scratch_start = lv->scratch.len, first = lv->n_entries;
    if (p < end && *p == ']') {
        if (buf_put(out, "[]", 2)) return NOMEM(st);
        return p + 1;
    }
    for (;;) {
        const char *raw;
        size_t n;
        int escaped;
        p = scan_string(st, p, end, &raw, &n, &escaped);
        if (!p) return NULL;
        if (escaped) {
            if (tag == T_NS) return FAIL(st, "an escaped number in a set");
            if (tag == T_BS) return FAIL(st, "a binary value that is not canonical base64");
            st->key.len = 0;
            if (unescape(st, raw, n, &st->key)) return NULL;
            raw = st->key.p;
            n = st->key.len;
        }
        if (add_member(st, tag, lv, raw, n, 0)) return NULL;
        if (p >= end) return FAIL(st, "unterminated set");
        if (*p == ']') {
            p++;
            break;
        }
        if (*p != ',') return FAIL(st, "expected ',' or ']' in a set");
        p++;
    }
    if (finish_set(st, tag, lv, first, scratch_start, out)) return NULL;
    return p;
}

static const char *literal(state_t *st, const char *p, const char *end, int *value) {
    if (end - p >= 4 && memcmp(p, "true", 4) == 0) {
        *value = 1;
        return p + 4;
    }
    if (end - p >= 5 && memcmp(p, "false", 5) == 0) {
        *value = 0;
        return p + 5;
    }
    return FAIL(st, "BOOL or NULL value that is not true or false");
}

static const char *close_value(state_t *st, const char *p, const char *end) {
    if (p >= end || *p != '}') return FAIL(st, "a value with several type tags or trailing text");
    return p + 1;
}

/* Renders one {"TAG":payload} value nested in a map or list as plain JSON, or with st->typed
 * as canonical DynamoDB JSON (changes.image_text: the tag kept, numbers as strings). */
static const char *render_plain(state_t *st, const char *p, const char *end, buf_t *out, int depth) {
    int tag;
    p = read_tag(st, p, end, &tag);
    if (!p) return NULL;
    if (st->typed && buf_put(out, TAG_OPEN[tag], TAG_OPEN_LEN[tag])) return NOMEM(st);
    switch (tag) {
    case T_S: {
        const char *raw;
        size_t n;
        int escaped;
        p = scan_string(st, p, end, &raw, &n, &escaped);
        if (!p) return NULL;
        if (put_plain_string(st, out, raw, n, escaped)) return NULL;
        break;
    }
    case T_N: {
        const char *raw;
        size_t n;
        int escaped;
        p = scan_string(st, p, end, &raw, &n, &escaped);
        if (!p) return NULL;
        if (escaped) return FAIL(st, "an escaped number in a map or list");
        if (st->typed) { /* as image_text: canonical text as it is, else codec's */
            if (put_typed_number(st, raw, n, out)) return NULL;
            break;
        }
        if (!canonical_number(raw, n)) n = trimmed_number(raw, n);
        if (!n) return FAIL(st, "a number in a map or list that is not canonical");
        if (buf_put(out, raw, n)) return NOMEM(st);
        break;
    }
    case T_BOOL:
    case T_NULL: {
        int v;
        p = literal(st, p, end, &v);
        if (!p) return NULL;
        if (tag == T_NULL) {
            if (!v) return FAIL(st, "NULL: false");
            if (st->typed ? buf_put(out, "true", 4) : buf_put(out, "null", 4)) return NOMEM(st);
        } else if (buf_put(out, v ? "true" : "false", v ? 4 : 5)) {
            return NOMEM(st);
        }
        break;
    }
    case T_M:
        p = render_map(st, p, end, out, depth);
        if (!p) return NULL;
        break;
    case T_L:
        p = render_list(st, p, end, out, depth);
        if (!p) return NULL;
        break;
    case T_B: {
        const char *raw;
        size_t n;
        int escaped;
        p = scan_string(st, p, end, &raw, &n, &escaped);
        if (!p) return NULL;
        if (escaped) return FAIL(st, "a binary value that is not canonical base64");
        if (put_b64_text(st, raw, n, out)) return NULL;
        break;
    }
    default:
        p = render_set(st, tag, p, end, out, depth);
        if (!p) return NULL;
    }
    if (st->typed && buf_byte(out, '}')) return NOMEM(st);
    return close_value(st, p, end);
}

/* ---------------------------------------------------------------------------------------- */
/* Columns */

static column_t *new_column(int tag) {
    column_t *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->tag = tag;
    int32_t zero = 0;
    if (tag != T_BOOL && tag != T_NULL && buf_put(&c->offsets, &zero, 4)) {
        free(c);
        return NULL;
    }
    if ((tag == T_SS || tag == T_NS || tag == T_BS) && buf_put(&c->member_offsets, &zero, 4)) {
        buf_free(&c->offsets);
        free(c);
        return NULL;
    }
    return c;
}

static void free_column(column_t *c) {
    if (!c) return;
    buf_free(&c->valid);
    buf_free(&c->values);
    buf_free(&c->offsets);
    buf_free(&c->data);
    buf_free(&c->member_offsets);
    free(c);
}

static int is_list(int tag) { return tag == T_SS || tag == T_NS || tag == T_BS; }
static int is_bool(int tag) { return tag == T_BOOL || tag == T_NULL; }

/* Null slots up to `row`. */
static int pad(column_t *c, size_t row) {
    while (c->rows < row) {
        if (buf_byte(&c->valid, 0)) return -1;
        if (is_bool(c->tag)) {
            if (buf_byte(&c->values, 0)) return -1;
        } else if (buf_i32(&c->offsets, is_list(c->tag) ? c->members : c->data.len)) {
            return -1;
        }
        c->rows++;
    }
    return 0;
}

static attribute_t *find_attribute(state_t *st, const char *name, size_t len) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)name[i]) * 1099511628211ULL;
    size_t mask = st->n_slots - 1;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        int32_t slot = st->slots[i];
        if (!slot) {
            if (st->n_attributes >= MAX_ATTRIBUTES) {
                st->error = "more top-level attributes in a block than the native path takes";
                return NULL;
            }
            attribute_t *a = calloc(1, sizeof *a);
            if (!a || !(a->name = malloc(len ? len : 1))) {
                free(a);
                st->error = "out of memory";
                return NULL;
            }
            memcpy(a->name, name, len);
            a->name_len = len;
            if (st->n_attributes == st->cap_attributes) {
                size_t cap = st->cap_attributes ? st->cap_attributes * 2 : 32;
                attribute_t **v = realloc(st->attributes, cap * sizeof *v);
                if (!v) {
                    free(a->name);
                    free(a);
                    st->error = "out of memory";
                    return NULL;
                }
                st->attributes = v;
                st->cap_attributes = cap;
            }
            st->attributes[st->n_attributes++] = a;
            st->slots[i] = (int32_t)st->n_attributes;
            return a;
        }
        attribute_t *a = st->attributes[slot - 1];
        if (a->name_len == len && memcmp(a->name, name, len) == 0) return a;
    }
}

/* Reads one top-level value of attribute a in row `row`. */
static const char *read_value(state_t *st, attribute_t *a, size_t row, const char *p, const char *end) {
    int tag;
    p = read_tag(st, p, end, &tag);
    if (!p) return NULL;
    column_t *c = a->columns[tag];
    if (!c && !(c = a->columns[tag] = new_column(tag))) return NOMEM(st);
    if (pad(c, row)) return NOMEM(st);
    const char *raw;
    size_t n;
    int escaped;
    switch (tag) {
    case T_S:
    case T_N:
    case T_B:
        p = scan_string(st, p, end, &raw, &n, &escaped);
        if (!p) return NULL;
        if (escaped) {
            if (unescape(st, raw, n, &c->data)) return NULL;
        } else if (buf_put(&c->data, raw, n)) {
            return NOMEM(st);
        }
        break;
    case T_BOOL:
    case T_NULL: {
        int v;
        p = literal(st, p, end, &v);
        if (!p) return NULL;
        if (tag == T_NULL && !v) return FAIL(st, "NULL: false");
        if (buf_byte(&c->values, (char)v)) return NOMEM(st);
        break;
    }
    case T_M:
        p = render_map(st, p, end, &c->data, 0);
        if (!p) return NULL;
        break;
    case T_L:
        p = render_list(st, p, end, &c->data, 0);
        if (!p) return NULL;
        break;
    default: /* sets: a list of strings */
        if (p >= end || *p != '[') return FAIL(st, "a set that is not an array");
        p++;
        if (p < end && *p == ']') {
            p++;
            break;
        }
        for (;;) {
            p = scan_string(st, p, end, &raw, &n, &escaped);
            if (!p) return NULL;
            if (escaped) {
                if (unescape(st, raw, n, &c->data)) return NULL;
            } else if (buf_put(&c->data, raw, n)) {
                return NOMEM(st);
            }
            c->members++;
            if (buf_i32(&c->member_offsets, c->data.len)) return NOMEM(st);
            if (p >= end) return FAIL(st, "unterminated set");
            if (*p == ']') {
                p++;
                break;
            }
            if (*p != ',') return FAIL(st, "expected ',' or ']' in a set");
            p++;
        }
    }
    if (buf_byte(&c->valid, 1)) return NOMEM(st);
    if (!is_bool(tag) && buf_i32(&c->offsets, is_list(tag) ? c->members : c->data.len))
        return NOMEM(st);
    c->rows++;
    return close_value(st, p, end);
}

static const char ITEM_PREFIX[] = "{\"Item\":{";
#define ITEM_PREFIX_LEN (sizeof ITEM_PREFIX - 1)

/* Reads one line (without its newline) as row `row`. */
static int read_line(state_t *st, size_t row, const char *p, const char *end, buf_t *item_offsets,
                     buf_t *item_data) {
    if ((size_t)(end - p) < ITEM_PREFIX_LEN + 2 || memcmp(p, ITEM_PREFIX, ITEM_PREFIX_LEN) != 0 ||
        end[-1] != '}' || end[-2] != '}') {
        st->error = "a line in another shape than AWS's";
        return -1;
    }
    if (buf_put(item_data, p + ITEM_PREFIX_LEN - 1, (size_t)(end - p) - ITEM_PREFIX_LEN) ||
        buf_i32(item_offsets, item_data->len)) {
        st->error = "out of memory";
        return -1;
    }
    const char *q = p + ITEM_PREFIX_LEN;
    const char *body_end = end - 1; /* the item's closing brace */
    if (q < body_end && *q == '}') {
        q++;
    } else {
        for (;;) {
            const char *raw;
            size_t n;
            int escaped;
            q = scan_string(st, q, body_end, &raw, &n, &escaped);
            if (!q) return -1;
            if (q >= body_end || *q != ':') {
                st->error = "expected ':' after an attribute name";
                return -1;
            }
            q++;
            const char *name = raw;
            if (escaped) {
                st->key.len = 0;
                if (unescape(st, raw, n, &st->key)) return -1;
                name = st->key.p;
                n = st->key.len;
            }
            attribute_t *a = find_attribute(st, name, n);
            if (!a) return -1;
            if (a->last_row == row + 1) {
                st->error = "a duplicate attribute in an item";
                return -1;
            }
            a->last_row = row + 1;
            q = read_value(st, a, row, q, body_end);
            if (!q) return -1;
            if (q >= body_end) {
                st->error = "unterminated item";
                return -1;
            }
            if (*q == '}') {
                q++;
                break;
            }
            if (*q != ',') {
                st->error = "expected ',' or '}' between attributes";
                return -1;
            }
            q++;
        }
    }
    if (q != body_end) {
        st->error = "text after the item";
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Results */

static PyObject *bytes_of(buf_t *b) { return PyBytes_FromStringAndSize(b->p ? b->p : "", (Py_ssize_t)b->len); }

/* One byte a slot -> an Arrow bitmap. */
static PyObject *bitmap_of(buf_t *b) {
    size_t n = b->len;
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)((n + 7) / 8));
    if (!out) return NULL;
    unsigned char *bits = (unsigned char *)PyBytes_AS_STRING(out);
    memset(bits, 0, (n + 7) / 8);
    const unsigned char *v = (const unsigned char *)b->p;
    for (size_t i = 0; i < n; i++)
        if (v[i]) bits[i >> 3] |= (unsigned char)(1u << (i & 7));
    return out;
}

static PyObject *column_tuple(column_t *c) {
    PyObject *tag = PyUnicode_FromString(TAG_NAMES[c->tag]);
    PyObject *valid = bitmap_of(&c->valid);
    PyObject *t = NULL;
    if (!tag || !valid) goto done;
    if (is_bool(c->tag)) {
        PyObject *values = bitmap_of(&c->values);
        if (values) t = PyTuple_Pack(3, tag, valid, values);
        Py_XDECREF(values);
    } else if (is_list(c->tag)) {
        PyObject *offsets = bytes_of(&c->offsets), *moff = bytes_of(&c->member_offsets),
                 *data = bytes_of(&c->data), *count = PyLong_FromSize_t(c->members);
        if (offsets && moff && data && count)
            t = PyTuple_Pack(6, tag, valid, offsets, count, moff, data);
        Py_XDECREF(offsets);
        Py_XDECREF(moff);
        Py_XDECREF(data);
        Py_XDECREF(count);
    } else {
        PyObject *offsets = bytes_of(&c->offsets), *data = bytes_of(&c->data);
        if (offsets && data) t = PyTuple_Pack(4, tag, valid, offsets, data);
        Py_XDECREF(offsets);
        Py_XDECREF(data);
    }
done:
    Py_XDECREF(tag);
    Py_XDECREF(valid);
    return t;
}

/* The attributes' columns as [(name, [(tag, buffers...), ...]), ...] (see the top). */
static PyObject *attributes_list(state_t *st) {
    PyObject *attrs = PyList_New((Py_ssize_t)st->n_attributes);
    if (!attrs) return NULL;
    for (size_t i = 0; i < st->n_attributes; i++) {
        attribute_t *a = st->attributes[i];
        PyObject *cols = PyList_New(0);
        PyObject *name = PyUnicode_DecodeUTF8(a->name, (Py_ssize_t)a->name_len, "strict");
        if (!cols || !name) {
            Py_XDECREF(cols);
            Py_XDECREF(name);
            Py_DECREF(attrs);
            return NULL;
        }
        for (int t = 0; t < T_COUNT; t++) {
            if (!a->columns[t]) continue;
            PyObject *ct = column_tuple(a->columns[t]);
            if (!ct || PyList_Append(cols, ct)) {
                Py_XDECREF(ct);
                Py_DECREF(cols);
                Py_DECREF(name);
                Py_DECREF(attrs);
                return NULL;
            }
            Py_DECREF(ct);
        }
        PyObject *pair = PyTuple_Pack(2, name, cols);
        Py_DECREF(name);
        Py_DECREF(cols);
        if (!pair) {
            Py_DECREF(attrs);
            return NULL;
        }
        PyList_SET_ITEM(attrs, (Py_ssize_t)i, pair);
    }
    return attrs;
}

/* Null slots of every attribute's columns up to `rows`; -1 when out of memory. */
static int pad_attributes(state_t *st, size_t rows) {
    for (size_t i = 0; i < st->n_attributes; i++)
        for (int t = 0; t < T_COUNT; t++)
            if (st->attributes[i]->columns[t] && pad(st->attributes[i]->columns[t], rows)) {
                st->error = "out of memory";
                return -1;
            }
    return 0;
}

static void free_state(state_t *st) {
    for (size_t i = 0; i < st->n_attributes; i++) {
        attribute_t *a = st->attributes[i];
        for (int t = 0; t < T_COUNT; t++) free_column(a->columns[t]);
        free(a->name);
        free(a);
    }
    free(st->attributes);
    free(st->slots);
    buf_free(&st->key);
    for (int d = 0; d <= MAX_DEPTH; d++) {
        buf_free(&st->levels[d].scratch);
        free(st->levels[d].entries);
    }
}

static PyObject *scan_block(PyObject *self, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE)) return NULL;
    const char *block = view.buf;
    size_t size = (size_t)view.len;
    state_t st;
    memset(&st, 0, sizeof st);
    buf_t item_offsets = {0}, item_data = {0};
    PyObject *result = NULL;
    size_t rows = 0;
    int ok = 1;

    st.n_slots = 4096; /* > 2 * MAX_ATTRIBUTES: the probe always finds an empty slot */
    st.slots = calloc(st.n_slots, sizeof *st.slots);
    if (!st.slots || buf_i32(&item_offsets, 0)) {
        st.error = "out of memory";
        ok = 0;
    }
    Py_BEGIN_ALLOW_THREADS;
    if (ok && size == 0) {
        st.error = "an empty block";
        ok = 0;
    }
    if (ok && !valid_utf8((const unsigned char *)block, size)) {
        st.error = "text that is not UTF-8";
        ok = 0;
    }
    const char *p = block, *end = block + size;
    while (ok && p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *line_end = nl ? nl : end;
        if (read_line(&st, rows, p, line_end, &item_offsets, &item_data)) {
            ok = 0;
            break;
        }
        rows++;
        if (!nl) break;
        p = nl + 1;
        if (p == end) {
            st.error = "a blank last line";
            ok = 0;
        }
    }
    if (ok && pad_attributes(&st, rows)) ok = 0;
    Py_END_ALLOW_THREADS;

    if (!ok) {
        PyErr_SetString(PyExc_ValueError, st.error ? st.error : "unsupported block");
        goto done;
    }
    PyObject *attrs = attributes_list(&st);
    if (!attrs) goto done;
    PyObject *io = bytes_of(&item_offsets), *id = bytes_of(&item_data);
    PyObject *n = PyLong_FromSize_t(rows);
    if (io && id && n) result = PyTuple_Pack(4, n, io, id, attrs);
    Py_XDECREF(io);
    Py_XDECREF(id);
    Py_XDECREF(n);
    Py_DECREF(attrs);
done:
    free_state(&st);
    buf_free(&item_offsets);
    buf_free(&item_data);
    PyBuffer_Release(&view);
    return result;
}

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

/* Appends the microseconds of a creation time of `seconds` (a double) as changes._micros computes
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

/* ApproximateCreationDateTime (epoch seconds) -> microseconds, as changes._micros computes them
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

static PyObject *scan_records(PyObject *self, PyObject *arg) {
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
 * It refuses (ValueError) what it does not render exactly as changes.records_to_table's Python
 * path: a value of another type than those boto3 and orjson give (exact dict, list, bytes,
 * bytearray, bool; str or a str subclass for texts; a dict key that is not an exact str), a
 * value that is not one {tag: value}, an unknown tag, NULL other than True, a number that needs
 * more than cutting trailing zeros to be canonical, binary text that is not canonical base64, a
 * string with a lone surrogate, a dict nested deeper than MAX_DEPTH, a datetime whose tzinfo is
 * not None, a datetime.timezone or a zoneinfo.ZoneInfo, whose utcoffset has microseconds (Arrow,
 * which converts the Python path's datetimes, drops them), or whose microseconds from 1970 a
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
 * exception is cleared and the records refused (the Python path meets it again). */
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

/* One {tag: value} as render_plain renders it in typed mode (changes.image_text). */
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
 * changes._micros does): (dt - epoch) in exact microseconds, less the tzinfo's utcoffset, then
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
            /* Arrow, which the Python path has convert datetimes, drops an offset's
             * microseconds: refused, the Python path gives its own result */
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

/* ApproximateCreationDateTime: a datetime, an int or a float (changes._micros). */
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

static PyObject *scan_record_dicts(PyObject *self, PyObject *records) {
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

/* decode_base64(n, offsets, data) -> (offsets, data): the bytes of n canonical base64 texts (an
 * Arrow string array's int32 offsets and data: B values as the readers give them) as the
 * buffers of a binary array. ValueError if a text is not canonical padded base64 (the caller
 * decodes those with binascii, which words the error or takes what it may). */
static PyObject *decode_base64(PyObject *self, PyObject *args) {
    Py_ssize_t n;
    Py_buffer offsets, data;
    if (!PyArg_ParseTuple(args, "ny*y*", &n, &offsets, &data)) return NULL;
    PyObject *result = NULL;
    buf_t out_offsets = {0}, out_data = {0};
    const char *error = NULL;
    int nomem = 0;
    if (n < 0 || offsets.len / (Py_ssize_t)sizeof(int32_t) <= n) {
        PyErr_SetString(PyExc_ValueError, "offsets buffer too short");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS;
    const int32_t *at = (const int32_t *)offsets.buf;
    const char *text = (const char *)data.buf;
    size_t size = at[n] > at[0] ? (size_t)(at[n] - at[0]) : 0;
    nomem = buf_grow(&out_offsets, (size_t)(n + 1) * sizeof(int32_t)) ||
            buf_grow(&out_data, size / 4 * 3) || buf_i32(&out_offsets, 0);
    for (Py_ssize_t i = 0; !nomem && !error && i < n; i++) {
        int32_t start = at[i], end = at[i + 1];
        if (start < 0 || end < start || end > data.len)
            error = "offsets out of range";
        else if (decode_b64(text + start, (size_t)(end - start), &out_data))
            error = "a binary value that is not canonical base64";
        else if (buf_i32(&out_offsets, out_data.len))
            nomem = 1; /* cannot be past 2 GB: the texts are longer than their bytes */
    }
    Py_END_ALLOW_THREADS;
    if (nomem) {
        PyErr_NoMemory();
    } else if (error) {
        PyErr_SetString(PyExc_ValueError, error);
    } else {
        PyObject *o = bytes_of(&out_offsets), *d = o ? bytes_of(&out_data) : NULL;
        if (o && d) result = PyTuple_Pack(2, o, d);
        Py_XDECREF(o);
        Py_XDECREF(d);
    }
done:
    buf_free(&out_offsets);
    buf_free(&out_data);
    PyBuffer_Release(&offsets);
    PyBuffer_Release(&data);
    return result;
}

/* ---------------------------------------------------------------------------------------- */
/* Bracket depth per line (dynamo_cdc.nesting.line_depths) */

/* line_depths(text, ion) -> bytes: an int32 a line of text (newline-separated JSON values, or
 * Ion text values when ion is true), the deepest bracket depth in it, brackets inside strings
 * (and, in Ion, quoted symbols) left out. One pass, no allocation but the result: what
 * dynamo_cdc.nesting measures before a parser that recurses sees the text. */
static PyObject *line_depths(PyObject *self, PyObject *args) {
    Py_buffer view;
    int ion;
    if (!PyArg_ParseTuple(args, "y*p", &view, &ion)) return NULL;
    const unsigned char *p = view.buf, *end = p + view.len;
    Py_ssize_t lines = 1;
    for (const unsigned char *q = p; (q = memchr(q, '\n', (size_t)(end - q))) && q + 1 < end; q++)
        lines++;
    PyObject *out = PyBytes_FromStringAndSize(NULL, lines * (Py_ssize_t)sizeof(int32_t));
    if (!out) {
        PyBuffer_Release(&view);
        return NULL;
    }
    int32_t *deepest = (int32_t *)PyBytes_AS_STRING(out);
    memset(deepest, 0, (size_t)lines * sizeof(int32_t));
    Py_ssize_t line = 0;
    int32_t depth = 0, max = 0;
    unsigned char quote = 0; /* the quote that opened the string we are in, 0 outside */
    Py_BEGIN_ALLOW_THREADS
    for (; p < end; p++) {
        unsigned char c = *p;
        if (quote) {
            if (c == '\\' && p + 1 < end && p[1] != '\n') p++;
            else if (c == quote || c == '\n') quote = 0; /* a newline: a malformed line ended */
            if (c != '\n') continue;
        }
        switch (c) {
        case '\'':
            if (!ion) break;
            /* fall through */
        case '"': quote = c; break;
        case '{':
        case '[':
        case '(':
            if (c == '(' && !ion) break;
            if (++depth > max) max = depth;
            break;
        case '}':
        case ']':
        case ')':
            if (c == ')' && !ion) break;
            depth--;
            break;
        case '\n':
            if (p + 1 < end) {
                deepest[line++] = max;
                depth = max = 0;
            }
            break;
        }
    }
    deepest[line] = max;
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return out;
}

static PyMethodDef METHODS[] = {
    {"line_depths", line_depths, METH_VARARGS,
     "line_depths(text, ion) -> bytes: the deepest bracket depth of each line, an int32 a line."},
    {"scan_block", scan_block, METH_O,
     "scan_block(block) -> (rows, item_offsets, item_data, attributes): see the module source."},
    {"decode_base64", decode_base64, METH_VARARGS,
     "decode_base64(n, offsets, data) -> (offsets, data): canonical base64 texts decoded."},
    {"scan_records", scan_records, METH_O,
     "scan_records(body) -> dict of a GetRecords response's change-row columns: see the source."},
    {"scan_record_dicts", scan_record_dicts, METH_O,
     "scan_record_dicts(records) -> dict of the change-row columns of a list of record dicts: "
     "see the source."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef MODULE = {
    PyModuleDef_HEAD_INIT, "dynamo_cdc._native",
    "One pass in C over export lines (dynamo_cdc.arrowconvert) or a GetRecords response.", -1,
    METHODS, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void) {
    init_b64();
    if (PyType_Ready(&BUFFER_TYPE)) return NULL;
    PyDateTime_IMPORT;
    if (!PyDateTimeAPI) return NULL;
    for (int k = 0; k < K_COUNT; k++)
        if (!FIELDS[k] && !(FIELDS[k] = PyUnicode_InternFromString(FIELD_NAMES[k]))) return NULL;
    if (!UTCOFFSET && !(UTCOFFSET = PyUnicode_InternFromString("utcoffset"))) return NULL;
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
    return PyModule_Create(&MODULE);
}
