/* The shared part of the C readers: see common.h. */
#include "common.h"

/* Memory of big buffers freed (over SPARE_MAX), for the next buffers that grow past BIG_MIN:
 * memory fresh from the OS costs a page fault each 4 KB page on its first write (about 2 us a
 * page on a VM: a seventh of the time of a big scan_record_dicts call, measured). The biggest
 * BIG_BLOCKS blocks, at most BIG_KEEP bytes, are kept in the process, for any thread
 * (big_lock). */
#define BIG_BLOCKS 8
#define BIG_KEEP ((size_t)512 << 20)
static struct {
    char *p;
    size_t cap;
} big_blocks[BIG_BLOCKS];
static pthread_mutex_t big_lock = PTHREAD_MUTEX_INITIALIZER;

/* Frees the memory of a buffer of capacity cap, keeping it for later if it is big. */
void release(char *p, size_t cap) {
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

int buf_realloc(buf_t *b, size_t need) {
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

void buf_free(buf_t *b) {
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* ---------------------------------------------------------------------------------------- */
/* UTF-8 */

int valid_utf8(const unsigned char *s, size_t n) {
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
const char *scan_string(state_t *st, const char *p, const char *end, const char **raw,
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
int unescape(state_t *st, const char *s, size_t n, buf_t *out) {
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
int put_json_string(buf_t *out, const char *s, size_t n) {
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

void init_b64(void) {
    memset(B64, -1, sizeof B64);
    for (int i = 0; i < 64; i++) B64[(unsigned char)B64_ALPHABET[i]] = (signed char)i;
}

/* Appends the bytes of canonical padded base64 text (what base64.b64encode writes); -1 if the
 * text is not that (the reference may still take it: the caller leaves it to another path). */
int decode_b64(const char *s, size_t n, buf_t *out) {
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
int put_b64(buf_t *out, const unsigned char *s, size_t n) {
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
int put_typed_number(state_t *st, const char *raw, size_t n, buf_t *out) {
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
int put_b64_text(state_t *st, const char *raw, size_t n, buf_t *out) {
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
void sort_entries(entry_t *ents, size_t k, const char *base, int tag) {
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

entry_t *push_entry(level_t *lv) {
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
int put_key(buf_t *out, const char *base, const entry_t *e, int comma) {
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
const char *render_map(state_t *st, const char *p, const char *end, buf_t *out, int depth) {
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
int finish_set(state_t *st, int tag, level_t *lv, size_t first, size_t scratch_start,
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
int add_member(state_t *st, int tag, level_t *lv, const char *s, size_t n, int bytes) {
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

const char *literal(state_t *st, const char *p, const char *end, int *value) {
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
const char *render_plain(state_t *st, const char *p, const char *end, buf_t *out, int depth) {
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

column_t *new_column(int tag) {
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

void free_column(column_t *c) {
    if (!c) return;
    buf_free(&c->valid);
    buf_free(&c->values);
    buf_free(&c->offsets);
    buf_free(&c->data);
    buf_free(&c->member_offsets);
    free(c);
}


/* Null slots up to `row`. */
int pad(column_t *c, size_t row) {
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

attribute_t *find_attribute(state_t *st, const char *name, size_t len) {
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
const char *read_value(state_t *st, attribute_t *a, size_t row, const char *p, const char *end) {
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

/* ---------------------------------------------------------------------------------------- */
/* Results */

PyObject *bytes_of(buf_t *b) { return PyBytes_FromStringAndSize(b->p ? b->p : "", (Py_ssize_t)b->len); }

/* One byte a slot -> an Arrow bitmap. */
PyObject *bitmap_of(buf_t *b) {
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
PyObject *attributes_list(state_t *st) {
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
int pad_attributes(state_t *st, size_t rows) {
    for (size_t i = 0; i < st->n_attributes; i++)
        for (int t = 0; t < T_COUNT; t++)
            if (st->attributes[i]->columns[t] && pad(st->attributes[i]->columns[t], rows)) {
                st->error = "out of memory";
                return -1;
            }
    return 0;
}

void free_state(state_t *st) {
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
