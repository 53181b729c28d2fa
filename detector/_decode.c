/* Two shortcuts of detector/events.py's decode_event, compiled. Both only ever answer for the cases
 * whose answer they know; everything else is left (None / False) to the pure-Python code, which stays
 * the reference (tests/unit/test_decode_fast.py and tests/unit/test_timestamps.py hold them to it).
 *
 * instant(text) -> float | None
 *     rfc3339_reference(text) (detector/timestamps.py) for a plain RFC 3339 text: ASCII
 *     "YYYY-MM-DD" [Tt ] "HH:MM:SS", 0 to 6 fraction digits, "Z", "z" or "+HH:MM" / "-HH:MM", a date
 *     that exists, second 00-59, within 2**53 microseconds of the epoch (years 1685-2255).
 *     The reference reads such a text with datetime.fromisoformat(...).timestamp(), which is an exact
 *     count of microseconds divided by 10**6 as a Python int true division; for counts within 2**53
 *     both are exact doubles, and Python divides them as doubles, correctly rounded, as here.
 *     None for anything else (a leap second, a longer fraction, an error...).
 *
 * plain(raw) -> bool
 *     True when the bytes are ASCII with no backslash and no DEL, their first byte is the only "{"
 *     and there is at most one "[" (decode_event's own searches, in one call).
 *
 * decode_plain(raw) -> ActionEvent | None
 *     decode_event(raw) when plain(raw), the typed decode succeeds with schema_version 1 and instant() reads
 *     its ts (decode_event's usual path, in one call); None for anything else. The texts an agent repeats
 *     (agent, operator, tool, requester, instructions) are the str an earlier event had (share_text).
 *
 * The build keeps IEEE doubles as Python has them (setup.py: -fno-fast-math -ffp-contract=off).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

#define DIGIT(c) ((unsigned)((c) - '0') <= 9u)
#define TWO(p) (((p)[0] - '0') * 10 + ((p)[1] - '0'))

static int64_t
days_from_civil(int64_t y, int m, int d)
{
    /* days since 1970-01-01 of a proleptic Gregorian date (as datetime's ordinals) */
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int
days_in_month(int y, int m)
{
    static const int dim[13] = {0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m == 2 && y % 4 == 0 && (y % 100 != 0 || y % 400 == 0))
        return 29;
    return dim[m];
}

static PyObject *
instant(PyObject *self, PyObject *text)
{
    if (!PyUnicode_CheckExact(text))
        Py_RETURN_NONE;
#if PY_VERSION_HEX < 0x030C0000  /* from 3.12 every str is ready */
    if (PyUnicode_READY(text) < 0)
        return NULL;
#endif
    if (!PyUnicode_IS_ASCII(text))
        Py_RETURN_NONE;
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    const char *s = (const char *)PyUnicode_DATA(text);
    if (n < 20)
        Py_RETURN_NONE;
    Py_ssize_t end;
    int64_t offset = 0;  /* seconds east of UTC */
    if (s[n - 1] == 'Z' || s[n - 1] == 'z') {
        end = n - 1;
    } else {
        const char *z = s + n - 6;
        if (n < 25 || (z[0] != '+' && z[0] != '-') || !DIGIT(z[1]) || !DIGIT(z[2]) || z[3] != ':'
            || !DIGIT(z[4]) || !DIGIT(z[5]))
            Py_RETURN_NONE;
        int oh = TWO(z + 1), om = TWO(z + 4);
        if (oh > 23 || om > 59)
            Py_RETURN_NONE;
        offset = (int64_t)(oh * 60 + om) * 60 * (z[0] == '-' ? -1 : 1);
        end = n - 6;
    }
    static const int digits_at[] = {0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18};
    for (size_t i = 0; i < sizeof digits_at / sizeof digits_at[0]; i++)
        if (!DIGIT(s[digits_at[i]]))
            Py_RETURN_NONE;
    if (s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || s[13] != ':'
        || s[16] != ':')
        Py_RETURN_NONE;
    int64_t micros = 0;
    Py_ssize_t digits = end - 20;
    if (end != 19) {
        if (s[19] != '.' || digits < 1 || digits > 6)
            Py_RETURN_NONE;
        for (Py_ssize_t i = 20; i < end; i++) {
            if (!DIGIT(s[i]))
                Py_RETURN_NONE;
            micros = micros * 10 + (s[i] - '0');
        }
        for (Py_ssize_t i = digits; i < 6; i++)
            micros *= 10;
    }
    int year = TWO(s) * 100 + TWO(s + 2), month = TWO(s + 5), day = TWO(s + 8);
    int hour = TWO(s + 11), minute = TWO(s + 14), second = TWO(s + 17);
    if (year < 1 || month < 1 || month > 12 || day < 1 || day > days_in_month(year, month) || hour > 23
        || minute > 59 || second > 59)
        Py_RETURN_NONE;
    int64_t seconds = days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second - offset;
    micros += seconds * 1000000;
    const int64_t exact = (int64_t)1 << 53;
    if (micros > exact || micros < -exact)
        Py_RETURN_NONE;
    return PyFloat_FromDouble((double)micros / 1e6);
}

static PyObject *
plain(PyObject *self, PyObject *raw)
{
    if (!PyBytes_CheckExact(raw)) {
        PyErr_SetString(PyExc_TypeError, "plain() takes bytes");
        return NULL;
    }
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(raw);
    Py_ssize_t n = PyBytes_GET_SIZE(raw);
    if (n == 0 || p[0] != '{' || memchr(p + 1, '{', n - 1) != NULL || memchr(p, '\\', n) != NULL
        || memchr(p, 0x7f, n) != NULL)
        Py_RETURN_FALSE;
    const unsigned char *bracket = memchr(p, '[', n);
    if (bracket != NULL && memchr(bracket + 1, '[', n - (bracket + 1 - p)) != NULL)
        Py_RETURN_FALSE;
    /* no byte with its high bit set: eight bytes OR-ed at a time (no early exit), then the rest */
    uint64_t words = 0;
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        words |= w;
    }
    unsigned char any = 0;
    for (; i < n; i++)
        any |= p[i];
    return PyBool_FromLong(!(words & 0x8080808080808080ULL) && !(any & 0x80));
}

/* plain()'s test, for bytes */
static int
is_plain(PyObject *raw)
{
    PyObject *r = plain(NULL, raw);
    int ok = r == Py_True;
    Py_XDECREF(r);
    return ok;
}

static PyObject *typed_decode;    /* the events' msgspec decode (a bound method) */
static Py_ssize_t max_bytes;
static PyObject *s_ts, *s_schema_version, *s_dict, *s_t;

/* decode_setup(decode, max_bytes): what decode_plain decodes with, once */
static PyObject *
decode_setup(PyObject *self, PyObject *args)
{
    PyObject *fn;
    Py_ssize_t limit;
    if (!PyArg_ParseTuple(args, "On:decode_setup", &fn, &limit))
        return NULL;
    if (s_t == NULL && ((s_ts = PyUnicode_InternFromString("ts")) == NULL
                        || (s_schema_version = PyUnicode_InternFromString("schema_version")) == NULL
                        || (s_dict = PyUnicode_InternFromString("__dict__")) == NULL
                        || (s_t = PyUnicode_InternFromString("t")) == NULL))
        return NULL;
    Py_INCREF(fn);
    Py_XSETREF(typed_decode, fn);
    max_bytes = limit;
    Py_RETURN_NONE;
}

/* What decode_plain reads of an event's type, found once per type (ev_type): where the event's schema_version
 * and ts are (the Struct's fields: member descriptors, read at their offset; -1 when not plain slots), and whether
 * its __dict__ is the generic one (PyObject_GenericGetDict, called directly). Anything else: the generic way. */
static PyTypeObject *ev_type;  /* a strong reference, or NULL */
static Py_ssize_t off_sv = -1, off_ts = -1;
static int generic_dict;

static Py_ssize_t
member_offset(PyTypeObject *tp, PyObject *name)
{
    PyObject *d = _PyType_Lookup(tp, name);  /* borrowed */
    if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type) || ((PyMemberDescrObject *)d)->d_common.d_type != tp)
        return -1;
    PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
    return m->type == T_OBJECT_EX && m->offset > 0 ? m->offset : -1;
}

/* The str fields an agent repeats from one action to the next (who acts, for whom, with what tool, under which
 * instructions; not what it acts on, nor its task, which change too often to keep), shared: decode_plain puts in
 * an event's slot the str an earlier event had there when the text is the same (ASCII), from a table of the last
 * texts met. The engine looks these up in its dicts (agents, peers, the policy's classes, episodes, traces): a
 * shared str has its hash already (no siphash of a new str each time) and is found by identity (no comparison of
 * its characters), and the new str is dropped at once instead of with its batch. Values are unchanged: equal
 * text, the same exact type. The table is bounded (1,024 texts of at most 1,024 characters, their fields' limits:
 * at most about 1 MB): texts an attacker varies, or makes collide in a slot, only replace one another in it, and a
 * text is shared only when equal byte for byte. */
#define N_SHARED 5
static const char *const shared_names[N_SHARED] = {
    "agent_id", "operator_id", "tool", "requested_by", "instruction_hash",
};
static Py_ssize_t shared_off[N_SHARED];  /* their slots (-1: not a plain slot, not shared) */
#define SHARED_STRS 1024
static PyObject *shared_strs[SHARED_STRS];

/* an ASCII text's slot in shared_strs: eight bytes at a time multiplied in */
static inline unsigned
text_slot(const unsigned char *p, Py_ssize_t n)
{
    uint64_t h = (uint64_t)n * 0x9E3779B97F4A7C15ULL;
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0xFF51AFD7ED558CCDULL;
    }
    uint64_t w = 0;
    memcpy(&w, p + i, (size_t)(n - i));
    h = (h ^ w) * 0xC4CEB9FE1A85EC53ULL;
    return (unsigned)(h >> 54) & (SHARED_STRS - 1);
}

/* the str in *slot replaced by the one shared for its text, or made the shared one */
static inline void
share_text(PyObject **slot)
{
    PyObject *s = *slot;
    if (s == NULL || !PyUnicode_CheckExact(s) || !PyUnicode_IS_COMPACT_ASCII(s))
        return;
    const Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    const unsigned char *p = PyUnicode_1BYTE_DATA(s);
    PyObject **c = shared_strs + text_slot(p, n);
    if (*c == s)
        return;
    if (*c != NULL && PyUnicode_GET_LENGTH(*c) == n && memcmp(PyUnicode_1BYTE_DATA(*c), p, (size_t)n) == 0) {
        Py_INCREF(*c);
        *slot = *c;
        Py_DECREF(s);
    } else {
        Py_INCREF(s);
        Py_XSETREF(*c, s);
    }
}

static void
resolve_event_type(PyTypeObject *tp)
{
    Py_INCREF(tp);
    Py_XSETREF(ev_type, tp);
    int generic = tp->tp_getattro == PyObject_GenericGetAttr;
    off_sv = generic ? member_offset(tp, s_schema_version) : -1;
    off_ts = generic ? member_offset(tp, s_ts) : -1;
    for (int i = 0; i < N_SHARED; i++) {
        PyObject *name = PyUnicode_InternFromString(shared_names[i]);
        shared_off[i] = name != NULL && generic ? member_offset(tp, name) : -1;
        Py_XDECREF(name);
    }
    PyErr_Clear();
    PyObject *d = _PyType_Lookup(tp, s_dict);  /* borrowed */
    generic_dict = generic && d != NULL && Py_IS_TYPE(d, &PyGetSetDescr_Type)
                   && ((PyGetSetDescrObject *)d)->d_getset->get == PyObject_GenericGetDict;
}

/* ev.<name> (a new reference) from its slot at off, else the generic way */
static PyObject *
event_field(PyObject *ev, Py_ssize_t off, PyObject *name)
{
    if (off > 0) {
        PyObject *v = *(PyObject **)((char *)ev + off);
        if (v != NULL) {
            Py_INCREF(v);
            return v;
        }
    }
    return PyObject_GetAttr(ev, name);
}

/* decode_plain(raw) -> ActionEvent | None: decode_event's answer for the usual message, all of its shortcuts in
 * one call: bytes of at most max_bytes, plain(), decoded by the typed decoder with schema_version 1 and a ts
 * instant() reads; the event with its t. None for anything else (any error of the decoder included: decode_event
 * then takes its own path, and the reference says why). */
static PyObject *
decode_plain(PyObject *self, PyObject *raw)
{
    if (typed_decode == NULL || !PyBytes_CheckExact(raw) || PyBytes_GET_SIZE(raw) > max_bytes || !is_plain(raw))
        Py_RETURN_NONE;
    PyObject *ev = PyObject_CallOneArg(typed_decode, raw), *ts = NULL, *t = NULL, *sv = NULL, *d = NULL;
    if (ev == NULL) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    if (Py_TYPE(ev) != ev_type)
        resolve_event_type(Py_TYPE(ev));
    if ((sv = event_field(ev, off_sv, s_schema_version)) == NULL || (ts = event_field(ev, off_ts, s_ts)) == NULL)
        goto none;
    if (!PyLong_CheckExact(sv) || PyLong_AsLong(sv) != 1 || !PyUnicode_Check(ts))
        goto none;
    if ((t = instant(NULL, ts)) == NULL || t == Py_None)
        goto none;
    for (int i = 0; i < N_SHARED; i++)
        if (shared_off[i] > 0)
            share_text((PyObject **)((char *)ev + shared_off[i]));
    if ((d = generic_dict ? PyObject_GenericGetDict(ev, NULL) : PyObject_GetAttr(ev, s_dict)) == NULL
            || !PyDict_Check(d) || PyDict_SetItem(d, s_t, t) < 0)
        goto none;
    Py_DECREF(sv);
    Py_DECREF(ts);
    Py_DECREF(t);
    Py_DECREF(d);
    return ev;
none:
    PyErr_Clear();
    Py_XDECREF(sv);
    Py_XDECREF(ts);
    Py_XDECREF(t);
    Py_XDECREF(d);
    Py_DECREF(ev);
    Py_RETURN_NONE;
}

/* decode_many(lines, i, end, out) -> j: decode_plain of lines[i], lines[i + 1], ... appended to out while it gives
 * an event, up to end: the index of the first line it gives None for (end when none): what a loop of decode_event
 * over the lines gives for them, without a Python call a line. lines and out lists. */
static PyObject *
decode_many(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyList_CheckExact(args[0]) || !PyList_CheckExact(args[3])) {
        PyErr_SetString(PyExc_TypeError, "decode_many(lines, i, end, out): lines and out lists");
        return NULL;
    }
    PyObject *lines = args[0], *out = args[3];
    Py_ssize_t i = PyNumber_AsSsize_t(args[1], PyExc_OverflowError), end;
    if (i == -1 && PyErr_Occurred())
        return NULL;
    end = PyNumber_AsSsize_t(args[2], PyExc_OverflowError);
    if (end == -1 && PyErr_Occurred())
        return NULL;
    if (i < 0)
        i = 0;
    for (; i < end && i < PyList_GET_SIZE(lines); i++) {
        PyObject *raw = PyList_GET_ITEM(lines, i);
        Py_INCREF(raw);
        PyObject *ev = decode_plain(NULL, raw);
        Py_DECREF(raw);
        if (ev == NULL)
            return NULL;
        if (ev == Py_None) {
            Py_DECREF(ev);
            break;
        }
        int rc = PyList_Append(out, ev);
        Py_DECREF(ev);
        if (rc < 0)
            return NULL;
    }
    return PyLong_FromSsize_t(i);
}

static PyMethodDef methods[] = {
    {"instant", instant, METH_O, "rfc3339_reference(text) for a plain RFC 3339 text, else None."},
    {"plain", plain, METH_O, "ASCII bytes, no backslash or DEL, one brace (the first byte), at most one bracket."},
    {"decode_setup", decode_setup, METH_VARARGS, "decode_setup(decode, max_bytes): what decode_plain decodes with."},
    {"decode_plain", decode_plain, METH_O,
     "decode_plain(raw) -> decode_event(raw) for the usual message (all its shortcuts in one call), else None."},
    {"decode_many", (PyCFunction)(void (*)(void))decode_many, METH_FASTCALL,
     "decode_many(lines, i, end, out) -> the index of the first line from i that decode_plain leaves (end: none), "
     "the events of those before it appended to out."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "detector._decode",
    "Shortcuts of decode_event (detector/events.py), held to its pure-Python references.", -1, methods,
};

PyMODINIT_FUNC
PyInit__decode(void)
{
    return PyModule_Create(&module);
}
