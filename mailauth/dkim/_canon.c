/* The optional accelerator of DKIM body canonicalization (RFC 6376 3.4.3, 3.4.4, 5.3).

   Two functions, each the exact equivalent of a pure-Python function of
   mailauth/dkim/canon.py, which is used when this module is not built:

     to_crlf(data)      canon.to_crlf: every LF not preceded by CR becomes CRLF.
     relax_lines(data)  canon.relax_lines: every run of WSP (SP, HTAB) becomes one SP,
                        and a run just before a CRLF goes.

   Both take bytes and return bytes: the argument itself when nothing changes (the common
   case), else a new object. Neither keeps state between calls: mailauth.dkim.body cuts the
   stream into blocks of whole lines. The input is hostile mail, so every read and write is
   checked against the lengths computed first; relax_lines never writes more than it reads,
   to_crlf writes exactly the length it counted. tests/test_dkim_canon.py compares both with
   the pure-Python functions and with dkimpy. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

static int
check_bytes(PyObject *arg, const char *name)
{
    if (PyBytes_CheckExact(arg)) {
        return 1;
    }
    PyErr_Format(PyExc_TypeError, "%s() takes bytes, not %.100s", name, Py_TYPE(arg)->tp_name);
    return 0;
}

static PyObject *
to_crlf(PyObject *module, PyObject *arg)
{
    if (!check_bytes(arg, "to_crlf")) {
        return NULL;
    }
    const char *data = PyBytes_AS_STRING(arg);
    const char *end = data + PyBytes_GET_SIZE(arg);
    const char *lf;
    Py_ssize_t bare = 0;
    for (const char *p = data; (lf = memchr(p, '\n', (size_t)(end - p))) != NULL; p = lf + 1) {
        bare += lf == data || lf[-1] != '\r';
    }
    if (bare == 0) {
        return Py_NewRef(arg);
    }
    /* (bare <= size, and a bytes object is far smaller than PY_SSIZE_T_MAX / 2.) */
    Py_ssize_t size = PyBytes_GET_SIZE(arg) + bare;
    PyObject *result = PyBytes_FromStringAndSize(NULL, size);
    if (result == NULL) {
        return NULL;
    }
    char *out = PyBytes_AS_STRING(result);
    const char *p = data;
    for (; (lf = memchr(p, '\n', (size_t)(end - p))) != NULL; p = lf + 1) {
        memcpy(out, p, (size_t)(lf - p));
        out += lf - p;
        if (lf == data || lf[-1] != '\r') {
            *out++ = '\r';
        }
        *out++ = '\n';
    }
    memcpy(out, p, (size_t)(end - p));
    out += end - p;
    assert(out == PyBytes_AS_STRING(result) + size);
    return result;
}

enum { BLOCK = 64 };

/* Whether the BLOCK octets from p may start a run that relax_lines changes (an HTAB, or an
   SP before WSP or CR: it is not told whether an LF follows the CR). Reads BLOCK + 1 octets.
   No branch in the loop, so that compilers make it a few vector instructions: most blocks of
   text hold no change, and this skips them at a fraction of a cycle per octet. */
static int
may_change(const unsigned char *p)
{
    unsigned char found = 0;
    for (int i = 0; i < BLOCK; i++) {
        unsigned char c = p[i], next = p[i + 1];
        found |= (c == '\t') | ((c == ' ') & ((next == ' ') | (next == '\t') | (next == '\r')));
    }
    return found;
}

/* Whether a run that relax_lines changes starts at p (p < end, p not inside a run). */
static int
changes_at(const unsigned char *p, const unsigned char *end)
{
    if (*p == '\t') {
        return 1;
    }
    if (*p != ' ' || end - p < 2) {
        return 0;
    }
    unsigned char next = p[1];
    return next == ' ' || next == '\t' || (next == '\r' && end - p >= 3 && p[2] == '\n');
}

/* The first WSP run from p on that relax_lines changes (one holding an HTAB, longer than one
   octet, or followed by CRLF), or end. p is not inside a run, and a run that stays (one SP
   before anything but WSP and CRLF) is stepped over: the scan stops only at a run's start. */
static const unsigned char *
first_change(const unsigned char *p, const unsigned char *end)
{
    for (;;) {
        while (end - p > BLOCK && !may_change(p)) {
            p += BLOCK;
        }
        const unsigned char *stop = end - p > BLOCK ? p + BLOCK : end;
        for (; p < stop; p++) {
            if (changes_at(p, end)) {
                return p;
            }
        }
        if (p == end) {
            return end;
        }
    }
}

static PyObject *
relax_lines(PyObject *module, PyObject *arg)
{
    if (!check_bytes(arg, "relax_lines")) {
        return NULL;
    }
    const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(arg);
    const unsigned char *end = data + PyBytes_GET_SIZE(arg);
    const unsigned char *p = first_change(data, end);
    if (p == end) {
        return Py_NewRef(arg);
    }
    /* The output is never longer than the input: each octet read writes at most one, but
       the octets of a WSP run write nothing until the run ends, and then one SP or none. */
    PyObject *result = PyBytes_FromStringAndSize(NULL, PyBytes_GET_SIZE(arg));
    if (result == NULL) {
        return NULL;
    }
    unsigned char *start = (unsigned char *)PyBytes_AS_STRING(result);
    memcpy(start, data, (size_t)(p - data));
    unsigned char *out = start + (p - data);
    int in_run = 0; /* inside a WSP run, none of it written yet */
    while (p < end) {
        if (!in_run && end - p > BLOCK && !may_change(p)) {
            memcpy(out, p, BLOCK); /* (a block with no change, as most are) */
            out += BLOCK;
            p += BLOCK;
            continue;
        }
        for (const unsigned char *stop = end - p > BLOCK ? p + BLOCK : end; p < stop; p++) {
            unsigned char c = *p;
            if (c == ' ' || c == '\t') {
                in_run = 1;
                continue;
            }
            if (in_run && !(c == '\r' && end - p >= 2 && p[1] == '\n')) {
                *out++ = ' ';
            }
            in_run = 0;
            *out++ = c;
        }
    }
    if (in_run) {
        *out++ = ' '; /* a run at the very end (an unterminated last line) stays one SP */
    }
    if (_PyBytes_Resize(&result, out - start) < 0) {
        return NULL;
    }
    return result;
}

static PyMethodDef methods[] = {
    {"to_crlf", to_crlf, METH_O, "Every LF not preceded by CR becomes CRLF."},
    {"relax_lines", relax_lines, METH_O,
     "Every run of SP and HTAB becomes one SP; a run just before a CRLF goes."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "mailauth.dkim._canon",
    .m_doc = "The optional C accelerator of mailauth.dkim.canon's body functions.",
    .m_size = 0,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__canon(void)
{
    return PyModuleDef_Init(&module);
}
