/* dynamo_cdc.convert._native: the module (see common.h). */
#include "common.h"

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
    PyModuleDef_HEAD_INIT, "dynamo_cdc.convert._native",
    "One pass in C over export lines (dynamo_cdc.arrowconvert) or a GetRecords response.", -1,
    METHODS, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void) {
    init_b64();
    if (records_init()) return NULL;
    return PyModule_Create(&MODULE);
}
