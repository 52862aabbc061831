/*
 * The export front end of dynamo_cdc.convert._native (see common.h).
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
 */
#include "common.h"

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


PyObject *scan_block(PyObject *self, PyObject *arg) {
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

/* decode_base64(n, offsets, data) -> (offsets, data): the bytes of n canonical base64 texts (an
 * Arrow string array's int32 offsets and data: B values as the readers give them) as the
 * buffers of a binary array. ValueError if a text is not canonical padded base64 (the caller
 * decodes those with binascii, which words the error or takes what it may). */
PyObject *decode_base64(PyObject *self, PyObject *args) {
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
PyObject *line_depths(PyObject *self, PyObject *args) {
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

