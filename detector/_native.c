/* The per-feature numeric loops of detector/baseline.py and detector/scoring.py, compiled.
 *
 * Each function here is the transcription of a pure-Python reference kept beside it
 * (detector/baseline.py: _py_log_deviations, _py_learn, _py_learn_into, _py_deviate, _py_kind_learn;
 * detector/scoring.py: _py_neglogs; detector/engine.py: _py_rarities, _py_remember; detector/features.py:
 * _py_extract; models/store.py: Forest._py_leaves; detector/trace.py: _entry, as trace_entries builds a snapshot's
 * entries: tests/unit/test_alert_kernels.py), with the same IEEE double operations in the same order,
 * so the results are equal bit for bit (tests/unit/test_native.py holds them to it). The
 * build must therefore never reassociate or contract floating point: setup.py compiles this
 * file with -O2 -fno-fast-math -ffp-contract=off (no fused multiply-add).
 *
 * Inputs: feature rows as Python lists (or any sequence of floats), profiles as array('d').
 * Errors are those of the reference: math.log1p's ValueError, int()'s OverflowError and
 * ValueError on a non-finite deviation, ValueError on rows of different lengths.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "structmember.h"
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "_buffers.h"
#include "_scoring.h"

/* for the small helpers extract calls many times an event, which -O3 leaves as calls in a function that large */
#if defined(__GNUC__) || defined(__clang__)
#define ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define ALWAYS_INLINE inline
#endif

/* An array.array as CPython lays it out (Modules/arraymodule.c, the same from 3.8 to 3.13: its descriptor begins
 * with the typecode and the item size). array_exact is set at import only when an array made then reads here as
 * its buffer says (the same items, length, typecode, and an export counted where the buffer protocol counts it):
 * then get_doubles takes an exact array's buffer as array_buffer_getbuf does, and buf_release gives it back as
 * array_buffer_relbuf does, without the protocol's calls (15 an action: 2 % of a replay). The export is counted
 * the same way, so an array a kernel holds cannot be resized under it. */
typedef struct {
    char typecode;
    int itemsize;
} fb_arraydescr;

typedef struct {
    PyObject_VAR_HEAD
    char *ob_item;
    Py_ssize_t allocated;
    const fb_arraydescr *ob_descr;
    PyObject *weakreflist;
    Py_ssize_t ob_exports;
} fb_array;

static PyTypeObject *array_exact;  /* array.array when its layout reads as fb_array (array_fast_check), else NULL */
static double no_doubles[1];       /* an empty array's buffer (array_buffer_getbuf's emptybuf) */

static PyTypeObject *array_type;   /* array.array (pk_names, at import) */

/* array_exact set when an array('d') made here reads as fb_array the way its buffer says it is (after pk_names) */
static int
array_fast_check(void)
{
#if PY_VERSION_HEX >= 0x03080000 && PY_VERSION_HEX < 0x030E0000
    PyObject *t = (PyObject *)array_type;
    PyObject *a = t != NULL ? PyObject_CallFunction(t, "s(ddd)", "d", 1.0, 2.0, 3.0) : NULL;
    if (a == NULL) {
        PyErr_Clear();
        return 0;
    }
    const fb_array *f = (const fb_array *)a;
    Py_buffer v;
    int ok = 0;
    if (Py_TYPE(a) == (PyTypeObject *)t && PyObject_GetBuffer(a, &v, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) == 0) {
        ok = v.buf == f->ob_item && v.len == 3 * (Py_ssize_t)sizeof(double) && Py_SIZE(a) == 3
             && f->allocated >= 3 && f->weakreflist == NULL && f->ob_exports == 1 && f->ob_descr->typecode == 'd'
             && f->ob_descr->itemsize == (int)sizeof(double) && ((const double *)f->ob_item)[2] == 3.0;
        PyBuffer_Release(&v);
        ok = ok && f->ob_exports == 0;
    }
    PyErr_Clear();
    Py_DECREF(a);
    if (ok)
        array_exact = array_type;
#endif
    return 0;
}

/* PyBuffer_Release, an exact array's export given back here when array_exact reads it */
static ALWAYS_INLINE void
buf_release(Py_buffer *view)
{
    PyObject *o = view->obj;
    if (o != NULL && Py_TYPE(o) == array_exact) {
        ((fb_array *)o)->ob_exports--;
        view->obj = NULL;
        Py_DECREF(o);
    } else {
        PyBuffer_Release(view);
    }
}

/* an exact array's buffer into view as array_buffer_getbuf fills it (its items, one dimension, format fmt),
 * its export counted */
static ALWAYS_INLINE void
array_view(fb_array *a, Py_buffer *view, Py_ssize_t itemsize, const char *fmt)
{
    view->buf = a->ob_item != NULL ? (void *)a->ob_item : (void *)no_doubles;
    view->obj = Py_NewRef((PyObject *)a);
    view->len = Py_SIZE(a) * itemsize;
    view->readonly = 0;
    view->itemsize = itemsize;
    view->format = (char *)fmt;
    view->ndim = 1;
    view->shape = &((PyVarObject *)a)->ob_size;
    view->strides = &view->itemsize;
    view->suboffsets = NULL;
    view->internal = NULL;
    a->ob_exports++;
}

/* A writable (or read-only) C-contiguous buffer of doubles (array('d')). */
static int
get_doubles(PyObject *obj, Py_buffer *view, int writable, const char *what)
{
    if (Py_TYPE(obj) == array_exact && ((fb_array *)obj)->ob_descr->typecode == 'd') {
        array_view((fb_array *)obj, view, sizeof(double), "d");
        return 0;
    }
    int flags = PyBUF_FORMAT | PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0)
        return -1;
    if (view->itemsize != (Py_ssize_t)sizeof(double) || view->format == NULL || strcmp(view->format, "d") != 0) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_TypeError, "%s must be an array of doubles (array('d'))", what);
        return -1;
    }
    return 0;
}

/* get_items (detector/_buffers.h) of an exact array when array_exact reads it: its items' buffer as get_doubles takes
 * one, when its typecode is one of kinds and its items are itemsize bytes; anything else the protocol's way */
static int
get_array_items(PyObject *obj, Py_buffer *view, int writable, Py_ssize_t itemsize, const char *kinds,
                const char *what)
{
    if (Py_TYPE(obj) == array_exact) {
        fb_array *a = (fb_array *)obj;
        const char tc = a->ob_descr->typecode;
        if (a->ob_descr->itemsize == itemsize && tc != '\0' && strchr(kinds, tc) != NULL) {
            array_view(a, view, itemsize, NULL);  /* (the kernels that take these read the items only) */
            return 0;
        }
    }
    return get_items(obj, view, writable, itemsize, kinds, what);
}

/* The items of a row as doubles (a list or tuple: floats, or ints as float() sees them). */
static int
row_doubles(PyObject *seq, double *out, Py_ssize_t n)
{
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *o = items[i];
        double v;
        if (PyFloat_CheckExact(o)) {
            v = PyFloat_AS_DOUBLE(o);
        } else {
            v = PyFloat_AsDouble(o);
            if (v == -1.0 && PyErr_Occurred())
                return -1;
        }
        out[i] = v;
    }
    return 0;
}

#define MAX_ROW 256

/* The floats 0.0, 1.0 ... 7.0, shared by the rows the kernels make (lists of floats: an observation's values,
 * deviations, rarities), most of whose values are 0.0 (of 25: 9 values, 6 deviations, 20 rarities in a
 * trained replay). Equal values, the same bits (never -0.0); a float is immutable. */
#define N_SMALL_FLOATS 8
static PyObject *small_floats[N_SMALL_FLOATS];

static inline PyObject *
row_float(double v)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    if (bits == 0) {  /* 0.0 (not -0.0), the most common value, tested first */
        Py_INCREF(small_floats[0]);
        return small_floats[0];
    }
    if (v >= 1.0 && v < N_SMALL_FLOATS && v == (double)(int)v) {
        PyObject *f = small_floats[(int)v];
        Py_INCREF(f);
        return f;
    }
    return PyFloat_FromDouble(v);
}

/* A new list of the n floats of vals (row_float's: the small ones shared); NULL with an exception set */
static PyObject *
float_list(const double *vals, Py_ssize_t n)
{
    PyObject *list = PyList_New(n);
    if (list == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *o = row_float(vals[i]);
        if (o == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, o);
    }
    return list;
}

/* A kernel's row of n doubles as its result (a new reference): written into out (an array('d') of n doubles) and
 * out itself, or a new list of floats when out is NULL, or when out is not n long and `mismatch` is NULL (with
 * `mismatch`, a ValueError saying it); NULL with an exception set (`what` names out when it is not doubles). */
static PyObject *
row_result(PyObject *out, const double *vals, Py_ssize_t n, const char *what, const char *mismatch)
{
    if (out != NULL) {
        Py_buffer v;
        if (get_doubles(out, &v, 1, what) < 0)
            return NULL;
        int fits = v.len == n * (Py_ssize_t)sizeof(double);
        if (fits)
            memcpy(v.buf, vals, (size_t)n * sizeof(double));
        buf_release(&v);
        if (fits) {
            Py_INCREF(out);
            return out;
        }
        if (mismatch != NULL) {
            PyErr_SetString(PyExc_ValueError, mismatch);
            return NULL;
        }
    }
    return float_list(vals, n);
}

/* The rings below (RowPool's rows, list_new's lists, float_new's floats, record_new's records) hand out again an
 * object only the ring holds: ring_slot is a ring's next slot (its position moved on), ring_keep puts a new object
 * in a slot whose object something else still holds (left to its holders) and gives it back. */
static inline PyObject **
ring_slot(PyObject **ring, Py_ssize_t *next, Py_ssize_t size)
{
    PyObject **slot = ring + *next;
    if (++*next == size)
        *next = 0;
    return slot;
}

static inline PyObject *
ring_keep(PyObject **slot, PyObject *fresh)
{
    if (fresh != NULL) {
        Py_INCREF(fresh);
        Py_XSETREF(*slot, fresh);
    }
    return fresh;
}

/* ------------------------------------------------------------------------------------------------------
 * RowPool(template, size): a callable making rows as template.__copy__() does (an array('d'), the template's
 * values), that hands out again an array it made before once nothing else holds it (its reference count back
 * to the pool's own). A ring of `size` arrays: each call looks at the next slot; an array there that only the
 * pool holds, of the template's type and length, is filled with the template's values and returned; else a
 * new copy takes the slot (the array there, when something still holds it, is left to its holders). A batch's
 * rows (an action's x, log1p row, deviations and rarities) are dropped with the batch: the next batch's rows
 * are the same arrays, not four allocations and four frees an action. The kernels (row_take) skip the
 * filling: they write every value of the row they take.
 * ------------------------------------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    PyObject *tmpl;   /* the template (an array('d')) */
    PyObject *copy;   /* tmpl.__copy__ */
    Py_ssize_t size, next;
    PyObject **ring;  /* size slots, NULL until first taken */
} RowPool;

static PyTypeObject RowPoolType;

/* the next row of the pool (a new reference), its values the template's when `fill` (else whatever the row held
 * last: the caller writes them all); NULL with an exception set */
static PyObject *
pool_take(RowPool *p, int fill)
{
    PyObject **slot = ring_slot(p->ring, &p->next, p->size);
    PyObject *a = *slot;
    if (a != NULL && Py_REFCNT(a) == 1 && Py_SIZE(a) == Py_SIZE(p->tmpl)) {
        if (fill) {
            Py_buffer to, from;
            if (get_doubles(a, &to, 1, "row") < 0)
                return NULL;
            if (get_doubles(p->tmpl, &from, 0, "template") < 0) {
                buf_release(&to);
                return NULL;
            }
            if (to.len == from.len)
                memcpy(to.buf, from.buf, (size_t)to.len);
            buf_release(&from);
            buf_release(&to);
        }
        Py_INCREF(a);
        return a;
    }
    PyObject *b = PyObject_CallNoArgs(p->copy);
    if (b != NULL && Py_TYPE(b) != Py_TYPE(p->tmpl))  /* (a subclass's __copy__ could make anything: not kept) */
        return b;
    return ring_keep(slot, b);
}

/* a new row from make (a RowPool, or any callable): what make() gives */
static inline PyObject *
row_take(PyObject *make)
{
    if (Py_TYPE(make) == &RowPoolType)
        return pool_take((RowPool *)make, 0);
    return PyObject_CallNoArgs(make);
}

static PyObject *
RowPool_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *tmpl;
    Py_ssize_t size;
    static char *kw[] = {"template", "size", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "On:RowPool", kw, &tmpl, &size))
        return NULL;
    Py_buffer v;
    if (get_doubles(tmpl, &v, 0, "template") < 0)
        return NULL;
    buf_release(&v);
    if (size < 1) {
        PyErr_SetString(PyExc_ValueError, "RowPool: size must be at least 1");
        return NULL;
    }
    PyObject *copy = PyObject_GetAttrString(tmpl, "__copy__");
    if (copy == NULL)
        return NULL;
    RowPool *self = (RowPool *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(copy);
        return NULL;
    }
    Py_INCREF(tmpl);
    self->tmpl = tmpl, self->copy = copy, self->size = size, self->next = 0;  /* (dealloc's from here) */
    if ((self->ring = PyMem_Calloc((size_t)size, sizeof(PyObject *))) == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    return (PyObject *)self;
}

static void
RowPool_dealloc(RowPool *self)
{
    if (self->ring != NULL)
        for (Py_ssize_t i = 0; i < self->size; i++)
            Py_XDECREF(self->ring[i]);
    PyMem_Free(self->ring);
    Py_XDECREF(self->tmpl);
    Py_XDECREF(self->copy);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
RowPool_call(RowPool *self, PyObject *args, PyObject *kwds)
{
    if (PyTuple_GET_SIZE(args) != 0 || (kwds != NULL && PyDict_GET_SIZE(kwds) != 0)) {
        PyErr_SetString(PyExc_TypeError, "RowPool() takes no arguments");
        return NULL;
    }
    return pool_take(self, 1);
}

static PyObject *
RowPool_held(RowPool *self, void *Py_UNUSED(closure))
{
    Py_ssize_t n = 0;
    for (Py_ssize_t i = 0; i < self->size; i++)
        n += self->ring[i] != NULL;
    return PyLong_FromSsize_t(n);
}

static PyGetSetDef RowPool_getset[] = {
    {"held", (getter)RowPool_held, NULL, "arrays the pool holds (taken at least once, at most size)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject RowPoolType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "detector._native.RowPool",
    .tp_basicsize = sizeof(RowPool),
    .tp_dealloc = (destructor)RowPool_dealloc,
    .tp_call = (ternaryfunc)RowPool_call,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "RowPool(template, size): rows as template.__copy__() makes them, arrays nothing else holds made again.",
    .tp_getset = RowPool_getset,
    .tp_new = RowPool_new,
};

/* A new empty list, as PyList_New(0) makes one, from a ring of lists the kernels made before: a slot's list comes
 * back when only the ring holds it and it is still empty (nothing else can see it: a list nobody holds is as new
 * as a new one); else a new list takes the slot. An action's observation holds four lists (items met for the
 * first time, items peers adopted, destination hashes, new destinations), its reading one (manifest violations)
 * and its record one (reasons), nearly all empty and all dropped with the batch: the next batch's are the same
 * lists, without an allocation, a free and the collector's bookkeeping each. The ring's lists stay tracked by the
 * collector; held by the ring alone, they count as reachable and are never collected. */
#define LIST_RING 2048
static PyObject *list_ring[LIST_RING];
static Py_ssize_t list_next;

static PyObject *
list_new(void)
{
    PyObject **slot = ring_slot(list_ring, &list_next, LIST_RING);
    PyObject *l = *slot;
    if (l != NULL && Py_REFCNT(l) == 1 && PyList_GET_SIZE(l) == 0) {
        Py_INCREF(l);
        return l;
    }
    return ring_keep(slot, PyList_New(0));
}

/* PyFloat_FromDouble(v) for the floats an action leaves in its record, decision and state (its rounded score, its
 * evidence of harm, the profile's weight): from a ring of floats the kernels made before, a slot's float written
 * with v when only the ring holds it (nothing else can see it: a float nobody holds is as new as a new one), else a
 * new float taking the slot. Most die with their batch, past the float free list's hundred. */
#define FLOAT_RING 4096
static PyObject *float_ring[FLOAT_RING];
static Py_ssize_t float_next;

static PyObject *
float_new(double v)
{
    PyObject **slot = ring_slot(float_ring, &float_next, FLOAT_RING);
    PyObject *f = *slot;
    if (f != NULL && Py_REFCNT(f) == 1) {
        ((PyFloatObject *)f)->ob_fval = v;
        Py_INCREF(f);
        return f;
    }
    return ring_keep(slot, PyFloat_FromDouble(v));
}

/* float_new(v) for Python: a test of the ring (tests/unit/test_native.py) */
static PyObject *
new_float(PyObject *self, PyObject *arg)
{
    const double v = PyFloat_AsDouble(arg);
    if (v == -1.0 && PyErr_Occurred())
        return NULL;
    return float_new(v);
}

/* list_new() for Python: a test of the ring (tests/unit/test_native.py) */
static PyObject *
empty_list(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    return list_new();
}

/* A new row of the n doubles of vals made by calling `make` (an array('d') of n doubles, written), or a list of
 * floats when what it makes is not that; NULL with an exception set. */
static PyObject *
row_result_new(PyObject *make, const double *vals, Py_ssize_t n)
{
    PyObject *out = row_take(make);
    if (out == NULL)
        return NULL;
    Py_buffer v;
    if (get_doubles(out, &v, 1, "row_new()") < 0) {
        Py_DECREF(out);
        return NULL;
    }
    int fits = v.len == n * (Py_ssize_t)sizeof(double);
    if (fits)
        memcpy(v.buf, vals, (size_t)n * sizeof(double));
    buf_release(&v);
    if (fits)
        return out;
    Py_DECREF(out);
    return float_list(vals, n);
}

/* METH_FASTCALL argument helpers (what PyArg_ParseTuple's O, d, n, p, K do, without the argument tuple) */
static int
fc_count(const char *fn, Py_ssize_t nargs, Py_ssize_t lo, Py_ssize_t hi)
{
    if (nargs >= lo && nargs <= hi)
        return 0;
    if (lo == hi)
        PyErr_Format(PyExc_TypeError, "%s() takes exactly %zd arguments (%zd given)", fn, lo, nargs);
    else
        PyErr_Format(PyExc_TypeError, "%s() takes from %zd to %zd arguments (%zd given)", fn, lo, hi, nargs);
    return -1;
}

static int
fc_d(PyObject *o, double *v)
{
    *v = PyFloat_AsDouble(o);
    return *v == -1.0 && PyErr_Occurred() ? -1 : 0;
}

static int
fc_n(PyObject *o, Py_ssize_t *v)
{
    *v = PyNumber_AsSsize_t(o, PyExc_OverflowError);
    return *v == -1 && PyErr_Occurred() ? -1 : 0;
}

/* A row (a list or tuple of floats, an array('d'), or any sequence) into out (at most MAX_ROW values); its
 * length, or -1 with an exception set. */
static Py_ssize_t
row_of(PyObject *x, double *out, const char *what)
{
    if (!PyList_Check(x) && !PyTuple_Check(x) && PyObject_CheckBuffer(x)) {
        Py_buffer v;
        if (PyObject_GetBuffer(x, &v, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) == 0) {
            if (v.itemsize == (Py_ssize_t)sizeof(double) && v.format != NULL && strcmp(v.format, "d") == 0) {
                Py_ssize_t n = v.len / (Py_ssize_t)sizeof(double);
                if (n > MAX_ROW) {
                    buf_release(&v);
                    PyErr_SetString(PyExc_ValueError, "row too long for the native kernel");
                    return -1;
                }
                memcpy(out, v.buf, (size_t)n * sizeof(double));
                buf_release(&v);
                return n;
            }
            buf_release(&v);
        } else {
            PyErr_Clear();
        }
    }
    PyObject *seq = PySequence_Fast(x, what);
    if (seq == NULL)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > MAX_ROW) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "row too long for the native kernel");
        return -1;
    }
    int r = row_doubles(seq, out, n);
    Py_DECREF(seq);
    return r < 0 ? -1 : n;
}

/* The row in log1p units (xb, n values, in place) and its deviations zb[i] = (xb[i] - loc[i]) / max(scale[i],
 * floors[i]) for as many features as every buffer holds: that count, or -1 with Python's error where
 * math.log1p raises (baseline._py_log_deviations). */
static Py_ssize_t
log_row_deviations(double *xb, Py_ssize_t n, const Py_buffer *lv, const Py_buffer *sv, const Py_buffer *fv,
                   double *zb)
{
    Py_ssize_t m = n;
    Py_ssize_t nl = lv->len / (Py_ssize_t)sizeof(double), ns = sv->len / (Py_ssize_t)sizeof(double),
               nf = fv->len / (Py_ssize_t)sizeof(double);
    if (nl < m) m = nl;
    if (ns < m) m = ns;
    if (nf < m) m = nf;
    const double *loc = lv->buf, *scale = sv->buf, *floors = fv->buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        double v = xb[i];
        double r = v == 0.0 ? v : log1p(v);  /* log1p(+-0) is +-0 (C99 F.9.3.9); most features are 0 */
        if ((isnan(r) && !isnan(v)) || (isinf(r) && isfinite(v))) {
            PyErr_SetString(PyExc_ValueError, "math domain error");
            return -1;
        }
        xb[i] = r;
    }
    for (Py_ssize_t i = 0; i < m; i++) {
        double sc = scale[i], f = floors[i];
        zb[i] = (xb[i] - loc[i]) / (sc > f ? sc : f);
    }
    return m;
}

/* log_deviations(x, loc, scale, floors) -> (xl, z)
 *   xl = [log1p(v) for v in x]; z = [(v - m) / (s if s > f else f) for v, m, s, f in zip(xl, loc, scale, floors)] */
static PyObject *
log_deviations(PyObject *self, PyObject *args)
{
    PyObject *x, *loc_o, *scale_o, *floors_o;
    if (!PyArg_ParseTuple(args, "OOOO:log_deviations", &x, &loc_o, &scale_o, &floors_o))
        return NULL;
    PyObject *seq = PySequence_Fast(x, "x must be a sequence of floats");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    Py_buffer lv, sv, fv;
    PyObject *xl = NULL, *z = NULL, *res = NULL;
    double buf[MAX_ROW];
    if (n > MAX_ROW) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "row too long for the native kernel");
        return NULL;
    }
    if (row_doubles(seq, buf, n) < 0) {
        Py_DECREF(seq);
        return NULL;
    }
    Py_DECREF(seq);
    if (get_doubles(loc_o, &lv, 0, "loc") < 0)
        return NULL;
    if (get_doubles(scale_o, &sv, 0, "scale") < 0) {
        buf_release(&lv);
        return NULL;
    }
    if (get_doubles(floors_o, &fv, 0, "floors") < 0) {
        buf_release(&lv);
        buf_release(&sv);
        return NULL;
    }
    double zb[MAX_ROW];
    Py_ssize_t m = log_row_deviations(buf, n, &lv, &sv, &fv, zb);
    if (m < 0)
        goto done;
    xl = float_list(buf, n);
    z = float_list(zb, m);
    if (xl == NULL || z == NULL)
        goto done;
    res = PyTuple_Pack(2, xl, z);
done:
    Py_XDECREF(xl);
    Py_XDECREF(z);
    buf_release(&lv);
    buf_release(&sv);
    buf_release(&fv);
    return res;
}

/* One learning step of a profile (loc, scale: n doubles each, in place) towards the row xl in log1p units, with
 * step size a2 per unit of scale (baseline._py_learn_into) */
static void
learn_step_one(const double *xl, double *loc, double *scale, const double *floors, Py_ssize_t n, double a2,
               double z95, double up, double down)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        double v = xl[i], m = loc[i], s = scale[i], f = floors[i];
        double step = a2 * (s > f ? s : f);
        double hi = m + z95 * s;
        if (v > m)
            m += step;
        else if (v < m)
            m -= step;
        if (v > hi)
            hi += step * up;
        else
            hi -= step * down;
        loc[i] = m;
        scale[i] = hi > m ? (hi - m) / z95 : 0.0;
    }
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#define LEARN_AVX 1
/* learn_step_one four features at a time (AVX, where the CPU has it: learn_avx, checked at import). Every lane does
 * what the lines above do, in the same order, without branches: the same doubles bit for bit. vmaxpd(s, f) is
 * s > f ? s : f (f when either is NaN, as the comparison); each if is a comparison that picks between both
 * results (ordered: false with a NaN, as C's); a scale that is not hi > m is +0.0 (the mask's and). The quotient
 * of those lanes is computed and dropped. */
__attribute__((target("avx"))) static void
learn_step_avx(const double *xl, double *loc, double *scale, const double *floors, Py_ssize_t n, double a2,
               double z95, double up, double down)
{
    const __m256d va2 = _mm256_set1_pd(a2), vz = _mm256_set1_pd(z95), vup = _mm256_set1_pd(up),
                  vdown = _mm256_set1_pd(down);
    Py_ssize_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const __m256d v = _mm256_loadu_pd(xl + i), m = _mm256_loadu_pd(loc + i), s = _mm256_loadu_pd(scale + i),
                      f = _mm256_loadu_pd(floors + i);
        const __m256d step = _mm256_mul_pd(va2, _mm256_max_pd(s, f));
        const __m256d hi = _mm256_add_pd(m, _mm256_mul_pd(vz, s));
        const __m256d gt = _mm256_cmp_pd(v, m, _CMP_GT_OQ), lt = _mm256_cmp_pd(v, m, _CMP_LT_OQ);
        const __m256d m2 = _mm256_blendv_pd(_mm256_blendv_pd(m, _mm256_sub_pd(m, step), lt),
                                            _mm256_add_pd(m, step), gt);
        const __m256d up_ = _mm256_cmp_pd(v, hi, _CMP_GT_OQ);
        const __m256d hi2 = _mm256_blendv_pd(_mm256_sub_pd(hi, _mm256_mul_pd(step, vdown)),
                                             _mm256_add_pd(hi, _mm256_mul_pd(step, vup)), up_);
        const __m256d sc = _mm256_and_pd(_mm256_cmp_pd(hi2, m2, _CMP_GT_OQ),
                                         _mm256_div_pd(_mm256_sub_pd(hi2, m2), vz));
        _mm256_storeu_pd(loc + i, m2);
        _mm256_storeu_pd(scale + i, sc);
    }
    learn_step_one(xl + i, loc + i, scale + i, floors + i, n - i, a2, z95, up, down);
}
#endif
static int learn_avx;  /* learn_step_avx runs (the CPU has AVX: learn_avx_init) */

static void
learn_avx_init(void)
{
#ifdef LEARN_AVX
    __builtin_cpu_init();
    learn_avx = __builtin_cpu_supports("avx");
#endif
}

/* learn_step_one, four features at a time where the CPU has AVX (the profile's 25: 24 and one) */
static inline void
learn_step(const double *xl, double *loc, double *scale, const double *floors, Py_ssize_t n, double a2, double z95,
           double up, double down)
{
#ifdef LEARN_AVX
    if (learn_avx) {
        learn_step_avx(xl, loc, scale, floors, n, a2, z95, up, down);
        return;
    }
#endif
    learn_step_one(xl, loc, scale, floors, n, a2, z95, up, down);
}

/* learn(xl, loc, scale, floors, a2, z95, up, down) -> (loc', scale')
 *   new arrays (copies of loc and scale) moved towards xl as Baseline.learn_log does. */
static PyObject *
learn_(PyObject *const *args, Py_ssize_t nargs, int in_place)
{
    PyObject *x, *loc_o, *scale_o, *floors_o;
    double a2, z95, up, down;
    if (fc_count(in_place ? "learn_into" : "learn", nargs, 8, 8) < 0)
        return NULL;
    x = args[0], loc_o = args[1], scale_o = args[2], floors_o = args[3];
    if (fc_d(args[4], &a2) < 0 || fc_d(args[5], &z95) < 0 || fc_d(args[6], &up) < 0 || fc_d(args[7], &down) < 0)
        return NULL;
    double buf[MAX_ROW];
    Py_ssize_t n = row_of(x, buf, "xl must be a sequence of floats");
    if (n < 0)
        return NULL;
    PyObject *nloc, *nscale;
    if (in_place) {
        nloc = loc_o;
        nscale = scale_o;
        Py_INCREF(nloc);
        Py_INCREF(nscale);
    } else {
        if ((nloc = PyObject_CallMethod(loc_o, "__copy__", NULL)) == NULL)
            return NULL;
        if ((nscale = PyObject_CallMethod(scale_o, "__copy__", NULL)) == NULL) {
            Py_DECREF(nloc);
            return NULL;
        }
    }
    Py_buffer lv, sv, fv;
    PyObject *res = NULL;
    if (get_doubles(nloc, &lv, 1, "loc") < 0)
        goto fail0;
    if (get_doubles(nscale, &sv, 1, "scale") < 0)
        goto fail1;
    if (get_doubles(floors_o, &fv, 0, "floors") < 0)
        goto fail2;
    if (lv.len != n * (Py_ssize_t)sizeof(double) || sv.len != lv.len || fv.len != lv.len) {
        PyErr_SetString(PyExc_ValueError, "learn: the row, loc, scale and floors differ in length");
        goto fail3;
    }
    learn_step(buf, lv.buf, sv.buf, fv.buf, n, a2, z95, up, down);
    if (in_place) {
        Py_INCREF(Py_None);
        res = Py_None;
    } else {
        res = PyTuple_Pack(2, nloc, nscale);
    }
fail3:
    buf_release(&fv);
fail2:
    buf_release(&sv);
fail1:
    buf_release(&lv);
fail0:
    Py_DECREF(nloc);
    Py_DECREF(nscale);
    return res;
}

static PyObject *
learn(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return learn_(args, nargs, 0);
}

/* learn_into(xl, loc, scale, floors, a2, z95, up, down) -> None
 *   learn's step written into loc and scale themselves (baseline._py_learn_into) */
static PyObject *
learn_into(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return learn_(args, nargs, 1);
}

/* -log10 p of one feature's deviation v from its tail table t (n values) and the slope beyond it, as
 * FeatureTails._py_neglogs reads it: 0 at or below the baseline; -1 with Python's error for int() of a NaN
 * or an infinity. */
static int
tail_neglog(double v, double spz, const double *t, Py_ssize_t n, double zmax, double slope, double *out)
{
    if (v <= 0.0) {
        *out = 0.0;
        return 0;
    }
    double p = v * spz;
    if (isnan(p)) {
        PyErr_SetString(PyExc_ValueError, "cannot convert float NaN to integer");
        return -1;
    }
    if (isinf(p)) {
        PyErr_SetString(PyExc_OverflowError, "cannot convert float infinity to integer");
        return -1;
    }
    /* int(p) + 1 < n  <=>  p < n - 1 (p > 0) */
    *out = p < (double)(n - 1) ? t[(Py_ssize_t)p + 1] : t[n - 1] + (v - zmax) * slope;
    return 0;
}

/* neglogs(z, tables, slopes, n, spz, zmax) -> list
 *   tables: the per-feature tables laid end to end (n values each). As FeatureTails.neglogs. */
static PyObject *
neglogs(PyObject *self, PyObject *args)
{
    PyObject *z_o, *tables_o, *slopes_o;
    Py_ssize_t n;
    double spz, zmax;
    if (!PyArg_ParseTuple(args, "OOOndd:neglogs", &z_o, &tables_o, &slopes_o, &n, &spz, &zmax))
        return NULL;
    PyObject *seq = PySequence_Fast(z_o, "z must be a sequence of floats");
    if (seq == NULL)
        return NULL;
    Py_ssize_t k = PySequence_Fast_GET_SIZE(seq);
    double buf[MAX_ROW];
    if (k > MAX_ROW) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "row too long for the native kernel");
        return NULL;
    }
    if (row_doubles(seq, buf, k) < 0) {
        Py_DECREF(seq);
        return NULL;
    }
    Py_DECREF(seq);
    Py_buffer tv, sv;
    if (get_doubles(tables_o, &tv, 0, "tables") < 0)
        return NULL;
    if (get_doubles(slopes_o, &sv, 0, "slopes") < 0) {
        buf_release(&tv);
        return NULL;
    }
    PyObject *out = NULL;
    Py_ssize_t nfeat = sv.len / (Py_ssize_t)sizeof(double);
    if (n < 1 || tv.len != nfeat * n * (Py_ssize_t)sizeof(double)) {
        PyErr_SetString(PyExc_ValueError, "neglogs: tables must hold n values per slope");
        goto done;
    }
    if (nfeat < k)
        k = nfeat;
    const double *tables = tv.buf, *slopes = sv.buf;
    double neg[MAX_ROW];
    for (Py_ssize_t i = 0; i < k; i++)
        if (tail_neglog(buf[i], spz, tables + i * n, n, zmax, slopes[i], &neg[i]) < 0)
            goto done;
    out = float_list(neg, k);
done:
    buf_release(&tv);
    buf_release(&sv);
    return out;
}


/* ------------------------------------------------------------------------------------------------------
 * extract(st, ev, policy, adopted) -> Observation | None
 *
 * detector/features.py ``_py_extract`` compiled: the same windows, sketches, task slots and feature row,
 * the same float operations in the same order. Names, classification and word lists stay in Python
 * (policy.classify, _words, destination_family, _is_outsider, policy.is_untrusted_source are called
 * back exactly where the reference calls them); hashing (CRC-32 of the UTF-8, as zlib.crc32) and the
 * Bloom filters' bits are done here. Returns None, before changing anything, for a state or an event
 * outside what the engine itself writes (a sketch that is not a non-negative int, a task slot holding a
 * value that is not a 32-bit count, weights that are not floats, a broadcast reach over 2**32, ...): the
 * caller then runs the reference, so the result is the reference's in every case.
 * ------------------------------------------------------------------------------------------------------ */

/* zlib's CRC-32: polynomial P = x^32 + x^26 + x^23 + x^22 + x^16 + x^12 + x^11 + x^10 + x^8 + x^7 + x^5 + x^4
 * + x^2 + x + 1, bit-reflected (bit i of a 32-bit value is the coefficient of x^(31 - i); x^32 is implied) */
#define CRC_POLY 0xEDB88320u

static uint32_t crc_table[8][256];

static void
crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? CRC_POLY ^ (c >> 1) : c >> 1;
        crc_table[0][i] = c;
    }
    /* slicing by 8: table k advances a byte's CRC past k more zero bytes */
    for (int k = 1; k < 8; k++)
        for (uint32_t i = 0; i < 256; i++)
            crc_table[k][i] = (crc_table[k - 1][i] >> 8) ^ crc_table[0][crc_table[k - 1][i] & 0xFF];
}

static inline uint32_t
le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The CRC register s (zlib's crc ^ 0xFFFFFFFF) past n more bytes, eight bytes a step */
static inline uint32_t
crc_slice(uint32_t s, const unsigned char *p, Py_ssize_t n)
{
    while (n >= 8) {
        uint32_t lo = s ^ le32(p), hi = le32(p + 4);
        s = crc_table[7][lo & 0xFF] ^ crc_table[6][(lo >> 8) & 0xFF] ^ crc_table[5][(lo >> 16) & 0xFF]
            ^ crc_table[4][lo >> 24] ^ crc_table[3][hi & 0xFF] ^ crc_table[2][(hi >> 8) & 0xFF]
            ^ crc_table[1][(hi >> 16) & 0xFF] ^ crc_table[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    if (n >= 4) {  /* (most names end in a few bytes: four of them a step too) */
        uint32_t lo = s ^ le32(p);
        s = crc_table[3][lo & 0xFF] ^ crc_table[2][(lo >> 8) & 0xFF] ^ crc_table[1][(lo >> 16) & 0xFF]
            ^ crc_table[0][lo >> 24];
        p += 4;
        n -= 4;
    }
    while (n-- > 0)
        s = crc_table[0][(s ^ *p++) & 0xFF] ^ (s >> 8);
    return s;
}

/* Folding with carry-less multiplication (PCLMULQDQ), for buffers of CRC_FOLD_MIN bytes or more on an x86-64
 * CPU that has it (checked once, at import: crc_fold_ok); the tables above do the rest and every other case.
 *
 * Written from the algebra (as in Intel's paper "Fast CRC Computation for Generic Polynomials Using PCLMULQDQ
 * Instruction", 2009). Reflected, a message's first byte holds its highest-degree coefficients: 16 bytes loaded
 * into a 128-bit register give the polynomial whose x^(127 - k) coefficient is bit k of the register; its low
 * 64-bit half H holds the degrees 127..64, its high half L the degrees 63..0 (each 64-bit half as a polynomial
 * of degree < 64: bit i is x^(63 - i)). The register s, XORed into the first 4 bytes, adds s * x^(8n - 32) to
 * an n-byte message M, and then the new register is (M * x^32) mod P, as the tables give it. Mod P:
 *   - a block B = H x^64 + L followed by F more bits counts as B x^F = H x^(F+64) + L x^F
 *     == H (x^(F+64) mod P) + L (x^F mod P): a polynomial of degree < 96, XORed into the block F bits further
 *     ("folding" B by F: four blocks at once by F = 512, then one by F = 128, then one left);
 *   - the carry-less product of two such halves, a and b, is a * b * x in the 128-bit register (its bit k is
 *     the sum over i + j = k of a_i b_j: degree 63 - i + 63 - j = 126 - k, where the register says 127 - k),
 *     so the operand for x^e is x^(e-1) mod P (crc_k(e): its degree 31..0 coefficients in bits 32..63);
 *   - the last block B gives B x^32 = H x^96 + L x^32 == H (x^96 mod P) + L x^32 (degree < 96), whose top 32
 *     coefficients T (x^95..x^64) fold as T (x^64 mod P) into the low 64: Z, of degree < 64, == B x^32;
 *   - Barrett reduction: Z mod P = Z + q P with q = floor(Z / P) = floor(floor(Z / x^32) * mu / x^32), exact for
 *     deg Z < 64 with mu = floor(x^64 / P) (degree 32, like P); the register is the degree 31..0 of Z + q P.
 * The constants are computed from CRC_POLY at import (crc_fold_init). tests/unit/test_crc_fold.py compares the
 * two paths with zlib. */
#if defined(__x86_64__) && defined(__GNUC__)
#define CRC_FOLD 1
#include <immintrin.h>

/* bytes: from 32 on, folding is as fast as the tables when each CRC waits for the one before (32 bytes: 12 ns
 * both) and twice as fast when they overlap (3 ns against 6); below it the tables are faster (24 bytes: 8 ns
 * against 12, waiting) */
#define CRC_FOLD_MIN 32

static int crc_fold_ok;
/* {lo, hi} pairs of 64-bit operands, each the x^(e-1) mod P above: fold by 512, fold by 128, 128 -> 64 bits
 * ({x^96, x^64}), and Barrett's {mu, P} as 33-bit reflected polynomials (bit j is x^(32 - j)) */
static uint64_t crc_k512[2], crc_k128[2], crc_k96[2], crc_kmu[2];

/* x^e mod P, reflected (bit i is x^(31 - i)): x^0 multiplied by x e times, as the table's bytes are */
static uint32_t
crc_xpow(int e)
{
    uint32_t v = 0x80000000u;  /* x^0 */
    while (e-- > 0)
        v = v & 1 ? CRC_POLY ^ (v >> 1) : v >> 1;
    return v;
}

/* the 64-bit operand that multiplies a half by x^e mod P */
static uint64_t
crc_k(int e)
{
    return (uint64_t)crc_xpow(e - 1) << 32;
}

/* v's low w bits in the reverse order */
static uint64_t
crc_reflect(uint64_t v, int w)
{
    uint64_t r = 0;
    for (int i = 0; i < w; i++, v >>= 1)
        r = r << 1 | (v & 1);
    return r;
}

static void
crc_fold_init(void)
{
    __builtin_cpu_init();
    crc_fold_ok = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
    crc_k512[0] = crc_k(512 + 64);
    crc_k512[1] = crc_k(512);
    crc_k128[0] = crc_k(128 + 64);
    crc_k128[1] = crc_k(128);
    crc_k96[0] = crc_k(96);
    crc_k96[1] = crc_k(64);
    /* mu = floor(x^64 / P) by long division, in the ordinary order (bit d is x^d; P's x^32 is bit 32) */
    const uint64_t p = crc_reflect(CRC_POLY, 32) | (uint64_t)1 << 32;
    uint64_t r = 0, mu = 0;
    for (int d = 64; d >= 0; d--) {  /* the dividend's bits, x^64 down to x^0 (mu's bits over x^32 are 0) */
        r = r << 1 | (d == 64);
        mu <<= 1;
        if (r >> 32 & 1) {
            r ^= p;
            mu |= 1;
        }
    }
    crc_kmu[0] = crc_reflect(mu, 33);
    crc_kmu[1] = crc_reflect(p, 33);
}

/* The register s past n bytes at p, n a multiple of 16 and at least 16 */
__attribute__((target("pclmul,sse4.1"))) static uint32_t
crc_fold(uint32_t s, const unsigned char *p, Py_ssize_t n)
{
    const __m128i k512 = _mm_loadu_si128((const __m128i *)crc_k512), k128 = _mm_loadu_si128((const __m128i *)crc_k128);
#define FOLD(x, k) _mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00), _mm_clmulepi64_si128(x, k, 0x11))
#define LOAD(q) _mm_loadu_si128((const __m128i *)(q))
    __m128i x = _mm_xor_si128(LOAD(p), _mm_cvtsi32_si128((int)s));
    p += 16;
    n -= 16;
    if (n >= 48) {  /* four blocks at once, 64 bytes apart */
        __m128i x1 = LOAD(p), x2 = LOAD(p + 16), x3 = LOAD(p + 32);
        p += 48;
        n -= 48;
        for (; n >= 64; p += 64, n -= 64) {
            x = _mm_xor_si128(FOLD(x, k512), LOAD(p));
            x1 = _mm_xor_si128(FOLD(x1, k512), LOAD(p + 16));
            x2 = _mm_xor_si128(FOLD(x2, k512), LOAD(p + 32));
            x3 = _mm_xor_si128(FOLD(x3, k512), LOAD(p + 48));
        }
        x = _mm_xor_si128(FOLD(x, k128), x1);
        x = _mm_xor_si128(FOLD(x, k128), x2);
        x = _mm_xor_si128(FOLD(x, k128), x3);
    }
    for (; n >= 16; p += 16, n -= 16)
        x = _mm_xor_si128(FOLD(x, k128), LOAD(p));
#undef FOLD
#undef LOAD
    /* 128 -> 96 -> 64 bits: H (x^96 mod P) + L x^32 (L moved to bits 32..95), then its top 32 bits (32..63) times
     * x^64 mod P, XORed into the low 64 (bits 64..127, moved to 0..63: z) */
    const __m128i k96 = _mm_loadu_si128((const __m128i *)crc_k96), kmu = _mm_loadu_si128((const __m128i *)crc_kmu);
    const __m128i low32 = _mm_cvtsi32_si128(-1);
    x = _mm_xor_si128(_mm_clmulepi64_si128(x, k96, 0x00), _mm_slli_si128(_mm_srli_si128(x, 8), 4));
    const __m128i z = _mm_srli_si128(_mm_xor_si128(_mm_clmulepi64_si128(x, k96, 0x10), x), 8);
    /* Barrett: floor(z / x^32) is z's bits 0..31 (x^63..x^32), times mu; its degree 63..32 (bits 0..31) are q */
    const __m128i q = _mm_and_si128(_mm_clmulepi64_si128(_mm_and_si128(z, low32), kmu, 0x00), low32);
    return (uint32_t)_mm_extract_epi32(_mm_xor_si128(z, _mm_clmulepi64_si128(q, kmu, 0x10)), 1);
}
#endif

/* zlib.crc32(buf, crc) */
static uint32_t
crc_update(uint32_t crc, const char *buf, Py_ssize_t n)
{
    const unsigned char *p = (const unsigned char *)buf;
    uint32_t s = crc ^ 0xFFFFFFFFu;
#ifdef CRC_FOLD
    if (n >= CRC_FOLD_MIN && crc_fold_ok) {
        s = crc_fold(s, p, n & ~(Py_ssize_t)15);
        p += n & ~(Py_ssize_t)15;
        n &= 15;
    }
#endif
    return crc_slice(s, p, n) ^ 0xFFFFFFFFu;
}

/* crc32(data, crc=0) -> int: zlib.crc32 (for the tests) */
static PyObject *
crc32_(PyObject *self, PyObject *args)
{
    Py_buffer b;
    unsigned int crc = 0;
    if (!PyArg_ParseTuple(args, "y*|I:crc32", &b, &crc))
        return NULL;
    uint32_t r = crc_update(crc, b.buf, b.len);
    buf_release(&b);
    return PyLong_FromUnsignedLong(r);
}

/* crc32_tables(data, crc=0) -> int: zlib.crc32 by the tables alone, whatever the length (for the tests) */
static PyObject *
crc32_tables(PyObject *self, PyObject *args)
{
    Py_buffer b;
    unsigned int crc = 0;
    if (!PyArg_ParseTuple(args, "y*|I:crc32_tables", &b, &crc))
        return NULL;
    uint32_t r = crc_slice(crc ^ 0xFFFFFFFFu, b.buf, b.len) ^ 0xFFFFFFFFu;
    buf_release(&b);
    return PyLong_FromUnsignedLong(r);
}

/* crc32_fold(data, crc=0) -> int: zlib.crc32 folding every whole 16 bytes when there are 16 or more (for the
 * tests; RuntimeError where crc_folding is False) */
static PyObject *
crc32_fold(PyObject *self, PyObject *args)
{
    Py_buffer b;
    unsigned int crc = 0;
    if (!PyArg_ParseTuple(args, "y*|I:crc32_fold", &b, &crc))
        return NULL;
    uint32_t s = crc ^ 0xFFFFFFFFu;
    const unsigned char *p = b.buf;
    Py_ssize_t n = b.len;
#ifdef CRC_FOLD
    if (crc_fold_ok) {
        if (n >= 16) {
            s = crc_fold(s, p, n & ~(Py_ssize_t)15);
            p += n & ~(Py_ssize_t)15;
            n &= 15;
        }
    } else
#endif
    {
        buf_release(&b);
        PyErr_SetString(PyExc_RuntimeError, "crc32_fold: this CPU (or build) has no carry-less multiplication");
        return NULL;
    }
    uint32_t r = crc_slice(s, p, n) ^ 0xFFFFFFFFu;
    buf_release(&b);
    return PyLong_FromUnsignedLong(r);
}

/* The UTF-8 of a str as stable_hash encodes it ("surrogatepass"); *tmp holds a bytes object to release. */
static int
utf8_of_slow(PyObject *s, const char **p, Py_ssize_t *n, PyObject **tmp)
{
    *tmp = NULL;
    if (!PyUnicode_Check(s)) {
        PyErr_SetString(PyExc_TypeError, "expected a str");
        return -1;
    }
    *p = PyUnicode_AsUTF8AndSize(s, n);
    if (*p != NULL)
        return 0;
    if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
        return -1;
    PyErr_Clear();
    *tmp = PyUnicode_AsEncodedString(s, "utf-8", "surrogatepass");
    if (*tmp == NULL)
        return -1;
    *p = PyBytes_AS_STRING(*tmp);
    *n = PyBytes_GET_SIZE(*tmp);
    return 0;
}

/* utf8_of_slow, inlined for a compact ASCII str (nearly every name extract hashes): its characters are its UTF-8,
 * which PyUnicode_AsUTF8AndSize would answer after a call and some checks */
static ALWAYS_INLINE int
utf8_of(PyObject *s, const char **p, Py_ssize_t *n, PyObject **tmp)
{
    if (PyUnicode_Check(s) && PyUnicode_IS_COMPACT_ASCII(s)) {
        *tmp = NULL;
        *p = (const char *)PyUnicode_DATA(s);
        *n = PyUnicode_GET_LENGTH(s);
        return 0;
    }
    return utf8_of_slow(s, p, n, tmp);
}

/* a == b (1, 0; -1 with an exception) for a and b known to be str: two compact ASCII str compared here, any
 * other pair by PyObject_RichCompareBool (the same answer: an ASCII str equals only str of the same characters) */
static ALWAYS_INLINE int
str_eq(PyObject *a, PyObject *b)
{
    if (a == b)
        return 1;
    if (PyUnicode_CheckExact(a) && PyUnicode_CheckExact(b) && PyUnicode_IS_COMPACT_ASCII(a)
            && PyUnicode_IS_COMPACT_ASCII(b))
        return PyUnicode_GET_LENGTH(a) == PyUnicode_GET_LENGTH(b)
               && memcmp(PyUnicode_DATA(a), PyUnicode_DATA(b), (size_t)PyUnicode_GET_LENGTH(a)) == 0;
    return PyObject_RichCompareBool(a, b, Py_EQ);
}

/* s.startswith(prefix) (1, 0; -1 with an exception) for str s and prefix: compact ASCII ones compared here */
static inline int
str_starts(PyObject *s, PyObject *prefix)
{
    if (PyUnicode_IS_COMPACT_ASCII(s) && PyUnicode_IS_COMPACT_ASCII(prefix)) {
        Py_ssize_t m = PyUnicode_GET_LENGTH(prefix);
        return m <= PyUnicode_GET_LENGTH(s) && memcmp(PyUnicode_DATA(s), PyUnicode_DATA(prefix), (size_t)m) == 0;
    }
    return (int)PyUnicode_Tailmatch(s, prefix, 0, PY_SSIZE_T_MAX, -1);
}

/* The stop words (a tuple of ASCII str) are valid for scan_words: -1 with TypeError otherwise. */
static int
stop_check(PyObject *stop)
{
    for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(stop); j++)
        if (!PyUnicode_CheckExact(PyTuple_GET_ITEM(stop, j)) || !PyUnicode_IS_ASCII(PyTuple_GET_ITEM(stop, j))) {
            PyErr_SetString(PyExc_TypeError, "words: stop words must be ASCII str");
            return -1;
        } else if (PyUnicode_GET_LENGTH(PyTuple_GET_ITEM(stop, j)) > 64) {
            PyErr_SetString(PyExc_TypeError, "words: stop words must be at most 64 letters");
            return -1;
        }
    return 0;
}

/* The stop words scan_words was last given, packed (when there are at most 64, none longer than 8 letters):
 * a word is one 64-bit integer and its length, looked up in an open-addressed table of 128 (a few compares a
 * word, where comparing with each stop word cost some 20). */
static PyObject *packed_stop;
static int packed_n = -1;  /* -1: not packed, compared one by one */
static uint64_t packed_lens;
#define STOP_SLOTS 128
static struct { uint64_t v; unsigned char len, used; } stop_slot[STOP_SLOTS];

static inline unsigned
stop_home(uint64_t v, Py_ssize_t len)
{
    return (unsigned)(((v ^ (uint64_t)len) * 0x9E3779B97F4A7C15ull) >> 57);  /* 0 .. STOP_SLOTS - 1 */
}

static void
pack_stop(PyObject *stop)
{
    if (stop == packed_stop)
        return;
    Py_INCREF(stop);
    Py_XSETREF(packed_stop, stop);
    Py_ssize_t n = PyTuple_GET_SIZE(stop);
    packed_n = -1;
    packed_lens = 0;
    memset(stop_slot, 0, sizeof stop_slot);
    if (n > 64)
        return;
    for (Py_ssize_t j = 0; j < n; j++) {
        PyObject *w = PyTuple_GET_ITEM(stop, j);
        Py_ssize_t len = PyUnicode_GET_LENGTH(w);
        if (len > 8)
            return;
        uint64_t v = 0;
        memcpy(&v, PyUnicode_DATA(w), (size_t)len);
        unsigned i = stop_home(v, len);
        while (stop_slot[i].used && !(stop_slot[i].v == v && stop_slot[i].len == len))
            i = (i + 1) & (STOP_SLOTS - 1);
        stop_slot[i].v = v;
        stop_slot[i].len = (unsigned char)len;
        stop_slot[i].used = 1;
        packed_lens |= (uint64_t)1 << len;
    }
    packed_n = (int)n;
}

/* whether the word w[:len] is one of the stop words (checked by stop_check, packed by pack_stop) */
static inline int
is_stop(PyObject *stop, const char *w, Py_ssize_t len)
{
    if (packed_n >= 0) {
        if (len > 8 || !(packed_lens >> len & 1))
            return 0;
        uint64_t v = 0;
        memcpy(&v, w, (size_t)len);
        for (unsigned i = stop_home(v, len); stop_slot[i].used; i = (i + 1) & (STOP_SLOTS - 1))
            if (stop_slot[i].v == v && stop_slot[i].len == len)
                return 1;
        return 0;
    }
    for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(stop); j++) {
        PyObject *sw = PyTuple_GET_ITEM(stop, j);
        if (PyUnicode_GET_LENGTH(sw) == len && memcmp(PyUnicode_DATA(sw), w, (size_t)len) == 0)
            return 1;
    }
    return 0;
}

/* features._py_words_of on ASCII bytes: the CRC-32 of each run of two or more letters a-z that is not in
 * `stop` (checked by stop_check), at most 16, into found; their number. With `lower`, A-Z read as a-z first
 * (str.lower() of ASCII text). */
static int
scan_words(const char *p, Py_ssize_t n, PyObject *stop, int lower, uint64_t *found)
{
    /* a letter's lower-case form (A-Z only when lower), 0 for anything else */
    static unsigned char letter[2][256];
    if (!letter[0]['a'])
        for (int c = 'a'; c <= 'z'; c++) {
            letter[0][c] = letter[1][c] = (unsigned char)c;
            letter[1][c - 32] = (unsigned char)c;
        }
    const unsigned char *lt = letter[lower ? 1 : 0], *u = (const unsigned char *)p;
    pack_stop(stop);
    char buf[64];
    int k = 0;
    Py_ssize_t i = 0;
    while (i < n && k < 16) {
        /* the next run of letters, copied lower-cased as it is read (a run longer than buf wraps around in it
         * unchecked: it is hashed again from the text below) */
        while (i < n && !lt[u[i]])
            i++;
        Py_ssize_t start = i;
        unsigned char ch;
        while (i < n && (ch = lt[u[i]]) != 0) {
            buf[(i - start) & ((Py_ssize_t)sizeof buf - 1)] = (char)ch;
            i++;
        }
        Py_ssize_t len = i - start;
        if (len < 2)
            continue;
        if (len > (Py_ssize_t)sizeof buf) {  /* longer than any stop word: hashed in pieces, lower-cased */
            uint32_t crc = 0;
            for (Py_ssize_t off = 0; off < len; off += (Py_ssize_t)sizeof buf) {
                Py_ssize_t m = len - off < (Py_ssize_t)sizeof buf ? len - off : (Py_ssize_t)sizeof buf;
                for (Py_ssize_t j = 0; j < m; j++)
                    buf[j] = (char)lt[u[start + off + j]];
                crc = crc_update(crc, buf, m);
            }
            found[k++] = crc;
            continue;
        }
        if (!is_stop(stop, buf, len))
            found[k++] = crc_update(0, buf, len);
    }
    return k;
}

/* The part of a name _words reads (ASCII): what follows its first ":" (the whole name when nothing does),
 * up to its last "@" when it has one. */
static void
text_local(const char *p, Py_ssize_t n, const char **lp, Py_ssize_t *ln)
{
    const char *c = memchr(p, ':', (size_t)n);
    if (c != NULL && c + 1 < p + n) {
        n = (p + n) - (c + 1);
        p = c + 1;
    }
#ifdef __GLIBC__
    const char *at = memrchr(p, '@', (size_t)n);
    if (at != NULL)
        n = at - p;
#else
    for (Py_ssize_t i = n - 1; i >= 0; i--)
        if (p[i] == '@') {
            n = i;
            break;
        }
#endif
    *lp = p;
    *ln = n;
}

static PyObject *
words_tuple(const uint64_t *found, int k)
{
    PyObject *out = PyTuple_New(k);
    if (out == NULL)
        return NULL;
    for (int j = 0; j < k; j++) {
        PyObject *v = PyLong_FromUnsignedLongLong(found[j]);
        if (v == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(out, j, v);
    }
    return out;
}

/* words(local, stop) -> features._py_words_of(local, stop): the CRC-32 of each run of two or more ASCII
 * letters a-z in `local` (already lower-cased) that is not in `stop` (a tuple of str), at most 16; None when
 * `local` is not ASCII (lower() and the regex are left to the reference). */
static PyObject *
words(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyUnicode_CheckExact(args[0]) || !PyTuple_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "words(local: str, stop: tuple)");
        return NULL;
    }
    PyObject *text = args[0], *stop = args[1];
    if (!PyUnicode_IS_ASCII(text))
        Py_RETURN_NONE;
    if (stop_check(stop) < 0)
        return NULL;
    uint64_t found[16];
    int k = scan_words((const char *)PyUnicode_DATA(text), PyUnicode_GET_LENGTH(text), stop, 0, found);
    return words_tuple(found, k);
}

/* text_words(text, stop) -> features._py_text_words(text): the words (as words() gives them) of the part of a
 * name _words reads, lower-cased; None when `text` is not ASCII. */
static PyObject *
text_words(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyUnicode_CheckExact(args[0]) || !PyTuple_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "text_words(text: str, stop: tuple)");
        return NULL;
    }
    PyObject *text = args[0], *stop = args[1];
    if (!PyUnicode_IS_ASCII(text))
        Py_RETURN_NONE;
    if (stop_check(stop) < 0)
        return NULL;
    const char *lp;
    Py_ssize_t ln;
    text_local((const char *)PyUnicode_DATA(text), PyUnicode_GET_LENGTH(text), &lp, &ln);
    uint64_t found[16];
    int k = scan_words(lp, ln, stop, 1, found);
    return words_tuple(found, k);
}

/* stable_hash(destination_family(dest)) for an ASCII dest (1; 0: not ASCII, left to the reference): the
 * scheme (before the first ":"), then ":@" and the domain after the address's last "@" lower-cased, or ":" and
 * the host of a URL (after the first "://", up to the next "/") lower-cased, or ":" alone. */
static int
family_hash_of(PyObject *dest, uint32_t *h)
{
    if (!PyUnicode_IS_ASCII(dest))
        return 0;
    const char *p = (const char *)PyUnicode_DATA(dest);
    Py_ssize_t n = PyUnicode_GET_LENGTH(dest);
    const char *c = memchr(p, ':', (size_t)n);
    Py_ssize_t ns = c != NULL ? c - p : n;
    const char *a = c != NULL ? c + 1 : p + n;  /* the address */
    Py_ssize_t na = (p + n) - a;
    uint32_t crc = crc_update(0, p, ns);
    const char *part = NULL;
    Py_ssize_t np = 0;
    const char *at = NULL;
    for (Py_ssize_t i = na - 1; i >= 0; i--)
        if (a[i] == '@') {
            at = a + i;
            break;
        }
    if (at != NULL) {
        crc = crc_update(crc, ":@", 2);
        part = at + 1;
        np = (a + na) - part;
    } else {
        crc = crc_update(crc, ":", 1);
        for (Py_ssize_t i = 0; i + 2 < na; i++)
            if (a[i] == ':' && a[i + 1] == '/' && a[i + 2] == '/') {
                part = a + i + 3;
                const char *e = memchr(part, '/', (size_t)((a + na) - part));
                np = (e != NULL ? e : a + na) - part;
                break;
            }
    }
    char buf[64];
    for (Py_ssize_t off = 0; off < np; off += (Py_ssize_t)sizeof buf) {
        Py_ssize_t m = np - off < (Py_ssize_t)sizeof buf ? np - off : (Py_ssize_t)sizeof buf;
        for (Py_ssize_t j = 0; j < m; j++) {
            char ch = part[off + j];
            buf[j] = ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch;
        }
        crc = crc_update(crc, buf, m);
    }
    *h = crc;
    return 1;
}

/* family_hash(dest) -> stable_hash(destination_family(dest)), or None when dest is not ASCII */
static PyObject *
family_hash(PyObject *self, PyObject *arg)
{
    if (!PyUnicode_CheckExact(arg)) {
        PyErr_SetString(PyExc_TypeError, "family_hash(dest: str)");
        return NULL;
    }
    uint32_t h;
    if (!family_hash_of(arg, &h))
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLong(h);
}

/* stable_hash(s) */
static ALWAYS_INLINE int
str_hash(PyObject *s, uint32_t *h)
{
    const char *p;
    Py_ssize_t n;
    PyObject *tmp;
    if (utf8_of(s, &p, &n, &tmp) < 0)
        return -1;
    *h = crc_update(0, p, n);
    Py_XDECREF(tmp);
    return 0;
}

/* 1: the Bloom filters extract reads (non-negative ints) are read from their digits (CPython 3.11's int layout,
 * below) */
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000
#define SKETCH_DIGITS 1
#else
#define SKETCH_DIGITS 0
#endif

#if !SKETCH_DIGITS  /* (with SKETCH_DIGITS the filters are read from their digits, and made from them) */
/* A Bloom filter (a non-negative int) as little-endian bytes; its low `nbytes` bytes when it is longer
 * (the reference only ever tests bits below its mask). -1: an error; 1: not a non-negative int. */
static int
bloom_bytes(PyObject *v, unsigned char *buf, Py_ssize_t nbytes, int exact)
{
    if (!PyLong_CheckExact(v))
        return 1;
    if (_PyLong_Sign(v) < 0)
        return 1;
    size_t bits = _PyLong_NumBits(v);
    if (bits == (size_t)-1 && PyErr_Occurred())
        return -1;
    if (bits > (size_t)nbytes * 8) {
        if (exact)
            return 1;
        PyObject *one = PyLong_FromLong(1), *sh = PyLong_FromSsize_t(nbytes * 8);
        PyObject *top = one && sh ? PyNumber_Lshift(one, sh) : NULL;
        PyObject *mask = top ? PyNumber_Subtract(top, one) : NULL;
        PyObject *low = mask ? PyNumber_And(v, mask) : NULL;
        Py_XDECREF(one); Py_XDECREF(sh); Py_XDECREF(top); Py_XDECREF(mask);
        if (low == NULL)
            return -1;
        int r = bloom_bytes(low, buf, nbytes, 1);
        Py_DECREF(low);
        return r;
    }
#if PY_VERSION_HEX >= 0x030D0000
    if (_PyLong_AsByteArray((PyLongObject *)v, buf, nbytes, 1, 0, 1) < 0)
#else
    if (_PyLong_AsByteArray((PyLongObject *)v, buf, nbytes, 1, 0) < 0)
#endif
        return -1;
    return 0;
}

#endif

/* bloom_bytes(v, ..., nbytes, 1) will convert v: 0; 1: not a non-negative int of at most nbytes bytes; -1: error */
static ALWAYS_INLINE int
bloom_fits(PyObject *v, Py_ssize_t nbytes)
{
#if SKETCH_DIGITS
    /* from the digits (3.11: the sign is Py_SIZE's, |Py_SIZE| digits, the top one not 0), without the calls */
    if (!PyLong_CheckExact(v) || Py_SIZE(v) < 0)
        return 1;
    Py_ssize_t n = Py_SIZE(v);
    if (n == 0)
        return 0;
    size_t limit = (size_t)nbytes * 8, below = (size_t)(n - 1) * PyLong_SHIFT;
    if (below >= limit)
        return 1;
    return limit - below < PyLong_SHIFT && (((PyLongObject *)v)->ob_digit[n - 1] >> (limit - below)) != 0;
#else
    if (!PyLong_CheckExact(v) || _PyLong_Sign(v) < 0)
        return 1;
    size_t bits = _PyLong_NumBits(v);
    if (bits == (size_t)-1 && PyErr_Occurred())
        return -1;
    return bits > (size_t)nbytes * 8 ? 1 : 0;
#endif
}

static inline int
bit_has(const unsigned char *b, uint32_t h, uint32_t mask)
{
    uint32_t i = h & mask, j = (h >> 16) & mask;
    return (b[i >> 3] >> (i & 7) & 1) && (b[j >> 3] >> (j & 7) & 1);
}

/* The lifetime sketches are only read by extract: on CPython 3.11 their bits are read from the int's digits
 * (a non-negative int: Py_SIZE digits of PyLong_SHIFT bits) instead of converting each to bytes first;
 * other versions convert (bloom_bytes). */
#if SKETCH_DIGITS
static inline int
long_bit(PyObject *v, uint32_t i)
{
    Py_ssize_t d = (Py_ssize_t)(i / PyLong_SHIFT);
    if (d >= Py_SIZE(v))
        return 0;
    return (int)((((PyLongObject *)v)->ob_digit[d] >> (i % PyLong_SHIFT)) & 1);
}
#define SKETCH_HAS(obj, buf, h, mask) (long_bit((obj), (h) & (mask)) && long_bit((obj), ((h) >> 16) & (mask)))
#else
#define SKETCH_HAS(obj, buf, h, mask) bit_has((buf), (h), (mask))
#endif

/* bloom_bytes for a lifetime sketch: with SKETCH_DIGITS only its kind is checked (1: not a non-negative int) */
static ALWAYS_INLINE int
sketch_check(PyObject *v, unsigned char *buf, Py_ssize_t nbytes)
{
#if SKETCH_DIGITS
    (void)buf;
    (void)nbytes;
    return PyLong_CheckExact(v) && Py_SIZE(v) >= 0 ? 0 : 1;  /* (3.11: the sign is Py_SIZE's) */
#else
    return bloom_bytes(v, buf, nbytes, 0);
#endif
}

static inline void
bit_add(unsigned char *b, uint32_t h, uint32_t mask)
{
    uint32_t i = h & mask, j = (h >> 16) & mask;
    b[i >> 3] |= (unsigned char)(1u << (i & 7));
    b[j >> 3] |= (unsigned char)(1u << (j & 7));
}

/* the 128-bit word sets of a task's context (two 64-bit halves) */
typedef struct { uint64_t lo, hi; } bits128;

static inline void
b128_set(bits128 *b, unsigned k)
{
    if (k < 64) b->lo |= (uint64_t)1 << k; else b->hi |= (uint64_t)1 << (k - 64);
}

static inline int
b128_get(const bits128 *b, unsigned k)
{
    return k < 64 ? (int)(b->lo >> k & 1) : (int)(b->hi >> (k - 64) & 1);
}

/* _word_bits(_words(text)) or-ed into *b (when b is not NULL); the words themselves into found[16] and
 * their number into *nfound when asked. An ASCII str is read here (text_words, without the cache: scanning
 * it costs what looking it up does); any other text is answered by _words (from its cache when it is there,
 * without the call). */
static PyObject *fx_words_cache, *fx_stop;
/* a callable making a new array('d') of NX doubles for an observation's x (NULL: a list of floats) */
static PyObject *fx_row_new;
static PyObject *fx_policy_type, *untrusted_policy, *untrusted_memo, *pol_classes, *pol_prefixes;
/* the class's own classify (Policy.classify, taken at the first extract_setup), and whether the remembered
 * policy has no internal domains and no internal patterns (then its classify is the broadcast table's alone) */
static PyObject *pol_classify_fn, *pol_classify_in, *pol_internal_fn;  /* classify, _classify, _is_internal */
static PyObject *pol_untrusted_fn;  /* the class's own is_untrusted_source (taken with classify) */
static int pol_plain;
static PyObject *pol_weights, *pol_broadcast;
static PyObject *fx_words, *fx_destination_family, *fx_is_outsider, *fx_observation, *fx_external, *fx_broadcast;

static int
word_bits(PyObject *text, bits128 *b, uint64_t *found, int *nfound)
{
    uint64_t mine[16];
    if (found == NULL)
        found = mine;
    int k = 0;
    if (fx_stop != NULL && PyUnicode_CheckExact(text) && PyUnicode_IS_ASCII(text)) {
        const char *lp;
        Py_ssize_t ln;
        text_local((const char *)PyUnicode_DATA(text), PyUnicode_GET_LENGTH(text), &lp, &ln);
        k = scan_words(lp, ln, fx_stop, 1, found);
    } else {
        PyObject *w = fx_words_cache != NULL && PyUnicode_CheckExact(text)
                          ? PyDict_GetItemWithError(fx_words_cache, text) : NULL;
        if (w != NULL) {
            Py_INCREF(w);
        } else {
            if (PyErr_Occurred())
                return -1;
            w = PyObject_CallOneArg(fx_words, text);
        }
        if (w == NULL)
            return -1;
        PyObject *seq = PySequence_Fast(w, "_words must give a sequence");
        Py_DECREF(w);
        if (seq == NULL)
            return -1;
        Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
        if (n > 16) {
            Py_DECREF(seq);
            PyErr_SetString(PyExc_ValueError, "_words gave more than 16 words");
            return -1;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            unsigned long long v = PyLong_AsUnsignedLongLong(PySequence_Fast_GET_ITEM(seq, i));
            if (v == (unsigned long long)-1 && PyErr_Occurred()) {
                Py_DECREF(seq);
                return -1;
            }
            found[k++] = v;
        }
        Py_DECREF(seq);
    }
    if (b != NULL)
        for (int i = 0; i < k; i++) {
            b128_set(b, (unsigned)(found[i] & 127));
            b128_set(b, (unsigned)((found[i] >> 7) & 127));
        }
    if (nfound != NULL)
        *nfound = k;
    return 0;
}

/* item keys: kind << 32 | hash */
enum { K_TOOL_ = 0, K_RES_ = 1, K_DEST_ = 2, K_STEP_ = 3, K_PRINCIPAL_ = 4 };
#define TOOL_MASK 255u
#define RES_MASK 1023u
#define DEST_MASK 2047u
#define RECENT_MASK 511u
#define STEP_MASK 1023u
#define PRINCIPAL_MASK 255u
#define N_TASKS 4
#define SLOT 11
#define N_COUNTERS_ 13
#define NX 25
#define F_UNTRUSTED 1
#define F_SENSITIVE 2
#define F_STRANGER 4
#define CLASSIFIED 1000
#define LOOKED 64

#if SKETCH_DIGITS
/* The recent destinations' filter (512 bits, a non-negative int bloom_fits took) as digits, to test and add bits
 * in place and make one int of at the end (instead of converting it to bytes and back). */
#define RECENT_DIGITS ((RECENT_MASK + PyLong_SHIFT) / PyLong_SHIFT)

static void
recent_digits(PyObject *v, digit *d)
{
    Py_ssize_t size = Py_SIZE(v);
    memcpy(d, ((PyLongObject *)v)->ob_digit, (size_t)size * sizeof(digit));
    memset(d + size, 0, (size_t)(RECENT_DIGITS - size) * sizeof(digit));
}

static inline int
digits_has(const digit *d, uint32_t h, uint32_t mask)
{
    uint32_t i = h & mask, j = (h >> 16) & mask;
    return (d[i / PyLong_SHIFT] >> (i % PyLong_SHIFT) & 1) && (d[j / PyLong_SHIFT] >> (j % PyLong_SHIFT) & 1);
}

static inline void
digits_add(digit *d, uint32_t h, uint32_t mask)
{
    uint32_t i = h & mask, j = (h >> 16) & mask;
    d[i / PyLong_SHIFT] |= (digit)1 << (i % PyLong_SHIFT);
    d[j / PyLong_SHIFT] |= (digit)1 << (j % PyLong_SHIFT);
}

/* the int of n digits (as PyLong makes it: no leading zero digits, small ints shared) */
static PyObject *
digits_long(const digit *d, Py_ssize_t n)
{
    while (n > 0 && d[n - 1] == 0)
        n--;
    if (n <= 1)
        return PyLong_FromUnsignedLong(n ? (unsigned long)d[0] : 0ul);
    PyLongObject *r = _PyLong_New(n);
    if (r == NULL)
        return NULL;
    memcpy(r->ob_digit, d, (size_t)n * sizeof(digit));
    return (PyObject *)r;
}
#endif

/* The int of a 32-bit hash (a new reference) for the hashes an observation hands out (pending's tool and resource
 * family, step, principal, kind): the same ones recur (an agent's tools, kinds, steps), so each is kept in one slot
 * of a direct-mapped table and shared (an int is immutable) instead of made again an event. */
#define HASH_INTS 1024
static struct { uint32_t h; PyObject *v; } hash_ints[HASH_INTS];

static ALWAYS_INLINE PyObject *
hash_int(uint32_t h)
{
    unsigned i = (h ^ (h >> 10) ^ (h >> 20)) & (HASH_INTS - 1);
    PyObject *v = hash_ints[i].v;
    if (v == NULL || hash_ints[i].h != h) {
        if ((v = PyLong_FromUnsignedLong(h)) == NULL)
            return NULL;
        Py_XSETREF(hash_ints[i].v, v);
        hash_ints[i].h = h;
    }
    Py_INCREF(v);
    return v;
}

/* k in adopted (a set, or None) */
static int
adopted_has(PyObject *adopted, uint64_t key)
{
    if (adopted == Py_None)
        return 0;
    PyObject *k = PyLong_FromUnsignedLongLong(key);
    if (k == NULL)
        return -1;
    int r = PySequence_Contains(adopted, k);
    Py_DECREF(k);
    return r;
}

static int
append_key(PyObject *list, uint64_t key)
{
    PyObject *k = PyLong_FromUnsignedLongLong(key);
    if (k == NULL)
        return -1;
    int r = PyList_Append(list, k);
    Py_DECREF(k);
    return r;
}

/* Python's float floor division (floatobject.c float_floor_div), for int(t // 3600) */
static double
py_floordiv(double vx, double wx)
{
    double mod = fmod(vx, wx);
    double div = (vx - mod) / wx;
    if (mod) {
        if ((wx < 0) != (mod < 0)) {
            mod += wx;
            div -= 1.0;
        }
    }
    double floordiv;
    if (div) {
        floordiv = floor(div);
        if (div - floordiv > 0.5)
            floordiv += 1.0;
    } else {
        floordiv = copysign(0.0, vx / wx);
    }
    return floordiv;
}

static double
directed_harm(int is_delete, int is_write, int outward, int sensitive, long long fanout, int any_broadcast, int ndests)
{
    if (is_delete || (outward && (sensitive || fanout > 1)) || any_broadcast)
        return 3.0;
    if (outward || ndests)
        return 2.0;
    if (is_write || sensitive)
        return 1.0;
    return 0.25;
}

/* An object's dict when the interpreter manages it (Py_TPFLAGS_MANAGED_DICT, a msgspec Struct's dict=True
 * among them): on 3.11 a pointer three words before the object, NULL while the object keeps its attributes as
 * values instead (the fast read is then not taken: _PyObject_GetDictPtr would make a dict of them). Other
 * versions lay it out otherwise (3.12 tags a values pointer in the same word): not read that way there. */
#ifdef Py_TPFLAGS_MANAGED_DICT
#define MANAGED_DICT Py_TPFLAGS_MANAGED_DICT
#else
#define MANAGED_DICT 0
#endif
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000
#define MANAGED_DICT_SLOT 1
#define managed_dict(o) (((PyObject **)(o))[-3])
#else
#define MANAGED_DICT_SLOT 0
#define managed_dict(o) ((PyObject *)NULL)
#endif

/* Attribute access to the plain slots (__slots__, a msgspec Struct's fields: member descriptors of objects)
 * of the objects extract reads and writes, at their offset: the same object the descriptor would give or set,
 * without the lookup. An attribute the type does not have at all, of an object with an instance dict that is
 * not managed by the interpreter (an event's t, in its msgspec Struct's __dict__), is read from that dict, as long as
 * the type's version tag says nothing was added to the type since. Any other attribute (a property, a slot
 * not set, a key the dict does not hold) goes the generic way. The type each offset was found for is held. */
typedef struct {
    PyObject *name;       /* interned */
    PyTypeObject *type;   /* the type off was resolved for (a strong reference), or NULL */
    Py_ssize_t off;       /* -1: not a plain object slot of that type */
    int get, set;         /* the slot at off is read / written directly (a plain slot, generic attribute access,
                           * and for set not read-only) */
    int in_dict;          /* no such attribute in the type: read from the instance dict (_PyObject_GetDictPtr) */
    unsigned int version; /* the type's version tag when in_dict was set */
} fastattr;

/* The setattr of a msgspec Struct type that is not frozen (engine.Decision's, taken by admit_setup), or NULL. For a
 * type without garbage collection (gc=False, as Decision) it is PyObject_GenericSetAttr and nothing else (msgspec
 * 0.18-0.22's Struct_setattro_default only adds tracking for types with it): its slots are written directly. */
static setattrofunc struct_setattro;

static void
fa_resolve(fastattr *fa, PyTypeObject *tp)
{
    Py_INCREF(tp);
    Py_XSETREF(fa->type, tp);
    fa->off = -1;
    int get = tp->tp_getattro == PyObject_GenericGetAttr,
        set = tp->tp_setattro == PyObject_GenericSetAttr
              || (struct_setattro != NULL && tp->tp_setattro == struct_setattro
                  && !(tp->tp_flags & Py_TPFLAGS_HAVE_GC));
    fa->get = fa->set = 0;
    fa->in_dict = 0;
    PyObject *d = _PyType_Lookup(tp, fa->name);  /* borrowed (and the type given a version tag) */
    if (d != NULL && Py_IS_TYPE(d, &PyMemberDescr_Type)) {
        PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
        if (m->type == T_OBJECT_EX && ((PyMemberDescrObject *)d)->d_common.d_type == tp && m->offset > 0) {
            fa->off = m->offset;
            fa->get = get;
            fa->set = set && !(m->flags & READONLY);
        }
    }
    /* generic attribute access finds nothing in the type: the instance dict's value or an AttributeError */
    if (d == NULL && get && tp->tp_dictoffset != 0 && (tp->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG)
            && (!(tp->tp_flags & MANAGED_DICT) || MANAGED_DICT_SLOT)) {
        fa->in_dict = 1;
        fa->version = tp->tp_version_tag;
    }
}

/* the slow paths of xget and xset: the offset resolved for another type, or the generic attribute access */
static PyObject *
xget_slow(PyObject *o, fastattr *fa)
{
    PyTypeObject *tp = Py_TYPE(o);
    if (fa->type != tp) {
        fa_resolve(fa, tp);
        if (fa->get) {
            PyObject *v = *(PyObject **)((char *)o + fa->off);
            if (v != NULL) {
                Py_INCREF(v);
                return v;
            }
        }
    }
    if (fa->in_dict && (tp->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG) && tp->tp_version_tag == fa->version) {
        PyObject **dp = tp->tp_flags & MANAGED_DICT ? NULL : _PyObject_GetDictPtr(o);
        PyObject *dict = tp->tp_flags & MANAGED_DICT ? managed_dict(o) : dp != NULL ? *dp : NULL;
        if (dict != NULL && PyDict_CheckExact(dict)) {
            PyObject *v = PyDict_GetItemWithError(dict, fa->name);  /* borrowed */
            if (v != NULL) {
                Py_INCREF(v);
                return v;
            }
            if (PyErr_Occurred())
                return NULL;
        }
    }
    return PyObject_GetAttr(o, fa->name);
}

static int
xset_slow(PyObject *o, fastattr *fa, PyObject *v)
{
    PyTypeObject *tp = Py_TYPE(o);
    if (fa->type != tp) {
        fa_resolve(fa, tp);
        if (fa->set && v != NULL) {
            PyObject **slot = (PyObject **)((char *)o + fa->off);
            Py_INCREF(v);
            Py_XSETREF(*slot, v);
            return 0;
        }
    }
    return PyObject_SetAttr(o, fa->name, v);
}

/* o.<name> (a new reference): inlined for a plain slot of the type last seen, which extract reads some 27
 * times an event (a call each cost more than the read; -O3 would not inline it into extract by itself) */
static ALWAYS_INLINE PyObject *
xget(PyObject *o, fastattr *fa)
{
    if (fa->type == Py_TYPE(o) && fa->get) {
        PyObject *v = *(PyObject **)((char *)o + fa->off);
        if (v != NULL) {
            Py_INCREF(v);
            return v;
        }
    }
    return xget_slow(o, fa);
}

/* attr(o, name) -> o.<name> as the kernels read it (xget, one cache for every call: for the tests) */
static PyObject *
attr_(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    static fastattr fa;
    if (nargs != 2 || !PyUnicode_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "attr(o, name): name a str");
        return NULL;
    }
    PyObject *name = args[1];
    Py_INCREF(name);
    PyUnicode_InternInPlace(&name);
    if (fa.name != name) {  /* another name: resolved afresh */
        Py_XSETREF(fa.name, name);
        Py_CLEAR(fa.type);
        fa.off = -1;
        fa.in_dict = 0;
    } else {
        Py_DECREF(name);
    }
    return xget(args[0], &fa);
}

static ALWAYS_INLINE int
xset(PyObject *o, fastattr *fa, PyObject *v)
{
    if (fa->type == Py_TYPE(o) && fa->set && v != NULL) {
        PyObject **slot = (PyObject **)((char *)o + fa->off);
        Py_INCREF(v);
        Py_XSETREF(*slot, v);
        return 0;
    }
    return xset_slow(o, fa, v);
}

static ALWAYS_INLINE int
float_attr(PyObject *o, fastattr *name, double *out)
{
    PyObject *v = xget(o, name);
    if (v == NULL)
        return -1;
    int ok = PyFloat_CheckExact(v);
    if (ok)
        *out = PyFloat_AS_DOUBLE(v);
    Py_DECREF(v);
    return ok ? 0 : 1;
}

#if !SKETCH_DIGITS  /* (with SKETCH_DIGITS the recent filters are made from their digits) */
static int
set_bloom(PyObject *o, fastattr *name, const unsigned char *buf, Py_ssize_t n)
{
    PyObject *v = _PyLong_FromByteArray(buf, n, 1, 0);
    if (v == NULL)
        return -1;
    int r = xset(o, name, v);
    Py_DECREF(v);
    return r;
}
#endif

/* interned names */
static PyObject *s_last_t, *s_c, *s_tools, *s_resources, *s_dests, *s_steps, *s_principals, *s_recent_a,
    *s_recent_b, *s_gen_t, *s_tasks, *s_instr, *s_instr_t, *s_hours, *s_tool, *s_resource, *s_action,
    *s_sensitivity, *s_records, *s_bytes, *s_destinations, *s_task_id, *s_requested_by, *s_operator_id,
    *s_approval_id, *s_instruction_hash, *s_t, *s_sensitivity_weight, *s_classify, *s__classify, *s__is_internal,
    *s_broadcast,
    *s_is_untrusted_source, *s_untrusted_sources, *s_email, *s_confidential, *s_x, *s_dest_classes, *s_pending, *s_new_outbound,
    *s_config_change, *s_outbound, *s_approved, *s_quiet, *s_step, *s_principal, *s_novel, *s_adopted,
    *s_kind, *s_known_reach;

static fastattr fa_action, fa_adopted, fa_approval_id, fa_approved, fa_bytes, fa_c, fa_config_change, fa_dest_classes, fa_destinations, fa_dests, fa_gen_t, fa_hours, fa_instr, fa_instr_t, fa_instruction_hash, fa_kind, fa_known_reach, fa_last_t, fa_new_outbound, fa_novel, fa_operator_id, fa_outbound, fa_pending, fa_principal, fa_principals, fa_quiet, fa_recent_a, fa_recent_b, fa_records, fa_requested_by, fa_resource, fa_resources, fa_sensitivity, fa_step, fa_steps, fa_t, fa_task_id, fa_tasks, fa_tool, fa_tools, fa_x;

static int
intern_names(void)
{
#define I(v, s) if ((v = PyUnicode_InternFromString(s)) == NULL) return -1
    I(s_last_t, "last_t"); I(s_c, "c"); I(s_tools, "tools"); I(s_resources, "resources"); I(s_dests, "dests");
    I(s_steps, "steps"); I(s_principals, "principals"); I(s_recent_a, "recent_a"); I(s_recent_b, "recent_b");
    I(s_gen_t, "gen_t"); I(s_tasks, "tasks"); I(s_instr, "instr"); I(s_instr_t, "instr_t"); I(s_hours, "hours");
    I(s_tool, "tool"); I(s_resource, "resource"); I(s_action, "action"); I(s_sensitivity, "sensitivity");
    I(s_records, "records"); I(s_bytes, "bytes"); I(s_destinations, "destinations"); I(s_task_id, "task_id");
    I(s_requested_by, "requested_by"); I(s_operator_id, "operator_id"); I(s_approval_id, "approval_id");
    I(s_instruction_hash, "instruction_hash"); I(s_t, "t"); I(s_sensitivity_weight, "sensitivity_weight");
    I(s_classify, "classify"); I(s_broadcast, "broadcast"); I(s_is_untrusted_source, "is_untrusted_source");
    I(s__classify, "_classify"); I(s__is_internal, "_is_internal");
    I(s_untrusted_sources, "untrusted_sources"); I(s_email, "email");
    I(s_confidential, "confidential"); I(s_x, "x"); I(s_dest_classes, "dest_classes"); I(s_pending, "pending");
    I(s_new_outbound, "new_outbound"); I(s_config_change, "config_change"); I(s_outbound, "outbound");
    I(s_approved, "approved"); I(s_quiet, "quiet"); I(s_step, "step"); I(s_principal, "principal");
    I(s_novel, "novel"); I(s_adopted, "adopted"); I(s_kind, "kind"); I(s_known_reach, "known_reach");
#undef I
    fa_action.name = s_action; fa_action.off = -1;
    fa_adopted.name = s_adopted; fa_adopted.off = -1;
    fa_approval_id.name = s_approval_id; fa_approval_id.off = -1;
    fa_approved.name = s_approved; fa_approved.off = -1;
    fa_bytes.name = s_bytes; fa_bytes.off = -1;
    fa_c.name = s_c; fa_c.off = -1;
    fa_config_change.name = s_config_change; fa_config_change.off = -1;
    fa_dest_classes.name = s_dest_classes; fa_dest_classes.off = -1;
    fa_destinations.name = s_destinations; fa_destinations.off = -1;
    fa_dests.name = s_dests; fa_dests.off = -1;
    fa_gen_t.name = s_gen_t; fa_gen_t.off = -1;
    fa_hours.name = s_hours; fa_hours.off = -1;
    fa_instr.name = s_instr; fa_instr.off = -1;
    fa_instr_t.name = s_instr_t; fa_instr_t.off = -1;
    fa_instruction_hash.name = s_instruction_hash; fa_instruction_hash.off = -1;
    fa_kind.name = s_kind; fa_kind.off = -1;
    fa_known_reach.name = s_known_reach; fa_known_reach.off = -1;
    fa_last_t.name = s_last_t; fa_last_t.off = -1;
    fa_new_outbound.name = s_new_outbound; fa_new_outbound.off = -1;
    fa_novel.name = s_novel; fa_novel.off = -1;
    fa_operator_id.name = s_operator_id; fa_operator_id.off = -1;
    fa_outbound.name = s_outbound; fa_outbound.off = -1;
    fa_pending.name = s_pending; fa_pending.off = -1;
    fa_principal.name = s_principal; fa_principal.off = -1;
    fa_principals.name = s_principals; fa_principals.off = -1;
    fa_quiet.name = s_quiet; fa_quiet.off = -1;
    fa_recent_a.name = s_recent_a; fa_recent_a.off = -1;
    fa_recent_b.name = s_recent_b; fa_recent_b.off = -1;
    fa_records.name = s_records; fa_records.off = -1;
    fa_requested_by.name = s_requested_by; fa_requested_by.off = -1;
    fa_resource.name = s_resource; fa_resource.off = -1;
    fa_resources.name = s_resources; fa_resources.off = -1;
    fa_sensitivity.name = s_sensitivity; fa_sensitivity.off = -1;
    fa_step.name = s_step; fa_step.off = -1;
    fa_steps.name = s_steps; fa_steps.off = -1;
    fa_t.name = s_t; fa_t.off = -1;
    fa_task_id.name = s_task_id; fa_task_id.off = -1;
    fa_tasks.name = s_tasks; fa_tasks.off = -1;
    fa_tool.name = s_tool; fa_tool.off = -1;
    fa_tools.name = s_tools; fa_tools.off = -1;
    fa_x.name = s_x; fa_x.off = -1;
    return 0;
}

/* extract_setup(Observation, _words, destination_family, _is_outsider, EXTERNAL, BROADCAST[, words_cache[,
 *               Policy[, stop_words]]]):
 * stop_words, features._STOP_WORDS: the words of an ASCII name are then read here (text_words), not asked of _words;
 * words_cache, the dict _words memoises in (a text there is answered from it, without calling _words);
 * Policy, the class whose is_untrusted_source answers are remembered per resource (untrusted_source) */
static PyObject *
extract_setup(PyObject *self, PyObject *args)
{
    PyObject *o, *w, *df, *io, *ext, *bc, *wc = NULL, *pt = NULL, *sw = NULL, *rn = NULL;
    if (!PyArg_ParseTuple(args, "OOOOOO|O!O!O!O:extract_setup", &o, &w, &df, &io, &ext, &bc, &PyDict_Type, &wc,
                          &PyType_Type, &pt, &PyTuple_Type, &sw, &rn))
        return NULL;
    if (rn == Py_None)
        rn = NULL;
    if (rn != NULL && !PyCallable_Check(rn)) {
        PyErr_SetString(PyExc_TypeError, "extract_setup: row_new must be callable");
        return NULL;
    }
    Py_XINCREF(rn);
    Py_XSETREF(fx_row_new, rn);
    if (sw != NULL && stop_check(sw) < 0)
        return NULL;
    Py_XINCREF(sw);
    Py_XSETREF(fx_stop, sw);
    Py_XINCREF(wc);
    Py_XSETREF(fx_words_cache, wc);
    Py_XINCREF(pt);
    Py_XSETREF(fx_policy_type, pt);
    /* (taken once, at the first setup: detector.features's, at import, from the class as policy.py defines it; a
     * later setup, one a test makes with classify replaced for one, does not take the replacement for it) */
    if (pol_classify_fn == NULL && pt != NULL && PyType_Check(pt)) {
        pol_classify_fn = _PyType_Lookup((PyTypeObject *)pt, s_classify);  /* borrowed, then held */
        Py_XINCREF(pol_classify_fn);
        pol_classify_in = PyObject_GetAttrString(pt, "_classify");
        pol_internal_fn = PyObject_GetAttrString(pt, "_is_internal");
        pol_untrusted_fn = PyObject_GetAttrString(pt, "is_untrusted_source");
        if (pol_classify_in == NULL || pol_internal_fn == NULL || pol_untrusted_fn == NULL) {
            PyErr_Clear();
            Py_CLEAR(pol_classify_fn);  /* (no fast classify, no plain answer for mail) */
        }
    }
    Py_CLEAR(untrusted_policy);
    Py_CLEAR(untrusted_memo);
    Py_CLEAR(pol_classes);
    Py_CLEAR(pol_prefixes);
    Py_CLEAR(pol_weights);
    Py_CLEAR(pol_broadcast);
    if (!PyType_Check(o)) {
        PyErr_SetString(PyExc_TypeError, "extract_setup: Observation must be a class");
        return NULL;
    }
    Py_INCREF(o); Py_XSETREF(fx_observation, o);
    Py_INCREF(w); Py_XSETREF(fx_words, w);
    Py_INCREF(df); Py_XSETREF(fx_destination_family, df);
    Py_INCREF(io); Py_XSETREF(fx_is_outsider, io);
    Py_INCREF(ext); Py_XSETREF(fx_external, ext);
    Py_INCREF(bc); Py_XSETREF(fx_broadcast, bc);
    Py_RETURN_NONE;
}

/* s == lit for a str s and an ASCII string literal (a macro: the literal's length is known when compiled) */
#define is_ascii(s, lit) \
    (PyUnicode_Check(s) && PyUnicode_IS_ASCII(s) && (size_t)PyUnicode_GET_LENGTH(s) == sizeof(lit) - 1 \
     && memcmp(PyUnicode_DATA(s), (lit), sizeof(lit) - 1) == 0)

typedef struct {
    PyObject *dest;   /* borrowed (from the event's list) */
    PyObject *cls;    /* new reference */
    long long reach;
} dest_class;

/* What extract remembers of the last policy of the class extract_setup named (policy.Policy: a frozen
 * dataclass, its fields never rebound): a memo of is_untrusted_source's answers per resource, the dict its
 * classify memoises in (pol_classes: policy._cache, read here without the call; NULL when it is not a dict),
 * and its untrusted_sources (pol_prefixes: NULL when not a tuple of str); and the fields extract reads of it
 * every event or every send (pol_weights: sensitivity_weight, pol_broadcast: broadcast; each NULL when reading
 * it failed, and then read again each time, raising as the reference does): one lookup per policy instead of one
 * an event. Its classify (a method of the class, which may be replaced) is not remembered. Policies of any other
 * class are asked every time. */
/* policy_memo for a policy that is not the one remembered */
static int
policy_memo_new(PyObject *policy)
{
    if (fx_policy_type == NULL || (PyObject *)Py_TYPE(policy) != fx_policy_type)
        return 0;
    PyObject *d = PyDict_New();
    if (d == NULL)
        return -1;
    PyObject *cache = PyObject_GetAttrString(policy, "_cache");
    if (cache == NULL)
        PyErr_Clear();
    else if (!PyDict_CheckExact(cache))
        Py_CLEAR(cache);
    PyObject *pre = PyObject_GetAttr(policy, s_untrusted_sources);
    if (pre == NULL)
        PyErr_Clear();
    else if (!PyTuple_CheckExact(pre))
        Py_CLEAR(pre);
    for (Py_ssize_t i = 0; pre != NULL && i < PyTuple_GET_SIZE(pre); i++)
        if (!PyUnicode_CheckExact(PyTuple_GET_ITEM(pre, i)))
            Py_CLEAR(pre);
    PyObject *weights = PyObject_GetAttr(policy, s_sensitivity_weight);
    if (weights == NULL)
        PyErr_Clear();
    PyObject *broadcast = PyObject_GetAttr(policy, s_broadcast);
    if (broadcast == NULL)
        PyErr_Clear();
    /* plain: no internal domains and no internal patterns (empty, as __post_init__ makes them for none) */
    pol_plain = 0;
    PyObject *doms = PyObject_GetAttrString(policy, "_domains"), *pats = PyObject_GetAttrString(policy, "_patterns");
    if (doms != NULL && pats != NULL && PyTuple_CheckExact(doms) && PyTuple_GET_SIZE(doms) == 0
            && PyList_CheckExact(pats) && PyList_GET_SIZE(pats) == 0)
        pol_plain = 1;
    Py_XDECREF(doms);
    Py_XDECREF(pats);
    PyErr_Clear();
    Py_INCREF(policy);
    Py_XSETREF(untrusted_policy, policy);
    Py_XSETREF(untrusted_memo, d);
    Py_XSETREF(pol_classes, cache);
    Py_XSETREF(pol_prefixes, pre);
    Py_XSETREF(pol_weights, weights);
    Py_XSETREF(pol_broadcast, broadcast);
    return 1;
}

/* policy.classify(dest) for the remembered policy when it is plain (pol_plain) and its class's classify is still
 * Policy.classify (a new reference; NULL with an exception set, or NULL without one: ask classify), Policy.classify's
 * lines on a miss of its memo (memo: its _cache):
 *     reach = self.broadcast.get(dest); hit = (BROADCAST, reach) if reach is not None else (EXTERNAL, 1)
 *     (_is_internal: False without domains and patterns)
 *     if len(self._cache) > 200_000: self._cache.clear()
 *     self._cache[dest] = hit */
static PyObject *
plain_classify(PyObject *policy, PyObject *memo, PyObject *broadcast, PyObject *dest)
{
    if (!pol_plain || memo == NULL || !PyDict_CheckExact(broadcast) || !PyUnicode_CheckExact(dest)
            || pol_classify_fn == NULL || _PyType_Lookup(Py_TYPE(policy), s_classify) != pol_classify_fn
            || _PyType_Lookup(Py_TYPE(policy), s__classify) != pol_classify_in
            || _PyType_Lookup(Py_TYPE(policy), s__is_internal) != pol_internal_fn)
        return NULL;
    PyObject *reach = PyDict_GetItemWithError(broadcast, dest);  /* borrowed */
    if (reach == NULL && PyErr_Occurred())
        return NULL;
    PyObject *hit;
    if (reach != NULL) {
        hit = PyTuple_Pack(2, fx_broadcast, reach);
    } else {
        PyObject *one = PyLong_FromLong(1);
        hit = one != NULL ? PyTuple_Pack(2, fx_external, one) : NULL;
        Py_XDECREF(one);
    }
    if (hit == NULL)
        return NULL;
    if (PyDict_GET_SIZE(memo) > 200000)
        PyDict_Clear(memo);
    if (PyDict_SetItem(memo, dest, hit) < 0) {
        Py_DECREF(hit);
        return NULL;
    }
    return hit;
}

/* 1: policy is the one remembered (refreshed when it is another of the class); 0: not of the class; -1: error */
static ALWAYS_INLINE int
policy_memo(PyObject *policy)
{
    if (policy == untrusted_policy && untrusted_memo != NULL && (PyObject *)Py_TYPE(policy) == fx_policy_type)
        return 1;
    return policy_memo_new(policy);
}

/* policy.is_untrusted_source(resource): for the remembered policy, a resource under none of its untrusted
 * sources is not one, one that is and is not mail is (Policy.is_untrusted_source's first steps), and mail is
 * asked (whether its host is internal) and remembered per resource; other policies are asked */
static int
untrusted_source(PyObject *policy, PyObject *resource)
{
    int memo = policy_memo(policy);
    if (memo < 0)
        return -1;
    memo = memo && PyUnicode_CheckExact(resource);
    if (memo) {
        if (pol_prefixes != NULL) {
            int under = 0;
            for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(pol_prefixes) && !under; i++) {
                int m = str_starts(resource, PyTuple_GET_ITEM(pol_prefixes, i));
                if (m < 0)
                    return -1;
                under = m;
            }
            if (!under)
                return 0;
            int mail = str_starts(resource, s_email);
            if (mail < 0)
                return -1;
            if (!mail)
                return 1;
            /* mail under an untrusted source, for a plain policy whose class's is_untrusted_source and _is_internal
             * are its own: _is_internal is False without internal domains and patterns, so it is untrusted */
            if (pol_plain && pol_classify_fn != NULL
                    && _PyType_Lookup(Py_TYPE(policy), s_is_untrusted_source) == pol_untrusted_fn
                    && _PyType_Lookup(Py_TYPE(policy), s__is_internal) == pol_internal_fn)
                return 1;
        }
        PyObject *hit = PyDict_GetItemWithError(untrusted_memo, resource);
        if (hit != NULL)
            return hit == Py_True;
        if (PyErr_Occurred())
            return -1;
    }
    PyObject *u = PyObject_CallMethodOneArg(policy, s_is_untrusted_source, resource);
    if (u == NULL)
        return -1;
    int r = PyObject_IsTrue(u);
    Py_DECREF(u);
    if (r < 0 || !memo)
        return r;
    if (PyDict_GET_SIZE(untrusted_memo) >= 100000)
        PyDict_Clear(untrusted_memo);
    if (PyDict_SetItem(untrusted_memo, resource, r ? Py_True : Py_False) < 0)
        return -1;
    return r;
}

static PyObject *
extract(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *st, *ev, *policy, *adopted;
    if (fc_count("extract", nargs, 4, 4) < 0)
        return NULL;
    st = args[0], ev = args[1], policy = args[2], adopted = args[3];
    if (fx_observation == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "extract_setup was not called");
        return NULL;
    }
    PyObject *res = NULL, *fallback = Py_None;
    /* everything read before anything is changed; `own` lists the references to release */
    PyObject *own[32];
    int nown = 0;
#define OWN(x) (own[nown++] = (x))
    PyObject *c_o = NULL, *tasks_o = NULL, *dests = NULL, *classify = NULL, *broadcast = NULL, *obs = NULL;
    Py_buffer cv = {0}, tv = {0};
    int have_cv = 0, have_tv = 0;
    dest_class *dc = NULL;
    Py_ssize_t ndc = 0, ndests = 0;
    PyObject *novel = NULL, *adopted_out = NULL, *dest_hashes = NULL, *new_out = NULL, *classes = NULL;
    unsigned char b_tools[32], b_res[128], b_dests[256], b_steps[128], b_princ[32];
#if !SKETCH_DIGITS
    unsigned char b_ra[64], b_rb[64];
#endif

    double t, last_t, gen_t, instr_t;
    int r;
    PyObject *t_o;  /* ev.t: the float the state's times are set to, as the reference sets them (no new float) */
    if ((t_o = xget(ev, &fa_t)) == NULL) goto done;
    OWN(t_o);
    if (!PyFloat_CheckExact(t_o)) goto fall;
    t = PyFloat_AS_DOUBLE(t_o);
    if (isnan(t)) goto fall;
    if ((r = float_attr(st, &fa_last_t, &last_t)) != 0) goto err_or_fall;
    if ((r = float_attr(st, &fa_gen_t, &gen_t)) != 0) goto err_or_fall;
    if ((r = float_attr(st, &fa_instr_t, &instr_t)) != 0) goto err_or_fall;

    PyObject *tool, *resource, *action, *sensitivity, *records_o, *bytes_o, *task_id, *who, *operator_id,
        *approval_id, *ihash, *hours;
#define GET(var, obj, name) if ((var = xget(obj, name)) == NULL) goto done; OWN(var)
    GET(tool, ev, &fa_tool); GET(resource, ev, &fa_resource); GET(action, ev, &fa_action);
    GET(sensitivity, ev, &fa_sensitivity); GET(records_o, ev, &fa_records); GET(bytes_o, ev, &fa_bytes);
    GET(dests, ev, &fa_destinations); GET(task_id, ev, &fa_task_id); GET(who, ev, &fa_requested_by);
    GET(operator_id, ev, &fa_operator_id); GET(approval_id, ev, &fa_approval_id); GET(ihash, ev, &fa_instruction_hash);
    GET(hours, st, &fa_hours);
    PyObject *weights, *tools_o, *res_o, *dests_o, *steps_o, *princ_o, *ra_o, *rb_o, *instr_o;
    int pmemo = policy_memo(policy);  /* 1: the policy's attributes are the remembered pol_* */
    if (pmemo < 0) goto done;
    if (pmemo && pol_weights != NULL) {
        weights = pol_weights;
        Py_INCREF(weights);
    } else if ((weights = PyObject_GetAttr(policy, s_sensitivity_weight)) == NULL) {
        goto done;
    }
    OWN(weights);
    GET(tools_o, st, &fa_tools); GET(res_o, st, &fa_resources); GET(dests_o, st, &fa_dests); GET(steps_o, st, &fa_steps);
    GET(princ_o, st, &fa_principals); GET(ra_o, st, &fa_recent_a); GET(rb_o, st, &fa_recent_b); GET(instr_o, st, &fa_instr);
#undef GET
    if (!PyList_CheckExact(dests) || !PyDict_CheckExact(weights) || !PyLong_CheckExact(records_o)
            || !PyLong_CheckExact(bytes_o) || !PyLong_CheckExact(instr_o) || !PyUnicode_Check(tool)
            || !PyUnicode_Check(resource) || !PyUnicode_Check(action) || !PyUnicode_Check(operator_id)
            || (hours != Py_None && !PyTuple_CheckExact(hours)))
        goto fall;
    if (adopted != Py_None && !PyAnySet_Check(adopted))
        goto fall;
    long long records = PyLong_AsLongLong(records_o), nbytes_ev = PyLong_AsLongLong(bytes_o);
    if ((records == -1 || nbytes_ev == -1) && PyErr_Occurred()) {
        PyErr_Clear();
        goto fall;
    }
    if (records < 0 || nbytes_ev < 0 || records > (1LL << 53) || nbytes_ev > (1LL << 53))
        goto fall;  /* counts past 2**53 compare with floats inexactly as doubles: the reference decides */
    PyObject *w_o = PyDict_GetItemWithError(weights, sensitivity);
    PyObject *wc_o = PyDict_GetItemWithError(weights, s_confidential);
    if (w_o == NULL || wc_o == NULL) {
        if (PyErr_Occurred()) goto done;
        goto fall;
    }
    if (!PyFloat_CheckExact(w_o) || !PyFloat_CheckExact(wc_o))
        goto fall;
    /* sketches */
    if ((r = sketch_check(tools_o, b_tools, 32)) != 0) goto err_or_fall;
    if ((r = sketch_check(res_o, b_res, 128)) != 0) goto err_or_fall;
    if ((r = sketch_check(dests_o, b_dests, 256)) != 0) goto err_or_fall;
    if ((r = sketch_check(steps_o, b_steps, 128)) != 0) goto err_or_fall;
    if ((r = sketch_check(princ_o, b_princ, 32)) != 0) goto err_or_fall;
    /* the recent destinations' filters: only their kind and width checked here (read when destinations need them) */
    if ((r = bloom_fits(ra_o, 64)) != 0) goto err_or_fall;
    if ((r = bloom_fits(rb_o, 64)) != 0) goto err_or_fall;
    /* windows and task slots */
    if ((c_o = xget(st, &fa_c)) == NULL) goto done;
    if ((tasks_o = xget(st, &fa_tasks)) == NULL) goto done;
    if (PyObject_GetBuffer(c_o, &cv, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) {
        PyErr_Clear();
        goto fall;
    }
    have_cv = 1;
    if (PyObject_GetBuffer(tasks_o, &tv, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0) {
        PyErr_Clear();
        goto fall;
    }
    have_tv = 1;
    if (cv.format == NULL || cv.format[0] != 'd' || cv.format[1] != 0 || cv.len != N_COUNTERS_ * 8 || tv.format == NULL
            || tv.format[0] != 'd' || tv.format[1] != 0 || tv.len != N_TASKS * SLOT * 8)
        goto fall;
    double *c = cv.buf, *tasks = tv.buf;
    int has_instr = ihash != Py_None;
    if (has_instr && !PyUnicode_Check(ihash)) goto fall;
    if (task_id != Py_None && !PyUnicode_Check(task_id)) goto fall;
    /* the task's slot: only the slot of this task is read (a new task's, the least recently used, is reset), so
     * only it is checked, and every slot's last time (compared to find the least recently used) */
    uint32_t h_task = 0;
    int task_slot = -1;  /* the slot holding this task's hash, -1: none (a new task) */
    if (task_id != Py_None) {
        if (str_hash(task_id, &h_task) < 0) goto done;
        for (int i = 0; i < N_TASKS; i++) {
            if (isnan(tasks[SLOT * i + 3]))
                goto fall;
            if (task_slot < 0 && tasks[SLOT * i] == (double)h_task)
                task_slot = i;
        }
        if (task_slot >= 0) {
            const double *b = tasks + task_slot * SLOT;
            static const int ints[] = {1, 4, 7, 8, 9, 10};  /* (b[0] is h_task) */
            for (int k = 0; k < 6; k++) {
                double v = b[ints[k]];
                if (!(v >= 0.0 && v < 4294967296.0 && v == (double)(uint32_t)v))  /* an integer of 32 bits */
                    goto fall;
            }
            if (isnan(b[2]) || isnan(b[5]) || isnan(b[6]))
                goto fall;
        }
    }
    if (who != Py_None && !PyUnicode_Check(who)) goto fall;
    /* the destinations' classes (the reference classifies them in its loop; classify is memoised and pure) */
    ndests = PyList_GET_SIZE(dests);
    if (ndests > 0) {
        /* policy.classify is only needed when its memo does not answer (for a policy of the class, whose
         * classify is a method: reading it cannot fail, and is left until then) */
        if (!pmemo && (classify = PyObject_GetAttr(policy, s_classify)) == NULL) goto done;
        if (pmemo && pol_broadcast != NULL) {
            broadcast = pol_broadcast;
            Py_INCREF(broadcast);
        } else if ((broadcast = PyObject_GetAttr(policy, s_broadcast)) == NULL) {
            goto done;
        }
        PyObject *memo = pmemo ? pol_classes : NULL;  /* classify's own memo: what it answers, without the call */
        if (!PyDict_CheckExact(broadcast)) goto fall;
        dc = PyMem_Calloc((size_t)ndests, sizeof(dest_class));
        if (dc == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        for (Py_ssize_t i = 0; i < ndests; i++) {
            PyObject *d = PyList_GET_ITEM(dests, i);
            if (!PyUnicode_Check(d)) goto fall;
            PyObject *cls, *reach;
            if (i < CLASSIFIED) {
                PyObject *cr = memo != NULL && PyUnicode_CheckExact(d) ? PyDict_GetItemWithError(memo, d) : NULL;
                if (cr != NULL)
                    Py_INCREF(cr);
                else if (PyErr_Occurred()
                         || ((cr = pmemo ? plain_classify(policy, memo, broadcast, d) : NULL) == NULL
                             && (PyErr_Occurred()
                                 || (classify == NULL && (classify = PyObject_GetAttr(policy, s_classify)) == NULL)
                                 || (cr = PyObject_CallOneArg(classify, d)) == NULL)))
                    goto done;
                if (!PyTuple_Check(cr) || PyTuple_GET_SIZE(cr) != 2) {
                    Py_DECREF(cr);
                    goto fall;
                }
                cls = PyTuple_GET_ITEM(cr, 0);
                reach = PyTuple_GET_ITEM(cr, 1);
                Py_INCREF(cls);
                dc[i].cls = cls;
                ndc = i + 1;
                if (!PyLong_CheckExact(reach)) {
                    Py_DECREF(cr);
                    goto fall;
                }
                dc[i].reach = PyLong_AsLongLong(reach);
                Py_DECREF(cr);
            } else {
                reach = PyDict_GetItemWithError(broadcast, d);
                if (reach == NULL && PyErr_Occurred()) goto done;
                cls = reach != NULL ? fx_broadcast : fx_external;
                Py_INCREF(cls);
                dc[i].cls = cls;
                ndc = i + 1;
                if (reach == NULL) {
                    dc[i].reach = 1;
                } else {
                    if (!PyLong_CheckExact(reach)) goto fall;
                    dc[i].reach = PyLong_AsLongLong(reach);
                }
            }
            if (dc[i].reach == -1 && PyErr_Occurred()) {
                PyErr_Clear();
                goto fall;
            }
            if (dc[i].reach < 0 || dc[i].reach > 4294967296LL)
                goto fall;
            dc[i].dest = d;
        }
    }

    /* ---- from here on the state changes, as in the reference ---- */
    {
    double dt = last_t ? t - last_t : 0.0;
    if (dt < 0.0) {
        dt = 0.0;
    } else {
        last_t = t;
        if (xset(st, &fa_last_t, t_o) < 0) goto done;
    }
    if (dt > 0.0) {
        double d1 = exp(-dt / 60.0), d15 = exp(-dt / 900.0), d60 = exp(-dt / 3600.0);
        c[12] *= exp(-dt / 86400.0);
        c[0] *= d1;
        c[1] *= d15;
        c[2] *= d15;
        c[3] *= d60;
        c[4] *= d60;
        c[5] *= d15;
        c[6] *= d60;
        c[7] *= d15;
        c[8] *= d60;
        c[9] *= d60;
        c[10] *= d15;
        c[11] *= d60;
    }
    if (t - gen_t >= 3600.0) {
        /* as the reference: recent_b takes recent_a's int (or 0), recent_a is 0 (ra_o and rb_o stay the
         * filters the destinations are read against) */
        PyObject *zero = PyLong_FromLong(0);
        if (zero == NULL) goto done;
        OWN(zero);
        rb_o = t - gen_t < 2 * 3600.0 ? ra_o : zero;
        ra_o = zero;
        if (xset(st, &fa_recent_b, rb_o) < 0) goto done;
        if (xset(st, &fa_recent_a, ra_o) < 0) goto done;
        if (xset(st, &fa_gen_t, t_o) < 0) goto done;
    }

    int approved = approval_id != Py_None;
    double w = PyFloat_AS_DOUBLE(w_o), wconf = PyFloat_AS_DOUBLE(wc_o);
    double vol = w * (double)(records > 0 ? records : 1);
    int sensitive = w >= wconf && w > 0.0;
    int is_read = is_ascii(action, "read"), is_delete = is_ascii(action, "delete"),
        is_write = is_ascii(action, "write"), is_exec = is_ascii(action, "exec");
    c[0] += 1.0;
    c[1] += 1.0;
    c[4] += (double)nbytes_ev;
    if (!approved) {
        c[2] += vol;
        c[3] += vol;
    }

    if ((novel = list_new()) == NULL || (adopted_out = list_new()) == NULL) goto done;
    double wn = 1.0 + w / 5.0;
    uint32_t h_tool, h_res;
    if (str_hash(tool, &h_tool) < 0) goto done;
    {
        const char *p;
        Py_ssize_t n;
        PyObject *tb;
        if (utf8_of(resource, &p, &n, &tb) < 0) goto done;
        Py_ssize_t end = n;
        /* resource_family: up to the first "/" after the first "://" (its ":" found with memchr) */
        for (const char *colon = memchr(p, ':', (size_t)n); colon != NULL && colon + 2 < p + n;
             colon = memchr(colon + 1, ':', (size_t)(p + n - (colon + 1)))) {
            if (colon[1] == '/' && colon[2] == '/') {
                const char *slash = memchr(colon + 3, '/', (size_t)(p + n - (colon + 3)));
                end = slash != NULL ? slash - p : n;
                break;
            }
        }
        h_res = crc_update(0, p, end);
        Py_XDECREF(tb);
    }
    double novelty = 0.0, novel_tool = 0.0;
    int acting = !is_read || ndests > 0;
    if (!SKETCH_HAS(tools_o, b_tools, h_tool, TOOL_MASK)) {
        uint64_t k = ((uint64_t)K_TOOL_ << 32) | h_tool;
        if ((r = adopted_has(adopted, k)) < 0) goto done;
        if (r) {
            if (append_key(adopted_out, k) < 0) goto done;
        } else {
            novelty += wn;
            novel_tool = wn * (acting ? 2.0 : 1.0);
            if (append_key(novel, k) < 0) goto done;
        }
    }
    if (!SKETCH_HAS(res_o, b_res, h_res, RES_MASK)) {
        uint64_t k = ((uint64_t)K_RES_ << 32) | h_res;
        if ((r = adopted_has(adopted, k)) < 0) goto done;
        if (r) {
            if (append_key(adopted_out, k) < 0) goto done;
        } else {
            novelty += wn;
            if (append_key(novel, k) < 0) goto done;
        }
    }

    /* the task slot, and its context */
    int slot_base = -1;
    bits128 context = {0, 0};
    if (task_id != Py_None) {
        double hf = (double)h_task;
        int slot = task_slot;
        if (slot >= 0) {
            tasks[SLOT * slot + 3] = t;
        } else {
            int oldest = 0;
            for (int i = 1; i < N_TASKS; i++)
                if (tasks[SLOT * i + 3] < tasks[SLOT * oldest + 3])
                    oldest = i;
            double *b = tasks + SLOT * oldest;
            b[0] = hf;
            for (int k = 1; k < SLOT; k++)
                b[k] = 0.0;
            b[3] = t;
            slot = oldest;
        }
        slot_base = SLOT * slot;
        context.lo = (uint64_t)tasks[slot_base + 7] | ((uint64_t)tasks[slot_base + 8] << 32);
        context.hi = (uint64_t)tasks[slot_base + 9] | ((uint64_t)tasks[slot_base + 10] << 32);
    }
    if (who != Py_None) {
        if (word_bits(who, &context, NULL, NULL) < 0) goto done;
    }

    /* destinations */
    long long fanout = 0;
    double strangers = 0.0, novel_out = 0.0;
    long n_new_recent = 0, n_new_ext = 0;
    int outward = 0, known = 1, any_broadcast = 0;
    if ((dest_hashes = list_new()) == NULL || (new_out = list_new()) == NULL) goto done;
    if ((classes = PyTuple_New(ndests)) == NULL) goto done;
    int ra_changed = 0;
#if SKETCH_DIGITS
    /* recent_a's digits, to add to; recent_b's bits are read from its int */
    digit ra_d[RECENT_DIGITS];
    if (ndests > 0)
        recent_digits(ra_o, ra_d);
#define RECENT_HAS(h) (digits_has(ra_d, (h), RECENT_MASK) || SKETCH_HAS(rb_o, NULL, (h), RECENT_MASK))
#define RECENT_ADD(h) digits_add(ra_d, (h), RECENT_MASK)
#else
    if (ndests > 0) {
        if (bloom_bytes(ra_o, b_ra, 64, 1) != 0 || bloom_bytes(rb_o, b_rb, 64, 1) != 0) goto fail_late;
    }
#define RECENT_HAS(h) (bit_has(b_ra, (h), RECENT_MASK) || bit_has(b_rb, (h), RECENT_MASK))
#define RECENT_ADD(h) bit_add(b_ra, (h), RECENT_MASK)
#endif
    for (Py_ssize_t i = 0; i < ndests; i++) {
        PyObject *d = dc[i].dest, *cls = dc[i].cls;
        Py_INCREF(cls);
        PyTuple_SET_ITEM(classes, i, cls);
        if (!any_broadcast) {
            r = cls == fx_broadcast ? 1
                : PyUnicode_CheckExact(cls) && PyUnicode_CheckExact(fx_broadcast) ? str_eq(cls, fx_broadcast)
                : PyObject_RichCompareBool(cls, fx_broadcast, Py_EQ);
            if (r < 0) goto done;
            any_broadcast = r;
        }
        int ext = cls == fx_external || cls == fx_broadcast;
        if (ext)
            outward = 1;
        fanout += dc[i].reach;
        if (i >= LOOKED) {
            known = 0;
            continue;
        }
        uint32_t h;
        if (str_hash(d, &h) < 0) goto done;
        if (append_key(dest_hashes, h) < 0) goto done;
        if (!RECENT_HAS(h)) {
            RECENT_ADD(h);
            ra_changed = 1;
            n_new_recent += 1;
            if (ext)
                n_new_ext += 1;
        }
        uint64_t dk = ((uint64_t)K_DEST_ << 32) | h;
        if (SKETCH_HAS(dests_o, b_dests, h, DEST_MASK)) {
            /* it reached this destination's audience before */
        } else if ((r = adopted_has(adopted, dk)) != 0) {
            if (r < 0) goto done;
            if (append_key(adopted_out, dk) < 0) goto done;
        } else {
            known = 0;
            if (append_key(novel, dk) < 0) goto done;
            novelty += wn;
            if (ext) {
                uint32_t hf;
                if (!family_hash_of(d, &hf)) {
                    PyObject *fam = PyObject_CallOneArg(fx_destination_family, d);
                    if (fam == NULL) goto done;
                    r = str_hash(fam, &hf);
                    Py_DECREF(fam);
                    if (r < 0) goto done;
                }
                if (append_key(dest_hashes, hf) < 0) goto done;
                double add;
                if (SKETCH_HAS(dests_o, b_dests, hf, DEST_MASK)) {
                    add = wn;
                } else {
                    add = 3.0 * wn;
                    if (append_key(novel, ((uint64_t)K_DEST_ << 32) | hf) < 0) goto done;
                }
                uint64_t dw[16];
                int ndw;
                if (word_bits(d, NULL, dw, &ndw) < 0) goto done;
                int named = 0;
                if (ndw > 0 && (context.lo || context.hi)) {
                    for (int j = 0; j < ndw; j++)
                        if (b128_get(&context, (unsigned)(dw[j] & 127)) && b128_get(&context, (unsigned)((dw[j] >> 7) & 127))) {
                            named = 1;
                            break;
                        }
                }
                if (named)
                    add *= 0.25;
                else
                    strangers += add;
                novel_out += add;
                if (PyList_GET_SIZE(new_out) < 5 && PyList_Append(new_out, d) < 0) goto done;
            }
        }
    }
#undef RECENT_HAS
#undef RECENT_ADD
    if (ndests > 0 && ra_changed) {
#if SKETCH_DIGITS
        PyObject *v = digits_long(ra_d, RECENT_DIGITS);
        if (v == NULL) goto done;
        r = xset(st, &fa_recent_a, v);
        Py_DECREF(v);
        if (r < 0) goto done;
#else
        if (set_bloom(st, &fa_recent_a, b_ra, 64) < 0) goto done;
#endif
    }
    Py_ssize_t n_new_out = PyList_GET_SIZE(new_out);
    if (n_new_out && !approved)
        c[12] += (double)n_new_out;
    if (approved) {
        novel_out = 0.0;
    } else {
        c[7] += (double)fanout;
        if (outward) {
            c[5] += vol;
            c[6] += vol;
        }
    }
    c[8] += (double)n_new_recent;
    c[9] += (double)n_new_ext;
    c[11] += novelty;
    double deleted = 0.0;
    if (is_delete) {
        deleted = (double)(records > 0 ? records : 1);
        c[10] += deleted;
    }

    /* who asked */
    double unfamiliar = 0.0;
    uint32_t h_who = 0;
    if (who != Py_None) {
        r = PyUnicode_CheckExact(who) && PyUnicode_CheckExact(operator_id) ? !str_eq(who, operator_id)
            : PyObject_RichCompareBool(who, operator_id, Py_NE);
        if (r < 0) goto done;
        if (r) {
            if (str_hash(who, &h_who) < 0) goto done;
            if (!SKETCH_HAS(princ_o, b_princ, h_who, PRINCIPAL_MASK)) {
                uint64_t k = ((uint64_t)K_PRINCIPAL_ << 32) | h_who;
                if ((r = adopted_has(adopted, k)) < 0) goto done;
                if (r) {
                    if (append_key(adopted_out, k) < 0) goto done;
                } else {
                    unfamiliar = directed_harm(is_delete, is_write, outward, sensitive, fanout, any_broadcast, ndests > 0);
                    if (append_key(novel, k) < 0) goto done;
                }
            }
        }
    }

    /* flows inside a task */
    double task_exfil = 0.0, rule2 = 0.0, task_n = 0.0, novel_steps = 0.0, detour = 0.0;
    uint32_t step = 0;
    if (slot_base >= 0) {
        double *b = tasks + slot_base;
        long flags = (long)b[1];
        if (b[5] == 0.0 && unfamiliar > 0.0) {
            flags |= F_STRANGER;
        } else if ((flags & F_STRANGER) && who != Py_None && unfamiliar == 0.0 && h_who) {
            unfamiliar = directed_harm(is_delete, is_write, outward, sensitive, fanout, any_broadcast, ndests > 0);
        }
        bits128 ctx = context;
        if (word_bits(resource, &ctx, NULL, NULL) < 0) goto done;
        b[7] = (double)(ctx.lo & 0xFFFFFFFFu);
        b[8] = (double)(ctx.lo >> 32);
        b[9] = (double)(ctx.hi & 0xFFFFFFFFu);
        b[10] = (double)(ctx.hi >> 32);
        long untrusted_before = flags & F_UNTRUSTED;
        uint64_t prev = (uint64_t)b[4];
        if (!prev)
            prev = 0x5A17;
        step = (uint32_t)(((prev * 0x9E3779B1ull) ^ h_tool) & 0xFFFFFFFFu);
        b[4] = (double)h_tool;
        b[5] += 1.0;
        task_n = b[5];
        int new_step = !SKETCH_HAS(steps_o, b_steps, step, STEP_MASK);
        if (new_step) {
            uint64_t k = ((uint64_t)K_STEP_ << 32) | step;
            if ((r = adopted_has(adopted, k)) < 0) goto done;
            if (r) {
                if (append_key(adopted_out, k) < 0) goto done;
                new_step = 0;
            } else {
                b[6] += 1.0;
                if (append_key(novel, k) < 0) goto done;
            }
        }
        if (new_step || outward || is_delete)
            novel_steps = b[6];
        if (is_read || is_exec) {
            if ((r = untrusted_source(policy, resource)) < 0) goto done;
            if (r)
                flags |= F_UNTRUSTED;
        }
        if (sensitive && !outward) {
            flags |= F_SENSITIVE;
            b[2] += vol;
        }
        b[1] = (double)flags;
        if (outward && !approved) {
            if (flags & F_SENSITIVE)
                task_exfil = b[2] + (sensitive ? vol : 0.0);
            else if (sensitive)
                task_exfil = vol;
            if ((flags & 3) == 3 || ((flags & F_UNTRUSTED) && sensitive))
                rule2 = 1.0;
            if (untrusted_before && strangers > 0.0)
                detour = strangers;
        }
        if (untrusted_before && acting && !approved && (new_step || b[6] > 0.0))
            detour += wn * (is_delete ? 3.0 : outward ? 2.0 : 1.0);
    } else if (outward && sensitive && !approved) {
        task_exfil = vol;
    }
    double outsider = 0.0;
    if (unfamiliar > 0.0) {
        PyObject *o = PyObject_CallFunctionObjArgs(fx_is_outsider, policy, who, NULL);
        if (o == NULL) goto done;
        r = PyObject_IsTrue(o);
        Py_DECREF(o);
        if (r < 0) goto done;
        if (r) {
            outsider = unfamiliar;
            unfamiliar = 0.0;
        }
    }

    /* configuration change */
    if (has_instr) {
        uint32_t ih;
        if (str_hash(ihash, &ih) < 0) goto done;
        int differs;
#if SKETCH_DIGITS
        Py_ssize_t nd = Py_SIZE(instr_o);  /* (3.11: an int of up to two digits read from them) */
        if (nd >= 0 && nd <= 2) {
            const digit *dg = ((PyLongObject *)instr_o)->ob_digit;
            differs = (nd == 0 ? 0ull : nd == 1 ? (unsigned long long)dg[0]
                       : (unsigned long long)dg[0] | (unsigned long long)dg[1] << PyLong_SHIFT) != ih;
        } else
#endif
        {
            unsigned long long cur = PyLong_AsUnsignedLongLong(instr_o);
            if (cur == (unsigned long long)-1 && PyErr_Occurred()) {
                PyErr_Clear();
                differs = 1;  /* a negative or huge int is not this hash */
            } else {
                differs = cur != ih;
            }
        }
        if (differs) {
            if ((r = PyObject_IsTrue(instr_o)) < 0) goto done;
            if (r) {
                instr_t = t;
                if (xset(st, &fa_instr_t, t_o) < 0) goto done;
            }
            PyObject *v = hash_int(ih);
            if (v == NULL) goto done;
            r = xset(st, &fa_instr, v);
            Py_DECREF(v);
            if (r < 0) goto done;
        }
    }
    int config_change = instr_t > 0.0 && t - instr_t < 3600.0;

    double rarity = 0.0;
    if (hours != Py_None) {
        /* int(t // 3600) % 24. The hour [hour_lo, hour_lo + 3600) of the last event is remembered: for t in it
         * t // 3600 is that hour's (for 0 <= t < 2**53, fmod(t, 3600) is exact, so t - fmod(t, 3600) is q * 3600
         * and float floor division gives q exactly), which saves fmod and floor for nearly every event */
        static double hour_lo = 1.0, hour_hi = 0.0;  /* (empty) */
        static long long hour_of_day;
        long long hr;
        if (t >= hour_lo && t < hour_hi) {
            hr = hour_of_day;
        } else {
            double q = py_floordiv(t, 3600.0);
            if (!(fabs(q) < 9e18)) goto fall_late;
            hr = ((long long)q) % 24;
            if (hr < 0)
                hr += 24;
            if (q >= 0.0 && q < 2e12) {  /* q * 3600 < 2**53: the bounds are exact */
                hour_lo = q * 3600.0;
                hour_hi = (q + 1.0) * 3600.0;
                hour_of_day = hr;
            }
        }
        if (hr >= PyTuple_GET_SIZE(hours)) {
            PyErr_SetString(PyExc_IndexError, "tuple index out of range");
            goto done;
        }
        double p = PyFloat_AsDouble(PyTuple_GET_ITEM(hours, hr));
        if (p == -1.0 && PyErr_Occurred()) goto done;
        if (isnan(p)) {
            rarity = -p;
        } else if (isinf(p)) {
            if (p > 0) {
                rarity = -p;
            } else {
                PyErr_SetString(PyExc_ValueError, "math domain error");
                goto done;
            }
        } else if (p > 0.0) {
            rarity = -log2(p);
        } else {
            PyErr_SetString(PyExc_ValueError, "math domain error");
            goto done;
        }
    }

    /* the observation */
    if ((obs = ((PyTypeObject *)fx_observation)->tp_alloc((PyTypeObject *)fx_observation, 0)) == NULL) goto done;
    double xs[NX] = {
        c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[10], c[11],
        approved ? 0.0 : vol, (double)fanout, task_exfil, rule2, novel_out, rarity,
        c[12], task_n, novel_steps, approved ? 0.0 : unfamiliar, detour, novel_tool,
        approved ? 0.0 : outsider,
    };
    /* x: an array('d') of row_new's when extract_setup gave one (no float object per feature), else a list */
    PyObject *x = fx_row_new != NULL ? row_result_new(fx_row_new, xs, NX) : float_list(xs, NX);
    if (x == NULL) goto done;
    r = xset(obs, &fa_x, x);
    Py_DECREF(x);
    if (r < 0) goto done;
    if (xset(obs, &fa_dest_classes, classes) < 0) goto done;
    {
        PyObject *pend = PyTuple_New(3), *v0 = hash_int(h_tool), *v1 = hash_int(h_res);
        if (pend == NULL || v0 == NULL || v1 == NULL) {
            Py_XDECREF(pend);
            Py_XDECREF(v0);
            Py_XDECREF(v1);
            goto done;
        }
        Py_INCREF(dest_hashes);
        PyTuple_SET_ITEM(pend, 0, v0);
        PyTuple_SET_ITEM(pend, 1, v1);
        PyTuple_SET_ITEM(pend, 2, dest_hashes);
        r = xset(obs, &fa_pending, pend);
        Py_DECREF(pend);
        if (r < 0) goto done;
    }
    if (xset(obs, &fa_new_outbound, new_out) < 0) goto done;
    if (xset(obs, &fa_config_change, config_change ? Py_True : Py_False) < 0) goto done;
    if (xset(obs, &fa_outbound, outward ? Py_True : Py_False) < 0) goto done;
    if (xset(obs, &fa_approved, approved ? Py_True : Py_False) < 0) goto done;
    if (xset(obs, &fa_novel, novel) < 0) goto done;
    if (xset(obs, &fa_adopted, adopted_out) < 0) goto done;
    if (xset(obs, &fa_known_reach, (ndests > 0 && known) ? Py_True : Py_False) < 0) goto done;
    {
        PyObject *v = hash_int(step);
        if (v == NULL) goto done;
        r = xset(obs, &fa_step, v);
        Py_DECREF(v);
        if (r < 0) goto done;
        v = hash_int(h_who);
        if (v == NULL) goto done;
        r = xset(obs, &fa_principal, v);
        Py_DECREF(v);
        if (r < 0) goto done;
    }
    {
        /* the kind: stable_hash(action + ":" + tool_family(tool)) */
        const char *p, *q;
        Py_ssize_t n, m;
        PyObject *t1, *t2;
        if (utf8_of(action, &p, &n, &t1) < 0) goto done;
        if (utf8_of(tool, &q, &m, &t2) < 0) {
            Py_XDECREF(t1);
            goto done;
        }
        Py_ssize_t e = 0;
        while (e < m && q[e] != '.' && q[e] != '_' && q[e] != ':' && q[e] != '/' && q[e] != '-')
            e++;
        /* the CRC of action + ":" remembered for the first 8 action str met (the decoder's five verbs are shared
         * str objects: one held is that text) */
        static struct { PyObject *s; uint32_t crc; } verb[8];
        uint32_t pre = 0;
        int vi = 0;
        while (vi < 8 && verb[vi].s != NULL && verb[vi].s != action)
            vi++;
        if (vi < 8 && verb[vi].s == action) {
            pre = verb[vi].crc;
        } else {
            pre = crc_update(crc_update(0, p, n), ":", 1);
            if (vi < 8) {
                Py_INCREF(action);
                verb[vi].s = action;
                verb[vi].crc = pre;
            }
        }
        uint32_t kh = crc_update(pre, q, e);
        Py_XDECREF(t1);
        Py_XDECREF(t2);
        PyObject *v = hash_int(kh);
        if (v == NULL) goto done;
        r = xset(obs, &fa_kind, v);
        Py_DECREF(v);
        if (r < 0) goto done;
    }
    {
        /* the windows this action is not blamed for, in the reference's order: one of 2**11 tuples, made
         * once each and shared (a tuple of ints is immutable) */
        static PyObject *quiet_tuples[1 << 11];
        static const int windows[11] = {2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 18};
        unsigned qbits = 0;
        const double S = 0.05;
        if (approved || vol == 0.0 || vol < S * c[2]) qbits |= 1u << 0;
        if (approved || vol == 0.0 || vol < S * c[3]) qbits |= 1u << 1;
        if ((double)nbytes_ev < S * c[4] || !nbytes_ev) qbits |= 1u << 2;
        if (approved || !outward || vol < S * c[5] || vol == 0.0) qbits |= 1u << 3;
        if (approved || !outward || vol < S * c[6] || vol == 0.0) qbits |= 1u << 4;
        if (approved || !fanout || (double)fanout < S * c[7]) qbits |= 1u << 5;
        if (!n_new_recent || (double)n_new_recent < S * c[8]) qbits |= 1u << 6;
        if (!n_new_ext || (double)n_new_ext < S * c[9]) qbits |= 1u << 7;
        if (!deleted || deleted < S * c[10]) qbits |= 1u << 8;
        if (!novelty || novelty < S * c[11]) qbits |= 1u << 9;
        if (approved || !n_new_out) qbits |= 1u << 10;
        PyObject *qt = quiet_tuples[qbits];
        if (qt == NULL) {
            int nq = 0;
            for (int i = 0; i < 11; i++)
                nq += (qbits >> i) & 1;
            if ((qt = PyTuple_New(nq)) == NULL) goto done;
            for (int i = 0, j = 0; i < 11; i++) {
                if (!((qbits >> i) & 1))
                    continue;
                PyObject *v = PyLong_FromLong(windows[i]);
                if (v == NULL) {
                    Py_DECREF(qt);
                    goto done;
                }
                PyTuple_SET_ITEM(qt, j++, v);
            }
            quiet_tuples[qbits] = qt;  /* held for good */
        }
        Py_INCREF(qt);
        r = xset(obs, &fa_quiet, qt);
        Py_DECREF(qt);
        if (r < 0) goto done;
    }
    res = obs;
    obs = NULL;
    goto done;
    }

fall_late:  /* cannot happen for an event time decode_event accepts (|t| < 2**63 hours) */
    PyErr_SetString(PyExc_OverflowError, "event time out of the kernel's range");
    goto done;
#if !SKETCH_DIGITS
fail_late:  /* cannot happen: a filter bloom_fits took converts (short of memory) */
    if (!PyErr_Occurred())
        PyErr_SetString(PyExc_SystemError, "a recent-destinations filter changed under extract");
    goto done;
#endif
err_or_fall:
    if (r < 0)
        goto done;
fall:
    Py_INCREF(fallback);
    res = fallback;
done:
    if (have_cv) buf_release(&cv);
    if (have_tv) buf_release(&tv);
    if (dc != NULL) {
        for (Py_ssize_t i = 0; i < ndc; i++)
            Py_XDECREF(dc[i].cls);
        PyMem_Free(dc);
    }
    Py_XDECREF(c_o);
    Py_XDECREF(tasks_o);
    Py_XDECREF(classify);
    Py_XDECREF(broadcast);
    Py_XDECREF(obs);
    Py_XDECREF(novel);
    Py_XDECREF(adopted_out);
    Py_XDECREF(dest_hashes);
    Py_XDECREF(new_out);
    Py_XDECREF(classes);
    for (int i = 0; i < nown; i++)
        Py_DECREF(own[i]);
    return res;
#undef OWN
}

/* ------------------------------------------------------------------------------------------------------
 * Novelty that settles (detector/features.py settle, commit_novel): sketch.bloom_add on the lifetime sketches.
 * ------------------------------------------------------------------------------------------------------ */

/* bloom_add(v, h, mask) for a non-negative int v: v | 1 << (h & mask) | 1 << ((h >> 16) & mask) (v itself when
 * both bits are set: an equal int). On CPython 3.11 the digits are copied and set; elsewhere by the number
 * protocol. */
static PyObject *
long_bloom_add(PyObject *v, uint32_t h, uint32_t mask)
{
    uint32_t i = h & mask, j = (h >> 16) & mask;
#if SKETCH_DIGITS
    if (long_bit(v, i) && long_bit(v, j)) {
        Py_INCREF(v);
        return v;
    }
    Py_ssize_t size = Py_SIZE(v), hi = (Py_ssize_t)((i > j ? i : j) / PyLong_SHIFT) + 1;
    Py_ssize_t n = size > hi ? size : hi;
    if (n == 1)  /* one digit: as PyLong makes it (small ints are shared) */
        return PyLong_FromUnsignedLong((unsigned long)((size ? ((PyLongObject *)v)->ob_digit[0] : 0)
                                                       | ((digit)1 << i) | ((digit)1 << j)));
    PyLongObject *r = _PyLong_New(n);
    if (r == NULL)
        return NULL;
    memcpy(r->ob_digit, ((PyLongObject *)v)->ob_digit, (size_t)size * sizeof(digit));
    memset(r->ob_digit + size, 0, (size_t)(n - size) * sizeof(digit));
    r->ob_digit[i / PyLong_SHIFT] |= (digit)1 << (i % PyLong_SHIFT);
    r->ob_digit[j / PyLong_SHIFT] |= (digit)1 << (j % PyLong_SHIFT);
    return (PyObject *)r;
#else
    PyObject *one = PyLong_FromLong(1), *si = PyLong_FromUnsignedLong(i), *sj = PyLong_FromUnsignedLong(j);
    PyObject *bi = one && si ? PyNumber_Lshift(one, si) : NULL, *bj = one && sj ? PyNumber_Lshift(one, sj) : NULL;
    PyObject *t = bi ? PyNumber_Or(v, bi) : NULL, *r = t && bj ? PyNumber_Or(t, bj) : NULL;
    Py_XDECREF(one); Py_XDECREF(si); Py_XDECREF(sj); Py_XDECREF(bi); Py_XDECREF(bj); Py_XDECREF(t);
    return r;
#endif
}

/* settle_keys(st, keys, novel) -> features._py_settle for each key of the list `keys` (with novel, those
 * commit_novel settles: not a task step or principal of hash 0): True; None (st untouched) when st's sketches
 * are not non-negative ints or a key is not a non-negative int below 2**64, for the reference to do. */
static PyObject *
settle_keys(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (fc_count("settle_keys", nargs, 3, 3) < 0)
        return NULL;
    PyObject *st = args[0], *keys = args[1];
    int novel = PyObject_IsTrue(args[2]);
    if (novel < 0)
        return NULL;
    if (!PyList_CheckExact(keys))
        Py_RETURN_NONE;
    static fastattr *fas[5] = {&fa_tools, &fa_resources, &fa_dests, &fa_steps, &fa_principals};
    static const uint32_t masks[5] = {TOOL_MASK, RES_MASK, DEST_MASK, STEP_MASK, PRINCIPAL_MASK};
    Py_ssize_t n = PyList_GET_SIZE(keys);
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *key = PyList_GET_ITEM(keys, k);
        if (!PyLong_CheckExact(key) || _PyLong_Sign(key) < 0 || _PyLong_NumBits(key) > 64)
            Py_RETURN_NONE;
    }
    PyObject *vals[5] = {NULL, NULL, NULL, NULL, NULL};
    int changed[5] = {0, 0, 0, 0, 0}, fall = 0;
    for (int s = 0; s < 5; s++) {
        if ((vals[s] = xget(st, fas[s])) == NULL)
            goto fail;
        if (!PyLong_CheckExact(vals[s]) || _PyLong_Sign(vals[s]) < 0)
            fall = 1;
    }
    if (fall) {
        for (int s = 0; s < 5; s++)
            Py_DECREF(vals[s]);
        Py_RETURN_NONE;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        unsigned long long key = PyLong_AsUnsignedLongLong(PyList_GET_ITEM(keys, k));
        if (key == (unsigned long long)-1 && PyErr_Occurred())
            goto fail;
        unsigned long long kind = key >> 32;
        uint32_t h = (uint32_t)(key & 0xFFFFFFFFu);
        if (kind > 4 || (novel && !h && kind >= K_STEP_))
            continue;
        PyObject *nv = long_bloom_add(vals[kind], h, masks[kind]);
        if (nv == NULL)
            goto fail;
        Py_SETREF(vals[kind], nv);
        changed[kind] = 1;
    }
    for (int s = 0; s < 5; s++)
        if (changed[s] && xset(st, fas[s], vals[s]) < 0)
            goto fail;
    for (int s = 0; s < 5; s++)
        Py_DECREF(vals[s]);
    Py_RETURN_TRUE;
fail:
    for (int s = 0; s < 5; s++)
        Py_XDECREF(vals[s]);
    return NULL;
}

/* ------------------------------------------------------------------------------------------------------
 * Pending novelty and peers' adoptions (detector/engine.py Engine._py_pending, Engine._py_peers): what the
 * engine counts of the items an action met for the first time, each the transcription of its reference.
 * ------------------------------------------------------------------------------------------------------ */

#define PENDING_MAX 64  /* doubles of pending novelty the kernels take (engine.PENDING_SLOTS x _PW) */
#define ITEMS_MAX 256   /* items of one action they take */

static PyObject *s_popitem, *kw_last;  /* "popitem", ("last",) */

static int
pk_names(void)
{
    PyObject *mod = PyImport_ImportModule("array");
    if (mod == NULL)
        return -1;
    PyObject *t = PyObject_GetAttrString(mod, "array");
    Py_DECREF(mod);
    if (t == NULL)
        return -1;
    if (!PyType_Check(t)) {
        Py_DECREF(t);
        PyErr_SetString(PyExc_TypeError, "array.array is not a class");
        return -1;
    }
    array_type = (PyTypeObject *)t;
    PyObject *last = PyUnicode_InternFromString("last");
    if (last == NULL)
        return -1;
    kw_last = PyTuple_Pack(1, last);
    Py_DECREF(last);
    if (kw_last == NULL || (s_popitem = PyUnicode_InternFromString("popitem")) == NULL)
        return -1;
    return 0;
}

/* a threshold as Python compares it with a float: an exact float, or an exact int of at most 2**53 in magnitude
 * (its double is exact): 1 with *v set; 0 for anything else (the reference decides) */
static int
exact_num(PyObject *o, double *v)
{
    if (PyFloat_CheckExact(o)) {
        *v = PyFloat_AS_DOUBLE(o);
        return 1;
    }
    if (!PyLong_CheckExact(o))
        return 0;
    int of;
    long long i = PyLong_AsLongLongAndOverflow(o, &of);
    if (i == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    if (of || i > (1LL << 53) || i < -(1LL << 53))
        return 0;
    *v = (double)i;
    return 1;
}

/* int(v) of a threshold (an exact float or int) into *need: 1; 0 for the reference to decide (another type, a
 * float that is not finite or an int beyond a Py_ssize_t) */
static int
exact_int(PyObject *o, Py_ssize_t *need)
{
    if (PyFloat_CheckExact(o)) {
        double v = PyFloat_AS_DOUBLE(o);
        if (!(fabs(v) < 4e18))
            return 0;
        *need = (Py_ssize_t)v;  /* truncated towards zero, as int() */
        return 1;
    }
    if (!PyLong_CheckExact(o))
        return 0;
    Py_ssize_t i = PyLong_AsSsize_t(o);
    if (i == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    *need = i;
    return 1;
}

/* the items of the list keys as float(key) into out (at most ITEMS_MAX): their number; -1 when one is not an exact
 * int in [0, 2**53) (its float exact) or there are more (the reference decides) */
static Py_ssize_t
item_keys(PyObject *keys, double *out)
{
    Py_ssize_t n = PyList_GET_SIZE(keys);
    if (n > ITEMS_MAX)
        return -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *key = PyList_GET_ITEM(keys, i);
        if (!PyLong_CheckExact(key) || _PyLong_Sign(key) < 0 || _PyLong_NumBits(key) > 53)
            return -1;
        out[i] = (double)PyLong_AsUnsignedLongLong(key);
    }
    return n;
}

/* Engine._py_pending's loop on the pending items p (*len doubles: slots of _PW = 4 (key, uses, first use t,
 * tainted), room for `slots` of them), in place; the index in keys of each item that settled (its slot deleted)
 * into settled, their number returned (the caller settles them: nothing here reads the sketches). For p and t
 * without NaN (the caller checks), which makes min()'s tuples (tainted, first t, index) compare as doubles do. */
static Py_ssize_t
pending_step(double *p, Py_ssize_t *len, const double *keys, Py_ssize_t nk, double t, int harmful, double uses,
             double span, Py_ssize_t slots, Py_ssize_t *settled)
{
    Py_ssize_t ns = 0, n = *len;
    for (Py_ssize_t k = 0; k < nk; k++) {
        /* for b in range(0, len(p), _PW): if p[b] == fk: break */
        const double fk = keys[k];
        Py_ssize_t b = 0;
        while (b < n && p[b] != fk)
            b += 4;
        if (b == n) {
            if (n < 4 * slots) {  /* b = len(p); p.extend((fk, 0.0, t, 0.0)) */
                n += 4;
            } else {  /* b = min(range(0, len(p), _PW), key=lambda i: (p[i + 3], p[i + 2], i)) */
                b = 0;
                for (Py_ssize_t i = 4; i < n; i += 4)
                    if (p[i + 3] < p[b + 3] || (p[i + 3] == p[b + 3] && p[i + 2] < p[b + 2]))
                        b = i;
            }
            p[b] = fk;
            p[b + 1] = 0.0;
            p[b + 2] = t;
            p[b + 3] = 0.0;
        }
        /* p[b + 1] += 1.0; if harmful: p[b + 3] = 1.0; elif p[b + 3] == 0.0 and p[b + 1] >= uses and t - p[b + 2] >=
         * span: settle(st.features, key); del p[b:b + _PW] */
        p[b + 1] += 1.0;
        if (harmful) {
            p[b + 3] = 1.0;
        } else if (p[b + 3] == 0.0 && p[b + 1] >= uses && t - p[b + 2] >= span) {
            settled[ns++] = k;
            memmove(p + b, p + b + 4, (size_t)(n - b - 4) * sizeof(double));
            n -= 4;
        }
    }
    *len = n;
    return ns;
}

/* The pending array p (an exact array('d'), `cls` its class) read into buf: its length (a whole number of slots,
 * at most `slots` of them, at most PENDING_MAX doubles, no NaN); -2 for the reference to decide; -1 with an
 * exception set */
static Py_ssize_t
pending_load(PyObject *p, PyTypeObject *cls, Py_ssize_t slots, double *buf)
{
    if (Py_TYPE(p) != cls || slots < 0 || 4 * slots > PENDING_MAX)
        return -2;
    Py_buffer v;
    if (get_doubles(p, &v, 0, "pending") < 0) {
        PyErr_Clear();
        return -2;
    }
    Py_ssize_t len = v.len / (Py_ssize_t)sizeof(double);
    int plain = len % 4 == 0 && len <= 4 * slots;
    if (plain) {
        memcpy(buf, v.buf, (size_t)len * sizeof(double));
        for (Py_ssize_t i = 0; i < len; i++)
            if (isnan(buf[i]))
                plain = 0;
    }
    buf_release(&v);
    return plain ? len : -2;
}

/* The array('d') p (len0 doubles when pending_load read it) made to hold the n doubles of vals: grown by zeros or
 * its tail deleted, then written (what the reference's extend and del leave, byte for byte): 0; -1 with an
 * exception set */
static int
pending_store(PyObject *p, Py_ssize_t len0, const double *vals, Py_ssize_t n)
{
    if (n > len0) {
        PyObject *zeros = PyBytes_FromStringAndSize(NULL, (n - len0) * (Py_ssize_t)sizeof(double));
        if (zeros == NULL)
            return -1;
        memset(PyBytes_AS_STRING(zeros), 0, (size_t)(n - len0) * sizeof(double));
        PyObject *got = PyObject_CallMethod(p, "frombytes", "O", zeros);
        Py_DECREF(zeros);
        if (got == NULL)
            return -1;
        Py_DECREF(got);
    } else if (n < len0 && PySequence_DelSlice(p, n, len0) < 0) {
        return -1;
    }
    Py_buffer v;
    if (get_doubles(p, &v, 1, "pending") < 0)
        return -1;
    int fits = v.len == n * (Py_ssize_t)sizeof(double);
    if (fits && n)
        memcpy(v.buf, vals, (size_t)n * sizeof(double));
    buf_release(&v);
    if (!fits) {
        PyErr_SetString(PyExc_SystemError, "pending: the array is not of the length written");
        return -1;
    }
    return 0;
}

/* The keys of `novel` at the indices `at` (n of them) as a new list; NULL with an exception set */
static PyObject *
keys_at(PyObject *novel, const Py_ssize_t *at, Py_ssize_t n)
{
    PyObject *out = PyList_New(n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *key = PyList_GET_ITEM(novel, at[i]);
        Py_INCREF(key);
        PyList_SET_ITEM(out, i, key);
    }
    return out;
}

/* pending_count(p, keys, t, harmful, uses, span, slots) -> list | None: Engine._py_pending's loop on the pending
 * items p (an array('d')) for the list of item keys, in place; the keys that settled (in order), for the caller to
 * settle. None (p untouched) when an argument is not what the engine passes (p of another shape or with a NaN, a
 * key not an int in [0, 2**53), t not a float or NaN, harmful not a bool, thresholds not numbers): the reference
 * decides. */
static PyObject *
pending_count(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (fc_count("pending_count", nargs, 7, 7) < 0)
        return NULL;
    PyObject *p = args[0], *keys = args[1];
    double buf[PENDING_MAX], fks[ITEMS_MAX], uses, span;
    Py_ssize_t at[ITEMS_MAX], slots, nk, len, len0;
    if (fc_n(args[6], &slots) < 0)
        return NULL;
    if (!PyList_CheckExact(keys) || !PyFloat_CheckExact(args[2]) || isnan(PyFloat_AS_DOUBLE(args[2]))
            || !PyBool_Check(args[3]) || !exact_num(args[4], &uses) || !exact_num(args[5], &span)
            || (nk = item_keys(keys, fks)) < 0 || (len0 = len = pending_load(p, array_type, slots, buf)) == -2)
        Py_RETURN_NONE;
    if (len < 0)
        return NULL;
    Py_ssize_t ns = pending_step(buf, &len, fks, nk, PyFloat_AS_DOUBLE(args[2]), args[3] == Py_True, uses, span, slots,
                                 at);
    if (pending_store(p, len0, buf, len) < 0)
        return NULL;
    return keys_at(keys, at, ns);
}

/* Engine._py_peers's arguments checked (need: int(th.peer_adopters), above 0): 1 when the kernel takes them (items
 * an exact OrderedDict whose entries for these keys are lists [tainted bool, agent hash ints...], adopted an exact
 * dict whose entry for op is a set, op and agent_id exact str, keys exact ints in [0, 2**53)), with *who and *opk
 * (stable_hash(agent_id), stable_hash(op) << 40, a new reference) set; 0 for the reference to decide; -1 with an
 * exception set */
static int
peers_check(PyObject *items, PyObject *adopted, PyObject *op, PyObject *agent_id, PyObject *keys, uint32_t *who,
            PyObject **opk)
{
    double fks[ITEMS_MAX];
    uint32_t oph;
    *opk = NULL;
    if (!PyODict_CheckExact(items) || !PyDict_CheckExact(adopted) || !PyUnicode_CheckExact(op)
            || !PyUnicode_CheckExact(agent_id) || !PyList_CheckExact(keys) || item_keys(keys, fks) < 0)
        return 0;
    PyObject *a = PyDict_GetItemWithError(adopted, op);
    if (a == NULL && PyErr_Occurred())
        return -1;
    if (a != NULL && !PySet_CheckExact(a))
        return 0;
    if (str_hash(agent_id, who) < 0 || str_hash(op, &oph) < 0)
        return -1;
    PyObject *h = PyLong_FromUnsignedLong(oph), *shift = PyLong_FromLong(40);
    *opk = h != NULL && shift != NULL ? PyNumber_Lshift(h, shift) : NULL;
    Py_XDECREF(h);
    Py_XDECREF(shift);
    if (*opk == NULL)
        return -1;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(keys); i++) {
        PyObject *ik = PyNumber_Or(*opk, PyList_GET_ITEM(keys, i));
        if (ik == NULL)
            goto fail;
        PyObject *e = PyDict_GetItemWithError(items, ik);
        Py_DECREF(ik);
        if (e == NULL) {
            if (PyErr_Occurred())
                goto fail;
            continue;
        }
        if (!PyList_CheckExact(e) || PyList_GET_SIZE(e) < 1 || !PyBool_Check(PyList_GET_ITEM(e, 0)))
            goto not_plain;
        for (Py_ssize_t j = 1; j < PyList_GET_SIZE(e); j++)
            if (!PyLong_CheckExact(PyList_GET_ITEM(e, j)))
                goto not_plain;
    }
    return 1;
not_plain:
    Py_CLEAR(*opk);
    return 0;
fail:
    Py_CLEAR(*opk);
    return -1;
}


/* Engine._py_peers's loop for arguments peers_check took (need above 0): 0; -1 with an exception set */
static int
peers_run(PyObject *items, PyObject *adopted, PyObject *op, PyObject *keys, int harmful, Py_ssize_t need,
          uint32_t who, PyObject *opk, Py_ssize_t max_items, Py_ssize_t max_adopted, Py_ssize_t max_operators)
{
    PyObject *who_o = PyLong_FromUnsignedLong(who);
    if (who_o == NULL)
        return -1;
    int rc = -1;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(keys); i++) {
        PyObject *key = PyList_GET_ITEM(keys, i);
        /* e = items.get(opk | key) */
        PyObject *ik = PyNumber_Or(opk, key);
        if (ik == NULL)
            goto done;
        PyObject *e = PyDict_GetItemWithError(items, ik);
        if (e == NULL && PyErr_Occurred()) {
            Py_DECREF(ik);
            goto done;
        }
        Py_XINCREF(e);
        if (e == NULL) {
            /* if len(items) >= _PEER_ITEMS: items.popitem(last=False) */
            if (PyDict_GET_SIZE(items) >= max_items) {
                PyObject *pargs[2] = {items, Py_False};
                PyObject *got = PyObject_VectorcallMethod(s_popitem, pargs, 1, kw_last);
                if (got == NULL) {
                    Py_DECREF(ik);
                    goto done;
                }
                Py_DECREF(got);
            }
            /* e = items[opk | key] = [False] */
            if ((e = PyList_New(1)) == NULL) {
                Py_DECREF(ik);
                goto done;
            }
            Py_INCREF(Py_False);
            PyList_SET_ITEM(e, 0, Py_False);
            if (PyObject_SetItem(items, ik, e) < 0) {
                Py_DECREF(ik);
                Py_DECREF(e);
                goto done;
            }
        }
        Py_DECREF(ik);
        /* if harmful: e[0] = True; continue */
        if (harmful) {
            Py_INCREF(Py_True);
            int r = PyList_SetItem(e, 0, Py_True);
            Py_DECREF(e);
            if (r < 0)
                goto done;
            continue;
        }
        /* if e[0] or who in e[1:]: continue */
        int skip = PyList_GET_ITEM(e, 0) == Py_True;
        for (Py_ssize_t j = 1; !skip && j < PyList_GET_SIZE(e); j++)
            if ((skip = PyObject_RichCompareBool(PyList_GET_ITEM(e, j), who_o, Py_EQ)) < 0) {
                Py_DECREF(e);
                goto done;
            }
        if (skip) {
            Py_DECREF(e);
            continue;
        }
        /* e.append(who) */
        if (PyList_Append(e, who_o) < 0) {
            Py_DECREF(e);
            goto done;
        }
        Py_ssize_t have = PyList_GET_SIZE(e) - 1;
        Py_DECREF(e);
        if (have < need)
            continue;
        /* adopted = self._adopted.get(op); a new set when there is none and fewer than _PEER_OPERATORS have one */
        PyObject *a = PyDict_GetItemWithError(adopted, op);
        if (a == NULL && PyErr_Occurred())
            goto done;
        Py_XINCREF(a);
        if (a == NULL) {
            if (PyDict_GET_SIZE(adopted) >= max_operators)
                continue;
            if ((a = PySet_New(NULL)) == NULL)
                goto done;
            if (PyDict_SetItem(adopted, op, a) < 0) {
                Py_DECREF(a);
                goto done;
            }
        }
        /* if len(adopted) < _PEER_ADOPTED: adopted.add(key) */
        int r = PySet_GET_SIZE(a) < max_adopted ? PySet_Add(a, key) : 0;
        Py_DECREF(a);
        if (r < 0)
            goto done;
    }
    rc = 0;
done:
    Py_DECREF(who_o);
    return rc;
}

/* peers_count(items, adopted, op, agent_id, keys, harmful, peer_adopters, max_items, max_adopted, max_operators)
 * -> True | None: Engine._py_peers (items: engine._peer_items, adopted: engine._adopted, op and agent_id: the
 * event's, keys: the items it met for the first time), in place; None (nothing changed) for what peers_check
 * leaves to the reference, harmful not a bool, or peer_adopters not an exact float or int (int() of it) */
static PyObject *
peers_count(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (fc_count("peers_count", nargs, 10, 10) < 0)
        return NULL;
    Py_ssize_t need, max_items, max_adopted, max_operators;
    if (fc_n(args[7], &max_items) < 0 || fc_n(args[8], &max_adopted) < 0 || fc_n(args[9], &max_operators) < 0)
        return NULL;
    if (!PyBool_Check(args[5]) || !exact_int(args[6], &need))
        Py_RETURN_NONE;
    if (need <= 0)  /* if need <= 0: return */
        Py_RETURN_TRUE;
    uint32_t who;
    PyObject *opk;
    int rc = peers_check(args[0], args[1], args[2], args[3], args[4], &who, &opk);
    if (rc < 0)
        return NULL;
    if (rc == 0)
        Py_RETURN_NONE;
    rc = peers_run(args[0], args[1], args[2], args[4], args[5] == Py_True, need, who, opk, max_items, max_adopted,
                   max_operators);
    Py_DECREF(opk);
    if (rc < 0)
        return NULL;
    Py_RETURN_TRUE;
}

/* ------------------------------------------------------------------------------------------------------
 * Destination habits (detector/habits.py): sends_of and Habits.observe, each the transcription of its
 * reference (_py_sends_of, Habits._py_observe).
 * ------------------------------------------------------------------------------------------------------ */

/* habit_sends(destinations, classes, new, EXTERNAL, BROADCAST, family_key, counted) -> habits._py_sends_of:
 * [(family hash, destination in new, stable_hash(destination))] for the external or broadcast ones among
 * the first `counted` classes; an ASCII str destination's family is hashed here (family_hash), any other
 * asks family_key */
static PyObject *
habit_sends(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (fc_count("habit_sends", nargs, 7, 7) < 0)
        return NULL;
    PyObject *dests = args[0], *classes = args[1], *new = args[2], *ext = args[3], *bc = args[4], *fk = args[5];
    Py_ssize_t counted;
    if (fc_n(args[6], &counted) < 0)
        return NULL;
    PyObject *seq = PySequence_Fast(classes, "classes must be a sequence");
    if (seq == NULL)
        return NULL;
    PyObject *out = PyList_New(0);
    if (out == NULL) {
        Py_DECREF(seq);
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > counted)
        n = counted < 0 ? 0 : counted;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *cls = PySequence_Fast_GET_ITEM(seq, i);
        int r = cls == ext || cls == bc;
        if (!r && (r = PyObject_RichCompareBool(cls, ext, Py_EQ)) == 0)
            r = PyObject_RichCompareBool(cls, bc, Py_EQ);
        if (r < 0)
            goto fail;
        if (!r)
            continue;
        PyObject *d = PySequence_GetItem(dests, i);
        if (d == NULL)
            goto fail;
        PyObject *fam = NULL, *isnew = NULL, *h = NULL, *tup = NULL;
        uint32_t fh, dh;
        if (PyUnicode_CheckExact(d) && family_hash_of(d, &fh))
            fam = PyLong_FromUnsignedLong(fh);
        else
            fam = PyObject_CallOneArg(fk, d);
        if (fam != NULL) {
            r = PySequence_Contains(new, d);
            if (r >= 0) {
                isnew = PyBool_FromLong(r);
                if (str_hash(d, &dh) == 0 && (h = PyLong_FromUnsignedLong(dh)) != NULL)
                    tup = PyTuple_Pack(3, fam, isnew, h);
            }
        }
        Py_DECREF(d);
        Py_XDECREF(fam);
        Py_XDECREF(isnew);
        Py_XDECREF(h);
        if (tup == NULL)
            goto fail;
        r = PyList_Append(out, tup);
        Py_DECREF(tup);
        if (r < 0)
            goto fail;
    }
    Py_DECREF(seq);
    return out;
fail:
    Py_DECREF(seq);
    Py_DECREF(out);
    return NULL;
}

/* habit_habitual(a, family, min_sends, min_share) -> Habits._py_habitual(family): whether the family's slot
 * (the first whose family is float(family)) has sends >= min_sends and new sends >= min_share * sends; None
 * for an array whose length is not a whole number of slots (the reference decides) */
static PyObject *
habit_habitual(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (fc_count("habit_habitual", nargs, 4, 4) < 0)
        return NULL;
    double fk, min_sends, min_share;
    if (PyLong_CheckExact(args[1])) {
        fk = PyLong_AsDouble(args[1]);
        if (fk == -1.0 && PyErr_Occurred())
            return NULL;
    } else if (PyFloat_CheckExact(args[1])) {
        fk = PyFloat_AS_DOUBLE(args[1]);
    } else {
        Py_RETURN_NONE;
    }
    if (fc_d(args[2], &min_sends) < 0 || fc_d(args[3], &min_share) < 0)
        return NULL;
    Py_buffer v;
    if (get_doubles(args[0], &v, 0, "habits") < 0)
        return NULL;
    const double *a = v.buf;
    Py_ssize_t len = v.len / (Py_ssize_t)sizeof(double);
    PyObject *res = Py_False;
    if (len % 4) {
        res = Py_None;
    } else {
        for (Py_ssize_t b = 0; b < len; b += 4)
            if (a[b] == fk) {
                double sends = a[b + 1];
                res = sends >= min_sends && a[b + 2] >= min_share * sends ? Py_True : Py_False;
                break;
            }
    }
    buf_release(&v);
    Py_INCREF(res);
    return res;
}

/* habit_observe(a, sends, slots, half_at) -> Habits._py_observe(sends) on the array('d') a of slots x
 * (family, sends, new sends, last destination), in place: True; None (a left untouched) for what it leaves to
 * the reference (sends not a list of at most 64 (int, any, int) tuples of ints within 2**53, or a of a
 * shape the class never makes) */
static PyObject *
habit_observe(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (fc_count("habit_observe", nargs, 4, 4) < 0)
        return NULL;
    PyObject *arr = args[0], *sends = args[1];
    Py_ssize_t slots;
    double half_at;
    if (fc_n(args[2], &slots) < 0 || fc_d(args[3], &half_at) < 0)
        return NULL;
    if (!PyList_CheckExact(sends) || PyList_GET_SIZE(sends) > 64)
        Py_RETURN_NONE;
    /* the families in order of first appearance: (family, new, destination or -1) */
    long long fam[64], dst[64];
    int isnew[64], nf = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(sends); i++) {
        PyObject *t = PyList_GET_ITEM(sends, i);
        if (!PyTuple_CheckExact(t) || PyTuple_GET_SIZE(t) != 3 || !PyLong_CheckExact(PyTuple_GET_ITEM(t, 0))
                || !PyLong_CheckExact(PyTuple_GET_ITEM(t, 2)))
            Py_RETURN_NONE;
        int of1, of2;
        long long f = PyLong_AsLongLongAndOverflow(PyTuple_GET_ITEM(t, 0), &of1);
        long long d = PyLong_AsLongLongAndOverflow(PyTuple_GET_ITEM(t, 2), &of2);
        if (of1 || of2 || f > (1LL << 53) || f < -(1LL << 53) || d > (1LL << 53) || d < -(1LL << 53))
            Py_RETURN_NONE;
        int nw = PyObject_IsTrue(PyTuple_GET_ITEM(t, 1));
        if (nw < 0)
            return NULL;
        int j = 0;
        while (j < nf && fam[j] != f)
            j++;
        if (j == nf) {
            fam[nf] = f;
            dst[nf] = d;
            isnew[nf] = nw;
            nf++;
        } else {
            isnew[j] = isnew[j] || nw;
            dst[j] = -1;
        }
    }
    Py_buffer v;
    if (get_doubles(arr, &v, 1, "habits") < 0)
        return NULL;
    Py_ssize_t len = v.len / (Py_ssize_t)sizeof(double);
    if (len % 4 || len > 4 * slots) {
        buf_release(&v);
        Py_RETURN_NONE;
    }
    for (int j = 0; j < nf; j++) {
        double *a = v.buf;
        double fk = (double)fam[j], fd = (double)dst[j];
        int nw = isnew[j];
        Py_ssize_t b = 0;
        for (; b < len; b += 4)
            if (a[b] == fk) {
                if (a[b + 3] == fd && dst[j] >= 0)
                    b = -1;  /* the same destination again: one use */
                break;
            }
        if (b == len) {
            if (len < 4 * slots) {  /* a.extend((fk, 0.0, 0.0, -1.0)): the array grows, so its buffer is let go */
                buf_release(&v);
                PyObject *r = PyObject_CallMethod(arr, "extend", "((dddd))", fk, 0.0, 0.0, -1.0);
                if (r == NULL)
                    return NULL;
                Py_DECREF(r);
                if (get_doubles(arr, &v, 1, "habits") < 0)
                    return NULL;
                a = v.buf;
                b = len;
                len += 4;
                if (v.len != len * (Py_ssize_t)sizeof(double)) {
                    buf_release(&v);
                    PyErr_SetString(PyExc_SystemError, "habits: the array did not grow by one family");
                    return NULL;
                }
            } else {  /* the family sent to least (the first of them) makes room */
                b = 0;
                for (Py_ssize_t i = 4; i < len; i += 4)
                    if (a[i + 1] < a[b + 1])
                        b = i;
                a[b] = fk;
                a[b + 1] = 0.0;
                a[b + 2] = 0.0;
                a[b + 3] = -1.0;
            }
            nw = 0;  /* the first send to a family is new by definition */
        }
        if (b < 0)
            continue;
        a[b + 3] = fd;
        a[b + 1] += 1.0;
        if (nw)
            a[b + 2] += 1.0;
        if (a[b + 1] >= half_at) {
            a[b + 1] *= 0.5;
            a[b + 2] *= 0.5;
        }
    }
    buf_release(&v);
    Py_RETURN_TRUE;
}

/* ------------------------------------------------------------------------------------------------------
 * The engine's per-row steps fused (detector/engine.py Engine._read), each the transcription of its
 * reference: deviate = baseline._py_deviate (log_deviations, then KindProfiles.compare), rarities =
 * engine._py_rarities (verdict caps, FeatureTails.neglogs, the largest, the blame), kind_learn =
 * baseline._py_kind_learn (a step of an existing kind's profile, in place).
 * ------------------------------------------------------------------------------------------------------ */

/* the kind features (a tuple of ints below n) into out; -1 with an exception set */
static Py_ssize_t
kind_features(PyObject *kf, Py_ssize_t *out, Py_ssize_t n)
{
    if (!PyTuple_Check(kf) || PyTuple_GET_SIZE(kf) > 8) {
        PyErr_SetString(PyExc_TypeError, "kind features must be a tuple of at most 8 ints");
        return -1;
    }
    Py_ssize_t k = PyTuple_GET_SIZE(kf);
    for (Py_ssize_t j = 0; j < k; j++) {
        Py_ssize_t f = PyLong_AsSsize_t(PyTuple_GET_ITEM(kf, j));
        if (f == -1 && PyErr_Occurred())
            return -1;
        if (f < 0 || f >= n) {
            PyErr_SetString(PyExc_IndexError, "list index out of range");
            return -1;
        }
        out[j] = f;
    }
    return k;
}

/* the slot (first index of kind's key) of a kind profiles array of width w, or -1 */
static Py_ssize_t
kind_slot(const double *a, Py_ssize_t len, Py_ssize_t w, double fk)
{
    for (Py_ssize_t b = 0; b + w <= len; b += w)
        if (a[b] == fk)
            return b;
    return -1;
}

/* KindProfiles.compare as baseline._py_deviate takes it: where the kind fk has a profile in a (len doubles, slots of
 * 3 + 2 nk) worth kmin actions, the deviations zb of the kind features lowered to those from it (xb: the row in log1p
 * units; floors: nf values): 1; 0 without one; -1 with an IndexError (a kind feature beyond the floors) */
static int
kind_compare(const double *a, Py_ssize_t len, double fk, const Py_ssize_t *feats, Py_ssize_t nk, const double *floors,
             Py_ssize_t nf, double kmin, double z95, const double *xb, double *zb)
{
    Py_ssize_t b = kind_slot(a, len, 3 + 2 * nk, fk);
    if (b < 0 || a[b + 1] < kmin)
        return 0;
    for (Py_ssize_t j = 0; j < nk; j++) {
        Py_ssize_t f = feats[j];
        if (f >= nf) {
            PyErr_SetString(PyExc_IndexError, "tuple index out of range");
            return -1;
        }
        double mm = a[b + 3 + 2 * j], hi = a[b + 4 + 2 * j];
        double sc = (hi - mm) / z95;
        double fl = floors[f];
        double zk = (xb[f] - mm) / (sc > fl ? sc : fl);
        if (zk < zb[f])
            zb[f] = zk;
    }
    return 1;
}

/* deviate(x, loc, scale, floors, kinds, kind, kind_features, kind_min, z95[, xl_out[, z_out]]) -> (xl, z, by_kind)
 *   xl_out, z_out (array('d') as long as the row and its deviations, or None): written and returned instead of
 *   lists (no float object per feature)
 *   log_deviations, then the kind's profile compare (baseline._py_deviate); xl_out (an array('d') as long as
 *   x): the row in log1p units is written there and returned instead of a new list */
static PyObject *
deviate(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *x, *loc_o, *scale_o, *floors_o, *kinds_o, *kf_o, *xl_out = NULL, *z_out = NULL;
    double fk, kmin, z95;
    if (fc_count("deviate", nargs, 9, 11) < 0)
        return NULL;
    x = args[0], loc_o = args[1], scale_o = args[2], floors_o = args[3], kinds_o = args[4], kf_o = args[6];
    if (fc_d(args[5], &fk) < 0 || fc_d(args[7], &kmin) < 0 || fc_d(args[8], &z95) < 0)
        return NULL;
    if (nargs > 9)
        xl_out = args[9];
    if (xl_out == Py_None)
        xl_out = NULL;
    if (nargs > 10 && args[10] != Py_None)
        z_out = args[10];
    double xb[MAX_ROW], zb[MAX_ROW];
    Py_ssize_t n = row_of(x, xb, "x must be a sequence of floats");
    if (n < 0)
        return NULL;
    Py_buffer lv, sv, fv, av;
    int have_l = 0, have_s = 0, have_f = 0, have_a = 0;
    PyObject *xl = NULL, *z = NULL, *res = NULL;
    if (get_doubles(loc_o, &lv, 0, "loc") < 0) goto done;
    have_l = 1;
    if (get_doubles(scale_o, &sv, 0, "scale") < 0) goto done;
    have_s = 1;
    if (get_doubles(floors_o, &fv, 0, "floors") < 0) goto done;
    have_f = 1;
    Py_ssize_t m = log_row_deviations(xb, n, &lv, &sv, &fv, zb);
    if (m < 0)
        goto done;
    const double *floors = fv.buf;
    Py_ssize_t nf = fv.len / (Py_ssize_t)sizeof(double);
    /* the kind's profile */
    int by_kind = 0;
    if (get_doubles(kinds_o, &av, 0, "kinds") < 0) goto done;
    have_a = 1;
    Py_ssize_t feats[8];
    Py_ssize_t nk = kind_features(kf_o, feats, m < n ? m : n);
    if (nk < 0) goto done;
    by_kind = kind_compare(av.buf, av.len / (Py_ssize_t)sizeof(double), fk, feats, nk, floors, nf, kmin, z95, xb, zb);
    if (by_kind < 0)
        goto done;
    if ((xl = row_result(xl_out, xb, n, "xl_out", "deviate: xl_out must be as long as the row")) == NULL
            || (z = row_result(z_out, zb, m, "z_out", "deviate: z_out must be as long as the deviations")) == NULL)
        goto done;
    res = PyTuple_Pack(3, xl, z, by_kind ? Py_True : Py_False);
done:
    Py_XDECREF(xl);
    Py_XDECREF(z);
    if (have_l) buf_release(&lv);
    if (have_s) buf_release(&sv);
    if (have_f) buf_release(&fv);
    if (have_a) buf_release(&av);
    return res;
}

/* One learning step of the kind fk's profile in a (len doubles, slots of 3 + 2 nk), in place (baseline._py_kind_learn):
 * v, fl: the action's kind features in log1p units and their floors; a kind without a profile takes the least
 * recently used kind's slot when all `slots` are taken: 1; else 0 (nothing changed: the caller makes a slot) */
static int
kind_learn_step(double *a, Py_ssize_t len, double fk, const double *v, const double *fl, Py_ssize_t nk, double t,
                double z95, double up, double down, double amin, Py_ssize_t slots)
{
    Py_ssize_t w = 3 + 2 * nk;
    Py_ssize_t b = kind_slot(a, len, w, fk);
    if (b < 0) {
        if (slots <= 0 || len != w * slots)
            return 0;
        /* all slots taken: the first least recently used kind makes room */
        b = 0;
        for (Py_ssize_t i = w; i < len; i += w)
            if (a[i + 2] < a[b + 2])
                b = i;
        a[b] = fk;
        a[b + 1] = 0.0;
        for (Py_ssize_t j = 0; j < nk; j++) {
            a[b + 3 + 2 * j] = v[j];
            a[b + 4 + 2 * j] = v[j] + z95 * fl[j];
        }
    }
    double n = a[b + 1] + 1.0;
    a[b + 1] = n;
    if (t > a[b + 2])
        a[b + 2] = t;
    if (n != 1.0) {
        double alpha = 1.0 / n;
        if (alpha < amin)
            alpha = amin;
        Py_ssize_t i = b + 3;
        for (Py_ssize_t j = 0; j < nk; j++) {
            double m = a[i], hi = a[i + 1];
            double s = (hi - m) / z95;
            double step = 2.0 * alpha * (s > fl[j] ? s : fl[j]);
            if (v[j] > m)
                m += step;
            else if (v[j] < m)
                m -= step;
            if (v[j] > hi)
                hi += step * up;
            else
                hi -= step * down;
            a[i] = m;
            a[i + 1] = hi > m ? hi : m;
            i += 2;
        }
    }
    return 1;
}

/* kind_learn(kinds, kind, xl, t, kind_features, kind_floors, z95, up, down, alpha_min[, slots]) -> bool | None
 *   one learning step of the kind's profile, in place (baseline._py_kind_learn); a kind without one takes the
 *   least recently used kind's slot when all `slots` are taken, else False (nothing changed); None
 *   (nothing changed) when xl is not a list of floats: the reference decides */
static PyObject *
kind_learn(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *kinds_o, *xl_o, *kf_o, *kfl_o;
    double fk, t, z95, up, down, amin;
    Py_ssize_t slots = 0;
    if (fc_count("kind_learn", nargs, 10, 11) < 0)
        return NULL;
    kinds_o = args[0], xl_o = args[2], kf_o = args[4], kfl_o = args[5];
    if (fc_d(args[1], &fk) < 0 || fc_d(args[3], &t) < 0 || fc_d(args[6], &z95) < 0 || fc_d(args[7], &up) < 0
            || fc_d(args[8], &down) < 0 || fc_d(args[9], &amin) < 0 || (nargs > 10 && fc_n(args[10], &slots) < 0))
        return NULL;
    Py_buffer xv;
    int xl_buf = 0;
    Py_ssize_t nxl;
    if (PyList_CheckExact(xl_o)) {
        nxl = PyList_GET_SIZE(xl_o);
    } else {
        if (!PyObject_CheckBuffer(xl_o))
            Py_RETURN_NONE;  /* the reference decides */
        if (get_doubles(xl_o, &xv, 0, "xl") < 0) {
            PyErr_Clear();
            Py_RETURN_NONE;
        }
        xl_buf = 1;
        nxl = xv.len / (Py_ssize_t)sizeof(double);
    }
    Py_ssize_t feats[8];
    double fl[8], v[8];
    Py_ssize_t nk = kind_features(kf_o, feats, nxl);
    if (nk < 0)
        goto fail_x;
    if (!PyTuple_Check(kfl_o) || PyTuple_GET_SIZE(kfl_o) != nk) {
        PyErr_SetString(PyExc_TypeError, "kind floors must be a tuple, one per kind feature");
        goto fail_x;
    }
    for (Py_ssize_t j = 0; j < nk; j++) {
        fl[j] = PyFloat_AsDouble(PyTuple_GET_ITEM(kfl_o, j));
        if (fl[j] == -1.0 && PyErr_Occurred())
            goto fail_x;
        if (xl_buf) {
            v[j] = ((const double *)xv.buf)[feats[j]];
            continue;
        }
        PyObject *o = PyList_GET_ITEM(xl_o, feats[j]);
        if (!PyFloat_CheckExact(o))
            Py_RETURN_NONE;  /* the reference decides (a list: no buffer held) */
        v[j] = PyFloat_AS_DOUBLE(o);
    }
    if (xl_buf) {
        buf_release(&xv);
        xl_buf = 0;
    }
    Py_buffer av;
    if (get_doubles(kinds_o, &av, 1, "kinds") < 0)
        return NULL;
    int done = kind_learn_step(av.buf, av.len / (Py_ssize_t)sizeof(double), fk, v, fl, nk, t, z95, up, down, amin,
                               slots);
    buf_release(&av);
    return PyBool_FromLong(done);
fail_x:
    if (xl_buf)
        buf_release(&xv);
    return NULL;
}

/* max(r[:n]) as Python's max() takes it (n > 0): the first item, replaced by each later one that is greater. Not
 * inlined: its loop keeps the running maximum in a register (inlined into rarities_tail, whose later calls need it
 * kept in memory, it was a store and a load an item). */
static __attribute__((noinline)) double
first_max(const double *r, Py_ssize_t n)
{
    double m = r[0];
    for (Py_ssize_t i = 1; i < n; i++)
        if (r[i] > m)
            m = r[i];
    return m;
}

/* engine._py_rarities after the caps, on the deviations zb (k values): each one's tail rarity into rb (kr values: the
 * features with a tail in tables (n values each) and slopes, nfeat of them), the largest (raw), then the blame (the
 * indices in the tuples quiet, and reach_quiet when known_reach: zb and rb zeroed where zb > 0, zset marks them), and
 * the largest left (top): 0; -1 with Python's error (int() of a NaN, an empty max(), an index out of range) */
static int
rarities_tail(double *zb, double *rb, unsigned char *zset, Py_ssize_t k, const double *tables, const double *slopes,
              Py_ssize_t nfeat, Py_ssize_t n, double spz, double zmax, PyObject *quiet, PyObject *reach_quiet,
              int known_reach, Py_ssize_t *kr_out, double *raw_out, double *top_out)
{
    Py_ssize_t kr = k < nfeat ? k : nfeat;
    for (Py_ssize_t i = 0; i < kr; i++)
        if (tail_neglog(zb[i], spz, tables + i * n, n, zmax, slopes[i], &rb[i]) < 0)
            return -1;
    if (kr == 0) {
        PyErr_SetString(PyExc_ValueError, "max() arg is an empty sequence");
        return -1;
    }
    const double raw = first_max(rb, kr);
    /* the blame: windows this action added nothing to, and fan-out to destinations reached before */
    for (int pass = 0; pass < 2; pass++) {
        PyObject *idx = pass == 0 ? quiet : reach_quiet;
        if (pass == 1 && !known_reach)
            break;
        for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(idx); j++) {
            Py_ssize_t i = PyLong_AsSsize_t(PyTuple_GET_ITEM(idx, j));
            if (i == -1 && PyErr_Occurred())
                return -1;
            if (i < 0 || i >= k) {
                PyErr_SetString(PyExc_IndexError, "list index out of range");
                return -1;
            }
            if (zb[i] > 0.0) {
                if (i >= kr) {
                    PyErr_SetString(PyExc_IndexError, "list assignment index out of range");
                    return -1;
                }
                zb[i] = 0.0;
                zset[i] = 1;
                rb[i] = 0.0;
            }
        }
    }
    const double top = first_max(rb, kr);
    *kr_out = kr;
    *raw_out = raw;
    *top_out = top;
    return 0;
}

/* rows += n doubles from v (a bytearray: the batch's model rows), 0 or -1 with an exception set. The buffer
 * grows by ~1.8 times its size when it must (then is set back to the size asked, which keeps that capacity:
 * a bytearray reallocates only below half of it), where growing by bytearray's own 1/8 copied a batch's rows
 * some forty times. */
static int
rows_append(PyObject *rows, const double *v, Py_ssize_t n)
{
    const Py_ssize_t at = PyByteArray_GET_SIZE(rows), size = at + n * (Py_ssize_t)sizeof(double);
    if (size + 1 > ((PyByteArrayObject *)rows)->ob_alloc && size < PY_SSIZE_T_MAX / 2
            && PyByteArray_Resize(rows, size + size / 10 * 8) < 0)
        return -1;
    if (PyByteArray_Resize(rows, size) < 0)
        return -1;
    memcpy(PyByteArray_AS_STRING(rows) + at, v, (size_t)n * sizeof(double));
    return 0;
}

/* rarities((tables, slopes, n, spz, zmax, slack, reach_quiet), z, x, caps, quiet, known_reach[, rows[, r_out]])
 *   -> (r, raw, top); rows (a bytearray, or None/absent): the final z appended as native doubles (the batch's rows
 *   for the model); r_out (an array('d') as long as r, or None/absent): r written there and returned instead of a
 *   list (a list too when it is not as long).
 *   z (a list of floats, or an array('d')) changed in place as engine._py_rarities changes it; x a list of floats
 *   or an array('d'); None (nothing changed) when z or x holds something other than floats: the reference decides. */
static PyObject *
rarities(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *z, *x, *caps_o, *tables_o, *slopes_o, *quiet, *reach_quiet;
    Py_ssize_t n;
    double slack, spz, zmax;
    int known_reach;
    PyObject *rows = NULL, *r_out = NULL;
    if (fc_count("rarities", nargs, 6, 8) < 0)
        return NULL;
    PyObject *consts = args[0];
    if (!PyTuple_CheckExact(consts) || PyTuple_GET_SIZE(consts) != 7) {
        PyErr_SetString(PyExc_TypeError, "rarities: consts must be (tables, slopes, n, spz, zmax, slack, reach_quiet)");
        return NULL;
    }
    PyObject *const *c = &PyTuple_GET_ITEM(consts, 0);
    tables_o = c[0], slopes_o = c[1], reach_quiet = c[6], z = args[1], x = args[2], caps_o = args[3];
    quiet = args[4];
    if (fc_n(c[2], &n) < 0 || fc_d(c[3], &spz) < 0 || fc_d(c[4], &zmax) < 0 || fc_d(c[5], &slack) < 0)
        return NULL;
    if ((known_reach = PyObject_IsTrue(args[5])) < 0)
        return NULL;
    if (nargs > 6)
        rows = args[6];
    if (rows == Py_None)
        rows = NULL;
    if (nargs > 7 && args[7] != Py_None)
        r_out = args[7];
    if (rows != NULL && !PyByteArray_CheckExact(rows)) {
        PyErr_SetString(PyExc_TypeError, "rarities: rows must be a bytearray or None");
        return NULL;
    }
    if (!PyTuple_CheckExact(quiet) || !PyTuple_CheckExact(reach_quiet))
        Py_RETURN_NONE;
    /* z: a list of floats, or a writable array of doubles (written in place) */
    Py_buffer zv, xv, cv, tv, sv;
    int have_zv = 0, have_xv = 0, have_tv = 0, have_sv = 0;
    int z_list = PyList_CheckExact(z), x_list = PyList_CheckExact(x);
    PyObject *res = NULL, *r = NULL;
    double zb[MAX_ROW], rb[MAX_ROW];
    Py_ssize_t k;
    if (z_list) {
        k = PyList_GET_SIZE(z);
    } else {
        if (!PyObject_CheckBuffer(z) || get_doubles(z, &zv, 1, "z") < 0) {
            PyErr_Clear();
            Py_RETURN_NONE;
        }
        have_zv = 1;
        k = zv.len / (Py_ssize_t)sizeof(double);
    }
    if (!x_list) {
        if (!PyObject_CheckBuffer(x) || get_doubles(x, &xv, 0, "x") < 0) {
            PyErr_Clear();
            goto none;
        }
        have_xv = 1;
    }
    if (k > MAX_ROW) {
        PyErr_SetString(PyExc_ValueError, "row too long for the native kernel");
        goto done;
    }
    rb[0] = 0.0;
    if (z_list) {
        for (Py_ssize_t i = 0; i < k; i++) {
            PyObject *o = PyList_GET_ITEM(z, i);
            if (!PyFloat_CheckExact(o))
                goto none;
            zb[i] = PyFloat_AS_DOUBLE(o);
        }
    } else {
        memcpy(zb, zv.buf, (size_t)k * sizeof(double));
    }
    unsigned char zset[MAX_ROW];
    memset(zset, 0, (size_t)k);
    if (caps_o != Py_None) {
        if (get_doubles(caps_o, &cv, 0, "caps") < 0)
            goto done;
        Py_ssize_t nc = cv.len / (Py_ssize_t)sizeof(double);
        const double *caps = cv.buf;
        Py_ssize_t nx = x_list ? PyList_GET_SIZE(x) : xv.len / (Py_ssize_t)sizeof(double);
        int bad = 0; /* 1: an IndexError set, 2: x holds something other than floats */
        for (Py_ssize_t i = 0; i < nc; i++) {
            double cap = caps[i];
            if (!(cap > 0.0))
                continue;
            if (i >= k) {
                PyErr_SetString(PyExc_IndexError, "list index out of range");
                bad = 1;
                break;
            }
            if (!(zb[i] > 0.0))
                continue;
            if (i >= nx) {
                PyErr_SetString(PyExc_IndexError, "list index out of range");
                bad = 1;
                break;
            }
            double xi;
            if (x_list) {
                PyObject *xo = PyList_GET_ITEM(x, i);
                if (!PyFloat_CheckExact(xo)) {
                    bad = 2;
                    break;
                }
                xi = PyFloat_AS_DOUBLE(xo);
            } else {
                xi = ((const double *)xv.buf)[i];
            }
            if (xi <= slack * cap) {
                zb[i] = 0.0;
                zset[i] = 1;
            }
        }
        buf_release(&cv);
        if (bad == 1)
            goto done;
        if (bad == 2)
            goto none;
    }
    if (get_doubles(tables_o, &tv, 0, "tables") < 0)
        goto done;
    have_tv = 1;
    if (get_doubles(slopes_o, &sv, 0, "slopes") < 0)
        goto done;
    have_sv = 1;
    Py_ssize_t nfeat = sv.len / (Py_ssize_t)sizeof(double);
    if (n < 1 || tv.len != nfeat * n * (Py_ssize_t)sizeof(double)) {
        PyErr_SetString(PyExc_ValueError, "rarities: tables must hold n values per slope");
        goto done;
    }
    Py_ssize_t kr;
    double raw, top;
    if (rarities_tail(zb, rb, zset, k, tv.buf, sv.buf, nfeat, n, spz, zmax, quiet, reach_quiet, known_reach, &kr, &raw,
                      &top) < 0)
        goto done;
    /* r_out not as long as r (tails of fewer features): a list, as without it */
    if ((r = row_result(r_out, rb, kr, "r_out", NULL)) == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < k; i++) {
        if (zset[i]) {
            if (z_list) {
                PyObject *o = row_float(0.0);
                if (o == NULL || PyList_SetItem(z, i, o) < 0)
                    goto done;
            } else {
                ((double *)zv.buf)[i] = 0.0;
            }
        }
    }
    if (rows != NULL && rows_append(rows, zb, k) < 0)
        goto done;
    {
        PyObject *fr = PyFloat_FromDouble(raw), *ft = PyFloat_FromDouble(top);
        if (fr != NULL && ft != NULL)
            res = PyTuple_Pack(3, r, fr, ft);
        Py_XDECREF(fr);
        Py_XDECREF(ft);
    }
    goto done;
none:
    res = Py_None;
    Py_INCREF(res);
done:
    Py_XDECREF(r);
    if (have_zv) buf_release(&zv);
    if (have_xv) buf_release(&xv);
    if (have_tv) buf_release(&tv);
    if (have_sv) buf_release(&sv);
    return res;
}

/* remember's answer for an event id or key h_o (its key as sketch.dedupe_key makes it) with content key hc, at
 * pos of the rings seen_o and content_o: 0, 1 or 2, or -1 with an exception set (admit calls it directly) */
static int
remember_core(PyObject *seen_o, PyObject *content_o, Py_ssize_t pos, PyObject *h_o, unsigned long long hc)
{
    unsigned long long h;
    if (PyUnicode_Check(h_o)) {  /* an event id: its key, as sketch.dedupe_key makes it */
        uint32_t k;
        if (str_hash(h_o, &k) < 0)
            return -1;
        h = k | 1u;
    } else {
        h = PyLong_AsUnsignedLongLong(h_o);
        if (h == (unsigned long long)-1 && PyErr_Occurred())
            return -1;
    }
    Py_buffer sv, cv;
    if (get_array_items(seen_o, &sv, 1, 4, "I", "seen") < 0)
        return -1;
    if (get_array_items(content_o, &cv, 1, 2, "H", "content") < 0) {
        buf_release(&sv);
        return -1;
    }
    int res = -1;
    uint32_t *seen = sv.buf;
    uint16_t *content = cv.buf;
    Py_ssize_t n = sv.len / 4, nc = cv.len / 2;
    int status = 0;
    for (Py_ssize_t k = 0; k < n; k++) {
        if (seen[k] == h) {
            status = 1;
            break;
        }
    }
    if (status) {
        for (Py_ssize_t k = 0; k < n; k++) {
            if (seen[k] == h) {
                if (k >= nc) {
                    PyErr_SetString(PyExc_IndexError, "array index out of range");
                    goto done;
                }
                if (content[k] == hc || content[k] == 0) {
                    status = 2;
                    break;
                }
            }
        }
    }
    if (status != 2) {
        Py_ssize_t p = pos < 0 ? pos + n : pos, q = pos < 0 ? pos + nc : pos;
        if (p < 0 || p >= n || q < 0 || q >= nc) {
            PyErr_SetString(PyExc_IndexError, "array assignment index out of range");
            goto done;
        }
        if (h > 0xFFFFFFFFull || hc > 0xFFFFull) {
            PyErr_SetString(PyExc_OverflowError, "unsigned int is greater than maximum");
            goto done;
        }
        seen[p] = (uint32_t)h;
        content[q] = (uint16_t)hc;
    }
    res = status;
done:
    buf_release(&sv);
    buf_release(&cv);
    return res;
}

/* remember(seen, content, pos, h, hc) -> 0 | 1 | 2   (h: a key, or an event id whose dedupe_key it takes)
 *   engine._py_remember: the agent's ring of recent event ids (array('I')) and content keys (array('H')):
 *   2 when id h is there with content hc (or an unknown content, 0): a true duplicate, nothing written;
 *   else h and hc are written at pos and the answer is 1 when the id is there with other content, 0 when
 *   it is not there. */
static PyObject *
remember(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t pos;
    unsigned long long hc;
    if (fc_count("remember", nargs, 5, 5) < 0)
        return NULL;
    if (fc_n(args[2], &pos) < 0)
        return NULL;
    if (!PyLong_Check(args[4])) {
        PyErr_SetString(PyExc_TypeError, "remember: the content key must be an int");
        return NULL;
    }
    hc = PyLong_AsUnsignedLongLongMask(args[4]);
    if (hc == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    const int status = remember_core(args[0], args[1], pos, args[3], hc);
    return status < 0 ? NULL : PyLong_FromLong(status);
}

/* trace_row(values, order, classes, score, severity) -> tuple: trace._py_trace_row, the packed trace entry of
 *   a decided action: ``values + (classes, score, severity)`` taken in ``order`` (a tuple of indices into
 *   that), the classes as they are when fewer than two, else sorted(set(classes)). None when the row is not
 *   the usual one (more than 10 destinations, at ``order``'s index 8: the reference packs it). */
static PyObject *
trace_row(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (fc_count("trace_row", nargs, 5, 5) < 0)
        return NULL;
    PyObject *values = args[0], *order = args[1], *classes = args[2];
    if (!PyTuple_Check(values) || !PyTuple_Check(order)) {
        PyErr_SetString(PyExc_TypeError, "trace_row: values and order must be tuples");
        return NULL;
    }
    Py_ssize_t nv = PyTuple_GET_SIZE(values), m = PyTuple_GET_SIZE(order);
    Py_ssize_t len = PyObject_Length(classes);
    if (len < 0)
        return NULL;
    PyObject *cls;
    if (len < 2) {
        Py_INCREF(classes);
        cls = classes;
    } else {
        PyObject *set = PySet_New(classes);
        if (set == NULL)
            return NULL;
        cls = PySequence_List(set);
        Py_DECREF(set);
        if (cls == NULL)
            return NULL;
        if (PyList_Sort(cls) < 0) {
            Py_DECREF(cls);
            return NULL;
        }
    }
    PyObject *row = PyTuple_New(m);
    if (row == NULL) {
        Py_DECREF(cls);
        return NULL;
    }
    for (Py_ssize_t k = 0; k < m; k++) {
        Py_ssize_t i = PyLong_AsSsize_t(PyTuple_GET_ITEM(order, k));
        if (i == -1 && PyErr_Occurred())
            goto fail;
        PyObject *v;
        if (i >= 0 && i < nv)
            v = PyTuple_GET_ITEM(values, i);
        else if (i == nv)
            v = cls;
        else if (i == nv + 1)
            v = args[3];
        else if (i == nv + 2)
            v = args[4];
        else {
            PyErr_SetString(PyExc_IndexError, "trace_row: an index of order is out of range");
            goto fail;
        }
        Py_INCREF(v);
        PyTuple_SET_ITEM(row, k, v);
    }
    Py_DECREF(cls);
    if (m > 8) {
        PyObject *dests = PyTuple_GET_ITEM(row, 8);
        Py_ssize_t nd = PyList_CheckExact(dests) ? PyList_GET_SIZE(dests) : -1;
        if (nd < 0 || nd > 10) {
            Py_DECREF(row);
            Py_RETURN_NONE;
        }
    }
    return row;
fail:
    Py_DECREF(cls);
    Py_DECREF(row);
    return NULL;
}

/* trace_entries(rows, fields) -> list: [trace._entry(r) for r in rows], the trace entries of packed rows read back
 * (TraceStore.snapshot; ``fields`` is TRACE_FIELDS, 19 keys):
 *   a row that is not a list: itself;
 *   a row of 18 values: the dict of fields[0..8] and r[0..8], "destination_count": len(r[8]), then fields[10..18]
 *     and r[9..17] (trace._entry's dict display, in that order);
 *   any other list: dict(zip(fields, r)).
 * None for the reference to decide when rows is not a list, fields not 19 str, a row a list's subclass, or an
 * 18-value row's destinations have no len(). */
static PyObject *
trace_entries(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (fc_count("trace_entries", nargs, 2, 2) < 0)
        return NULL;
    PyObject *rows = args[0], *fields = args[1];
    if (!PyList_CheckExact(rows) || !PyTuple_CheckExact(fields) || PyTuple_GET_SIZE(fields) != 19)
        Py_RETURN_NONE;
    PyObject **keys = &PyTuple_GET_ITEM(fields, 0);
    for (Py_ssize_t j = 0; j < 19; j++)
        if (!PyUnicode_CheckExact(keys[j]))
            Py_RETURN_NONE;
    Py_ssize_t n = PyList_GET_SIZE(rows);
    PyObject *out = PyList_New(n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *r = PyList_GET_ITEM(rows, k), *d;
        if (!PyList_Check(r)) {
            Py_INCREF(r);
            PyList_SET_ITEM(out, k, r);
            continue;
        }
        if (!PyList_CheckExact(r))
            goto none;
        Py_ssize_t m = PyList_GET_SIZE(r);
        PyObject **v = &PyList_GET_ITEM(r, 0);
        if (m == 18) {
            Py_ssize_t nd = PyObject_Length(v[8]);
            if (nd < 0) {
                PyErr_Clear();
                goto none;
            }
            PyObject *count = PyLong_FromSsize_t(nd);
            if (count == NULL || (d = _PyDict_NewPresized(19)) == NULL) {
                Py_XDECREF(count);
                goto fail;
            }
            int bad = 0;
            for (Py_ssize_t j = 0; j < 19 && !bad; j++)
                bad = PyDict_SetItem(d, keys[j], j < 9 ? v[j] : j == 9 ? count : v[j - 1]) < 0;
            Py_DECREF(count);
            if (bad) {
                Py_DECREF(d);
                goto fail;
            }
        } else {
            if ((d = _PyDict_NewPresized(m < 19 ? m : 19)) == NULL)
                goto fail;
            for (Py_ssize_t j = 0; j < 19 && j < m; j++)
                if (PyDict_SetItem(d, keys[j], v[j]) < 0) {
                    Py_DECREF(d);
                    goto fail;
                }
        }
        PyList_SET_ITEM(out, k, d);
    }
    return out;
none:
    Py_DECREF(out);
    Py_RETURN_NONE;
fail:
    Py_DECREF(out);
    return NULL;
}

static const double usage_periods[2] = {3600.0, 86400.0};

/* manifest._py_usage_add's step on the ten numbers v (t / each period finite: the caller checks) */
static void
usage_step(double *v, double t, double rec, double nb)
{
    for (int i = 0; i < 2; i++, v += 5) {
        double k = floor(t / usage_periods[i]);
        if (k > v[0]) {
            if (k == v[0] + 1) {
                v[1] = v[3];
                v[2] = v[4];
            } else {
                v[1] = v[2] = 0.0;
            }
            v[3] = v[4] = 0.0;
            v[0] = k;
        }
        v[3] += rec;
        v[4] += nb;
    }
}

/* usage_add(v, t, records, nbytes) -> True | None
 *   manifest._py_usage_add in place: v an array('d') of five numbers per period (bucket index, previous records
 *   and bytes, current records and bytes), the hour then the day. None, changing nothing, when v is not that,
 *   t / period is not finite or a count is not a number a double holds: the reference decides (and raises). */
static PyObject *
usage_add(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    double t, rec, nb;
    if (fc_count("usage_add", nargs, 4, 4) < 0)
        return NULL;
    if (fc_d(args[1], &t) < 0 || fc_d(args[2], &rec) < 0 || fc_d(args[3], &nb) < 0) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    for (int i = 0; i < 2; i++)
        if (!isfinite(t / usage_periods[i]))
            Py_RETURN_NONE;
    Py_buffer vv;
    if (!PyObject_CheckBuffer(args[0]) || get_doubles(args[0], &vv, 1, "v") < 0) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    if (vv.len != 10 * (Py_ssize_t)sizeof(double)) {
        buf_release(&vv);
        Py_RETURN_NONE;
    }
    usage_step(vv.buf, t, rec, nb);
    buf_release(&vv);
    Py_RETURN_TRUE;
}

/* ------------------------------------------------------------------------------------------------------
 * read_tail(consts, engine, st, ev, obs, rows) -> _Reading | None
 *
 * Engine._read after _extract, fused (detector/engine.py): the usage step, deviate, a long task's crossing, a
 * never-seen destination of a habitual family, the caps and rarities, the learning step and what is new becoming
 * known (commit_novel), the evidence of harm, then for an ordinary action (learned, nothing new) the kind's step
 * and the destination habits, else Engine._settle (compiled: rt_settle; the method called back for what that leaves
 * to it), and the calibrated p-value of the rarest feature: each the transcription of the Python lines it replaces,
 * the same operations in the same order on doubles. An
 * item the agent's peers adopted (pending items met again) or a value of a type the engine does not write gives
 * None before anything changes: the Python lines in _read then decide. The caller takes this path only with
 * learn=True and no manifest scope (no violations).
 * ------------------------------------------------------------------------------------------------------ */

#define RC_NAME "detector._native.read_consts"

/* attributes read_tail reads and writes (its own: the same names on other types elsewhere would thrash) */
static fastattr rt_long_task, rt_features, rt_baseline, rt_kinds, rt_caps, rt_usage, rt_habits, rt_loc, rt_scale, rt_n,
    rt_ka, rt_ha, rt_v, rt_destinations, rt_t, rt_records, rt_bytes, rt_task_id, rt_action, rt_sensitivity, rt_x,
    rt_novel, rt_adopted, rt_new_outbound, rt_approved, rt_kind, rt_quiet, rt_known_reach, rt_outbound, rt_dest_classes,
    rt_pending, rt_operator_id, rt_agent_id;
static PyObject *s_py_harm, *s_cal, *s_pvalue, *s_learn, *s_observe, *s_py_observe, *s_periods, *s_extend, *s_settle,
    *s_habitual, *empty_tuple, *s_policy, *s_thresholds, *s_gate_evidence, *s_settle_uses, *s_settle_s,
    *s_peer_adopters, *s_peer_items, *s_adopted;

/* read_setup's tuple, parsed once per engine (Engine.swap_model: _read_consts) */
typedef struct {
    PyObject *keep;                       /* the tuple: holds every object below */
    Py_buffer tv, sv, fv;                 /* the tails' tables and slopes, the floors (held: never resized) */
    Py_ssize_t tn, nfeat, nfl, nrow;      /* values per table, tables, floors, the row's length (N_FEATURES) */
    double spz, zmax, slack;
    PyObject *reach_quiet;                /* KNOWN_REACH_QUIET, a tuple */
    Py_ssize_t feats[8], nk;              /* the kind features */
    double kfl[8];                        /* their floors */
    double kind_min, z95, up, down, kind_alpha_min, alpha_min, reason_z, reason_neglog, learn_raw, min_rarity,
        young_n;
    Py_ssize_t kind_slots, i_task, i_rule2, i_detour, i_outsider;
    PyObject *harm, *cal_curve, *ev_curve;  /* Evidence.harm_pvalue and the curves it takes (harm None: Python's) */
    PyObject *curve_pvalue;               /* the calibration's Curve.pvalue, or None (Calibration.pvalue) */
    PyObject *new_row;                    /* engine._new_row */
    PyTypeObject *reading, *baseline_t, *kinds_t, *habits_t, *usage_t;
    PyObject *periods;                    /* manifest._PERIODS (what Usage.PERIODS must be for its kernel) */
    PyObject *ext, *bc, *family_key, *counted, *h_slots, *half_at;  /* habits: sends_of's and observe's */
    int habits_c;                         /* habit_sends and habit_observe are what sends_of and observe call */
    PyObject *sends_of;
    PyObject *kinds_learn;                /* KindProfiles.learn as read_setup found it (a strong reference) */
    double min_sends, min_share;          /* habits.MIN_SENDS, MIN_SHARE (Habits.habitual) */
    Py_ssize_t i_novel;                   /* the novel_outbound feature */
    PyObject *commit_novel;               /* features.commit_novel */
    PyTypeObject *array_t;                /* array.array (a strong reference) */
    /* _settle compiled (rt_settle): */
    PyTypeObject *engine_t;               /* Engine (an engine of another class: the method), or NULL: always it */
    double p_floor;                       /* scoring.P_FLOOR */
    Py_ssize_t i_exfil, i_kind0, i_kind1; /* _I_EXFIL, _I_KIND */
    Py_ssize_t pending_slots, peer_items, peer_adopted, peer_operators;  /* PENDING_SLOTS, _PEER_* */
    PyObject *settle;                     /* features.settle */
    PyObject *th;                         /* the thresholds last read (a strong reference), or NULL */
    int th_plain;                         /* its numbers below are the ones _settle compares with */
    double gate, uses, span;              /* th.gate_evidence, settle_uses, settle_s */
    Py_ssize_t need;                      /* int(th.peer_adopters) */
} readconsts;

static void
rc_free(PyObject *cap)
{
    readconsts *k = PyCapsule_GetPointer(cap, RC_NAME);
    if (k == NULL)
        return;
    buf_release(&k->tv);
    buf_release(&k->sv);
    buf_release(&k->fv);
    Py_XDECREF(k->kinds_learn);
    Py_XDECREF(k->array_t);
    Py_XDECREF(k->th);
    Py_XDECREF(k->keep);
    PyMem_Free(k);
}

static int
rc_type(PyObject *o, PyTypeObject **out)
{
    if (!PyType_Check(o)) {
        PyErr_SetString(PyExc_TypeError, "read_setup: a class expected");
        return -1;
    }
    *out = (PyTypeObject *)o;
    return 0;
}

/* read_setup(consts) -> the capsule read_tail takes; consts as engine._read_consts makes it */
static PyObject *
read_setup(PyObject *self, PyObject *arg)
{
    PyObject *rar, *floors, *kf, *kfl, *harm, *cal_curve, *ev_curve, *curve_pvalue, *new_row, *reading, *bl_t, *k_t,
        *h_t, *u_t, *periods, *ext, *bc, *fam, *counted, *h_slots, *half_at, *sends_of, *commit_novel, *engine_t,
        *settle;
    int habits_c;
    readconsts *k = PyMem_Calloc(1, sizeof(readconsts));
    if (k == NULL)
        return PyErr_NoMemory();
    if (!PyTuple_CheckExact(arg) || !PyArg_ParseTuple(
            arg, "O!OO!O!dddddnddddddnnnnOOOOOOOOOOOOOOOOOpOddnOOdnnnnnnnO:read_setup", &PyTuple_Type, &rar, &floors,
            &PyTuple_Type, &kf, &PyTuple_Type, &kfl, &k->kind_min, &k->z95, &k->up, &k->down, &k->kind_alpha_min,
            &k->kind_slots, &k->alpha_min, &k->reason_z, &k->reason_neglog, &k->learn_raw, &k->min_rarity,
            &k->young_n, &k->i_task, &k->i_rule2, &k->i_detour, &k->i_outsider, &harm, &cal_curve, &ev_curve,
            &curve_pvalue, &new_row, &reading, &bl_t, &k_t, &h_t, &u_t, &periods, &ext, &bc, &fam, &counted,
            &h_slots, &half_at, &habits_c, &sends_of, &k->min_sends, &k->min_share, &k->i_novel, &commit_novel,
            &engine_t, &k->p_floor, &k->i_exfil, &k->i_kind0, &k->i_kind1, &k->pending_slots, &k->peer_items,
            &k->peer_adopted, &k->peer_operators, &settle)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "read_setup: consts must be a tuple");
        PyMem_Free(k);
        return NULL;
    }
    /* the rarities' consts: (tables, slopes, n, spz, zmax, slack, reach_quiet) */
    if (PyTuple_GET_SIZE(rar) != 7 || !PyTuple_CheckExact(PyTuple_GET_ITEM(rar, 6))) {
        PyErr_SetString(PyExc_TypeError, "read_setup: the rarities' consts are not rarities'");
        PyMem_Free(k);
        return NULL;
    }
    int have_t = 0, have_s = 0, have_f = 0;
    if (fc_n(PyTuple_GET_ITEM(rar, 2), &k->tn) < 0 || fc_d(PyTuple_GET_ITEM(rar, 3), &k->spz) < 0
            || fc_d(PyTuple_GET_ITEM(rar, 4), &k->zmax) < 0 || fc_d(PyTuple_GET_ITEM(rar, 5), &k->slack) < 0)
        goto fail;
    if (get_doubles(PyTuple_GET_ITEM(rar, 0), &k->tv, 0, "tables") < 0)
        goto fail;
    have_t = 1;
    if (get_doubles(PyTuple_GET_ITEM(rar, 1), &k->sv, 0, "slopes") < 0)
        goto fail;
    have_s = 1;
    if (get_doubles(floors, &k->fv, 0, "floors") < 0)
        goto fail;
    have_f = 1;
    k->nfeat = k->sv.len / (Py_ssize_t)sizeof(double);
    k->nfl = k->fv.len / (Py_ssize_t)sizeof(double);
    if (k->tn < 1 || k->tv.len != k->nfeat * k->tn * (Py_ssize_t)sizeof(double)) {
        PyErr_SetString(PyExc_ValueError, "read_setup: tables must hold n values per slope");
        goto fail;
    }
    k->reach_quiet = PyTuple_GET_ITEM(rar, 6);
    {
        PyObject *row = PyObject_CallNoArgs(new_row);
        if (row == NULL)
            goto fail;
        k->nrow = PyObject_Length(row);
        k->array_t = Py_TYPE(row);
        Py_INCREF(k->array_t);
        Py_DECREF(row);
        if (k->nrow < 0)
            goto fail;
    }
    if (k->nrow < 1 || k->nrow > MAX_ROW) {
        PyErr_SetString(PyExc_ValueError, "read_setup: rows of that length are not the kernels'");
        goto fail;
    }
    if ((k->nk = kind_features(kf, k->feats, k->nrow)) < 0)
        goto fail;
    if (PyTuple_GET_SIZE(kfl) != k->nk) {
        PyErr_SetString(PyExc_TypeError, "kind floors must be a tuple, one per kind feature");
        goto fail;
    }
    for (Py_ssize_t j = 0; j < k->nk; j++)
        if (fc_d(PyTuple_GET_ITEM(kfl, j), &k->kfl[j]) < 0)
            goto fail;
    if (k->i_task < 0 || k->i_task >= k->nrow || k->i_rule2 < 0 || k->i_rule2 >= k->nrow || k->i_detour < 0
            || k->i_detour >= k->nrow || k->i_outsider < 0 || k->i_outsider >= k->nrow || k->i_novel < 0
            || k->i_novel >= k->nrow || k->i_exfil < 0 || k->i_exfil >= k->nrow || k->i_kind0 < 0
            || k->i_kind0 >= k->nrow || k->i_kind1 < 0 || k->i_kind1 >= k->nrow) {
        PyErr_SetString(PyExc_IndexError, "read_setup: a feature index out of range");
        goto fail;
    }
    if (rc_type(reading, &k->reading) < 0 || rc_type(bl_t, &k->baseline_t) < 0 || rc_type(k_t, &k->kinds_t) < 0
            || rc_type(h_t, &k->habits_t) < 0 || rc_type(u_t, &k->usage_t) < 0
            || (engine_t != Py_None && rc_type(engine_t, &k->engine_t) < 0))
        goto fail;
    if (!PyType_IsSubtype(k->reading, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "read_setup: _Reading must be a tuple");
        goto fail;
    }
    k->harm = harm, k->cal_curve = cal_curve, k->ev_curve = ev_curve, k->curve_pvalue = curve_pvalue;
    k->new_row = new_row, k->periods = periods, k->ext = ext, k->bc = bc, k->family_key = fam;
    k->counted = counted, k->h_slots = h_slots, k->half_at = half_at, k->habits_c = habits_c, k->sends_of = sends_of;
    k->commit_novel = commit_novel, k->settle = settle;
    k->kinds_learn = _PyType_Lookup(k->kinds_t, s_learn);
    Py_XINCREF(k->kinds_learn);
    Py_INCREF(arg);
    k->keep = arg;
    PyObject *cap = PyCapsule_New(k, RC_NAME, rc_free);
    if (cap == NULL) {
        Py_CLEAR(k->keep);
        Py_CLEAR(k->kinds_learn);
        goto fail;
    }
    return cap;
fail:
    Py_XDECREF(k->array_t);
    if (have_t) buf_release(&k->tv);
    if (have_s) buf_release(&k->sv);
    if (have_f) buf_release(&k->fv);
    PyMem_Free(k);
    return NULL;
}

/* 1.0, made once (rt_names) */
static PyObject *float_one;

static int
rt_names(void)
{
    static struct { fastattr *fa; const char *name; } names[] = {
        {&rt_long_task, "long_task"}, {&rt_features, "features"}, {&rt_baseline, "baseline"}, {&rt_kinds, "kinds"},
        {&rt_caps, "caps"}, {&rt_usage, "usage"},
        {&rt_habits, "habits"}, {&rt_loc, "loc"}, {&rt_scale, "scale"}, {&rt_n, "n"},
        {&rt_ka, "a"}, {&rt_ha, "a"}, {&rt_v, "v"}, {&rt_destinations, "destinations"}, {&rt_t, "t"},
        {&rt_records, "records"}, {&rt_bytes, "bytes"}, {&rt_task_id, "task_id"}, {&rt_action, "action"},
        {&rt_sensitivity, "sensitivity"}, {&rt_x, "x"}, {&rt_novel, "novel"}, {&rt_adopted, "adopted"},
        {&rt_new_outbound, "new_outbound"}, {&rt_approved, "approved"}, {&rt_kind, "kind"}, {&rt_quiet, "quiet"},
        {&rt_known_reach, "known_reach"}, {&rt_outbound, "outbound"}, {&rt_dest_classes, "dest_classes"},
        {&rt_pending, "pending"}, {&rt_operator_id, "operator_id"}, {&rt_agent_id, "agent_id"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if ((names[i].fa->name = PyUnicode_InternFromString(names[i].name)) == NULL)
            return -1;
        names[i].fa->off = -1;
    }
#define I(v, s) if ((v = PyUnicode_InternFromString(s)) == NULL) return -1
    I(s_py_harm, "_py_harm_pvalue"); I(s_cal, "_cal"); I(s_pvalue, "pvalue"); I(s_learn, "learn");
    I(s_observe, "observe"); I(s_py_observe, "_py_observe"); I(s_periods, "PERIODS");
    I(s_extend, "extend"); I(s_settle, "_settle"); I(s_habitual, "habitual"); I(s_policy, "policy");
    I(s_thresholds, "thresholds"); I(s_gate_evidence, "gate_evidence"); I(s_settle_uses, "settle_uses");
    I(s_settle_s, "settle_s"); I(s_peer_adopters, "peer_adopters"); I(s_peer_items, "_peer_items");
    I(s_adopted, "_adopted");
#undef I
    if ((empty_tuple = PyTuple_New(0)) == NULL || (float_one = PyFloat_FromDouble(1.0)) == NULL)
        return -1;
    return pk_names();  /* (pending_count's and peers_count's, which rt_settle takes too) */
}

/* a new array('d') of the row's length (engine._new_row()) holding vals; NULL with an exception set */
static PyObject *
rt_row(const readconsts *k, const double *vals)
{
    PyObject *row = row_take(k->new_row);
    if (row == NULL)
        return NULL;
    Py_buffer v;
    if (get_doubles(row, &v, 1, "row") < 0) {
        Py_DECREF(row);
        return NULL;
    }
    int fits = v.len == k->nrow * (Py_ssize_t)sizeof(double);
    if (fits)
        memcpy(v.buf, vals, (size_t)k->nrow * sizeof(double));
    buf_release(&v);
    if (!fits) {
        Py_DECREF(row);
        PyErr_SetString(PyExc_SystemError, "read_tail: a new row is not a row");
        return NULL;
    }
    return row;
}

/* st.kinds.learn(obs.kind, xl, ev.t) when kind_learn_step left it a free slot to take (KindProfiles.learn): the
 * array a (ka) grows by a slot, which takes the kind with a profile of the action's values v (its loc; its hi
 * that plus z95 times the floor), worth the one action, at t: 0; -1 with an exception set; 1 (nothing changed)
 * for the method to do it (a learn method that is not the class's own, an array of a shape the class never makes) */
static int
rt_kind_new(const readconsts *k, PyObject *kinds, PyObject *ka, double fk, const double *v, double t)
{
    Py_ssize_t w = 3 + 2 * k->nk;
    Py_ssize_t len = PyObject_Length(ka);
    if (len < 0)
        return -1;
    if (_PyType_Lookup(Py_TYPE(kinds), s_learn) != k->kinds_learn || len % w || len >= w * k->kind_slots)
        return 1;
    /* b = len(a); a.extend([0.0] * _KIND_W) */
    PyObject *zeros = PyTuple_New(w);
    if (zeros == NULL)
        return -1;
    for (Py_ssize_t i = 0; i < w; i++) {
        Py_INCREF(small_floats[0]);
        PyTuple_SET_ITEM(zeros, i, small_floats[0]);
    }
    PyObject *got = PyObject_CallMethodOneArg(ka, s_extend, zeros);
    Py_DECREF(zeros);
    if (got == NULL)
        return -1;
    Py_DECREF(got);
    Py_buffer av;
    if (get_doubles(ka, &av, 1, "kinds") < 0)
        return -1;
    if (av.len != (len + w) * (Py_ssize_t)sizeof(double)) {
        buf_release(&av);
        PyErr_SetString(PyExc_SystemError, "kinds: the array did not grow by one slot");
        return -1;
    }
    /* a[b], a[b + 1] = float(kind), 0.0; a[b + 3 + 2 j] = xl[f]; a[b + 4 + 2 j] = xl[f] + Z95 * FLOORS[f] */
    double *a = (double *)av.buf + len;
    a[0] = fk;
    a[1] = 0.0;
    for (Py_ssize_t j = 0; j < k->nk; j++) {
        a[3 + 2 * j] = v[j];
        a[4 + 2 * j] = v[j] + k->z95 * k->kfl[j];
    }
    /* a new kind's first action: counted (a[b + 1] = 1.0; if t > a[b + 2]: a[b + 2] = t) */
    a[1] = 1.0;
    if (t > a[2])
        a[2] = t;
    buf_release(&av);
    return 0;
}

/* st.habits and all(map(st.habits.habitual, map(family_key, sent))) (sent: a list): 1 or 0; 2 for the reference
 * to decide (habits of a shape the class never makes, a family that is not an int); -1 with an exception set.
 * Habits.habitual compiled (habit_habitual) when the class's kernels are built, the methods called otherwise. */
static int
rt_habitual(const readconsts *k, PyObject *habits, PyObject *sent)
{
    if (!k->habits_c || Py_TYPE(habits) != k->habits_t) {
        int r = PyObject_IsTrue(habits);
        for (Py_ssize_t i = 0; r > 0 && i < PyList_GET_SIZE(sent); i++) {
            PyObject *fam = PyObject_CallOneArg(k->family_key, PyList_GET_ITEM(sent, i));
            if (fam == NULL)
                return -1;
            PyObject *got = PyObject_CallMethodOneArg(habits, s_habitual, fam);
            Py_DECREF(fam);
            if (got == NULL)
                return -1;
            r = PyObject_IsTrue(got);
            Py_DECREF(got);
        }
        return r;
    }
    PyObject *ha = xget(habits, &rt_ha);
    if (ha == NULL)
        return -1;
    Py_buffer v;
    if (get_doubles(ha, &v, 0, "habits") < 0) {
        Py_DECREF(ha);
        return -1;
    }
    const double *a = v.buf;
    Py_ssize_t len = v.len / (Py_ssize_t)sizeof(double);
    int r = len > 0;  /* Habits.__bool__: bool(self.a) */
    if (len % 4)
        r = 2;
    for (Py_ssize_t i = 0; r == 1 && i < PyList_GET_SIZE(sent); i++) {
        /* family_key(d) (family_hash_of for an ASCII str, as habit_sends), then habit_habitual's slot test */
        PyObject *d = PyList_GET_ITEM(sent, i);
        uint32_t fh;
        double fk;
        if (PyUnicode_CheckExact(d) && family_hash_of(d, &fh)) {
            fk = (double)fh;
        } else {
            PyObject *fam = PyObject_CallOneArg(k->family_key, d);
            if (fam == NULL) {
                r = -1;
                break;
            }
            if (!PyLong_CheckExact(fam)) {
                Py_DECREF(fam);
                r = 2;
                break;
            }
            fk = PyLong_AsDouble(fam);
            Py_DECREF(fam);
            if (fk == -1.0 && PyErr_Occurred()) {
                r = -1;
                break;
            }
        }
        r = 0;
        for (Py_ssize_t b = 0; b < len; b += 4)
            if (a[b] == fk) {
                double sends = a[b + 1];
                r = sends >= k->min_sends && a[b + 2] >= k->min_share * sends;
                break;
            }
    }
    buf_release(&v);
    Py_DECREF(ha);
    return r;
}

/* whether a str is the ASCII literal lit (an exact str: the caller checks) */
static inline int
str_is(PyObject *s, const char *lit)
{
    return PyUnicode_IS_ASCII(s) && strcmp((const char *)PyUnicode_DATA(s), lit) == 0
           && (Py_ssize_t)strlen(lit) == PyUnicode_GET_LENGTH(s);
}

/* self._harm_pvalue(ev, obs, r, established) for moving and sensitive as it computes them: the kernel's, else the
 * reference's (a new reference; NULL with an exception set) */
static PyObject *
rt_harm(const readconsts *k, PyObject *engine, PyObject *r, PyObject *moving, PyObject *sensitive,
        PyObject *established)
{
    PyObject *p = NULL;
    if (k->harm != Py_None) {
        PyObject *hargs[6] = {r, moving, sensitive, established, k->cal_curve, k->ev_curve};
        if ((p = PyObject_Vectorcall(k->harm, hargs, 6, NULL)) == NULL)
            return NULL;
        if (p == Py_None)
            Py_CLEAR(p);
    }
    if (p == NULL) {
        PyObject *margs[5] = {engine, r, moving, sensitive, established};
        p = PyObject_VectorcallMethod(s_py_harm, margs, 5, NULL);
    }
    return p;
}

/* if not learnt by _kind_learn: st.kinds.learn(obs.kind, xl, ev.t) (kind_learn_step, then rt_kind_new, then the
 * method for what that leaves): 0; -1 with an exception set */
static int
rt_kind_learn(const readconsts *k, PyObject *kinds, PyObject *ka, PyObject *kind, double fk, const double *xb,
              PyObject *xl, PyObject *t_o, double t)
{
    Py_buffer av;
    if (get_doubles(ka, &av, 1, "kinds") < 0)
        return -1;
    double v[8];
    for (Py_ssize_t j = 0; j < k->nk; j++)
        v[j] = xb[k->feats[j]];
    int learnt = kind_learn_step(av.buf, av.len / (Py_ssize_t)sizeof(double), fk, v, k->kfl, k->nk, t, k->z95, k->up,
                                 k->down, k->kind_alpha_min, k->kind_slots);
    buf_release(&av);
    int rc = learnt ? 0 : rt_kind_new(k, kinds, ka, fk, v, t);
    if (rc > 0) {
        PyObject *margs[4] = {kinds, kind, xl, t_o};
        PyObject *got = PyObject_VectorcallMethod(s_learn, margs, 4, NULL);
        if (got == NULL)
            return -1;
        Py_DECREF(got);
        rc = 0;
    }
    return rc;
}

/* st.habits.observe(sends_of(ev.destinations, obs.dest_classes, new)): habit_sends and habit_observe when they are
 * what the class calls, else the function and the method: 0; -1 with an exception set */
static int
rt_observe(const readconsts *k, PyObject *habits, PyObject *dests, PyObject *classes, PyObject *new)
{
    PyObject *sends, *got;
    if (k->habits_c && Py_TYPE(habits) == k->habits_t) {
        PyObject *sargs[7] = {dests, classes, new, k->ext, k->bc, k->family_key, k->counted};
        if ((sends = habit_sends(NULL, sargs, 7)) == NULL)
            return -1;
        PyObject *ha = xget(habits, &rt_ha);
        if (ha == NULL) {
            Py_DECREF(sends);
            return -1;
        }
        PyObject *oargs[4] = {ha, sends, k->h_slots, k->half_at};
        got = habit_observe(NULL, oargs, 4);
        Py_DECREF(ha);
        if (got == Py_None) {
            Py_DECREF(got);
            got = PyObject_CallMethodOneArg(habits, s_py_observe, sends);
        }
    } else {
        PyObject *sargs[3] = {dests, classes, new};
        if ((sends = PyObject_Vectorcall(k->sends_of, sargs, 3, NULL)) == NULL)
            return -1;
        got = PyObject_CallMethodOneArg(habits, s_observe, sends);
    }
    Py_DECREF(sends);
    if (got == NULL)
        return -1;
    Py_DECREF(got);
    return 0;
}

/* score_of(self._harm_pvalue(ev, obs, r, False)) into *score: 1; 0 when the p-value is not a float (the method
 * decides); -1 with an exception set */
static int
rt_harm_score(const readconsts *k, PyObject *engine, PyObject *r, PyObject *moving, PyObject *sensitive,
              double *score)
{
    PyObject *p = rt_harm(k, engine, r, moving, sensitive, Py_False);
    if (p == NULL)
        return -1;
    int plain = PyFloat_CheckExact(p);
    if (plain)
        *score = score_of_p(PyFloat_AS_DOUBLE(p), k->p_floor);
    Py_DECREF(p);
    return plain;
}

/* the thresholds _settle reads (th = self.policy.thresholds), remembered per thresholds object (a frozen
 * dataclass): gate_evidence, settle_uses, settle_s as exact numbers and int(peer_adopters); th_plain 0 when one
 * is not (the method decides) */
static void
rt_thresholds(readconsts *k, PyObject *th)
{
    PyObject *gate = PyObject_GetAttr(th, s_gate_evidence), *uses = PyObject_GetAttr(th, s_settle_uses),
        *span = PyObject_GetAttr(th, s_settle_s), *peers = PyObject_GetAttr(th, s_peer_adopters);
    k->th_plain = gate != NULL && uses != NULL && span != NULL && peers != NULL && exact_num(gate, &k->gate)
                  && exact_num(uses, &k->uses) && exact_num(span, &k->span) && exact_int(peers, &k->need);
    PyErr_Clear();
    Py_XDECREF(gate);
    Py_XDECREF(uses);
    Py_XDECREF(span);
    Py_XDECREF(peers);
    Py_INCREF(th);
    Py_XSETREF(k->th, th);
}

/* what read_tail hands its compiled _settle: borrowed references and its doubles */
typedef struct {
    PyObject *engine, *st, *ev, *obs, *kinds, *ka, *kind, *xl, *r, *p_harm, *novel, *new_out, *dests, *t_o, *action,
        *sens;
    PyObject *habits;          /* st.habits, or NULL when read_tail did not read it */
    const double *x, *xb, *z;  /* obs.x, the row in log1p units, the deviations (the values of xl and z) */
    double fk, t;              /* float(obs.kind), ev.t */
    int learned, by_kind, outbound, approved;
} rtsettle;

/* Engine._settle(st, ev, obs, z, r, xl, learned, violations, p_harm, by_kind, new_sent, again) for an action
 * read_tail read (violations and again empty, obs.adopted empty: its loop does nothing; learned, or not, with
 * something new in it), compiled: each block the transcription of the lines it quotes. 1 done; 0 for the method to
 * do it, nothing changed (an engine of another class, p_harm or the thresholds or pending novelty or the peers'
 * counts not of the types and shapes the engine writes); -1 with an exception set */
static int
rt_settle(readconsts *k, const rtsettle *c)
{
    if (k->engine_t == NULL || Py_TYPE(c->engine) != k->engine_t || !PyFloat_CheckExact(c->p_harm))
        return 0;
    /* th = self.policy.thresholds */
    PyObject *policy = PyObject_GetAttr(c->engine, s_policy);
    if (policy == NULL)
        return -1;
    PyObject *th = PyObject_GetAttr(policy, s_thresholds);
    Py_DECREF(policy);
    if (th == NULL)
        return -1;
    if (th != k->th)
        rt_thresholds(k, th);
    Py_DECREF(th);  /* (k->th holds it) */
    if (!k->th_plain)
        return 0;
    const double *x = c->x, *z = c->z;
    const Py_ssize_t nn = PyList_GET_SIZE(c->novel);
    /* (moving = obs.outbound or ev.action == "delete"; sensitive = ev.sensitivity in ("confidential", "restricted"):
     * _harm_pvalue's) */
    PyObject *moving = c->outbound || str_is(c->action, "delete") ? Py_True : Py_False;
    PyObject *sensitive = str_is(c->sens, "confidential") || str_is(c->sens, "restricted") ? Py_True : Py_False;
    /* harmful = (x[_I_EXFIL] > 0.0 or _injection_signs(x) or bool(violations) or score_of(p_harm) >= th.gate_evidence
     *            and score_of(self._harm_pvalue(ev, obs, r, False)) >= th.gate_evidence) */
    const int signs = x[k->i_rule2] > 0.0 || x[k->i_detour] > 0.0 || x[k->i_outsider] > 0.0;
    int harmful = x[k->i_exfil] > 0.0 || signs;
    double s;
    if (!harmful && score_of_p(PyFloat_AS_DOUBLE(c->p_harm), k->p_floor) >= k->gate) {
        int rc = rt_harm_score(k, c->engine, c->r, moving, sensitive, &s);
        if (rc <= 0)
            return rc;
        harmful = s >= k->gate;
    }
    /* if not obs.approved and (learned or not harmful and (not by_kind or z[_I_KIND[0]] < 3.0
     *                                                      and z[_I_KIND[1]] < 3.0)): st.kinds.learn(...) */
    const int kind_learns = !c->approved && (c->learned || (!harmful && (!c->by_kind || (z[k->i_kind0] < 3.0
                                                                                         && z[k->i_kind1] < 3.0))));
    /* if obs.outbound and self._habit_ok(ev, obs, z, r, violations, harmful, new_sent): _habit_ok is True when not
     * harmful; False on _injection_signs(x), violations, no new_sent, or x[_I_EXFIL] > 0.0 and z[_I_EXFIL] >=
     * REASON_Z; else rest = list(r); rest[_I_NOVEL] = 0.0; score_of(self._harm_pvalue(ev, obs, rest, False)) <
     * th.gate_evidence */
    int observe = 0;
    if (c->outbound) {
        if (!harmful) {
            observe = 1;
        } else if (!signs && PyList_GET_SIZE(c->new_out) && !(x[k->i_exfil] > 0.0 && z[k->i_exfil] >= k->reason_z)) {
            PyObject *rest = PySequence_List(c->r);
            if (rest == NULL)
                return -1;
            PyObject *zero = PyFloat_FromDouble(0.0);
            if (zero == NULL || PyList_SetItem(rest, k->i_novel, zero) < 0) {
                Py_DECREF(rest);
                return -1;
            }
            int rc = rt_harm_score(k, c->engine, rest, moving, sensitive, &s);
            Py_DECREF(rest);
            if (rc <= 0)
                return rc;
            observe = s < k->gate;
        }
    }
    /* what the steps below take, checked before any of them changes anything: pending novelty (self._pending(st,
     * novel, ev.t, harmful, th) when not learned: pending_count's checks) and the peers' counts (self._peers(ev,
     * novel, harmful, th) when need = int(th.peer_adopters) > 0: peers_count's) */
    double pb[PENDING_MAX], fks[ITEMS_MAX];
    Py_ssize_t plen = 0, plen0 = 0;
    PyObject *pending = NULL, *items = NULL, *adopted = NULL, *op = NULL, *agent = NULL, *opk = NULL;
    PyObject *habits = NULL, *classes = NULL, *features = NULL, *keys = NULL;
    uint32_t who = 0;
    int rc = 0;
    if (nn && !c->learned) {
        if (isnan(c->t) || item_keys(c->novel, fks) < 0)
            return 0;
        if ((pending = xget(c->st, &rt_pending)) == NULL)
            return -1;
        if ((plen0 = plen = pending_load(pending, array_type, k->pending_slots, pb)) < 0) {
            rc = plen == -2 ? 0 : -1;
            goto out;
        }
    }
    if (nn && k->need > 0) {
        rc = -1;
        if ((items = PyObject_GetAttr(c->engine, s_peer_items)) == NULL
                || (adopted = PyObject_GetAttr(c->engine, s_adopted)) == NULL
                || (op = xget(c->ev, &rt_operator_id)) == NULL || (agent = xget(c->ev, &rt_agent_id)) == NULL)
            goto out;
        if ((rc = peers_check(items, adopted, op, agent, c->novel, &who, &opk)) <= 0)
            goto out;
    }
    /* ---- nothing bails from here on: the state changes as the method changes it ---- */
    rc = -1;
    if (kind_learns && rt_kind_learn(k, c->kinds, c->ka, c->kind, c->fk, c->xb, c->xl, c->t_o, c->t) < 0)
        goto out;
    /* st.habits.observe(sends_of(ev.destinations, obs.dest_classes, new_sent)) */
    if (observe) {
        if (c->habits != NULL) {
            habits = c->habits;
            Py_INCREF(habits);
        } else if ((habits = xget(c->st, &rt_habits)) == NULL) {
            goto out;
        }
        if ((classes = xget(c->obs, &rt_dest_classes)) == NULL || rt_observe(k, habits, c->dests, classes,
                                                                               c->new_out) < 0)
            goto out;
    }
    if (nn && !c->learned) {  /* self._pending(st, novel, ev.t, harmful, th); what settled: settle(st.features, key) */
        Py_ssize_t at[ITEMS_MAX];
        Py_ssize_t ns = pending_step(pb, &plen, fks, nn, c->t, harmful, k->uses, k->span, k->pending_slots, at);
        if (pending_store(pending, plen0, pb, plen) < 0)
            goto out;
        if (ns) {
            if ((features = xget(c->st, &rt_features)) == NULL || (keys = keys_at(c->novel, at, ns)) == NULL)
                goto out;
            PyObject *sargs[3] = {features, keys, Py_False};
            PyObject *got = settle_keys(NULL, sargs, 3);
            if (got == NULL)
                goto out;
            const int left = got == Py_None;
            Py_DECREF(got);
            for (Py_ssize_t i = 0; left && i < ns; i++) {  /* the kernel left them to settle() */
                PyObject *fargs[2] = {features, PyList_GET_ITEM(keys, i)};
                PyObject *done = PyObject_Vectorcall(k->settle, fargs, 2, NULL);
                if (done == NULL)
                    goto out;
                Py_DECREF(done);
            }
        }
    }
    if (nn && k->need > 0 && peers_run(items, adopted, op, c->novel, harmful, k->need, who, opk, k->peer_items,
                                       k->peer_adopted, k->peer_operators) < 0)
        goto out;
    rc = 1;
out:
    Py_XDECREF(pending);
    Py_XDECREF(items);
    Py_XDECREF(adopted);
    Py_XDECREF(op);
    Py_XDECREF(agent);
    Py_XDECREF(opk);
    Py_XDECREF(habits);
    Py_XDECREF(classes);
    Py_XDECREF(features);
    Py_XDECREF(keys);
    return rc;
}

static PyObject *
read_tail(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (fc_count("read_tail", nargs, 6, 6) < 0)
        return NULL;
    readconsts *k = PyCapsule_GetPointer(args[0], RC_NAME);
    if (k == NULL)
        return NULL;
    PyObject *engine = args[1], *st = args[2], *ev = args[3], *obs = args[4], *rows = args[5];
    PyObject *held[32];  /* the attributes read (new references), released at the end */
    int nh = 0;
    Py_buffer lv, sv, av, cv, uv;
    int have_l = 0, have_s = 0, have_a = 0, have_c = 0, have_u = 0;
    PyObject *res = NULL, *xl = NULL, *z = NULL, *r = NULL, *loc = NULL, *p_harm = NULL, *p_stat = NULL;
    PyObject *viol = NULL, *ftop = NULL;
    const Py_ssize_t n = k->nrow;
    double xraw[MAX_ROW], xb[MAX_ROW], zb[MAX_ROW], rb[MAX_ROW];
    unsigned char zset[MAX_ROW];
#define GET(var, o, fa) do { if ((var = xget(o, &fa)) == NULL) goto bail; held[nh++] = var; } while (0)
    if (rows != Py_None && !PyByteArray_CheckExact(rows))
        goto none;
    PyObject *bl, *kinds, *caps, *usage, *x, *novel, *adopted, *new_out, *approved, *kind, *quiet, *reach,
        *outbound, *dests, *t_o, *rec_o, *nb_o, *task_id, *action, *sens, *loc_o, *scale_o, *n_o, *ka, *habits = NULL;
    /* the action the fused path takes (else the reference decides): no item the agent's peers adopted (so none
     * pending met again: `again` is empty, whatever is pending) */
    GET(novel, obs, rt_novel);
    GET(adopted, obs, rt_adopted);
    GET(new_out, obs, rt_new_outbound);
    if (!PyList_CheckExact(novel) || !PyList_CheckExact(adopted) || PyList_GET_SIZE(adopted)
            || !PyList_CheckExact(new_out))
        goto none;
    GET(approved, obs, rt_approved);
    GET(outbound, obs, rt_outbound);
    if (!PyBool_Check(approved) || !PyBool_Check(outbound))
        goto none;
    GET(x, obs, rt_x);
    GET(kind, obs, rt_kind);
    GET(quiet, obs, rt_quiet);
    GET(reach, obs, rt_known_reach);
    if (!PyTuple_CheckExact(quiet) || !PyBool_Check(reach))
        goto none;
    if (PyList_CheckExact(x)) {  /* the reference's list of floats */
        if (PyList_GET_SIZE(x) != n)
            goto none;
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *o = PyList_GET_ITEM(x, i);
            if (!PyFloat_CheckExact(o))
                goto none;
            xraw[i] = xb[i] = PyFloat_AS_DOUBLE(o);
        }
    } else {  /* extract's array('d') */
        Py_buffer xv;
        if (!PyObject_CheckBuffer(x) || get_doubles(x, &xv, 0, "x") < 0) {
            PyErr_Clear();
            goto none;
        }
        int fits = xv.len == n * (Py_ssize_t)sizeof(double);
        if (fits) {
            memcpy(xraw, xv.buf, (size_t)n * sizeof(double));
            memcpy(xb, xv.buf, (size_t)n * sizeof(double));
        }
        buf_release(&xv);
        if (!fits)
            goto none;
    }
    double fk;  /* float(obs.kind): exact below 2**53 in magnitude (a kind is a 32-bit hash), else PyLong_AsDouble */
    if (!PyLong_CheckExact(kind))
        goto none;
    int of;
    long long ik = PyLong_AsLongLongAndOverflow(kind, &of);
    if (!of && ik < (1LL << 53) && ik > -(1LL << 53)) {
        fk = (double)ik;
    } else {
        PyErr_Clear();
        if ((fk = PyLong_AsDouble(kind)) == -1.0 && PyErr_Occurred())
            goto bail;
    }
    GET(dests, ev, rt_destinations);
    GET(t_o, ev, rt_t);
    GET(task_id, ev, rt_task_id);
    GET(action, ev, rt_action);
    GET(sens, ev, rt_sensitivity);
    if (!PyFloat_CheckExact(t_o) || !PyUnicode_CheckExact(action) || !PyUnicode_CheckExact(sens))
        goto none;
    const double t = PyFloat_AS_DOUBLE(t_o);
    int has_dests = PyObject_IsTrue(dests);
    if (has_dests < 0)
        goto bail;
    GET(bl, st, rt_baseline);
    GET(kinds, st, rt_kinds);
    GET(caps, st, rt_caps);
    GET(usage, st, rt_usage);
    if (Py_TYPE(bl) != k->baseline_t || Py_TYPE(kinds) != k->kinds_t)
        goto none;
    GET(loc_o, bl, rt_loc);
    GET(scale_o, bl, rt_scale);
    GET(n_o, bl, rt_n);
    GET(ka, kinds, rt_ka);
    if (!PyFloat_CheckExact(n_o))
        goto none;
    /* if ev.destinations: st.usage.add(ev.t, ev.records, ev.bytes): checked here, done once nothing can bail */
    double rec = 0.0, nb = 0.0;
    if (has_dests) {
        GET(rec_o, ev, rt_records);
        GET(nb_o, ev, rt_bytes);
        if (Py_TYPE(usage) != k->usage_t || _PyType_Lookup(Py_TYPE(usage), s_periods) != k->periods
                || fc_d(rec_o, &rec) < 0 || fc_d(nb_o, &nb) < 0 || !isfinite(t / usage_periods[0])
                || !isfinite(t / usage_periods[1]))
            goto bail;
        PyObject *v;
        GET(v, usage, rt_v);
        if (!PyObject_CheckBuffer(v) || get_doubles(v, &uv, 1, "v") < 0)
            goto bail;
        have_u = 1;
        if (uv.len != 10 * (Py_ssize_t)sizeof(double))
            goto none;
    }
    /* xl, z, by_kind = _deviate(obs.x, bl.loc, bl.scale, _FLOORS, st.kinds.a, float(obs.kind), _KIND_FEATURES,
     *                           KIND_MIN, Z95, _new_row(), _new_row()) */
    if (get_doubles(loc_o, &lv, 1, "loc") < 0)
        goto bail;
    have_l = 1;
    if (get_doubles(scale_o, &sv, 1, "scale") < 0)
        goto bail;
    have_s = 1;
    if (lv.len != n * (Py_ssize_t)sizeof(double) || sv.len != lv.len || k->nfl != n || k->nfeat != n)
        goto none;
    if (log_row_deviations(xb, n, &lv, &sv, &k->fv, zb) < 0)
        goto bail;
    if (get_doubles(ka, &av, 0, "kinds") < 0)
        goto bail;
    have_a = 1;
    int by_kind = kind_compare(av.buf, av.len / (Py_ssize_t)sizeof(double), fk, k->feats, k->nk, k->fv.buf, k->nfl,
                               k->kind_min, k->z95, xb, zb);
    if (by_kind < 0)
        goto bail;
    buf_release(&av);
    have_a = 0;
    /* if z[_I_TASK_ACTIONS] >= REASON_Z and ev.task_id is not None: _long_task(st, ev.task_id, obs.x[_I_TASK_ACTIONS],
     * z, learn): lt = st.long_task; key = float(stable_hash(task_id)); if lt and lt[0] == key and n < 2.0 * lt[1]:
     * z[_I_TASK_ACTIONS] = 0.0; elif learn: st.long_task = array("d", (key, n)) (below, once nothing bails) */
    int new_long = 0;
    double lt_key = 0.0, lt_n = 0.0;
    if (zb[k->i_task] >= k->reason_z && task_id != Py_None) {
        uint32_t h;
        PyObject *lt;
        Py_buffer tv;
        if (!PyUnicode_CheckExact(task_id))
            goto none;
        if (str_hash(task_id, &h) < 0)
            goto bail;
        GET(lt, st, rt_long_task);
        if (!PyObject_CheckBuffer(lt) || get_doubles(lt, &tv, 0, "long_task") < 0)
            goto bail;
        Py_ssize_t ln = tv.len / (Py_ssize_t)sizeof(double);
        const double *l = tv.buf;
        lt_key = (double)h;
        lt_n = xraw[k->i_task];
        int again_task = ln == 2 && l[0] == lt_key && lt_n < 2.0 * l[1];
        buf_release(&tv);
        if (ln != 0 && ln != 2)
            goto none;
        if (again_task)
            zb[k->i_task] = 0.0;
        else
            new_long = 1;
    }
    /* new_sent = obs.new_outbound; if new_sent and st.habits and all(map(st.habits.habitual, map(family_key,
     * new_sent))): obs.new_outbound = [] (below, once nothing bails); if z[_I_NOVEL] > 0.0: z[_I_NOVEL] = 0.0 */
    int routine = 0;
    if (PyList_GET_SIZE(new_out)) {
        GET(habits, st, rt_habits);
        if ((routine = rt_habitual(k, habits, new_out)) < 0)
            goto bail;
        if (routine > 1)
            goto none;
        if (routine && zb[k->i_novel] > 0.0)
            zb[k->i_novel] = 0.0;
    }
    /* caps = st.caps; if caps is not None and _injection_signs(x): caps = None */
    if (caps != Py_None && (xraw[k->i_rule2] > 0.0 || xraw[k->i_detour] > 0.0 || xraw[k->i_outsider] > 0.0))
        caps = Py_None;
    /* r, raw, top = _k_rarities(rar, z, x, caps, obs.quiet, obs.known_reach, rows, _new_row()): the caps ... */
    memset(zset, 0, (size_t)n);
    if (caps != Py_None) {
        if (!PyObject_CheckBuffer(caps) || get_doubles(caps, &cv, 0, "caps") < 0)
            goto bail;
        have_c = 1;
        Py_ssize_t nc = cv.len / (Py_ssize_t)sizeof(double);
        if (nc > n)
            goto none;
        const double *cp = cv.buf;
        for (Py_ssize_t i = 0; i < nc; i++)
            if (cp[i] > 0.0 && zb[i] > 0.0 && xraw[i] <= k->slack * cp[i]) {
                zb[i] = 0.0;
                zset[i] = 1;
            }
        buf_release(&cv);
        have_c = 0;
    }
    /* ... then the tails, the largest and the blame */
    Py_ssize_t kr;
    double raw, top;
    if (rarities_tail(zb, rb, zset, n, k->tv.buf, k->sv.buf, k->nfeat, k->tn, k->spz, k->zmax, quiet, k->reach_quiet,
                      reach == Py_True, &kr, &raw, &top) < 0)
        goto bail;
    if (kr != n)
        goto none;
    /* learned = raw < self._learn_raw and not violations (none: no scope) */
    const int learned = raw < k->learn_raw;

    /* ---- nothing bails from here on: the state changes as the reference changes it ---- */
    if (new_long) {  /* st.long_task = array("d", (key, n)) */
        PyObject *lt = PyObject_CallFunction((PyObject *)k->array_t, "s(dd)", "d", lt_key, lt_n);
        if (lt == NULL)
            goto done;
        int rc = xset(st, &rt_long_task, lt);
        Py_DECREF(lt);
        if (rc < 0)
            goto done;
    }
    if (routine) {  /* obs.new_outbound = [] */
        PyObject *empty = list_new();
        if (empty == NULL)
            goto done;
        int rc = xset(obs, &rt_new_outbound, empty);
        Py_DECREF(empty);
        if (rc < 0)
            goto done;
    }
    /* the rarities' rows += z (the batch's model rows) */
    if (rows != Py_None && rows_append(rows, zb, n) < 0)
        goto done;
    /* st.usage.add(ev.t, ev.records, ev.bytes) (usage_add) */
    if (have_u) {
        usage_step(uv.buf, t, rec, nb);
        buf_release(&uv);
        have_u = 0;
    }
    if ((xl = rt_row(k, xb)) == NULL || (z = rt_row(k, zb)) == NULL || (r = rt_row(k, rb)) == NULL)
        goto done;
    /* loc = array("d", bl.loc) if raw >= REASON_NEGLOG else None */
    if (raw >= k->reason_neglog) {
        if ((loc = rt_row(k, lv.buf)) == NULL)
            goto done;
    } else {
        loc = Py_None;
        Py_INCREF(loc);
    }
    /* weight = bl.n; if learned: bl.learn_log_in_place(xl) (self.n += 1.0; a = 1.0 / self.n; a = max(a,
     * _ALPHA_MIN); _learn_into(...)); then what is new in it becomes known (commit_novel); weight = bl.n */
    double weight = PyFloat_AS_DOUBLE(n_o);
    if (learned) {
        weight += 1.0;
        PyObject *nn = float_new(weight);
        if (nn == NULL)
            goto done;
        int rc = xset(bl, &rt_n, nn);
        Py_DECREF(nn);
        if (rc < 0)
            goto done;
        double a = 1.0 / weight;
        if (a < k->alpha_min)
            a = k->alpha_min;
        learn_step(xb, lv.buf, sv.buf, k->fv.buf, n, 2.0 * a, k->z95, k->up, k->down);
    }
    buf_release(&lv);
    buf_release(&sv);
    have_l = have_s = 0;
    if (learned && PyList_GET_SIZE(novel)) {
        PyObject *features = xget(st, &rt_features);
        if (features == NULL)
            goto done;
        held[nh++] = features;
        /* commit_novel(features, obs): its kernel's call (settle_keys(st, obs.novel, True)) here, the function
         * for what that leaves to the reference (None: nothing changed) */
        PyObject *sargs[3] = {features, novel, Py_True};
        PyObject *got = settle_keys(NULL, sargs, 3);
        if (got == Py_None) {
            PyObject *cargs[2] = {features, obs};
            Py_SETREF(got, PyObject_Vectorcall(k->commit_novel, cargs, 2, NULL));
        }
        if (got == NULL)
            goto done;
        Py_DECREF(got);
    }
    /* p_harm = 1.0 if raw < MIN_RARITY else self._harm_pvalue(ev, obs, r, weight >= YOUNG_N) */
    if (raw < k->min_rarity) {
        p_harm = float_one;  /* (the reference's constant 1.0: one object, as a code object's constant is) */
        Py_INCREF(p_harm);
    } else {
        /* moving = obs.outbound or ev.action == "delete"; sensitive = ev.sensitivity in ("confidential",
         * "restricted"); the kernel, then the reference for what it leaves */
        PyObject *moving = outbound == Py_True ? Py_True : str_is(action, "delete") ? Py_True : Py_False;
        PyObject *sensitive = str_is(sens, "confidential") || str_is(sens, "restricted") ? Py_True : Py_False;
        PyObject *established = weight >= k->young_n ? Py_True : Py_False;
        p_harm = rt_harm(k, engine, r, moving, sensitive, established);
    }
    if (p_harm == NULL)
        goto done;
    if ((viol = list_new()) == NULL)
        goto done;
    /* not learned, or something new in it: self._settle(st, ev, obs, z, r, xl, learned, violations, p_harm, by_kind,
     * new_sent, again) (again: empty): compiled (rt_settle), or the method for what that leaves to it */
    if (!learned || PyList_GET_SIZE(novel)) {
        const rtsettle sc = {engine, st, ev, obs, kinds, ka, kind, xl, r, p_harm, novel, new_out, dests, t_o, action,
                             sens, habits, xraw, xb, zb, fk, t, learned, by_kind, outbound == Py_True,
                             approved == Py_True};
        int rc = rt_settle(k, &sc);
        if (rc < 0)
            goto done;
        if (rc == 0) {
            PyObject *sargs[13] = {engine, st, ev, obs, z, r, xl, learned ? Py_True : Py_False, viol, p_harm,
                                   by_kind ? Py_True : Py_False, new_out, empty_tuple};
            PyObject *got = PyObject_VectorcallMethod(s_settle, sargs, 13, NULL);
            if (got == NULL)
                goto done;
            Py_DECREF(got);
        }
        goto stat;
    }
    /* if not obs.approved and not _kind_learn(st.kinds.a, float(obs.kind), xl, ev.t, ...):
     *     st.kinds.learn(obs.kind, xl, ev.t) */
    if (approved == Py_False && rt_kind_learn(k, kinds, ka, kind, fk, xb, xl, t_o, t) < 0)
        goto done;
    /* if obs.outbound: st.habits.observe(sends_of(ev.destinations, obs.dest_classes, ())) */
    if (outbound == Py_True) {
        PyObject *classes;
        if (habits == NULL) {
            if ((habits = xget(st, &rt_habits)) == NULL)
                goto done;
            held[nh++] = habits;
        }
        if ((classes = xget(obs, &rt_dest_classes)) == NULL)
            goto done;
        held[nh++] = classes;
        if (rt_observe(k, habits, dests, classes, empty_tuple) < 0)
            goto done;
    }
stat:
    /* self._cal.pvalue(top): the compiled curve's, else the calibration's own */
    if ((ftop = PyFloat_FromDouble(top)) == NULL)
        goto done;
    if (k->curve_pvalue != Py_None) {
        if ((p_stat = PyObject_CallOneArg(k->curve_pvalue, ftop)) == NULL)
            goto done;
        if (p_stat == Py_None)
            Py_CLEAR(p_stat);
    }
    if (p_stat == NULL) {
        PyObject *cal = PyObject_GetAttr(engine, s_cal);
        if (cal == NULL)
            goto done;
        p_stat = PyObject_CallMethodOneArg(cal, s_pvalue, ftop);
        Py_DECREF(cal);
        if (p_stat == NULL)
            goto done;
    }
    /* _new_reading(_Reading, (obs, violations, z, r, loc, p_stat, p_harm, xl)) */
    if ((res = k->reading->tp_alloc(k->reading, 8)) == NULL)
        goto done;
    Py_INCREF(obs);
    PyObject *fields[8] = {obs, viol, z, r, loc, p_stat, p_harm, xl};
    for (int i = 0; i < 8; i++)
        PyTuple_SET_ITEM(res, i, fields[i]);
    viol = z = r = loc = p_stat = p_harm = xl = NULL;  /* the reading holds them */
    goto done;
bail:  /* an error before anything changed: the reference meets it again (and raises it) */
    PyErr_Clear();
none:
    res = Py_None;
    Py_INCREF(res);
done:
#undef GET
    if (have_l) buf_release(&lv);
    if (have_s) buf_release(&sv);
    if (have_a) buf_release(&av);
    if (have_c) buf_release(&cv);
    if (have_u) buf_release(&uv);
    Py_XDECREF(xl);
    Py_XDECREF(z);
    Py_XDECREF(r);
    Py_XDECREF(loc);
    Py_XDECREF(p_harm);
    Py_XDECREF(p_stat);
    Py_XDECREF(viol);
    Py_XDECREF(ftop);
    while (nh > 0)
        Py_DECREF(held[--nh]);
    return res;
}

/* ---------------------------------------------------------------------------------------------------------------
 * decide: the second loop of Engine.process_batch for an ordinary decision, compiled
 *
 * An ordinary decision: an action scored "ok" (so no reasons), not a reused id, breaking no manifest clause, of an
 * agent whose breaker is closed or open (half_open: probation is the Python lines') and whose step does not trip
 * it (an approved action of a closed breaker takes no step), with no alert episode closing. decide takes the
 * batch's pending decisions from index k on, one after the other, and stops at the first one that is not ordinary,
 * changing nothing of it: the Python lines decide that one from the start, then call decide again for the rest
 * (so the batch's order is kept). The trace's row is appended here too (TraceStore.add_values' common case).
 * ------------------------------------------------------------------------------------------------------------- */

#define DC_NAME "detector._native.decide_consts"

/* attributes decide reads and writes (its own fastattrs) */
static fastattr dc_event, dc_reused_id, dc_violations, dc_harm, dc_record, dc_approved, dc_outbound, dc_dest_classes,
    dc_breaker, dc_state, dc_risk, dc_risk_t, dc_baseline, dc_n, dc_t, dc_action, dc_sensitivity, dc_destinations,
    dc_event_id, dc_agent_id, dc_ts, dc_updated, dc_episodes, dc_open, dc_quiet_s, dc_live;
/* the decision record's keys, in the record's order */
static PyObject *dk_keys[9];

/* A record's values written in place. A dict made by PyDict_Copy of a template of str keys inserted in order (and
 * none deleted) holds its keys in that order in one table of entries (CPython 3.11's layout of a combined dict of
 * str keys: Objects/dictobject.c, Include/internal/pycore_dict.h); a new record's five or six values are then
 * written into their entries instead of found by PyDict_SetItem (about 200 instructions each). Only on 3.11, and
 * only when decide_setup's check of a copy of its template finds every key and value where this layout says;
 * each copy's table is checked again (combined, of str keys, nine entries) before any write, and a value that is
 * a container has the record tracked by the collector as PyDict_SetItem would. */
typedef struct {
    PyObject *me_key;
    PyObject *me_value;
} fb_ukentry;

typedef struct {
    Py_ssize_t dk_refcnt;
    uint8_t dk_log2_size;
    uint8_t dk_log2_index_bytes;
    uint8_t dk_kind;  /* DICT_KEYS_UNICODE: 1 */
    uint32_t dk_version;
    Py_ssize_t dk_usable;
    Py_ssize_t dk_nentries;
    char dk_indices[];
} fb_dictkeys;

static int record_layout_ok(PyObject *template, PyObject *const *tvals);

/* record_layout_ok of a template like decide_setup's (for the module's record_direct) */
static int
record_direct_check(void)
{
    PyObject *t = PyDict_New(), *tvals[9];
    if (t == NULL) {
        PyErr_Clear();
        return 0;
    }
    for (int i = 0; i < 9; i++) {
        tvals[i] = i % 2 ? Py_None : dk_keys[8 - i];
        if (PyDict_SetItem(t, dk_keys[i], tvals[i]) < 0) {
            PyErr_Clear();
            Py_DECREF(t);
            return 0;
        }
    }
    int ok = record_layout_ok(t, tvals);
    Py_DECREF(t);
    return ok;
}

/* the entries of d when it is a combined dict of n str keys in one table as 3.11 lays it out, else NULL */
static inline fb_ukentry *
record_entries(PyObject *d, Py_ssize_t n)
{
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000
    PyDictObject *mp = (PyDictObject *)d;
    if (!PyDict_CheckExact(d) || mp->ma_values != NULL || mp->ma_used != n)
        return NULL;
    fb_dictkeys *dk = (fb_dictkeys *)mp->ma_keys;
    if (dk->dk_kind != 1 || dk->dk_nentries != n || dk->dk_refcnt != 1 || dk->dk_log2_index_bytes > 8)
        return NULL;
    return (fb_ukentry *)(dk->dk_indices + ((size_t)1 << dk->dk_log2_index_bytes));
#else
    (void)d, (void)n;
    return NULL;
#endif
}

/* 1 when a copy of template (keys dk_keys[0..8] inserted in order, values tvals) reads as record_entries says */
static int
record_layout_ok(PyObject *template, PyObject *const *tvals)
{
    PyObject *c = PyDict_Copy(template);
    if (c == NULL) {
        PyErr_Clear();
        return 0;
    }
    fb_ukentry *e = record_entries(c, 9);
    int ok = e != NULL;
    for (int i = 0; ok && i < 9; i++)
        ok = e[i].me_key == dk_keys[i] && e[i].me_value == tvals[i];
    Py_DECREF(c);
    return ok;
}

/* decide_setup's tuple, parsed once per engine and thresholds (Engine.swap_model: _decide_consts) */
typedef struct {
    PyObject *keep;                                   /* the tuple: holds every object below */
    double critical, high, medium, low, p_floor;      /* engine._bounds(th) */
    double evidence, budget_floor, half_life, risk_budget, ln2, young_n;
    PyObject *closed, *open, *none, *ok;              /* breaker.CLOSED, OPEN, "none" (breaker._NONE[0]), "ok" */
    PyObject *round4;                                 /* scoring.round4 (for a score round4 leaves to round()) */
    PyObject *version;                                /* the engine's model version */
    /* the trace: TraceStore, trace._Ring, OrderedDict, OrderedDict.move_to_end, trace._encode_into, trace._ORDER */
    PyObject *store_t, *ring_t, *odict_t, *move_to_end, *encode_into, *order;
    Py_ssize_t chunk;                                 /* trace.CHUNK */
    PyObject *scratch;                                /* a bytearray each row is encoded into (owned) */
    PyObject *record_t;  /* an ordinary decision's record with its event's values None (owned): each record is a
                          * copy (PyDict_Copy clones its keys, in their order), those values then replaced */
    int record_direct;   /* record_layout_ok(record_t): the values written into the copy's entries */
    PyObject *tvals[9];  /* record_t's values (borrowed: keep holds them) */
#define RECORD_RING 256
    PyObject *records[RECORD_RING];  /* record_new's ring (owned) */
    Py_ssize_t rnext;
} decideconsts;

static void
dc_free(PyObject *cap)
{
    decideconsts *k = PyCapsule_GetPointer(cap, DC_NAME);
    if (k == NULL)
        return;
    Py_XDECREF(k->scratch);
    Py_XDECREF(k->record_t);
    for (int i = 0; i < RECORD_RING; i++)
        Py_XDECREF(k->records[i]);
    Py_XDECREF(k->keep);
    PyMem_Free(k);
}

/* A new ordinary record, the template's (record_t) with vals at event_id, agent_id, ts, score, reasons and
 * breaker_state (decide_one's), its other values the template's: severity "ok", action_taken "none", the model's
 * version. When the values are written in place (record_direct), the dict is the one of a ring of 256 this setup
 * made before when only the ring holds it and its table is still the template's nine keys in order (nothing else
 * can see it: as new as a copy), else a copy of the template taking the slot; its nine values are then set in one
 * pass, and it is tracked by the collector as PyDict_SetItem would track it for its list of reasons. Records die
 * with their batch: the next batches' are the same dicts, without a dict and a table allocated, tracked,
 * untracked and freed each. Otherwise a copy whose values are set by PyDict_SetItem. (decide_one's consts are
 * otherwise read only: the ring's position is the one field this moves.) */
static PyObject *
record_new(const decideconsts *kc, PyObject *const *vals)
{
    static const int at[6] = {0, 1, 2, 3, 5, 7};
    PyObject *v[9], *r;
    memcpy(v, kc->tvals, sizeof v);
    for (int i = 0; i < 6; i++)
        v[at[i]] = vals[i];
    fb_ukentry *e = NULL;
    if (kc->record_direct) {
        decideconsts *k = (decideconsts *)kc;
        PyObject **slot = ring_slot(k->records, &k->rnext, RECORD_RING);
        r = *slot;
        e = r != NULL && Py_REFCNT(r) == 1 ? record_entries(r, 9) : NULL;
        for (int i = 0; e != NULL && i < 9; i++)
            if (e[i].me_key != dk_keys[i])
                e = NULL;
        if (e != NULL)
            Py_INCREF(r);
        else if ((r = ring_keep(slot, PyDict_Copy(k->record_t))) == NULL)
            return NULL;
        else
            e = record_entries(r, 9);
    } else if ((r = PyDict_Copy(kc->record_t)) == NULL) {
        return NULL;
    }
    if (e != NULL) {
        PyObject *old[9];
        int n = 0;
        for (int i = 0; i < 9; i++)
            if (e[i].me_value != v[i]) {  /* (the template's constants mostly there already) */
                old[n++] = e[i].me_value;
                e[i].me_value = Py_NewRef(v[i]);
            }
        while (n > 0)
            Py_XDECREF(old[--n]);
        if (!PyObject_GC_IsTracked(r))
            PyObject_GC_Track(r);
        return r;
    }
    for (int i = 0; i < 6; i++)
        if (v[at[i]] != kc->tvals[at[i]] && PyDict_SetItem(r, dk_keys[at[i]], v[at[i]]) < 0) {
            Py_DECREF(r);
            return NULL;
        }
    return r;
}

/* decide_setup(consts) -> the capsule decide takes; consts as engine._decide_consts makes it */
static PyObject *
decide_setup(PyObject *self, PyObject *arg)
{
    decideconsts *k = PyMem_Calloc(1, sizeof(decideconsts));
    if (k == NULL)
        return PyErr_NoMemory();
    if (!PyTuple_CheckExact(arg) || !PyArg_ParseTuple(
            arg, "dddddddddddUUUUOOO!O!O!OOO!n:decide_setup", &k->critical, &k->high, &k->medium, &k->low,
            &k->p_floor, &k->evidence, &k->budget_floor, &k->half_life, &k->risk_budget, &k->ln2, &k->young_n,
            &k->closed, &k->open, &k->none, &k->ok, &k->round4, &k->version, &PyType_Type, &k->store_t,
            &PyType_Type, &k->ring_t, &PyType_Type, &k->odict_t, &k->move_to_end, &k->encode_into, &PyTuple_Type,
            &k->order, &k->chunk)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "decide_setup: consts must be a tuple");
        PyMem_Free(k);
        return NULL;
    }
    if (!(k->half_life > 0.0)) {  /* (the reference divides by it) */
        PyErr_SetString(PyExc_ValueError, "decide_setup: the budget's half-life must be > 0");
        PyMem_Free(k);
        return NULL;
    }
    if ((k->scratch = PyByteArray_FromStringAndSize(NULL, 0)) == NULL || (k->record_t = PyDict_New()) == NULL) {
        Py_XDECREF(k->scratch);
        PyMem_Free(k);
        return NULL;
    }
    PyObject *tvals[9] = {Py_None, Py_None, Py_None, Py_None, k->ok, Py_None, k->none, k->closed, k->version};
    for (int i = 0; i < 9; i++)
        if (PyDict_SetItem(k->record_t, dk_keys[i], tvals[i]) < 0) {
            Py_DECREF(k->scratch);
            Py_DECREF(k->record_t);
            PyMem_Free(k);
            return NULL;
        }
    k->record_direct = record_layout_ok(k->record_t, tvals);
    for (int i = 0; i < 9; i++)
        k->tvals[i] = tvals[i];
    Py_INCREF(arg);
    k->keep = arg;
    PyObject *cap = PyCapsule_New(k, DC_NAME, dc_free);
    if (cap == NULL) {
        Py_DECREF(k->scratch);
        Py_DECREF(k->record_t);
        Py_DECREF(arg);
        PyMem_Free(k);
    }
    return cap;
}

static PyObject *s_rings, *s_add_values, *s_seal;

static int
dc_names(void)
{
#define I(v, s) if ((v = PyUnicode_InternFromString(s)) == NULL) return -1
    I(s_rings, "_rings"); I(s_add_values, "add_values"); I(s_seal, "_seal");
#undef I
    static struct { fastattr *fa; const char *name; } names[] = {
        {&dc_event, "event"}, {&dc_reused_id, "reused_id"}, {&dc_violations, "violations"}, {&dc_harm, "harm"},
        {&dc_record, "record"}, {&dc_approved, "approved"}, {&dc_outbound, "outbound"},
        {&dc_dest_classes, "dest_classes"}, {&dc_breaker, "breaker"}, {&dc_state, "state"}, {&dc_risk, "risk"},
        {&dc_risk_t, "risk_t"}, {&dc_baseline, "baseline"}, {&dc_n, "n"}, {&dc_t, "t"}, {&dc_action, "action"},
        {&dc_sensitivity, "sensitivity"}, {&dc_destinations, "destinations"}, {&dc_event_id, "event_id"},
        {&dc_agent_id, "agent_id"}, {&dc_ts, "ts"}, {&dc_updated, "updated"}, {&dc_episodes, "episodes"},
        {&dc_open, "open"}, {&dc_quiet_s, "quiet_s"}, {&dc_live, "live"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if ((names[i].fa->name = PyUnicode_InternFromString(names[i].name)) == NULL)
            return -1;
        names[i].fa->off = -1;
    }
    static const char *keys[9] = {"event_id", "agent_id", "ts", "score", "severity", "reasons", "action_taken",
                                  "breaker_state", "model_version"};
    for (int i = 0; i < 9; i++)
        if ((dk_keys[i] = PyUnicode_InternFromString(keys[i])) == NULL)
            return -1;
    return 0;
}

/* scoring.score_of(p) with the floor p_floor (detector/_score.c's score_of_, the same lines) */
/* scoring.round4(x) of a float (round4_fast, as detector/_score.c's round4): a new float, or NULL with an
 * exception set; what that leaves to round() (a tie or near one, large or not finite) goes to scoring.round4 */
static PyObject *
dc_round4(const decideconsts *k, double x)
{
    double r4;
    if (round4_fast(x, &r4))
        return float_new(r4);
    PyObject *xo = PyFloat_FromDouble(x);
    if (xo == NULL)
        return NULL;
    PyObject *r = PyObject_CallOneArg(k->round4, xo);
    Py_DECREF(xo);
    return r;
}

/* a str attribute equal to lit: 1 or 0; -1 (not an exact str: the Python lines decide) */
static inline int
dc_str_is(PyObject *s, const char *lit)
{
    if (!PyUnicode_CheckExact(s))
        return -1;
    return str_is(s, lit);
}

/* the breaker's state: 0 closed, 1 open, -1 anything else (half_open: the Python lines), -2 an exception */
static inline int
dc_state_of(const decideconsts *k, PyObject *s)
{
    if (s == k->closed)
        return 0;
    if (s == k->open)
        return 1;
    if (!PyUnicode_CheckExact(s))
        return -1;
    int c = PyUnicode_Compare(s, k->closed);
    if (c == -1 && PyErr_Occurred())
        return -2;
    if (c == 0)
        return 0;
    c = PyUnicode_Compare(s, k->open);
    if (c == -1 && PyErr_Occurred())
        return -2;
    return c == 0 ? 1 : -1;
}

static PyObject *trace_row(PyObject *self, PyObject *const *args, Py_ssize_t nargs);

/* traces.add_values(agent_id, values, score4, severity, classes) (TraceStore.add_values): 0, or -1 with an exception
 * set. rings: traces._rings when traces is a TraceStore and that an OrderedDict, else NULL (the method is called):
 *   ring = self._rings.get(agent_id)
 *   if type(ring) is _Ring and ring.live is not None:  (else: the method)
 *       self._rings.move_to_end(agent_id)
 *       live = ring.live
 *   live.append(_encode(_values_row(values, score, severity, classes)))   (trace_row; None: the method; the row
 *                                      encoded into k->scratch, then copied to a bytes object of its size)
 *   if len(live) >= CHUNK:
 *       self._seal(ring) */
static int
dc_trace(const decideconsts *k, PyObject *traces, PyObject *rings, PyObject *const *args)
{
    PyObject *ring = rings != NULL ? PyDict_GetItemWithError(rings, args[0]) : NULL;  /* borrowed */
    if (ring == NULL && PyErr_Occurred())
        return -1;
    if (ring != NULL && Py_TYPE(ring) == (PyTypeObject *)k->ring_t) {
        Py_INCREF(ring);
        PyObject *live = xget(ring, &dc_live);
        if (live == NULL) {
            Py_DECREF(ring);
            return -1;
        }
        PyObject *row = NULL;
        if (live == Py_None) {  /* sealed since its last row: TraceStore._ring's ring.live = [] (then as below) */
            PyObject *fresh = PyList_New(0);
            if (fresh == NULL || xset(ring, &dc_live, fresh) < 0) {
                Py_XDECREF(fresh);
                goto fail;
            }
            Py_SETREF(live, fresh);
        }
        if (PyList_CheckExact(live)) {
            PyObject *targs[5] = {args[1], k->order, args[4], args[2], args[3]};
            if ((row = trace_row(NULL, targs, 5)) == NULL)
                goto fail;
        }
        if (row != NULL && row != Py_None) {
            PyObject *margs[2] = {rings, args[0]};
            PyObject *r = PyObject_Vectorcall(k->move_to_end, margs, 2, NULL);
            if (r == NULL)
                goto fail;
            Py_DECREF(r);
            PyObject *eargs[2] = {row, k->scratch};
            if ((r = PyObject_Vectorcall(k->encode_into, eargs, 2, NULL)) == NULL)
                goto fail;
            Py_DECREF(r);
            PyObject *enc = PyBytes_FromStringAndSize(PyByteArray_AS_STRING(k->scratch),
                                                      PyByteArray_GET_SIZE(k->scratch));
            if (enc == NULL)
                goto fail;
            int err = PyList_Append(live, enc);
            Py_DECREF(enc);
            if (err < 0)
                goto fail;
            if (PyList_GET_SIZE(live) >= k->chunk) {
                if ((r = PyObject_CallMethodOneArg(traces, s_seal, ring)) == NULL)
                    goto fail;
                Py_DECREF(r);
            }
            Py_DECREF(row);
            Py_DECREF(live);
            Py_DECREF(ring);
            return 0;
        }
        Py_XDECREF(row);
        Py_DECREF(live);
        Py_DECREF(ring);
        goto method;
fail:
        Py_XDECREF(row);
        Py_DECREF(live);
        Py_DECREF(ring);
        return -1;
    }
method:;
    PyObject *margs[6] = {traces, args[0], args[1], args[2], args[3], args[4]};
    PyObject *r = PyObject_VectorcallMethod(s_add_values, margs, 6, NULL);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* One pending decision (d, st, reading, values) with the model's combination p-value pc (NULL: no model), open
 * and quiet_s the episodes' (EpisodeBook.open, quiet_s): 1 decided, 0 not ordinary (nothing changed: the Python
 * lines decide it), -1 an exception. */
static int
decide_one(const decideconsts *k, PyObject *item, PyObject *pc, PyObject *traces, PyObject *rings, PyObject *open,
           double quiet_s)
{
    PyObject *held[24];  /* the attributes read (new references; at most 20), released at the end */
    int nh = 0, ret = 0;
    PyObject *harm_o = NULL, *risk_o = NULL, *score4 = NULL, *record = NULL, *eps = NULL;
#define DGET(var, o, fa) do { if ((var = xget(o, &fa)) == NULL) goto error; held[nh++] = var; } while (0)
#define TRUTH(var, o) do { if ((var = PyObject_IsTrue(o)) < 0) goto error; } while (0)
    if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 4)
        goto done;
    PyObject *d = PyTuple_GET_ITEM(item, 0), *st = PyTuple_GET_ITEM(item, 1), *reading = PyTuple_GET_ITEM(item, 2),
        *values = PyTuple_GET_ITEM(item, 3);
    if (!PyTuple_Check(reading) || PyTuple_GET_SIZE(reading) != 8)
        goto done;
    PyObject *obs = PyTuple_GET_ITEM(reading, 0), *p_stat_o = PyTuple_GET_ITEM(reading, 5),
        *p_harm_o = PyTuple_GET_ITEM(reading, 6);
    /* score, harm_score, severity, named = _scored(p_stat, pc, p_harm, bounds) (detector/_score.c's scored) */
    if (!PyFloat_CheckExact(p_stat_o) || !PyFloat_CheckExact(p_harm_o) || (pc != NULL && !PyFloat_CheckExact(pc)))
        goto done;
    const double ps = PyFloat_AS_DOUBLE(p_stat_o), ph = PyFloat_AS_DOUBLE(p_harm_o);
    const double score = score_from(ps, pc != NULL, pc != NULL ? PyFloat_AS_DOUBLE(pc) : 1.0, ph, k->p_floor);
    const double harm_score = ph != 1.0 ? score_of_p(ph, k->p_floor) : 0.0;
    /* th.severity(score) == "ok": no reasons, no explain (anything else: the Python lines) */
    if (score >= k->critical || score >= k->high || score >= k->medium || score >= k->low)
        goto done;
    /* if d.reused_id or d.violations: ... (the Python lines) */
    PyObject *reused, *viol, *approved, *b, *state_o, *risk_ro, *risk_t_o, *ev, *t_o, *action, *sens, *outbound_o;
    int truth;
    DGET(reused, d, dc_reused_id);
    TRUTH(truth, reused);
    if (truth)
        goto done;
    DGET(viol, d, dc_violations);
    TRUTH(truth, viol);
    if (truth)
        goto done;
    /* b = st.breaker; step()'s `if state == HALF_OPEN:` (probation: the Python lines) */
    DGET(b, st, dc_breaker);
    DGET(state_o, b, dc_state);
    const int is_open = dc_state_of(k, state_o);
    if (is_open == -2)
        goto error;
    if (is_open < 0)
        goto done;
    /* if obs.approved and b.state != brk.OPEN: action, transition = "none", None (severity "ok"): no step */
    DGET(approved, obs, dc_approved);
    TRUTH(truth, approved);
    const int no_step = truth && !is_open;
    DGET(risk_ro, b, dc_risk);
    DGET(risk_t_o, b, dc_risk_t);
    DGET(ev, d, dc_event);
    DGET(t_o, ev, dc_t);
    if (!PyFloat_CheckExact(risk_ro) || !PyFloat_CheckExact(risk_t_o) || !PyFloat_CheckExact(t_o))
        goto done;
    DGET(action, ev, dc_action);
    DGET(sens, ev, dc_sensitivity);
    DGET(outbound_o, obs, dc_outbound);
    const int is_delete = dc_str_is(action, "delete");
    if (is_delete < 0)
        goto done;
    int outbound;
    TRUTH(outbound, outbound_o);
    /* _harm(ev, obs):
     *   if ev.action == "delete" or obs.outbound and ev.sensitivity != "public": return 1.0
     *   if ev.sensitivity == "public": return 0.0
     *   return 0.5 if ev.action == "write" or ev.destinations else 0.35 */
    const int is_public = dc_str_is(sens, "public");
    if (is_public < 0)
        goto done;
    double harm;
    if (is_delete || (outbound && !is_public)) {
        harm = 1.0;
    } else if (is_public) {
        harm = 0.0;
    } else {
        const int is_write = dc_str_is(action, "write");
        if (is_write < 0)
            goto done;
        if (is_write) {
            harm = 0.5;
        } else {
            PyObject *dests;
            DGET(dests, ev, dc_destinations);
            TRUTH(truth, dests);
            harm = truth ? 0.5 : 0.35;
        }
    }
    /* sensitive_out = obs.outbound and ev.sensitivity in ("confidential", "restricted")
     * solo = (harm_score >= th.evidence and (st.baseline.n >= YOUNG_N or ev.action == "delete" or sensitive_out)) */
    int solo = 0;
    if (harm_score >= k->evidence) {
        PyObject *bl, *n_o;
        DGET(bl, st, dc_baseline);
        DGET(n_o, bl, dc_n);
        if (!PyFloat_CheckExact(n_o))
            goto done;
        if (PyFloat_AS_DOUBLE(n_o) >= k->young_n || is_delete) {
            solo = 1;
        } else if (outbound) {
            const int conf = dc_str_is(sens, "confidential"), restr = dc_str_is(sens, "restricted");
            solo = conf == 1 || restr == 1;
        }
    }
    /* spend = harm_score if harm_score < score else score
     * (effect is None) elif not effect and 0.0 > spend: spend = 0.0 */
    double spend = harm_score < score ? harm_score : score;
    if (0.0 > spend)
        spend = 0.0;
    /* step(b, t=ev.t, score=score, severity=severity, ..., solo_trip=solo, harm=_harm(ev, obs), evidence=spend),
     * b.state closed or open, on locals (b changes only once it is known not to trip):
     *   if t > b.risk_t:
     *       if b.risk:
     *           b.risk *= exp(-(t - b.risk_t) * _LN2 / th.budget_half_life_s)
     *       b.risk_t = t
     *   excess = (score if evidence is None else evidence) - th.budget_floor
     *   if excess > 0 and harm > 0.0:
     *       b.risk += excess * harm */
    const double t = PyFloat_AS_DOUBLE(t_o), risk_t = PyFloat_AS_DOUBLE(risk_t_o);
    double risk = PyFloat_AS_DOUBLE(risk_ro);
    int new_risk = 0;
    const int new_t = !no_step && t > risk_t;
    if (new_t && risk != 0.0) {
        risk *= exp(-(t - risk_t) * k->ln2 / k->half_life);
        new_risk = 1;
    }
    const double excess = spend - k->budget_floor;
    if (!no_step && excess > 0 && harm > 0.0) {
        risk += excess * harm;
        new_risk = 1;
    }
    /*   if state == OPEN or harm <= 0.0: return _ALERT if severity in _ALERTING else _NONE   ("ok": _NONE)
     *   crit, budget = th.critical, th.risk_budget
     *   if (solo_trip and score >= crit) or b.risk >= budget: (a freeze: the Python lines) */
    if (!no_step && !is_open && !(harm <= 0.0) && ((solo && score >= k->critical) || risk >= k->risk_budget))
        goto done;
    /* if alerted or ev.agent_id in episodes.open: d.episodes = episodes.observe(..., alerted=False, ...), which
     * for an action not alerted only closes the agent's episode once it is quiet (EpisodeBook.observe):
     *   ep = self.open.get(agent_id)
     *   if ep is not None and t - ep.updated >= self.quiet_s: (a close: the Python lines)
     *   if not alerted: return out   (d.episodes: an empty list) */
    PyObject *agent_id;
    DGET(agent_id, ev, dc_agent_id);
    PyObject *ep = PyDict_GetItemWithError(open, agent_id);  /* borrowed */
    if (ep == NULL && PyErr_Occurred())
        goto error;
    if (ep != NULL) {
        PyObject *updated;
        DGET(updated, ep, dc_updated);
        if (!PyFloat_CheckExact(updated) || t - PyFloat_AS_DOUBLE(updated) >= quiet_s)
            goto done;
        if ((eps = PyList_New(0)) == NULL)
            goto error;
    }
    /* the decision: nothing above changed anything, nothing below leaves it to the Python lines */
    if ((harm_o = float_new(harm_score)) == NULL)
        goto error;
    if (new_risk && (risk_o = float_new(risk)) == NULL)
        goto error;
    if ((score4 = dc_round4(k, score)) == NULL)
        goto error;
    /* d.harm = harm_score */
    if (xset(d, &dc_harm, harm_o) < 0)
        goto error;
    /* the breaker's step (b.risk, b.risk_t as above; d.transition stays None) */
    if (new_risk && xset(b, &dc_risk, risk_o) < 0)
        goto error;
    if (new_t && xset(b, &dc_risk_t, t_o) < 0)
        goto error;
    /* d.record = {"event_id": ev.event_id, "agent_id": ev.agent_id, "ts": ev.ts, "score": score4,
     *             "severity": severity, "reasons": reasons, "action_taken": action, "breaker_state": b.state,
     *             "model_version": version} */
    PyObject *event_id, *ts, *reasons, *classes;
    DGET(event_id, ev, dc_event_id);
    DGET(ts, ev, dc_ts);
    if ((reasons = list_new()) == NULL)
        goto error;
    held[nh++] = reasons;
    PyObject *vals[6] = {event_id, agent_id, ts, score4, reasons, state_o};
    if ((record = record_new(k, vals)) == NULL)
        goto error;
    if (xset(d, &dc_record, record) < 0)
        goto error;
    /* trace(ev.agent_id, values, score4, severity, obs.dest_classes) */
    DGET(classes, obs, dc_dest_classes);
    {
        PyObject *targs[5] = {agent_id, values, score4, k->ok, classes};
        if (dc_trace(k, traces, rings, targs) < 0)
            goto error;
    }
    if (eps != NULL && xset(d, &dc_episodes, eps) < 0)
        goto error;
    ret = 1;
    goto done;
error:
    ret = -1;
done:
    Py_XDECREF(harm_o);
    Py_XDECREF(risk_o);
    Py_XDECREF(score4);
    Py_XDECREF(record);
    Py_XDECREF(eps);
    while (nh > 0)
        Py_DECREF(held[--nh]);
    return ret;
#undef DGET
#undef TRUTH
}

/* decide(consts, pending, p_comb, k, trace, episodes) -> the index of the first pending decision from k on that is
 * not ordinary (len(pending): all were), each one before it decided as Engine.process_batch's second loop decides
 * it. pending: process_batch's list of (d, st, reading, values); p_comb: the model's combination p-values (a list,
 * one per pending decision) or None; traces: the engine's TraceStore; episodes: the engine's EpisodeBook. */
static PyObject *
decide(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (fc_count("decide", nargs, 6, 6) < 0)
        return NULL;
    decideconsts *k = PyCapsule_GetPointer(args[0], DC_NAME);
    if (k == NULL)
        return NULL;
    PyObject *pending = args[1], *p_comb = args[2], *traces = args[4], *open, *quiet, *rings = NULL;
    Py_ssize_t i;
    if (fc_n(args[3], &i) < 0)
        return NULL;
    if ((open = xget(args[5], &dc_open)) == NULL)
        return NULL;
    if ((quiet = xget(args[5], &dc_quiet_s)) == NULL) {
        Py_DECREF(open);
        return NULL;
    }
    const int plain = PyDict_CheckExact(open) && PyFloat_CheckExact(quiet);
    const double quiet_s = plain ? PyFloat_AS_DOUBLE(quiet) : 0.0;
    Py_DECREF(quiet);
    if (!plain) {  /* (all the Python lines') */
        Py_DECREF(open);
        return PyLong_FromSsize_t(i);
    }
    if ((PyObject *)Py_TYPE(traces) == k->store_t) {  /* its rings, or NULL (its add_values called) */
        if ((rings = PyObject_GetAttr(traces, s_rings)) == NULL) {
            Py_DECREF(open);
            return NULL;
        }
        if ((PyObject *)Py_TYPE(rings) != k->odict_t)
            Py_CLEAR(rings);
    }
    if (!PyList_CheckExact(pending) || (p_comb != Py_None && !PyList_CheckExact(p_comb))) {
        Py_DECREF(open);
        Py_XDECREF(rings);
        PyErr_SetString(PyExc_TypeError, "decide: pending and p_comb must be lists");
        return NULL;
    }
    for (; i >= 0 && i < PyList_GET_SIZE(pending); i++) {
        PyObject *pc = NULL;
        if (p_comb != Py_None) {
            if (i >= PyList_GET_SIZE(p_comb))
                break;
            pc = PyList_GET_ITEM(p_comb, i);
        }
        PyObject *item = PyList_GET_ITEM(pending, i);
        Py_INCREF(item);
        Py_XINCREF(pc);
        int r = decide_one(k, item, pc, traces, rings, open, quiet_s);
        Py_XDECREF(pc);
        Py_DECREF(item);
        if (r < 0) {
            Py_DECREF(open);
            Py_XDECREF(rings);
            return NULL;
        }
        if (r == 0)
            break;
    }
    Py_DECREF(open);
    Py_XDECREF(rings);
    return PyLong_FromSsize_t(i);
}

/* ---------------------------------------------------------------------------------------------------------------
 * admit: the first loop of Engine.process_batch for an ordinary event, compiled
 *
 * An ordinary event: no approval id to screen, of an agent the engine holds whose dedupe ring is of this state
 * version (no legacy keys). admit takes the batch's events from index i on, one after the other (its duplicates
 * and its readings), and stops at the first one that is not ordinary, changing nothing of it: the Python lines take
 * that one from the start, then call admit again for the rest (the batch's order). The reading is Engine._read's:
 * its first lines (what the agent's peers adopted and its pending items, extract, read_tail) taken here for the
 * plain case (ad_read), Engine._read called back for anything else.
 * ------------------------------------------------------------------------------------------------------------- */

#define AD_NAME "detector._native.admit_consts"

static fastattr ad_approval_id, ad_agent_id, ad_seen_pos, ad_legacy_keys, ad_seen, ad_seen_content, ad_event_id,
    ad_dest_classes, ad_x, ad_operator_id, ad_pending, ad_features;
/* a decision's fields admit_one writes (the Decision's own fastattrs: obs's dest_classes and x are another type's) */
static fastattr ad_event, ad_reused_id, ad_violations, ad_dest_classes_d, ad_z, ad_x_d;
static PyObject *s_read, *s_obs, *s_violations, *s_z, *s_adopted_, *s_fused_, *s_policy, *s_extract_, *s_read_tail_,
    *s_new_agent;

/* admit_setup's tuple, parsed once per engine (Engine.__init__: _admit_consts) */
typedef struct {
    PyObject *keep;                           /* the tuple: holds every object below */
    PyObject *astuple, *encode_into;          /* msgspec.structs.astuple, engine._encode_into */
    PyObject *decision_t, *reading_t;         /* engine.Decision, engine._Reading */
    Py_ssize_t dedupe;                        /* engine._DEDUPE */
    PyObject *read_fn;                        /* Engine._read as engine.py defines it (_ENGINE_READ) */
    PyObject *globals;                        /* engine.py's globals: _extract and _read_tail (read by ad_plain) */
    Py_ssize_t pw;                            /* engine._PW: doubles per pending item */
    long long k_dest;                         /* features.K_DEST */
    PyTypeObject *array_t;                    /* array.array (what AgentState.pending is) */
    PyObject *kw_dup, *kw_dec, *kw_rows, *kw_obs;  /* the keyword names of the calls below (owned) */
    PyObject *dcopy;  /* Decision(None).__copy__ (owned): a decision is a copy, its fields then set (see admit_one) */
    PyObject *scratch;                        /* a bytearray the content key's values are encoded into (owned) */
} admitconsts;

static void
ad_free(PyObject *cap)
{
    admitconsts *k = PyCapsule_GetPointer(cap, AD_NAME);
    if (k == NULL)
        return;
    Py_XDECREF(k->kw_dup);
    Py_XDECREF(k->kw_dec);
    Py_XDECREF(k->kw_rows);
    Py_XDECREF(k->kw_obs);
    Py_XDECREF(k->scratch);
    Py_XDECREF(k->dcopy);
    Py_XDECREF(k->keep);
    PyMem_Free(k);
}

/* a tuple of the n names, interned; NULL with an exception set */
static PyObject *
ad_names_tuple(const char **names, Py_ssize_t n)
{
    PyObject *t = PyTuple_New(n);
    if (t == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *s = PyUnicode_InternFromString(names[i]);
        if (s == NULL) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, i, s);
    }
    return t;
}

/* admit_setup(consts) -> the capsule admit takes; consts as engine._admit_consts makes it */
static PyObject *
admit_setup(PyObject *self, PyObject *arg)
{
    admitconsts *k = PyMem_Calloc(1, sizeof(admitconsts));
    if (k == NULL)
        return PyErr_NoMemory();
    if (!PyTuple_CheckExact(arg) || !PyArg_ParseTuple(arg, "OOO!O!nOO!nLO!:admit_setup", &k->astuple, &k->encode_into,
                                                      &PyType_Type, &k->decision_t, &PyType_Type, &k->reading_t,
                                                      &k->dedupe, &k->read_fn, &PyDict_Type, &k->globals, &k->pw,
                                                      &k->k_dest, &PyType_Type, &k->array_t)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "admit_setup: consts must be a tuple");
        PyMem_Free(k);
        return NULL;
    }
    if (k->dedupe < 1 || k->pw < 1) {
        PyErr_SetString(PyExc_ValueError, "admit_setup: the dedupe ring's length and the pending width must be >= 1");
        PyMem_Free(k);
        return NULL;
    }
    /* (interned, as a call's keyword names in Python code are: a struct's fields are matched by identity first) */
    k->kw_dup = ad_names_tuple((const char *[]){"approval_refused", "duplicate"}, 2);
    k->kw_dec = ad_names_tuple((const char *[]){"approval_refused", "reused_id", "violations", "dest_classes", "z",
                                                "x"}, 6);
    k->kw_rows = ad_names_tuple((const char *[]){"rows"}, 1);
    k->kw_obs = ad_names_tuple((const char *[]){"rows", "obs"}, 2);
    k->scratch = PyByteArray_FromStringAndSize(NULL, 0);
    /* a decision made by copying Decision(None) needs its fields written directly: a type without GC whose
     * setattr is that of Decision's (a msgspec Struct's that is not frozen); else made by calling Decision */
    PyTypeObject *dt = (PyTypeObject *)k->decision_t;
    if (!(dt->tp_flags & Py_TPFLAGS_HAVE_GC) && dt->tp_setattro != PyObject_GenericSetAttr) {
        if (struct_setattro == NULL)
            struct_setattro = dt->tp_setattro;
        if (struct_setattro == dt->tp_setattro) {
            PyObject *none = Py_None, *tmpl = PyObject_Vectorcall(k->decision_t, &none, 1, NULL);
            if (tmpl != NULL) {
                k->dcopy = PyObject_GetAttrString(tmpl, "__copy__");
                Py_DECREF(tmpl);
            }
            if (k->dcopy == NULL)
                PyErr_Clear();
        }
    }
    Py_INCREF(arg);
    k->keep = arg;
    PyObject *cap = NULL;
    if (k->kw_dup == NULL || k->kw_dec == NULL || k->kw_rows == NULL || k->kw_obs == NULL || k->scratch == NULL
            || (cap = PyCapsule_New(k, AD_NAME, ad_free)) == NULL) {
        Py_XDECREF(k->kw_dup);
        Py_XDECREF(k->kw_dec);
        Py_XDECREF(k->kw_rows);
        Py_XDECREF(k->kw_obs);
        Py_XDECREF(k->scratch);
        Py_XDECREF(k->dcopy);
        Py_DECREF(arg);
        PyMem_Free(k);
    }
    return cap;
}

static int
ad_names(void)
{
    static struct { fastattr *fa; const char *name; } names[] = {
        {&ad_approval_id, "approval_id"}, {&ad_agent_id, "agent_id"}, {&ad_seen_pos, "seen_pos"},
        {&ad_legacy_keys, "legacy_keys"}, {&ad_seen, "seen"}, {&ad_seen_content, "seen_content"},
        {&ad_event_id, "event_id"}, {&ad_dest_classes, "dest_classes"}, {&ad_x, "x"},
        {&ad_operator_id, "operator_id"}, {&ad_pending, "pending"}, {&ad_features, "features"}, {&ad_event, "event"},
        {&ad_reused_id, "reused_id"}, {&ad_violations, "violations"}, {&ad_dest_classes_d, "dest_classes"},
        {&ad_z, "z"}, {&ad_x_d, "x"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if ((names[i].fa->name = PyUnicode_InternFromString(names[i].name)) == NULL)
            return -1;
        names[i].fa->off = -1;
    }
#define I(v, s) if ((v = PyUnicode_InternFromString(s)) == NULL) return -1
    I(s_read, "_read"); I(s_obs, "obs"); I(s_violations, "violations"); I(s_z, "z");
    I(s_adopted_, "_adopted"); I(s_fused_, "_fused"); I(s_policy, "policy"); I(s_extract_, "_extract");
    I(s_read_tail_, "_read_tail"); I(s_new_agent, "_new_agent");
#undef I
    return 0;
}

/* engine._py_pending_quiet(p) of the n doubles at p (pending items of w doubles: key, uses, first use t, tainted): a
 * new set; Py_None (a new reference) for the reference to decide (w below 4 or n not a multiple of it, a key int()
 * would not take to a 64-bit int: not finite, or too large); NULL with an exception set. The set is made in the
 * reference's order (an equal set, laid out alike). */
static PyObject *
quiet_of(const double *p, Py_ssize_t n, Py_ssize_t w, long long k_dest)
{
    if (w < 4 || n % w)
        Py_RETURN_NONE;
    /* out = set() */
    PyObject *out = PySet_New(NULL);
    if (out == NULL)
        return NULL;
    /* for b in range(0, len(p), _PW):
     *     if p[b + 3] == 0.0:
     *         k = int(p[b])
     *         if k >> 32 != K_DEST:
     *             out.add(k) */
    for (Py_ssize_t b = 0; b < n; b += w) {
        if (p[b + 3] != 0.0)
            continue;
        const double v = p[b];
        if (!(v > -9.0e18 && v < 9.0e18)) {  /* NaN, infinite or past a long long: the reference */
            Py_DECREF(out);
            Py_RETURN_NONE;
        }
        const long long key = (long long)v;  /* int(): towards zero */
        const long long hi = key >= 0 ? key >> 32 : -((-(key + 1)) >> 32) - 1;  /* >>: floor division by 2**32 */
        if (hi == k_dest)
            continue;
        PyObject *o = PyLong_FromLongLong(key);
        if (o == NULL || PySet_Add(out, o) < 0) {
            Py_XDECREF(o);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(o);
    }
    return out;
}

/* pending_quiet(p, width, k_dest) -> engine._py_pending_quiet(p) for p an array('d') of pending items of `width`
 * doubles each and K_DEST k_dest (a set), or None for the reference to decide (see quiet_of; p not an array of
 * doubles) */
static PyObject *
pending_quiet(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t w;
    if (fc_count("pending_quiet", nargs, 3, 3) < 0 || fc_n(args[1], &w) < 0)
        return NULL;
    const long long kd = PyLong_AsLongLong(args[2]);
    if (kd == -1 && PyErr_Occurred())
        return NULL;
    Py_buffer pv;
    if (!PyObject_CheckBuffer(args[0]) || get_doubles(args[0], &pv, 0, "pending") < 0) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    PyObject *res = quiet_of(pv.buf, pv.len / (Py_ssize_t)sizeof(double), w, kd);
    buf_release(&pv);
    return res;
}

/* What ad_read's plain case needs of the engine, read once per call of admit (Python code the events' reads call
 * back, a policy's classify for one, does not rebind these; process_batch calls admit again after each event it
 * takes itself): ok when Engine._read is the engine's _read and engine.py's _extract and _read_tail and the engine's
 * fused read are there; new references. */
typedef struct {
    int ok;
    PyObject *fx, *ft, *fused, *adopted_d, *policy;
} adplain;

static void
ad_plain_clear(adplain *pl)
{
    Py_CLEAR(pl->fx);
    Py_CLEAR(pl->ft);
    Py_CLEAR(pl->fused);
    Py_CLEAR(pl->adopted_d);
    Py_CLEAR(pl->policy);
    pl->ok = 0;
}

/* pl filled (ok or not), 0; -1 with an exception set */
static int
ad_plain(const admitconsts *k, PyObject *engine, adplain *pl)
{
    memset(pl, 0, sizeof *pl);
    {  /* self._read is Engine._read */
        PyObject *m = NULL;
#if PY_VERSION_HEX < 0x030D0000
        const int unbound = _PyObject_GetMethod(engine, s_read, &m);
        if (m == NULL)
            return -1;
        Py_DECREF(m);  /* (k->keep holds Engine._read) */
        if (!unbound || m != k->read_fn)
            return 0;
#else
        if ((m = PyObject_GetAttr(engine, s_read)) == NULL)
            return -1;
        const int same = PyMethod_Check(m) && PyMethod_GET_FUNCTION(m) == k->read_fn && PyMethod_GET_SELF(m) == engine;
        Py_DECREF(m);
        if (!same)
            return 0;
#endif
    }
    /* _extract and _read_tail as engine.py holds them now (None: the Python lines) */
    PyObject *fx = PyDict_GetItemWithError(k->globals, s_extract_), *ft = NULL;
    if (fx != NULL)
        ft = PyDict_GetItemWithError(k->globals, s_read_tail_);
    if (fx == NULL || ft == NULL)
        return PyErr_Occurred() ? -1 : 0;
    if (fx == Py_None || ft == Py_None)
        return 0;
    Py_INCREF(fx);
    pl->fx = fx;
    Py_INCREF(ft);
    pl->ft = ft;
    /* fused = self._fused (None: the Python lines, which do not take read_tail); self._adopted; self.policy */
    if ((pl->fused = PyObject_GetAttr(engine, s_fused_)) == NULL
            || (pl->adopted_d = PyObject_GetAttr(engine, s_adopted_)) == NULL
            || (pl->policy = PyObject_GetAttr(engine, s_policy)) == NULL) {
        ad_plain_clear(pl);
        return -1;
    }
    pl->ok = pl->fused != Py_None && PyDict_CheckExact(pl->adopted_d);
    return 0;
}

/* reading = self._read(st, ev, book, rows=zrows): a new reference, or NULL with an exception set. Engine._read's first
 * lines (up to read_tail) are taken here in the plain case: no manifests (book None), and pl->ok (ad_plain), and what
 * they read of the types the engine writes. Anything else calls Engine._read (nothing changed yet: extract changes
 * nothing when it gives None), and so does what read_tail leaves to the Python lines (it changed nothing either), with
 * the observation extract gave: _read(st, ev, book, rows=zrows, obs=obs) runs its lines after read_tail. */
static PyObject *
ad_read(const admitconsts *k, const adplain *pl, PyObject *engine, PyObject *st, PyObject *ev, PyObject *book,
        PyObject *rows)
{
    PyObject *held[12];  /* new references (at most 10), released at the end */
    int nh = 0;
    PyObject *res = NULL, *obs = NULL;
#define RGET(var, expr) do { if ((var = (expr)) == NULL) goto error; held[nh++] = var; } while (0)
    if (book != Py_None || !pl->ok)
        goto call;
    PyObject *fx = pl->fx, *ft = pl->ft, *fused = pl->fused, *adopted_d = pl->adopted_d, *policy = pl->policy;
    PyObject *op, *peers, *pend, *quiet = NULL, *adopted, *features;
    /* peers = adopted = self._adopted.get(ev.operator_id) */
    RGET(op, xget(ev, &ad_operator_id));
    if (!PyUnicode_CheckExact(op))
        goto call;
    if ((peers = PyDict_GetItemWithError(adopted_d, op)) == NULL) {
        if (PyErr_Occurred())
            goto error;
        peers = Py_None;
    } else if (!PyAnySet_CheckExact(peers)) {
        goto call;
    }
    Py_INCREF(peers);
    held[nh++] = peers;
    /* quiet = None
     * if st.pending: quiet = _k_quiet(st.pending, _PW, K_DEST)   (quiet_of; None: the reference's, in _read) */
    RGET(pend, xget(st, &ad_pending));
    if (Py_TYPE(pend) != k->array_t)
        goto call;
    if (Py_SIZE(pend) > 0) {  /* (an array's length: its size) */
        Py_buffer pv;
        if (get_doubles(pend, &pv, 0, "pending") < 0) {
            PyErr_Clear();
            goto call;
        }
        quiet = quiet_of(pv.buf, pv.len / (Py_ssize_t)sizeof(double), k->pw, k->k_dest);
        buf_release(&pv);
        if (quiet == NULL)
            goto error;
        held[nh++] = quiet;
        if (quiet == Py_None)
            goto call;
    }
    /* if quiet: adopted = quiet | peers if peers else quiet */
    adopted = peers;
    if (quiet != NULL && PySet_GET_SIZE(quiet) > 0) {
        if (peers != Py_None && PySet_GET_SIZE(peers) > 0)
            RGET(adopted, PyNumber_Or(quiet, peers));
        else
            adopted = quiet;
    }
    /* obs = _extract(st.features, ev, self.policy, adopted)   (None: the Python lines, from the start) */
    RGET(features, xget(st, &ad_features));
    {
        PyObject *xargs[4] = {features, ev, policy, adopted};
        obs = PyCFunction_Check(fx) && PyCFunction_GET_FUNCTION(fx) == (PyCFunction)(void (*)(void))extract
              ? extract(NULL, xargs, 4) : PyObject_Vectorcall(fx, xargs, 4, NULL);
    }
    if (obs == NULL)
        goto error;
    if (obs == Py_None) {
        Py_CLEAR(obs);
        goto call;
    }
    /* scope = None (no manifests)
     * if fused is not None and scope is None and learn:
     *     got = _read_tail(fused, self, st, ev, obs, rows)
     *     if got is not None:
     *         return got */
    {
        PyObject *targs[6] = {fused, engine, st, ev, obs, rows};
        res = PyCFunction_Check(ft) && PyCFunction_GET_FUNCTION(ft) == (PyCFunction)(void (*)(void))read_tail
              ? read_tail(NULL, targs, 6) : PyObject_Vectorcall(ft, targs, 6, NULL);
    }
    if (res == NULL || res != Py_None)
        goto done;
    Py_CLEAR(res);
    {  /* the lines after it: self._read(st, ev, book, rows=zrows, obs=obs) */
        PyObject *margs[6] = {engine, st, ev, book, rows, obs};
        res = PyObject_VectorcallMethod(s_read, margs, 4, k->kw_obs);
    }
    goto done;
call:  /* reading = self._read(st, ev, book, rows=zrows) */
    {
        PyObject *margs[5] = {engine, st, ev, book, rows};
        res = PyObject_VectorcallMethod(s_read, margs, 4, k->kw_rows);
    }
    goto done;
error:
    res = NULL;
done:
    Py_XDECREF(obs);
    while (nh > 0)
        Py_DECREF(held[--nh]);
    return res;
#undef RGET
}

/* One event ev of the batch: 1 taken (a duplicate, or read and pending), 0 not ordinary (nothing changed: the
 * Python lines take it), -1 an exception. engine, out, pending, rows, book, agents, approvals: process_batch's. */
static int
admit_one(const admitconsts *k, const adplain *pl, PyObject *engine, PyObject *ev, PyObject *out, PyObject *pending,
          PyObject *rows, PyObject *book, PyObject *agents, PyObject *approvals)
{
    PyObject *held[24];  /* new references (at most 21), released at the end */
    int nh = 0, ret = 0;
#define AGET(var, o, fa) do { if ((var = xget(o, &fa)) == NULL) goto error; held[nh++] = var; } while (0)
#define HOLD(var, expr) do { if ((var = (expr)) == NULL) goto error; held[nh++] = var; } while (0)
    /* refused = None
     * if ev.approval_id is not None and approvals is not None: (an approval to screen: the Python lines) */
    if (approvals != Py_None) {
        PyObject *aid;
        AGET(aid, ev, ad_approval_id);
        if (aid != Py_None)
            goto done;
    }
    /* st = agents.get(ev.agent_id)
     * if st is None:
     *     st = self._new_agent(ev) */
    PyObject *agent_id, *st, *lk, *pos_o, *values, *enc, *seen_a, *content_a, *event_id;
    AGET(agent_id, ev, ad_agent_id);
    st = PyDict_GetItemWithError(agents, agent_id);  /* borrowed */
    if (st == NULL) {
        if (PyErr_Occurred())
            goto error;
        HOLD(st, PyObject_CallMethodOneArg(engine, s_new_agent, ev));
    } else {
        Py_INCREF(st);
        held[nh++] = st;
    }
    /* if st.legacy_keys: (a ring from before state version 6: the Python lines) */
    AGET(lk, st, ad_legacy_keys);
    int truth = PyObject_IsTrue(lk);
    if (truth < 0)
        goto error;
    if (truth)
        goto done;
    /* pos = st.seen_pos
     * values = astuple(ev)
     * hc = (crc32(encode(values)) & 0xFFFF) | 1   (encoded into k->scratch: no bytes object) */
    AGET(pos_o, st, ad_seen_pos);
    if (!PyLong_CheckExact(pos_o))
        goto done;
    const Py_ssize_t pos = PyLong_AsSsize_t(pos_o);
    if (pos == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        goto done;
    }
    HOLD(values, PyObject_Vectorcall(k->astuple, &ev, 1, NULL));
    {
        PyObject *eargs[2] = {values, k->scratch};
        HOLD(enc, PyObject_Vectorcall(k->encode_into, eargs, 2, NULL));
    }
    const uint32_t hc = (crc_update(0, PyByteArray_AS_STRING(k->scratch), PyByteArray_GET_SIZE(k->scratch))
                         & 0xFFFFu) | 1u;
    /* seen = remember(st.seen, st.seen_content, pos, ev.event_id, hc) */
    AGET(seen_a, st, ad_seen);
    AGET(content_a, st, ad_seen_content);
    AGET(event_id, ev, ad_event_id);
    const int seen = remember_core(seen_a, content_a, pos, event_id, hc);
    if (seen < 0)
        goto error;
    /* if seen == 2:
     *     out.append(Decision(ev, approval_refused=refused, duplicate=True))
     *     continue */
    if (seen == 2) {
        PyObject *d, *dargs[3] = {ev, Py_None, Py_True};
        HOLD(d, PyObject_Vectorcall(k->decision_t, dargs, 1, k->kw_dup));
        if (PyList_Append(out, d) < 0)
            goto error;
        ret = 1;
        goto done;
    }
    /* st.seen_pos = (pos + 1) % _DEDUPE   (Python's modulo: never negative) */
    {
        Py_ssize_t np = (pos + 1) % k->dedupe;
        if (np < 0)
            np += k->dedupe;
        PyObject *np_o;
        HOLD(np_o, PyLong_FromSsize_t(np));
        if (xset(st, &ad_seen_pos, np_o) < 0)
            goto error;
    }
    /* reading = self._read(st, ev, book, rows=zrows)   (its first lines here for the plain case: ad_read)
     * obs = reading.obs */
    PyObject *reading, *obs, *viol, *z, *classes, *x, *d, *item;
    HOLD(reading, ad_read(k, pl, engine, st, ev, book, rows));
    if (Py_TYPE(reading) == (PyTypeObject *)k->reading_t && PyTuple_GET_SIZE(reading) == 8) {
        obs = PyTuple_GET_ITEM(reading, 0), viol = PyTuple_GET_ITEM(reading, 1), z = PyTuple_GET_ITEM(reading, 2);
    } else {
        HOLD(obs, PyObject_GetAttr(reading, s_obs));
        HOLD(viol, PyObject_GetAttr(reading, s_violations));
        HOLD(z, PyObject_GetAttr(reading, s_z));
    }
    /* d = Decision(ev, approval_refused=refused, reused_id=seen == 1, violations=reading.violations,
     *              dest_classes=obs.dest_classes, z=reading.z, x=obs.x)
     * out.append(d)
     * pending.append((d, st, reading, values)) */
    AGET(classes, obs, ad_dest_classes);
    AGET(x, obs, ad_x);
    {
        PyObject *dargs[7] = {ev, Py_None, seen == 1 ? Py_True : Py_False, viol, classes, z, x};
        /* a copy of Decision(None) (one record dict shared until decide or the Python lines set the decision's own;
         * the constructor makes one per decision, for nothing) with the fields written: when every field it sets
         * is a slot written directly (xset's fast path for this type) */
        d = k->dcopy != NULL ? PyObject_CallNoArgs(k->dcopy) : NULL;
        if (d != NULL) {
            held[nh++] = d;
            static fastattr *const dfields[6] = {&ad_event, &ad_reused_id, &ad_violations, &ad_dest_classes_d, &ad_z,
                                                &ad_x_d};
            PyObject *const dvals[6] = {ev, dargs[2], viol, classes, z, x};
            for (int i = 0; i < 6; i++)
                if (xset(d, dfields[i], dvals[i]) < 0)
                    goto error;
        } else {
            if (k->dcopy != NULL)
                goto error;
            HOLD(d, PyObject_Vectorcall(k->decision_t, dargs, 1, k->kw_dec));
        }
    }
    if (PyList_Append(out, d) < 0)
        goto error;
    HOLD(item, PyTuple_Pack(4, d, st, reading, values));
    if (PyList_Append(pending, item) < 0)
        goto error;
    ret = 1;
    goto done;
error:
    ret = -1;
done:
    while (nh > 0)
        Py_DECREF(held[--nh]);
    return ret;
#undef AGET
#undef HOLD
}

/* admit(consts, engine, events, i, out, pending, rows, book, agents, approvals) -> the index of the first event from
 * i on that is not ordinary (len(events): all were), each one before it taken as Engine.process_batch's first loop
 * takes it. events: the batch (a list or a tuple); out, pending: process_batch's lists; rows: its model rows
 * (zrows) or None; book: the manifests; agents: the engine's agents (a dict); approvals: the engine's or None. */
static PyObject *
admit(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (fc_count("admit", nargs, 10, 10) < 0)
        return NULL;
    admitconsts *k = PyCapsule_GetPointer(args[0], AD_NAME);
    if (k == NULL)
        return NULL;
    PyObject *engine = args[1], *events = args[2], *out = args[4], *pending = args[5], *rows = args[6],
        *book = args[7], *agents = args[8], *approvals = args[9];
    Py_ssize_t i;
    if (fc_n(args[3], &i) < 0)
        return NULL;
    if (!(PyList_CheckExact(events) || PyTuple_CheckExact(events)) || !PyList_CheckExact(out)
            || !PyList_CheckExact(pending) || !PyDict_CheckExact(agents)) {
        PyErr_SetString(PyExc_TypeError, "admit: events a list or tuple, out and pending lists, agents a dict");
        return NULL;
    }
    adplain pl;
    if (ad_plain(k, engine, &pl) < 0)
        return NULL;
    for (; i >= 0 && i < PySequence_Fast_GET_SIZE(events); i++) {
        PyObject *ev = PySequence_Fast_GET_ITEM(events, i);
        Py_INCREF(ev);
        int r = admit_one(k, &pl, engine, ev, out, pending, rows, book, agents, approvals);
        Py_DECREF(ev);
        if (r < 0) {
            ad_plain_clear(&pl);
            return NULL;
        }
        if (r == 0)
            break;
    }
    ad_plain_clear(&pl);
    return PyLong_FromSsize_t(i);
}

static PyMethodDef methods[] = {
    {"empty_list", empty_list, METH_NOARGS, "empty_list() -> [] (from the kernels' ring of lists: list_new)."},
    {"new_float", new_float, METH_O, "new_float(v) -> float(v) (from the kernels' ring of floats: float_new)."},
    {"log_deviations", log_deviations, METH_VARARGS,
     "log_deviations(x, loc, scale, floors) -> (xl, z): log1p of a row and its robust deviations."},
    {"learn_into", (PyCFunction)(void (*)(void))learn_into, METH_FASTCALL,
     "learn_into(xl, loc, scale, floors, a2, z95, up, down) -> None: one learning step, in place."},
    {"learn", (PyCFunction)(void (*)(void))learn, METH_FASTCALL,
     "learn(xl, loc, scale, floors, a2, z95, up, down) -> (loc, scale): one learning step, on copies."},
    {"neglogs", neglogs, METH_VARARGS,
     "neglogs(z, tables, slopes, n, spz, zmax) -> list: -log10 p of each deviation."},
    {"extract_setup", extract_setup, METH_VARARGS,
     "extract_setup(Observation, _words, destination_family, _is_outsider, EXTERNAL, BROADCAST[, words_cache[, Policy[, stop_words]]]): what extract calls back."},
    {"crc32", crc32_, METH_VARARGS, "crc32(data, crc=0) -> int: zlib.crc32, as the kernel hashes names."},
    {"attr", (PyCFunction)(void (*)(void))attr_, METH_FASTCALL,
     "attr(o, name) -> o.<name> as the kernels read attributes (for the tests)."},
    {"crc32_tables", crc32_tables, METH_VARARGS, "crc32_tables(data, crc=0) -> int: zlib.crc32 by the tables alone."},
    {"crc32_fold", crc32_fold, METH_VARARGS,
     "crc32_fold(data, crc=0) -> int: zlib.crc32 folding every whole 16 bytes "
     "(RuntimeError where crc_folding is False)."},
    {"words", (PyCFunction)(void (*)(void))words, METH_FASTCALL,
     "words(local, stop) -> the CRC-32 of its words (features._py_words_of), or None when it is not ASCII."},
    {"text_words", (PyCFunction)(void (*)(void))text_words, METH_FASTCALL,
     "text_words(text, stop) -> the words of a name as features._words reads them (_py_text_words), or None when it is not ASCII."},
    {"family_hash", family_hash, METH_O,
     "family_hash(dest) -> stable_hash(destination_family(dest)), or None when dest is not ASCII."},
    {"extract", (PyCFunction)(void (*)(void))extract, METH_FASTCALL,
     "extract(st, ev, policy, adopted) -> Observation, or None for the reference to decide (detector.features)."},
    {"settle_keys", (PyCFunction)(void (*)(void))settle_keys, METH_FASTCALL,
     "settle_keys(st, keys, novel) -> True (features.settle of each key, or commit_novel's with novel), or None for the reference."},
    {"pending_count", (PyCFunction)(void (*)(void))pending_count, METH_FASTCALL,
     "pending_count(p, keys, t, harmful, uses, span, slots) -> the keys that settled, or None: Engine._py_pending."},
    {"peers_count", (PyCFunction)(void (*)(void))peers_count, METH_FASTCALL,
     "peers_count(items, adopted, op, agent_id, keys, harmful, peer_adopters, max_items, max_adopted, max_operators)"
     " -> True, or None: Engine._py_peers."},
    {"habit_sends", (PyCFunction)(void (*)(void))habit_sends, METH_FASTCALL,
     "habit_sends(destinations, classes, new, EXTERNAL, BROADCAST, family_key, counted) -> habits._py_sends_of."},
    {"habit_habitual", (PyCFunction)(void (*)(void))habit_habitual, METH_FASTCALL,
     "habit_habitual(a, family, min_sends, min_share) -> Habits._py_habitual(family), or None for the reference."},
    {"habit_observe", (PyCFunction)(void (*)(void))habit_observe, METH_FASTCALL,
     "habit_observe(a, sends, slots, half_at) -> True (Habits._py_observe done in place), or None for the reference."},
    {"deviate", (PyCFunction)(void (*)(void))deviate, METH_FASTCALL,
     "deviate(x, loc, scale, floors, kinds, kind, kind_features, kind_min, z95[, xl_out[, z_out]]) -> (xl, z, by_kind)."},
    {"rarities", (PyCFunction)(void (*)(void))rarities, METH_FASTCALL,
     "rarities((tables, slopes, n, spz, zmax, slack, reach_quiet), z, x, caps, quiet, known_reach[, rows[, r_out]])"
     " -> (r, raw, top)."},
    {"kind_learn", (PyCFunction)(void (*)(void))kind_learn, METH_FASTCALL,
     "kind_learn(kinds, kind, xl, t, kind_features, kind_floors, z95, up, down, alpha_min) -> bool."},
    {"trace_row", (PyCFunction)(void (*)(void))trace_row, METH_FASTCALL,
     "trace_row(values, order, classes, score, severity) -> trace._py_trace_row's tuple, or None for the reference."},
    {"trace_entries", (PyCFunction)(void (*)(void))trace_entries, METH_FASTCALL,
     "trace_entries(rows, fields) -> [trace._entry(r) for r in rows], or None for the reference."},
    {"remember", (PyCFunction)(void (*)(void))remember, METH_FASTCALL,
     "remember(seen, content, pos, h, hc) -> 0 new | 1 reused id | 2 duplicate (engine._py_remember)."},
    {"usage_add", (PyCFunction)(void (*)(void))usage_add, METH_FASTCALL,
     "usage_add(v, t, records, nbytes) -> True (manifest._py_usage_add in place), or None for the reference."},
    {"read_setup", read_setup, METH_O,
     "read_setup(consts) -> what read_tail takes first (engine._read_consts makes consts)."},
    {"read_tail", (PyCFunction)(void (*)(void))read_tail, METH_FASTCALL,
     "read_tail(consts, engine, st, ev, obs, rows) -> Engine._read's _Reading after _extract for an ordinary action, "
     "or None (nothing changed) for the reference to decide."},
    {"decide_setup", decide_setup, METH_O,
     "decide_setup(consts) -> what decide takes first (engine._decide_consts makes consts)."},
    {"decide", (PyCFunction)(void (*)(void))decide, METH_FASTCALL,
     "decide(consts, pending, p_comb, k, traces, episodes) -> the index of the first pending decision from k on that "
     "Engine.process_batch's Python lines decide (those before it decided here)."},
    {"pending_quiet", (PyCFunction)(void (*)(void))pending_quiet, METH_FASTCALL,
     "pending_quiet(p, width, k_dest) -> engine._py_pending_quiet(p) (a set), or None for the reference to decide."},
    {"admit_setup", admit_setup, METH_O,
     "admit_setup(consts) -> what admit takes first (engine._admit_consts makes consts)."},
    {"admit", (PyCFunction)(void (*)(void))admit, METH_FASTCALL,
     "admit(consts, engine, events, i, out, pending, rows, book, agents, approvals) -> the index of the first event "
     "from i on that Engine.process_batch's Python lines take (those before it taken here)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "detector._native",
    "Compiled per-feature loops; see detector/native.py. Bit-identical to the pure-Python references.",
    -1, methods,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    crc_init();
    learn_avx_init();
#ifdef CRC_FOLD
    crc_fold_init();
#endif
    if (intern_names() < 0 || rt_names() < 0 || dc_names() < 0 || ad_names() < 0)
        return NULL;
    for (int i = 0; i < N_SMALL_FLOATS; i++)
        if ((small_floats[i] = PyFloat_FromDouble((double)i)) == NULL)
            return NULL;
    if (PyType_Ready(&RowPoolType) < 0 || array_fast_check() < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    /* array_fast: exact arrays' buffers taken and given back without the buffer protocol's calls; record_direct:
     * an ordinary record's values written into its entries (decide_setup's check, on this interpreter) */
    if (PyModule_AddObjectRef(m, "RowPool", (PyObject *)&RowPoolType) < 0
            || PyModule_AddObjectRef(m, "array_fast", array_exact != NULL ? Py_True : Py_False) < 0
            || PyModule_AddObjectRef(m, "record_direct", record_direct_check() ? Py_True : Py_False) < 0
            || PyModule_AddObjectRef(m, "learn_avx", learn_avx ? Py_True : Py_False) < 0) {
        Py_DECREF(m);
        return NULL;
    }
#ifdef CRC_FOLD
    const int folding = crc_fold_ok, fold_min = CRC_FOLD_MIN;
#else
    const int folding = 0, fold_min = 0;
#endif
    /* crc_folding: crc32 folds buffers of crc_fold_min bytes or more (tests/unit/test_crc_fold.py) */
    if (PyModule_AddObjectRef(m, "crc_folding", folding ? Py_True : Py_False) < 0
            || PyModule_AddIntConstant(m, "crc_fold_min", fold_min) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
