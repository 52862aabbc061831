/*
 * dynamo_cdc.convert._native: one pass in C over a block of DynamoDB export lines (block.c), or
 * over a GetRecords response or a list of record dicts (records.c), one extension (module.c).
 *
 * This header is what the front ends share: growable byte buffers, the parse state, the columns
 * under construction (one Arrow array an attribute and tag), and the renderer of values as plain
 * JSON or canonical DynamoDB JSON (common.c).
 */
#ifndef DYNAMO_CDC_NATIVE_COMMON_H
#define DYNAMO_CDC_NATIVE_COMMON_H
#define PY_SSIZE_T_CLEAN
#include <Python.h>
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

/* Buffers that grow past this many bytes take the memory of a big buffer freed (common.c). */
#define BIG_MIN ((size_t)1 << 20)

int buf_realloc(buf_t *b, size_t need);

static inline int buf_grow(buf_t *b, size_t extra) {
    size_t need = b->len + extra;
    return need <= b->cap ? 0 : buf_realloc(b, need);
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

static inline int is_list(int tag) { return tag == T_SS || tag == T_NS || tag == T_BS; }
static inline int is_bool(int tag) { return tag == T_BOOL || tag == T_NULL; }

/* common.c */
void release(char *p, size_t cap);
void buf_free(buf_t *b);
int valid_utf8(const unsigned char *s, size_t n);
const char *scan_string(state_t *st, const char *p, const char *end, const char **raw, size_t *raw_len, int *escaped);
int unescape(state_t *st, const char *s, size_t n, buf_t *out);
int put_json_string(buf_t *out, const char *s, size_t n);
void init_b64(void);
int decode_b64(const char *s, size_t n, buf_t *out);
int put_b64(buf_t *out, const unsigned char *s, size_t n);
int put_typed_number(state_t *st, const char *raw, size_t n, buf_t *out);
int put_b64_text(state_t *st, const char *raw, size_t n, buf_t *out);
void sort_entries(entry_t *ents, size_t k, const char *base, int tag);
entry_t *push_entry(level_t *lv);
int put_key(buf_t *out, const char *base, const entry_t *e, int comma);
const char *render_map(state_t *st, const char *p, const char *end, buf_t *out, int depth);
int finish_set(state_t *st, int tag, level_t *lv, size_t first, size_t scratch_start, buf_t *out);
int add_member(state_t *st, int tag, level_t *lv, const char *s, size_t n, int bytes);
const char *literal(state_t *st, const char *p, const char *end, int *value);
const char *render_plain(state_t *st, const char *p, const char *end, buf_t *out, int depth);
column_t *new_column(int tag);
void free_column(column_t *c);
int pad(column_t *c, size_t row);
attribute_t *find_attribute(state_t *st, const char *name, size_t len);
const char *read_value(state_t *st, attribute_t *a, size_t row, const char *p, const char *end);
PyObject *bytes_of(buf_t *b);
PyObject *bitmap_of(buf_t *b);
PyObject *attributes_list(state_t *st);
int pad_attributes(state_t *st, size_t rows);
void free_state(state_t *st);

/* block.c */
PyObject *scan_block(PyObject *self, PyObject *arg);
PyObject *decode_base64(PyObject *self, PyObject *args);
PyObject *line_depths(PyObject *self, PyObject *args);

/* records.c */
PyObject *scan_records(PyObject *self, PyObject *arg);
PyObject *scan_record_dicts(PyObject *self, PyObject *records);
/* At import: the buffer type, the datetime C API, the interned field names; -1 on error. */
int records_init(void);

#endif
