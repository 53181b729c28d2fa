/* The per-feature numeric loops of detector/baseline.py and detector/scoring.py, compiled.
 *
 * Each function here is the transcription of a pure-Python reference kept beside it
 * (detector/baseline.py: _py_log_deviations, _py_learn, _py_kind_compare, _py_kind_learn;
 * detector/scoring.py: _py_neglogs), with the same IEEE double operations in the same order,
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
#include <math.h>
#include <stdint.h>
#include <string.h>

/* A writable (or read-only) C-contiguous buffer of doubles (array('d')). */
static int
get_doubles(PyObject *obj, Py_buffer *view, int writable, const char *what)
{
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
        PyBuffer_Release(&lv);
        return NULL;
    }
    if (get_doubles(floors_o, &fv, 0, "floors") < 0) {
        PyBuffer_Release(&lv);
        PyBuffer_Release(&sv);
        return NULL;
    }
    Py_ssize_t m = n;
    Py_ssize_t nl = lv.len / (Py_ssize_t)sizeof(double), ns = sv.len / (Py_ssize_t)sizeof(double),
               nf = fv.len / (Py_ssize_t)sizeof(double);
    if (nl < m) m = nl;
    if (ns < m) m = ns;
    if (nf < m) m = nf;
    const double *loc = lv.buf, *scale = sv.buf, *floors = fv.buf;
    xl = PyList_New(n);
    z = PyList_New(m);
    if (xl == NULL || z == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        double v = buf[i];
        double r = log1p(v);
        if ((isnan(r) && !isnan(v)) || (isinf(r) && isfinite(v))) {
            PyErr_SetString(PyExc_ValueError, "math domain error");
            goto done;
        }
        buf[i] = r;
        PyObject *f = PyFloat_FromDouble(r);
        if (f == NULL)
            goto done;
        PyList_SET_ITEM(xl, i, f);
    }
    for (Py_ssize_t i = 0; i < m; i++) {
        double s = scale[i], f = floors[i];
        PyObject *o = PyFloat_FromDouble((buf[i] - loc[i]) / (s > f ? s : f));
        if (o == NULL)
            goto done;
        PyList_SET_ITEM(z, i, o);
    }
    res = PyTuple_Pack(2, xl, z);
done:
    Py_XDECREF(xl);
    Py_XDECREF(z);
    PyBuffer_Release(&lv);
    PyBuffer_Release(&sv);
    PyBuffer_Release(&fv);
    return res;
}

/* learn(xl, loc, scale, floors, a2, z95, up, down) -> (loc', scale')
 *   new arrays (copies of loc and scale) moved towards xl as Baseline.learn_log does. */
static PyObject *
learn(PyObject *self, PyObject *args)
{
    PyObject *x, *loc_o, *scale_o, *floors_o;
    double a2, z95, up, down;
    if (!PyArg_ParseTuple(args, "OOOOdddd:learn", &x, &loc_o, &scale_o, &floors_o, &a2, &z95, &up, &down))
        return NULL;
    PyObject *seq = PySequence_Fast(x, "xl must be a sequence of floats");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
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
    PyObject *nloc = PyObject_CallMethod(loc_o, "__copy__", NULL);
    if (nloc == NULL)
        return NULL;
    PyObject *nscale = PyObject_CallMethod(scale_o, "__copy__", NULL);
    if (nscale == NULL) {
        Py_DECREF(nloc);
        return NULL;
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
    double *loc = lv.buf, *scale = sv.buf;
    const double *floors = fv.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        double v = buf[i], m = loc[i], s = scale[i], f = floors[i];
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
    res = PyTuple_Pack(2, nloc, nscale);
fail3:
    PyBuffer_Release(&fv);
fail2:
    PyBuffer_Release(&sv);
fail1:
    PyBuffer_Release(&lv);
fail0:
    Py_DECREF(nloc);
    Py_DECREF(nscale);
    return res;
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
        PyBuffer_Release(&tv);
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
    out = PyList_New(k);
    if (out == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < k; i++) {
        double v = buf[i], r;
        if (v <= 0.0) {
            r = 0.0;
        } else {
            double p = v * spz;
            const double *t = tables + i * n;
            if (isnan(p)) {
                PyErr_SetString(PyExc_ValueError, "cannot convert float NaN to integer");
                Py_CLEAR(out);
                goto done;
            }
            if (isinf(p)) {
                PyErr_SetString(PyExc_OverflowError, "cannot convert float infinity to integer");
                Py_CLEAR(out);
                goto done;
            }
            /* int(p) + 1 < n  <=>  p < n - 1 (p > 0) */
            if (p < (double)(n - 1))
                r = t[(Py_ssize_t)p + 1];
            else
                r = t[n - 1] + (v - zmax) * slopes[i];
        }
        PyObject *o = PyFloat_FromDouble(r);
        if (o == NULL) {
            Py_CLEAR(out);
            goto done;
        }
        PyList_SET_ITEM(out, i, o);
    }
done:
    PyBuffer_Release(&tv);
    PyBuffer_Release(&sv);
    return out;
}

/* A buffer of `itemsize`-byte items whose format is one of `kinds` (numpy says "i", "l", "q", "d", maybe
 * with a byte-order prefix for native order). */
static int
get_items(PyObject *obj, Py_buffer *view, int writable, Py_ssize_t itemsize, const char *kinds, const char *what)
{
    int flags = PyBUF_FORMAT | PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0)
        return -1;
    const char *f = view->format ? view->format : "B";
    if (*f == '@' || *f == '=' || *f == '<')
        f++;
    if (view->itemsize != itemsize || f[0] == '\0' || f[1] != '\0' || strchr(kinds, f[0]) == NULL) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_TypeError, "%s has the wrong item type", what);
        return -1;
    }
    return 0;
}

/* forest_leaves(z, feature, threshold, depth, out)
 *   The bottom slot each row of z (n x d float64) reaches in each tree of a complete-tree forest
 *   (feature int32 and threshold float64, trees x inner nodes), written into out (n x trees int64) as
 *   models.store.Forest._py_leaves computes it: depth rounds of node = 2 node + 1 + (z[feature] > threshold). */
static PyObject *
forest_leaves(PyObject *self, PyObject *args)
{
    PyObject *z_o, *f_o, *t_o, *o_o;
    Py_ssize_t depth;
    PyObject *res = NULL;
    if (!PyArg_ParseTuple(args, "OOOnO:forest_leaves", &z_o, &f_o, &t_o, &depth, &o_o))
        return NULL;
    Py_buffer zv, fv, tv, ov;
    if (get_items(z_o, &zv, 0, 8, "d", "z") < 0)
        return NULL;
    if (get_items(f_o, &fv, 0, 4, "i", "feature") < 0)
        goto f0;
    if (get_items(t_o, &tv, 0, 8, "d", "threshold") < 0)
        goto f1;
    if (get_items(o_o, &ov, 1, 8, "lq", "out") < 0)
        goto f2;
    if (zv.ndim != 2 || fv.ndim != 2 || tv.ndim != 2 || ov.ndim != 2 || fv.shape[0] != tv.shape[0]
            || fv.shape[1] != tv.shape[1] || ov.shape[0] != zv.shape[0] || ov.shape[1] != fv.shape[0]
            || depth < 1 || depth > 40 || ((Py_ssize_t)1 << depth) - 1 != fv.shape[1]) {
        PyErr_SetString(PyExc_ValueError, "forest_leaves: inconsistent shapes");
        goto f3;
    }
    {
        const Py_ssize_t n = zv.shape[0], d = zv.shape[1], trees = fv.shape[0], inner = fv.shape[1];
        const double *z = zv.buf, *thr = tv.buf;
        const int *feat = fv.buf;
        int64_t *out = ov.buf;
        for (Py_ssize_t t = 0; t < trees; t++) {
            const int *ft = feat + t * inner;
            for (Py_ssize_t i = 0; i < inner; i++) {
                if (ft[i] < 0 || ft[i] >= d) {
                    PyErr_SetString(PyExc_IndexError, "forest_leaves: a feature index is out of range");
                    goto f3;
                }
            }
        }
        Py_BEGIN_ALLOW_THREADS
        /* tree by tree (one tree's nodes stay in the cache while every row walks it) */
        for (Py_ssize_t t = 0; t < trees; t++) {
            const int *ft = feat + t * inner;
            const double *tt = thr + t * inner;
            for (Py_ssize_t r = 0; r < n; r++) {
                const double *row = z + r * d;
                Py_ssize_t node = 0;
                for (Py_ssize_t k = 0; k < depth; k++)
                    node = 2 * node + 1 + (row[ft[node]] > tt[node]);
                out[r * trees + t] = node - inner + t * (inner + 1);
            }
        }
        Py_END_ALLOW_THREADS
    }
    Py_INCREF(Py_None);
    res = Py_None;
f3:
    PyBuffer_Release(&ov);
f2:
    PyBuffer_Release(&tv);
f1:
    PyBuffer_Release(&fv);
f0:
    PyBuffer_Release(&zv);
    return res;
}

static PyMethodDef methods[] = {
    {"log_deviations", log_deviations, METH_VARARGS,
     "log_deviations(x, loc, scale, floors) -> (xl, z): log1p of a row and its robust deviations."},
    {"learn", learn, METH_VARARGS,
     "learn(xl, loc, scale, floors, a2, z95, up, down) -> (loc, scale): one learning step, on copies."},
    {"neglogs", neglogs, METH_VARARGS,
     "neglogs(z, tables, slopes, n, spz, zmax) -> list: -log10 p of each deviation."},
    {"forest_leaves", forest_leaves, METH_VARARGS,
     "forest_leaves(z, feature, threshold, depth, out): the leaf of each row in each tree, into out."},
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
    return PyModule_Create(&module);
}
