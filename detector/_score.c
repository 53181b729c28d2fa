/* The model-side scoring of detector/scoring.py, detector/evidence.py and models/store.py, compiled.
 *
 * Each function here transcribes a pure-Python reference kept beside its caller, with the same IEEE
 * double operations in the same order, so the results are equal bit for bit
 * (tests/unit/test_score_kernel.py holds them to it):
 *
 * - Forest.means:   models.store.Forest._py_means (clip, float32 rounding, the tree walk, and numpy's
 *                   pairwise summation of each row's path lengths, divided by the number of trees);
 * - Curve.pvalue:   detector.scoring.Calibration._py_pvalue (and Curve.pvalues over an array);
 * - Evidence.strength: detector.evidence._py_strength;
 * - fisher:         detector.evidence._py_fisher;
 * - explain:        detector.scoring._py_explain (an alert's reasons: the same dicts, strings and floats);
 * - iso_ms:         detector.timestamps._py_iso_ms (an instant as episodes write it);
 *   tests/unit/test_alert_kernels.py holds these two to their references.
 *
 * exp and log are the C library's, which Python's math.exp and math.log call for finite arguments.
 * The build must never reassociate or contract floating point: setup.py compiles this file, like
 * detector/_native.c, with -O2 -fno-fast-math -ffp-contract=off (no fused multiply-add).
 *
 * Where the reference would take another path (an int where a float is expected, a calibration whose
 * tails are not positive finite numbers), the functions here return None or refuse to build, and the
 * caller runs the reference: the result is the reference's in every case.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "_buffers.h"
#include "_scoring.h"


/* ------------------------------------------------------------------------------------------------------
 * Forest(feature, threshold, path, depth) and Forest.means(z, clip, out)
 *
 * models.store.Forest._py_means compiled. For each row of z (n x d float64): clipped to [-clip, clip] as
 * np.clip does (NaN stays NaN), rounded to float32 and back (scikit-learn compares float32 inputs with
 * its thresholds), walked down every tree of a complete-tree forest (feature int32 and threshold float64,
 * trees x inner nodes: depth rounds of node = 2 node + 1 + (z[feature] > threshold)) to a bottom slot,
 * and the bottom slots' path lengths (path, trees x 2**depth) averaged as numpy's mean(axis=1) does:
 * pairwise summation (below), then / trees.
 *
 * The complete trees are mostly padding (a leaf above the bottom is a chain of +inf thresholds down to
 * its leftmost bottom slot: 4/5 of the trained model's nodes), so Forest keeps a compact copy: a node
 * from which every row goes left to the bottom (threshold +inf all the way down: nothing is greater than
 * +inf, not even +inf or NaN) becomes one leaf holding that bottom slot's path length, and a leaf points
 * at itself (threshold +inf), so depth rounds of node = child[z[feature] > threshold] still end on the
 * same slot. The walk reads a third of the memory, which is what it waits for when the engine's work
 * between two batches has pushed the forest out of the cache. The rounded rows are kept as floats and
 * compared with float thresholds that send every float row the same way (float_floor, below).
 * ------------------------------------------------------------------------------------------------------ */

#define PW_BLOCKSIZE 128

/* numpy's DOUBLE_pairwise_sum (numpy/_core/src/umath/loops_utils.h.src) over a[0], a[s], a[2s], ...:
 * under 8 items one after the other; up to 128 in eight interleaved partial sums added as
 * ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7)), then the rest one after the other; beyond 128
 * split in two halves (the first a multiple of 8) summed recursively. An add-reduction starts from 0.
 * (numpy sums a contiguous row so in 1.x and 2.x; tests/unit/test_score_kernel.py compares with numpy itself,
 * so a numpy that summed otherwise would fail it.) */
static double
pairwise_sum(const double *a, Py_ssize_t n, Py_ssize_t s)
{
    if (n < 8) {
        double res = 0.0;
        for (Py_ssize_t i = 0; i < n; i++)
            res += a[i * s];
        return res;
    }
    if (n <= PW_BLOCKSIZE) {
        double r[8];
        Py_ssize_t i;
        for (int j = 0; j < 8; j++)
            r[j] = a[j * s];
        for (i = 8; i < n - (n % 8); i += 8)
            for (int j = 0; j < 8; j++)
                r[j] += a[(i + j) * s];
        double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; i++)
            res += a[i * s];
        return res;
    }
    Py_ssize_t n2 = n / 2;
    n2 -= n2 % 8;
    return pairwise_sum(a, n2, s) + pairwise_sum(a + n2 * s, n - n2, s);
}

/* rows walked down one tree side by side: independent chains of loads the processor overlaps (a batch of
 * 128 rows through 100 trees of depth 8: about 300 us one row at a time, 100 us sixteen at a time with
 * the block's rows stored feature-major) */
#define WALK_ROWS 16


/* A node of the compact trees. The rows are floats (rounded as the reference rounds them), so each
 * threshold is kept as the largest float not above it (float_floor): for a float z, z > thr exactly when
 * z > float_floor(thr), and the walk compares floats and reads half the row bytes. The feature is a byte
 * offset within a block of rows stored feature-major (feature * WALK_ROWS floats) and the children are
 * pointers, so a step is node = node->child[z > thr] with no arithmetic on addresses. A leaf's threshold
 * +inf sends every row left, to itself; its right child is never read and holds its path length instead
 * (the same 24 bytes a node and a separate path length took). */
typedef struct FNode {
    float thr;
    uint32_t feat;  /* feature * WALK_ROWS * sizeof(float) */
    union {
        const struct FNode *child[2];                           /* left, right */
        struct { const struct FNode *self; double len; } leaf;  /* self = child[0] */
    };
} FNode;

typedef struct {
    PyObject_HEAD
    Py_ssize_t trees, depth;
    Py_ssize_t need;    /* rows must have more columns than the largest feature index */
    Py_ssize_t *start;  /* tree t's nodes are nodes[start[t]:start[t + 1]] */
    FNode *nodes;
    PyObject *args;     /* (feature, threshold, path, depth): for copy and pickle */
} CForest;

/* every row goes left from node (< inner) to the bottom: +inf thresholds all the way down */
static int
left_to_bottom(const double *tt, Py_ssize_t inner, Py_ssize_t node)
{
    for (; node < inner; node = 2 * node + 1)
        if (!(tt[node] == INFINITY))
            return 0;
    return 1;
}

/* the largest float not above x (x itself when it is a float; NaN stays NaN). For a float z (rows are
 * rounded to float), z > x exactly when z > float_floor(x): if z > x then z > float_floor(x) since
 * float_floor(x) <= x; if z > float_floor(x), z is at least the next float up, which is above x (else it
 * would be the largest float not above x). Beyond the floats' range: FLT_MAX, or -inf below -FLT_MAX. */
static float
float_floor(double x)
{
    float f = (float)x;
    if ((double)f > x)
        f = nextafterf(f, -INFINITY);
    return f;
}

/* the compact nodes below complete-tree node `node` (tree arrays ft, tt, pt): how many (out == NULL), or
 * written from `slot` on, children at *next */
static Py_ssize_t
compact(const int *ft, const double *tt, const double *pt, Py_ssize_t inner, Py_ssize_t node, FNode *out,
        Py_ssize_t slot, Py_ssize_t *next)
{
    if (node >= inner || left_to_bottom(tt, inner, node)) {
        while (node < inner)
            node = 2 * node + 1;
        if (out != NULL) {
            out[slot].thr = INFINITY;
            out[slot].feat = 0;
            out[slot].leaf.self = out + slot;
            out[slot].leaf.len = pt[node - inner];
        }
        return 1;
    }
    Py_ssize_t left = 0;
    if (out != NULL) {
        left = *next;
        *next += 2;
        out[slot].thr = float_floor(tt[node]);
        out[slot].feat = (uint32_t)ft[node] * WALK_ROWS * sizeof(float);
        out[slot].child[0] = out + left;
        out[slot].child[1] = out + left + 1;
    }
    return 1 + compact(ft, tt, pt, inner, 2 * node + 1, out, left, next)
             + compact(ft, tt, pt, inner, 2 * node + 2, out, left + 1, next);
}

static void
CForest_dealloc(CForest *self)
{
    PyMem_Free(self->start);
    PyMem_Free(self->nodes);
    Py_XDECREF(self->args);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
CForest_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *f_o, *t_o, *p_o;
    Py_ssize_t depth;
    static char *kwlist[] = {"feature", "threshold", "path", "depth", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOn:Forest", kwlist, &f_o, &t_o, &p_o, &depth))
        return NULL;
    Py_buffer fv, tv, pv;
    CForest *self = NULL;
    if (get_items(f_o, &fv, 0, 4, "i", "feature") < 0)
        return NULL;
    if (get_items(t_o, &tv, 0, 8, "d", "threshold") < 0)
        goto f1;
    if (get_items(p_o, &pv, 0, 8, "d", "path") < 0)
        goto f2;
    if (fv.ndim != 2 || tv.ndim != 2 || pv.ndim != 2 || fv.shape[0] != tv.shape[0] || fv.shape[1] != tv.shape[1]
            || pv.shape[0] != fv.shape[0] || pv.shape[1] != fv.shape[1] + 1 || fv.shape[0] < 1
            || depth < 1 || depth > 30 || ((Py_ssize_t)1 << depth) - 1 != fv.shape[1]) {
        PyErr_SetString(PyExc_ValueError, "Forest: inconsistent shapes");
        goto f3;
    }
    const Py_ssize_t trees = fv.shape[0], inner = fv.shape[1];
    const int *feat = fv.buf;
    const double *thr = tv.buf, *path = pv.buf;
    for (Py_ssize_t i = 0; i < trees * inner; i++) {
        if (feat[i] < 0) {
            PyErr_SetString(PyExc_ValueError, "Forest: a negative feature index");
            goto f3;
        }
        if (feat[i] > (int)(UINT32_MAX / (WALK_ROWS * sizeof(float)))) {  /* its byte offset must fit a node */
            PyErr_SetString(PyExc_ValueError, "Forest: a feature index too large");
            goto f3;
        }
    }
    self = (CForest *)type->tp_alloc(type, 0);
    if (self == NULL)
        goto f3;
    self->trees = trees;
    self->depth = depth;
    self->need = 1;  /* a leaf reads column 0 (and compares it with +inf) */
    self->start = PyMem_Malloc(sizeof(Py_ssize_t) * (size_t)(trees + 1));
    if (self->start == NULL)
        goto nomem;
    self->start[0] = 0;
    for (Py_ssize_t t = 0; t < trees; t++)
        self->start[t + 1] = self->start[t]
            + compact(feat + t * inner, thr + t * inner, path + t * (inner + 1), inner, 0, NULL, 0, NULL);
    self->nodes = PyMem_Malloc(sizeof(FNode) * (size_t)self->start[trees]);
    if (self->nodes == NULL)
        goto nomem;
    for (Py_ssize_t t = 0; t < trees; t++) {
        FNode *nt = self->nodes + self->start[t];
        Py_ssize_t next = 1;
        compact(feat + t * inner, thr + t * inner, path + t * (inner + 1), inner, 0, nt, 0, &next);
        for (Py_ssize_t i = 0; i < next; i++)
            if ((Py_ssize_t)(nt[i].feat / (WALK_ROWS * sizeof(float))) + 1 > self->need)
                self->need = (Py_ssize_t)(nt[i].feat / (WALK_ROWS * sizeof(float))) + 1;
    }
    self->args = Py_BuildValue("(OOOn)", f_o, t_o, p_o, depth);
    if (self->args == NULL)
        goto fail;
    PyBuffer_Release(&pv);
    PyBuffer_Release(&tv);
    PyBuffer_Release(&fv);
    return (PyObject *)self;
nomem:
    PyErr_NoMemory();
fail:
    Py_CLEAR(self);
f3:
    PyBuffer_Release(&pv);
f2:
    PyBuffer_Release(&tv);
f1:
    PyBuffer_Release(&fv);
    return (PyObject *)self;
}

/* `lanes` rows of a block (zb: its first lane's first feature) down one tree (root: its first node), depth
 * steps each, to the nodes they end on. Inlined with `lanes` a constant, the lanes' steps interleave:
 * independent chains of loads the processor overlaps. The first step reads the root's feature and
 * threshold once for every lane. */
static inline __attribute__((always_inline)) void
walk(const FNode *root, const char *zb, Py_ssize_t depth, const FNode **node, int lanes)
{
    const uint32_t rf = root->feat;
    const float rt = root->thr;
    _Pragma("GCC unroll 16")
    for (int j = 0; j < lanes; j++)
        node[j] = root->child[*(const float *)(zb + rf + j * sizeof(float)) > rt];
    for (Py_ssize_t k = 1; k < depth; k++) {
#if defined(__GNUC__)
        /* no instruction: hides zb's value from the optimizer in each step, which otherwise keeps the 16 lanes'
         * zb + j * 4 as 16 more pointers, spilled to the stack and reloaded every step; this way each lane's
         * offset is an address displacement (800 instructions a row fewer) */
        __asm__("" : "+r"(zb));
#endif
        _Pragma("GCC unroll 16")
        for (int j = 0; j < lanes; j++) {
            const FNode *nd = node[j];
            const float v = *(const float *)(zb + nd->feat + j * sizeof(float));
            node[j] = nd->child[v > nd->thr];
        }
    }
}

/* every row of zr (n rows of d features, in blocks as means() stores them) down one tree, each row's path
 * length set at dst[row * per_row] or added to it. Inlined with per_row and add constants (per_row 16: the
 * 16 lanes' slots one address apart by a fixed displacement). */
static inline __attribute__((always_inline)) void
walk_tree(const FNode *root, const float *zr, Py_ssize_t n, Py_ssize_t d, Py_ssize_t depth, double *dst,
          Py_ssize_t per_row, int add)
{
    const Py_ssize_t full = n / WALK_ROWS * WALK_ROWS;
    Py_ssize_t r = 0;
    for (; r < full; r += WALK_ROWS) {
        const FNode *node[WALK_ROWS];
        walk(root, (const char *)(zr + r * d), depth, node, WALK_ROWS);
        double *to = dst + r * per_row;
        for (int j = 0; j < WALK_ROWS; j++) {
            if (add)
                to[j * per_row] += node[j]->leaf.len;
            else
                to[j * per_row] = node[j]->leaf.len;
        }
    }
    for (; r < n; r++) {  /* the partial block's lanes one by one */
        const FNode *node;
        walk(root, (const char *)(zr + full * d + (r - full)), depth, &node, 1);
        if (add)
            dst[r * per_row] += node->leaf.len;
        else
            dst[r * per_row] = node->leaf.len;
    }
}

static PyObject *
CForest_means(CForest *self, PyObject *args)
{
    PyObject *z_o, *o_o;
    double clip;
    PyObject *res = NULL;
    double *scratch = NULL;
    if (!PyArg_ParseTuple(args, "OdO:means", &z_o, &clip, &o_o))
        return NULL;
    Py_buffer zv, ov;
    if (get_items(z_o, &zv, 0, 8, "d", "z") < 0)
        return NULL;
    if (get_items(o_o, &ov, 1, 8, "d", "out") < 0)
        goto f0;
    if (zv.ndim != 2 || ov.ndim != 1 || ov.shape[0] != zv.shape[0]) {
        PyErr_SetString(PyExc_ValueError, "means: z must be rows x features and out one value per row");
        goto f1;
    }
    if (zv.shape[1] < self->need) {
        PyErr_SetString(PyExc_IndexError, "means: the forest reads a feature the rows do not have");
        goto f1;
    }
    {
        const Py_ssize_t n = zv.shape[0], d = zv.shape[1], trees = self->trees, depth = self->depth;
        const double *z = zv.buf;
        double *out = ov.buf;
        if (n == 0)
            goto done;
        /* where the path lengths go: up to 128 trees, numpy's sum as it goes (each row's eight partial
         * sums, and the last trees%8 lengths); beyond, every row's length in every tree, summed at the end.
         * Then the rounded rows as floats in blocks of WALK_ROWS feature-major (lane j's feature f at
         * f * WALK_ROWS + j, one base pointer for the block), the last block maybe partial. */
        const int stream = trees <= PW_BLOCKSIZE;
        const Py_ssize_t per_row = stream ? 16 : trees;
        const Py_ssize_t blocks = (n + WALK_ROWS - 1) / WALK_ROWS;
        scratch = PyMem_Malloc(sizeof(double) * (size_t)(n * per_row)
                               + sizeof(float) * (size_t)(blocks * WALK_ROWS * d));
        if (scratch == NULL) {
            PyErr_NoMemory();
            goto f1;
        }
        double *h = scratch;
        float *zr = (float *)(scratch + n * per_row);
        const Py_ssize_t body = trees < 8 ? 0 : trees - trees % 8;  /* trees in the eight partial sums */
        Py_BEGIN_ALLOW_THREADS
        /* np.clip: maximum then minimum, each keeping a NaN (of the row or of clip). Written as lo > v ? lo : v
         * and hi < v ? hi : v, the processor's own max and min (which keep v when either is NaN, so a NaN clip
         * is taken apart: it makes every value NaN): the same number as np.clip's but for the sign of a zero at
         * a zero clip, which no comparison sees. */
        const double lo = -clip, hi = clip;
        const int nan_clip = isnan(clip);
        for (Py_ssize_t r = 0; r < n; r++) {
            float *to = zr + (r / WALK_ROWS) * WALK_ROWS * d + r % WALK_ROWS;
            for (Py_ssize_t f = 0; f < d; f++) {
                double v = z[r * d + f];
                v = lo > v ? lo : v;
                v = hi < v ? hi : v;
                to[f * WALK_ROWS] = (float)v;
            }
            if (nan_clip)
                for (Py_ssize_t f = 0; f < d; f++)
                    to[f * WALK_ROWS] = NAN;
        }
        /* tree by tree (one tree's nodes stay in the cache while every row walks it) */
        for (Py_ssize_t t = 0; t < trees; t++) {
            const FNode *root = self->nodes + self->start[t];
            /* row r's length in this tree goes to dst[r * per_row]: set, or added to a partial sum */
            double *dst = !stream ? h + t : t < body ? h + t % 8 : h + 8 + (t - body);
            if (!stream)
                walk_tree(root, zr, n, d, depth, dst, trees, 0);
            else if (t >= 8 && t < body)
                walk_tree(root, zr, n, d, depth, dst, 16, 1);
            else
                walk_tree(root, zr, n, d, depth, dst, 16, 0);
        }
        for (Py_ssize_t r = 0; r < n; r++) {
            const double *a = h + r * per_row;
            double sum;
            if (!stream) {
                sum = pairwise_sum(a, trees, 1);
            } else {  /* pairwise_sum's two cases up to 128 items */
                sum = body ? ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])) : 0.0;
                for (Py_ssize_t i = 0; i < trees - body; i++)
                    sum += a[8 + i];
            }
            out[r] = (0.0 + sum) / (double)trees;
        }
        Py_END_ALLOW_THREADS
    }
done:
    Py_INCREF(Py_None);
    res = Py_None;
f1:
    PyMem_Free(scratch);
    PyBuffer_Release(&ov);
f0:
    PyBuffer_Release(&zv);
    return res;
}

static PyObject *
CForest_reduce(CForest *self, PyObject *Py_UNUSED(ignored))
{
    return Py_BuildValue("(OO)", Py_TYPE(self), self->args);
}

static PyObject *
CForest_nodes(CForest *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->start[self->trees]);
}

static PyMethodDef CForest_methods[] = {
    {"means", (PyCFunction)CForest_means, METH_VARARGS,
     "means(z, clip, out): each row's mean path length over the trees, into out (float64)."},
    {"__reduce__", (PyCFunction)CForest_reduce, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef CForest_getset[] = {
    {"nodes", (getter)CForest_nodes, NULL, "nodes kept (of trees x (2 ** (depth + 1) - 1) in the complete trees)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject CForestType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "detector._score.Forest",
    .tp_basicsize = sizeof(CForest),
    .tp_dealloc = (destructor)CForest_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Forest(feature, threshold, path, depth): a models.store.Forest compacted for means(), compiled.",
    .tp_methods = CForest_methods,
    .tp_getset = CForest_getset,
    .tp_new = CForest_new,
};

/* ------------------------------------------------------------------------------------------------------
 * Curve(thresholds, tails, beta): a Calibration's numbers, with the logs of its tails taken once (log of
 * the same double is the same double every time). Refuses (ValueError) what the kernel does not take:
 * no thresholds, items that are not floats, thresholds not finite and non-decreasing, tails not
 * positive and finite, beta not positive and finite; the caller then keeps the reference.
 * ------------------------------------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    Py_ssize_t n;
    double *thr;    /* n thresholds */
    double *logt;   /* n logs of the tails */
    double *tail;   /* the n tails */
    double last;    /* tails[n - 1] */
    double beta;
    PyObject *args; /* (thresholds, tails, beta) as given: for copy and pickle */
} Curve;

static void
Curve_dealloc(Curve *self)
{
    PyMem_Free(self->thr);
    Py_XDECREF(self->args);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
float_items(PyObject *seq, Py_ssize_t n, double *out)
{
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyFloat_CheckExact(items[i]))
            return -1;
        out[i] = PyFloat_AS_DOUBLE(items[i]);
    }
    return 0;
}

static PyObject *
Curve_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *thr_o, *tails_o, *beta_o;
    static char *kwlist[] = {"thresholds", "tails", "beta", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO:Curve", kwlist, &thr_o, &tails_o, &beta_o))
        return NULL;
    PyObject *ts = PySequence_Fast(thr_o, "thresholds must be a sequence"), *ls = NULL;
    Curve *self = NULL;
    if (ts == NULL)
        return NULL;
    ls = PySequence_Fast(tails_o, "tails must be a sequence");
    if (ls == NULL)
        goto fail;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(ts);
    if (n < 1 || n != PySequence_Fast_GET_SIZE(ls) || !PyFloat_CheckExact(beta_o)) {
        PyErr_SetString(PyExc_ValueError, "Curve: need as many float tails as thresholds, and a float beta");
        goto fail;
    }
    self = (Curve *)type->tp_alloc(type, 0);
    if (self == NULL)
        goto fail;
    self->thr = PyMem_Malloc(sizeof(double) * 3 * (size_t)n);
    if (self->thr == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    self->logt = self->thr + n;
    self->tail = self->thr + 2 * n;
    self->n = n;
    self->beta = PyFloat_AS_DOUBLE(beta_o);
    if (float_items(ts, n, self->thr) < 0 || float_items(ls, n, self->logt) < 0) {
        PyErr_SetString(PyExc_ValueError, "Curve: thresholds and tails must be floats");
        goto fail;
    }
    int ok = isfinite(self->beta) && self->beta > 0.0;
    for (Py_ssize_t i = 0; i < n && ok; i++) {
        double t = self->logt[i];
        ok = isfinite(self->thr[i]) && (i == 0 || self->thr[i - 1] <= self->thr[i]) && isfinite(t) && t > 0.0;
    }
    if (!ok) {
        PyErr_SetString(PyExc_ValueError, "Curve: thresholds finite and sorted, tails and beta positive and finite");
        goto fail;
    }
    self->last = self->logt[n - 1];
    for (Py_ssize_t i = 0; i < n; i++) {
        self->tail[i] = self->logt[i];
        self->logt[i] = log(self->logt[i]);
    }
    self->args = PyTuple_Pack(3, thr_o, tails_o, beta_o);
    if (self->args == NULL)
        goto fail;
    Py_DECREF(ts);
    Py_DECREF(ls);
    return (PyObject *)self;
fail:
    Py_XDECREF((PyObject *)self);
    Py_XDECREF(ts);
    Py_XDECREF(ls);
    return NULL;
}

/* Calibration._py_pvalue for a raw value that is not NaN (the reference's NaN path bisects to a
 * wrapped index and may divide by zero: the caller runs it). */
static inline double
curve_pvalue(const Curve *c, double raw)
{
    const double *thr = c->thr;
    const Py_ssize_t n = c->n;
    if (raw <= thr[0])
        return 1.0;
    if (raw >= thr[n - 1])
        return c->last * exp(-(raw - thr[n - 1]) / c->beta);
    /* bisect.bisect_left */
    Py_ssize_t lo = 0, hi = n;
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (thr[mid] < raw)
            lo = mid + 1;
        else
            hi = mid;
    }
    const Py_ssize_t i = lo;
    const double x0 = thr[i - 1], x1 = thr[i];
    const double l0 = c->logt[i - 1], l1 = c->logt[i];
    const double p = exp(l0 + (l1 - l0) * (raw - x0) / (x1 - x0));
    /* within the two tails (the reference's bounds: p-values never rise with the statistic) */
    const double t0 = c->tail[i - 1], t1 = c->tail[i];
    if (p < t1)
        return t1;
    return p > t0 ? t0 : p;
}

static PyObject *
Curve_pvalue(Curve *self, PyObject *raw)
{
    if (!PyFloat_CheckExact(raw))  /* an int compares exactly in the reference, a float subclass its own way */
        Py_RETURN_NONE;
    double v = PyFloat_AS_DOUBLE(raw);
    if (isnan(v))
        Py_RETURN_NONE;
    return PyFloat_FromDouble(curve_pvalue(self, v));
}

static PyObject *
Curve_pvalues(Curve *self, PyObject *args)
{
    PyObject *x_o, *o_o;
    if (!PyArg_ParseTuple(args, "OO:pvalues", &x_o, &o_o))
        return NULL;
    Py_buffer xv, ov;
    if (get_items(x_o, &xv, 0, 8, "d", "raw") < 0)
        return NULL;
    if (get_items(o_o, &ov, 1, 8, "d", "out") < 0) {
        PyBuffer_Release(&xv);
        return NULL;
    }
    PyObject *res = NULL;
    const Py_ssize_t n = xv.len / 8;
    if (ov.len != xv.len) {
        PyErr_SetString(PyExc_ValueError, "pvalues: out must have as many items as raw");
        goto done;
    }
    const double *x = xv.buf;
    double *out = ov.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (isnan(x[i])) {
            res = Py_False;
            goto done;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++)
        out[i] = curve_pvalue(self, x[i]);
    res = Py_True;
done:
    Py_XINCREF(res);
    PyBuffer_Release(&ov);
    PyBuffer_Release(&xv);
    return res;
}

static PyObject *
Curve_reduce(Curve *self, PyObject *Py_UNUSED(ignored))
{
    return Py_BuildValue("(OO)", Py_TYPE(self), self->args);
}

static PyMethodDef Curve_methods[] = {
    {"pvalue", (PyCFunction)Curve_pvalue, METH_O,
     "pvalue(raw) -> Calibration.pvalue(raw), or None for the reference to decide (not a float, NaN)."},
    {"pvalues", (PyCFunction)Curve_pvalues, METH_VARARGS,
     "pvalues(raw, out) -> True with out[i] = pvalue(raw[i]) (float64 buffers), or False (a NaN: nothing written)."},
    {"__reduce__", (PyCFunction)Curve_reduce, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CurveType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "detector._score.Curve",
    .tp_basicsize = sizeof(Curve),
    .tp_dealloc = (destructor)Curve_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Curve(thresholds, tails, beta): a detector.scoring.Calibration's p-values, compiled.",
    .tp_methods = Curve_methods,
    .tp_new = Curve_new,
};

/* ------------------------------------------------------------------------------------------------------
 * Evidence(groups, min_rarity): detector.evidence's groups as (feature indices, kind) with kind 0 solo,
 * 1 moving, 2 sensitive, 3 support, and the rarity a group needs to count (evidence.MIN_RARITY); strength(r, moving, sensitive, established) as evidence._py_strength, or None
 * when r is not a list or tuple of floats at the groups' indices or a flag is not a bool.
 * ------------------------------------------------------------------------------------------------------ */

#define MAX_GROUPS 64
#define MAX_MEMBERS 256
enum { SOLO, MOVING, SENSITIVE, SUPPORT };

typedef struct {
    PyObject_HEAD
    int n;                       /* groups */
    int kind[MAX_GROUPS];
    int start[MAX_GROUPS + 1];   /* group g's indices are idx[start[g]:start[g + 1]] */
    Py_ssize_t idx[MAX_MEMBERS];
    Py_ssize_t need;             /* r must have more items than the largest index */
    double min_rarity;
    PyObject *groups;
} Evidence;

static void
Evidence_dealloc(Evidence *self)
{
    Py_XDECREF(self->groups);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Evidence_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *groups;
    double min_rarity;
    static char *kwlist[] = {"groups", "min_rarity", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!d:Evidence", kwlist, &PyTuple_Type, &groups, &min_rarity))
        return NULL;
    Evidence *self = (Evidence *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    Py_ssize_t ng = PyTuple_GET_SIZE(groups), m = 0;
    if (ng > MAX_GROUPS)
        goto bad;
    for (Py_ssize_t g = 0; g < ng; g++) {
        PyObject *item = PyTuple_GET_ITEM(groups, g), *idx;
        int kind;
        if (!PyArg_ParseTuple(item, "O!i", &PyTuple_Type, &idx, &kind))
            goto fail;
        Py_ssize_t k = PyTuple_GET_SIZE(idx);
        if (k < 1 || m + k > MAX_MEMBERS || kind < SOLO || kind > SUPPORT)
            goto bad;
        self->kind[g] = kind;
        self->start[g] = (int)m;
        for (Py_ssize_t i = 0; i < k; i++) {
            Py_ssize_t v = PyLong_AsSsize_t(PyTuple_GET_ITEM(idx, i));
            if (v == -1 && PyErr_Occurred())
                goto fail;
            if (v < 0)
                goto bad;
            self->idx[m++] = v;
            if (v + 1 > self->need)
                self->need = v + 1;
        }
    }
    self->n = (int)ng;
    self->start[ng] = (int)m;
    self->min_rarity = min_rarity;
    Py_INCREF(groups);
    self->groups = groups;
    return (PyObject *)self;
bad:
    PyErr_SetString(PyExc_ValueError, "Evidence: groups are ((index, ...), kind 0-3), at most 64 and 256 indices");
fail:
    Py_DECREF(self);
    return NULL;
}

/* evidence.strength over r (a list or tuple of floats, or an array('d')): 0 with solo, total and k set; 1 when
 * the reference decides (r of another type or too short, an item not a float, a flag not a bool); -1 with an
 * exception set */
static int
strength_of(Evidence *self, PyObject *r, PyObject *moving_o, PyObject *sensitive_o, PyObject *established_o,
            double *solo_out, double *total_out, long *k_out)
{
    enum { MAX_R = 256 };
    double r_copy[MAX_R];
    PyObject **items = NULL;
    const double *vals = NULL; /* r as an array('d') */
    Py_buffer rv;
    Py_ssize_t len;
    if (PyList_CheckExact(r)) {
        items = PySequence_Fast_ITEMS(r);
        len = PyList_GET_SIZE(r);
    } else if (PyTuple_CheckExact(r)) {
        items = PySequence_Fast_ITEMS(r);
        len = PyTuple_GET_SIZE(r);
    } else if (PyObject_CheckBuffer(r) && get_items(r, &rv, 0, 8, "d", "r") == 0) {
        /* the values are copied out before anything else can run: the view is released at once */
        len = rv.len / 8;
        if (len > MAX_R)
            len = -1;
        else
            memcpy(r_copy, rv.buf, (size_t)len * sizeof(double));
        PyBuffer_Release(&rv);
        if (len < 0)
            return 1;
        vals = r_copy;
    } else {
        PyErr_Clear();
        return 1;
    }
    if (len < self->need || !PyBool_Check(moving_o) || !PyBool_Check(sensitive_o) || !PyBool_Check(established_o))
        return 1;
    const int moving = moving_o == Py_True, sensitive = sensitive_o == Py_True, established = established_o == Py_True;
    double solo = 0.0, total = 0.0, support = 0.0;
    long k = 0;
    for (int g = 0; g < self->n; g++) {
        const int kind = self->kind[g];
        if ((kind == MOVING && !moving) || (kind == SENSITIVE && !sensitive))
            continue;
        if (!established && (kind == SENSITIVE || kind == SUPPORT))
            continue;
        double v = 0.0;
        for (int j = self->start[g]; j < self->start[g + 1]; j++) {
            double x;
            if (vals != NULL) {
                x = vals[self->idx[j]];
            } else {
                PyObject *o = items[self->idx[j]];
                if (!PyFloat_CheckExact(o))
                    return 1;
                x = PyFloat_AS_DOUBLE(o);
            }
            if (j == self->start[g] || x > v)
                v = x;
        }
        if (v < self->min_rarity)
            continue;
        k += 1;
        if (kind == SUPPORT) {
            support += v;
        } else {
            total += v;
            if (v > solo)
                solo = v;
        }
    }
    if (solo == 0.0)
        k = 0, total = support = 0.0;
    *solo_out = solo;
    *total_out = total + support;
    *k_out = k;
    return 0;
}

/* strength_of on a call's first four arguments, once the call is checked to have `want` of them (`usage` says
 * which otherwise, as a TypeError) */
static int
strength_call(Evidence *self, PyObject *const *args, Py_ssize_t nargs, Py_ssize_t want, const char *usage,
              double *solo, double *total, long *k)
{
    if (nargs != want) {
        PyErr_SetString(PyExc_TypeError, usage);
        return -1;
    }
    return strength_of(self, args[0], args[1], args[2], args[3], solo, total, k);
}

static PyObject *
Evidence_strength(Evidence *self, PyObject *const *args, Py_ssize_t nargs)
{
    double solo, total;
    long k;
    int rc = strength_call(self, args, nargs, 4, "strength(r, moving, sensitive, established)", &solo, &total, &k);
    if (rc < 0)
        return NULL;
    if (rc > 0)
        Py_RETURN_NONE;
    return Py_BuildValue("(ddl)", solo, total, k);
}

static int fisher_of(double total, long long k, double *out);

/* harm_pvalue(r, moving, sensitive, established, curve, evidence_curve) -> Engine._py_harm_pvalue's number
 * (the rarity of the evidence of harm: of its rarest solo piece by curve, or with evidence_curve, of all of it
 * together as fisher and evidence_curve say, whichever is rarer), or None for the reference to decide (what
 * strength leaves to it, a curve that is not a Curve, a NaN, fisher's overflow) */
static PyObject *
Evidence_harm_pvalue(Evidence *self, PyObject *const *args, Py_ssize_t nargs)
{
    double solo, total;
    long k;
    int rc = strength_call(self, args, nargs, 6,
                           "harm_pvalue(r, moving, sensitive, established, curve, evidence_curve)", &solo, &total, &k);
    if (rc < 0)
        return NULL;
    if (rc > 0)
        Py_RETURN_NONE;
    if (solo == 0.0)
        return PyFloat_FromDouble(1.0);
    PyObject *cal = args[4], *evcal = args[5];
    if (Py_TYPE(cal) != &CurveType || (evcal != Py_None && Py_TYPE(evcal) != &CurveType) || isnan(solo))
        Py_RETURN_NONE;
    double p = curve_pvalue((Curve *)cal, solo);
    if (evcal != Py_None && k > 1) {
        double f;
        if (isnan(total) || fisher_of(total, k, &f) != 0)
            Py_RETURN_NONE;
        const double e = curve_pvalue((Curve *)evcal, total);
        const double p_sum = e > f ? e : f; /* max(fisher, pvalue): the first unless the second is larger */
        if (p_sum < p)
            p = p_sum;
    }
    return PyFloat_FromDouble(p);
}

static PyObject *
Evidence_reduce(Evidence *self, PyObject *Py_UNUSED(ignored))
{
    return Py_BuildValue("(O(Od))", Py_TYPE(self), self->groups, self->min_rarity);
}

static PyMethodDef Evidence_methods[] = {
    {"strength", (PyCFunction)(void (*)(void))Evidence_strength, METH_FASTCALL,
     "strength(r, moving, sensitive, established) -> (solo, total, groups), or None for the reference to decide."},
    {"harm_pvalue", (PyCFunction)(void (*)(void))Evidence_harm_pvalue, METH_FASTCALL,
     "harm_pvalue(r, moving, sensitive, established, curve, evidence_curve) -> the evidence of harm's rarity, or "
     "None for the reference to decide."},
    {"__reduce__", (PyCFunction)Evidence_reduce, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject EvidenceType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "detector._score.Evidence",
    .tp_basicsize = sizeof(Evidence),
    .tp_dealloc = (destructor)Evidence_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Evidence(groups, min_rarity): detector.evidence.strength over fixed groups, compiled.",
    .tp_methods = Evidence_methods,
    .tp_new = Evidence_new,
};

/* fisher(total, k) -> detector.evidence._py_fisher(total, k), or None for the reference to decide (total
 * not a float, k not an int that fits, exp overflowing: the reference raises OverflowError) */
static PyObject *
fisher(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "fisher(total, k)");
        return NULL;
    }
    if (!PyFloat_CheckExact(args[0]) || !PyLong_CheckExact(args[1]))
        Py_RETURN_NONE;
    int overflow;
    long long k = PyLong_AsLongLongAndOverflow(args[1], &overflow);
    if (overflow || (k == -1 && PyErr_Occurred()) || k > ((long long)1 << 40)) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    double p;
    if (fisher_of(PyFloat_AS_DOUBLE(args[0]), k, &p) != 0)
        Py_RETURN_NONE;
    return PyFloat_FromDouble(p);
}

/* evidence._py_fisher(total, k) into *out: 0, or 1 where exp overflows (the reference raises OverflowError) */
static int
fisher_of(double total, long long k, double *out)
{
    const double x = total * 2.302585092994046;
    double term = 1.0, acc = 1.0;
    for (long long j = 1; j < k; j++) {
        term *= x / (double)j;
        acc += term;
    }
    const double e = exp(-x);
    if (isinf(e) && isfinite(x))
        return 1;
    const double p = e * acc;
    *out = p < 1.0 ? p : 1.0;
    return 0;
}

/* round4(x) -> round(x, 4) for a float, to the last bit (the decision record's and the trace's scores):
 * round4_fast (detector/_scoring.h, which says why it is exact), else round() itself (a tie or near one, large or
 * not finite, not a float; through a decimal string, ~2,500 instructions). */
static PyObject *
round4(PyObject *self, PyObject *arg)
{
    double r;
    if (PyFloat_CheckExact(arg) && round4_fast(PyFloat_AS_DOUBLE(arg), &r))
        return PyFloat_FromDouble(r);
    static PyObject *round_ = NULL; /* the builtin round */
    if (round_ == NULL) {
        PyObject *builtins = PyImport_ImportModule("builtins");
        if (builtins == NULL)
            return NULL;
        round_ = PyObject_GetAttrString(builtins, "round");
        Py_DECREF(builtins);
        if (round_ == NULL)
            return NULL;
    }
    return PyObject_CallFunction(round_, "Oi", arg, 4);
}


static PyObject *severities[5]; /* "critical", "high", "medium", "low", "ok" */

/* scored(p_stat, p_comb, p_harm, (critical, high, medium, low, p_floor)) -> (score, harm, severity, named):
 * engine._py_scored (the action's score as engine._score makes it, the evidence of harm on the score scale, the
 * score's severity by the thresholds, and whether the model's combination is named as a reason), or None for
 * the reference to decide (a p-value that is not a float, bounds not five floats) */
static PyObject *
scored(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "scored(p_stat, p_comb, p_harm, bounds)");
        return NULL;
    }
    PyObject *bounds = args[3];
    if (!PyFloat_CheckExact(args[0]) || !(args[1] == Py_None || PyFloat_CheckExact(args[1]))
            || !PyFloat_CheckExact(args[2]) || !PyTuple_CheckExact(bounds) || PyTuple_GET_SIZE(bounds) != 5)
        Py_RETURN_NONE;
    double b[5];
    for (int i = 0; i < 5; i++) {
        PyObject *o = PyTuple_GET_ITEM(bounds, i);
        if (!PyFloat_CheckExact(o))
            Py_RETURN_NONE;
        b[i] = PyFloat_AS_DOUBLE(o);
    }
    const double ps = PyFloat_AS_DOUBLE(args[0]), ph = PyFloat_AS_DOUBLE(args[2]), p_floor = b[4];
    const int has_pc = args[1] != Py_None;
    const double pc = has_pc ? PyFloat_AS_DOUBLE(args[1]) : 1.0;
    const int named = has_pc && pc < ps && pc < 1e-3;
    const double score = score_from(ps, has_pc, pc, ph, p_floor);
    const double harm = ph != 1.0 ? score_of_p(ph, p_floor) : 0.0;
    int sev = score >= b[0] ? 0 : score >= b[1] ? 1 : score >= b[2] ? 2 : score >= b[3] ? 3 : 4;
    return Py_BuildValue("(ddOO)", score, harm, severities[sev], named ? Py_True : Py_False);
}


/* ------------------------------------------------------------------------------------------------------
 * explain(z, r, x, loc, *, extra=None, limit=5): detector.scoring._py_explain, the reasons of an alert
 *
 * The features at least REASON_Z robust deviations above the baseline that normal actions reach less than once
 * in a hundred (REASON_NEGLOG), rarest first, each a dict {"feature", "value", "baseline", "detail"} built as the
 * reference builds it: round() is the builtin's (or round_fast's equal number), the numbers in the detail are
 * formatted by PyObject_Format with _fmt's specs, and the sentence is the feature's template (explain_setup takes it
 * already parsed into literals and fields). z, r, x and loc are array('d') rows (or lists or tuples of floats); any
 * other input (an int, a short row, a negative limit, an expm1 that overflows, an argument the reference refuses)
 * is the reference's to decide: explain calls it with the same arguments.
 * ------------------------------------------------------------------------------------------------------ */

/* explain_setup's: the reference, the builtin round, the features' names and parsed templates, the thresholds */
static PyObject *ex_ref, *ex_round, *ex_names, *ex_parts;
static double ex_reason_z, ex_reason_neglog;
static Py_ssize_t ex_n;
/* interned keys and literals (explain_setup makes them) */
static PyObject *k_feature, *k_value, *k_baseline, *k_detail, *k_extra, *k_limit, *s_empty, *s_zero, *s_open, *s_close,
    *spec_thousands, *spec_tenths, *spec_g2, *int_3;

/* round(v, 3) of a float v (round_fast's 3 places, detector/_scoring.h says why it is exact; else round() itself): a
 * new reference, NULL with an exception set */
static PyObject *
ex_round3(double v)
{
    double r;
    if (round_fast(v, 1000.0, &r))
        return PyFloat_FromDouble(r);
    PyObject *f = PyFloat_FromDouble(v);
    if (f == NULL)
        return NULL;
    PyObject *args[2] = {f, int_3};
    PyObject *res = PyObject_Vectorcall(ex_round, args, 2, NULL);
    Py_DECREF(f);
    return res;
}

/* _fmt(v): f"{v:,.0f}" from 100, f"{v:.1f}" from 10, else f"{v:.2g}" if v else "0" (NaN is true) */
static PyObject *
ex_fmt(double v)
{
    if (!(v >= 100) && !(v >= 10) && !(v != 0.0)) {
        Py_INCREF(s_zero);
        return s_zero;
    }
    PyObject *f = PyFloat_FromDouble(v);
    if (f == NULL)
        return NULL;
    PyObject *s = PyObject_Format(f, v >= 100 ? spec_thousands : v >= 10 ? spec_tenths : spec_g2);
    Py_DECREF(f);
    return s;
}

/* The doubles of a row for explain: an array('d') (its buffer held in *view, released by the caller when
 * view->obj is set) or a list or tuple of floats (copied into buf); n at least ex_n. 1 with *out set, 0 when it
 * is not such a row (no exception), -1 with an exception set. */
static int
ex_row(PyObject *o, Py_buffer *view, double *buf, const double **out)
{
    view->obj = NULL;
    if (PyList_CheckExact(o) || PyTuple_CheckExact(o)) {
        Py_ssize_t n = PySequence_Fast_GET_SIZE(o);
        if (n < ex_n)
            return 0;
        PyObject **items = PySequence_Fast_ITEMS(o);
        for (Py_ssize_t i = 0; i < ex_n; i++) {
            if (!PyFloat_CheckExact(items[i]))
                return 0;
            buf[i] = PyFloat_AS_DOUBLE(items[i]);
        }
        *out = buf;
        return 1;
    }
    if (!PyObject_CheckBuffer(o))
        return 0;
    if (PyObject_GetBuffer(o, view, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0) {
        PyErr_Clear();
        view->obj = NULL;
        return 0;
    }
    if (view->itemsize != (Py_ssize_t)sizeof(double) || view->format == NULL || strcmp(view->format, "d") != 0
            || view->len < ex_n * (Py_ssize_t)sizeof(double)) {
        PyBuffer_Release(view);
        view->obj = NULL;
        return 0;
    }
    *out = (const double *)view->buf;
    return 1;
}

#define EX_MAX 64 /* features explain_setup takes at most */

/* explain_setup(reference, names, parts, reason_z, reason_neglog, round) -> None: what explain needs. parts[i] is
 * feature i's template as a tuple of literals (str) and fields (0 for {value}, 1 for {baseline}). */
static PyObject *
explain_setup(PyObject *self, PyObject *args)
{
    PyObject *ref, *names, *parts, *round_;
    double rz, rn;
    if (!PyArg_ParseTuple(args, "OO!O!ddO", &ref, &PyTuple_Type, &names, &PyTuple_Type, &parts, &rz, &rn, &round_))
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(names);
    if (n > EX_MAX || PyTuple_GET_SIZE(parts) != n) {
        PyErr_SetString(PyExc_ValueError, "explain_setup: as many templates as names, at most 64");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *p = PyTuple_GET_ITEM(parts, i);
        if (!PyUnicode_Check(PyTuple_GET_ITEM(names, i)) || !PyTuple_Check(p)) {
            PyErr_SetString(PyExc_TypeError, "explain_setup: names are str, templates tuples");
            return NULL;
        }
        for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(p); j++) {
            PyObject *q = PyTuple_GET_ITEM(p, j);
            int field = PyLong_CheckExact(q) && (PyLong_AsLong(q) == 0 || PyLong_AsLong(q) == 1);
            if (!PyUnicode_CheckExact(q) && !field) {
                PyErr_SetString(PyExc_TypeError, "explain_setup: a template is literals (str) and fields (0 or 1)");
                return NULL;
            }
        }
    }
    if (k_feature == NULL) {
        if ((k_feature = PyUnicode_InternFromString("feature")) == NULL
                || (k_value = PyUnicode_InternFromString("value")) == NULL
                || (k_baseline = PyUnicode_InternFromString("baseline")) == NULL
                || (k_detail = PyUnicode_InternFromString("detail")) == NULL
                || (k_extra = PyUnicode_InternFromString("extra")) == NULL
                || (k_limit = PyUnicode_InternFromString("limit")) == NULL
                || (s_empty = PyUnicode_InternFromString("")) == NULL
                || (s_zero = PyUnicode_InternFromString("0")) == NULL
                || (s_open = PyUnicode_InternFromString(" (")) == NULL
                || (s_close = PyUnicode_InternFromString(" robust deviations above).")) == NULL
                || (spec_thousands = PyUnicode_InternFromString(",.0f")) == NULL
                || (spec_tenths = PyUnicode_InternFromString(".1f")) == NULL
                || (spec_g2 = PyUnicode_InternFromString(".2g")) == NULL
                || (int_3 = PyLong_FromLong(3)) == NULL)
            return NULL;
    }
    Py_INCREF(ref);
    Py_XSETREF(ex_ref, ref);
    Py_INCREF(round_);
    Py_XSETREF(ex_round, round_);
    Py_INCREF(names);
    Py_XSETREF(ex_names, names);
    Py_INCREF(parts);
    Py_XSETREF(ex_parts, parts);
    ex_reason_z = rz;
    ex_reason_neglog = rn;
    ex_n = n;
    Py_RETURN_NONE;
}

/* One reason: {"feature": f.name, "value": round(value, 3), "baseline": round(base, 3),
 *              "detail": f.detail.format(value=_fmt(value), baseline=_fmt(base))
 *                        + f" ({z[i]:.1f} robust deviations above)."} */
static PyObject *
ex_reason(Py_ssize_t i, double value, double base, double zi)
{
    PyObject *d = NULL, *vr = NULL, *br = NULL, *fv = NULL, *fb = NULL, *zf = NULL, *zs = NULL, *pieces = NULL,
             *detail = NULL;
    if ((vr = ex_round3(value)) == NULL || (br = ex_round3(base)) == NULL || (fv = ex_fmt(value)) == NULL
            || (fb = ex_fmt(base)) == NULL || (zf = PyFloat_FromDouble(zi)) == NULL
            || (zs = PyObject_Format(zf, spec_tenths)) == NULL)
        goto done;
    PyObject *tpl = PyTuple_GET_ITEM(ex_parts, i);
    Py_ssize_t np = PyTuple_GET_SIZE(tpl);
    if ((pieces = PyList_New(np + 3)) == NULL)
        goto done;
    for (Py_ssize_t j = 0; j < np; j++) {
        PyObject *q = PyTuple_GET_ITEM(tpl, j);
        if (PyLong_CheckExact(q))
            q = PyLong_AsLong(q) == 0 ? fv : fb;
        Py_INCREF(q);
        PyList_SET_ITEM(pieces, j, q);
    }
    Py_INCREF(s_open);
    PyList_SET_ITEM(pieces, np, s_open);
    Py_INCREF(zs);
    PyList_SET_ITEM(pieces, np + 1, zs);
    Py_INCREF(s_close);
    PyList_SET_ITEM(pieces, np + 2, s_close);
    if ((detail = PyUnicode_Join(s_empty, pieces)) == NULL)
        goto done;
    if ((d = _PyDict_NewPresized(4)) == NULL)
        goto done;
    if (PyDict_SetItem(d, k_feature, PyTuple_GET_ITEM(ex_names, i)) < 0 || PyDict_SetItem(d, k_value, vr) < 0
            || PyDict_SetItem(d, k_baseline, br) < 0 || PyDict_SetItem(d, k_detail, detail) < 0)
        Py_CLEAR(d);
done:
    Py_XDECREF(vr);
    Py_XDECREF(br);
    Py_XDECREF(fv);
    Py_XDECREF(fb);
    Py_XDECREF(zf);
    Py_XDECREF(zs);
    Py_XDECREF(pieces);
    Py_XDECREF(detail);
    return d;
}

/* explain(z, r, x, loc, *, extra=None, limit=5) -> scoring._py_explain's list of reasons:
 *     idx = [] if loc is None else [i for i in range(N_FEATURES) if z[i] >= REASON_Z and r[i] >= REASON_NEGLOG]
 *     idx.sort(key=lambda i: (-r[i], -z[i]))          (stable: rarer first, then the larger deviation, then i)
 *     for i in idx[:limit]: value = x[i]; base = expm1(loc[i]) if loc[i] > 0 else 0.0; out.append(reason)
 *     if extra: out.extend(extra)
 * or, for anything else, what the reference returns (or raises) for the same arguments */
static PyObject *
explain(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (ex_ref == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "explain: explain_setup was not called");
        return NULL;
    }
    PyObject *extra = Py_None;
    long limit = 5;
    int ok = nargs == 4;
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t j = 0; ok && j < nkw; j++) {
        PyObject *k = PyTuple_GET_ITEM(kwnames, j), *v = args[nargs + j];
        int is_extra = k == k_extra || PyUnicode_CompareWithASCIIString(k, "extra") == 0;
        int is_limit = !is_extra && (k == k_limit || PyUnicode_CompareWithASCIIString(k, "limit") == 0);
        if (is_extra && (v == Py_None || PyList_CheckExact(v))) {
            extra = v;
        } else if (is_limit && PyLong_CheckExact(v)) {
            limit = PyLong_AsLong(v);
            if (limit == -1 && PyErr_Occurred()) {
                PyErr_Clear();
                ok = 0;
            }
            ok = ok && limit >= 0;
        } else {
            ok = 0; /* another keyword, or a value of another type: the reference's */
        }
    }
    if (!ok)
        return PyObject_Vectorcall(ex_ref, args, nargsf, kwnames);
    PyObject *loc_o = args[3];
    Py_ssize_t idx[EX_MAX], m = 0;
    double zb[EX_MAX], rb[EX_MAX], xb[EX_MAX], lb[EX_MAX];
    const double *z = NULL, *r = NULL, *x = NULL, *loc = NULL;
    Py_buffer vz, vr, vx, vl;
    vz.obj = vr.obj = vx.obj = vl.obj = NULL;
    PyObject *out = NULL;
    int fall = 0;
    if (loc_o != Py_None) {
        int got;
        if ((got = ex_row(args[0], &vz, zb, &z)) <= 0 || (got = ex_row(args[1], &vr, rb, &r)) <= 0
                || (got = ex_row(args[2], &vx, xb, &x)) <= 0 || (got = ex_row(loc_o, &vl, lb, &loc)) <= 0) {
            fall = got == 0;
            goto done;
        }
        for (Py_ssize_t i = 0; i < ex_n; i++) {
            if (!(z[i] >= ex_reason_z && r[i] >= ex_reason_neglog))
                continue;
            /* insertion after every j with key (-r[j], -z[j]) <= (-r[i], -z[i]): stable, as list.sort */
            Py_ssize_t at = m;
            while (at > 0) {
                Py_ssize_t j = idx[at - 1];
                if (r[j] > r[i] || (r[j] == r[i] && z[j] >= z[i]))
                    break;
                idx[at] = j;
                at--;
            }
            idx[at] = i;
            m++;
        }
    }
    if (m > limit)
        m = limit;
    if ((out = PyList_New(0)) == NULL)
        goto done;
    for (Py_ssize_t k = 0; k < m; k++) {
        Py_ssize_t i = idx[k];
        double base = 0.0;
        if (loc[i] > 0) {
            base = expm1(loc[i]);
            if (isinf(base) && isfinite(loc[i])) { /* math.expm1's OverflowError */
                fall = 1;
                goto done;
            }
        }
        PyObject *d = ex_reason(i, x[i], base, z[i]);
        if (d == NULL || PyList_Append(out, d) < 0) {
            Py_XDECREF(d);
            Py_CLEAR(out);
            goto done;
        }
        Py_DECREF(d);
    }
    if (extra != Py_None && PyList_GET_SIZE(extra) > 0
            && PyList_SetSlice(out, PyList_GET_SIZE(out), PyList_GET_SIZE(out), extra) < 0)
        Py_CLEAR(out);
done:
    if (vz.obj != NULL)
        PyBuffer_Release(&vz);
    if (vr.obj != NULL)
        PyBuffer_Release(&vr);
    if (vx.obj != NULL)
        PyBuffer_Release(&vx);
    if (vl.obj != NULL)
        PyBuffer_Release(&vl);
    if (fall) {
        Py_CLEAR(out);
        return PyObject_Vectorcall(ex_ref, args, nargsf, kwnames);
    }
    return out;
}


/* ------------------------------------------------------------------------------------------------------
 * iso_ms(t): detector.timestamps._py_iso_ms, an instant as episodes and verdicts write it:
 *     datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
 *
 * fromtimestamp splits a float t as CPython's _PyTime_ObjectToTimeval does (Python/pytime.c,
 * _PyTime_DoubleToDenominator with _PyTime_ROUND_HALF_EVEN): modf, the fraction times 1e6 rounded half to even,
 * carried into the seconds when it rounds to 1e6 or is negative; the seconds are a UTC date and time (gmtime: the
 * proleptic Gregorian calendar, no leap seconds) and isoformat writes the microseconds' milliseconds (us // 1000,
 * truncated). Done here for a float whose seconds fall in years 1 to 9999; anything else (an int, a datetime, NaN,
 * infinities, an instant outside those years, where fromtimestamp or datetime raise) is the reference's.
 * ------------------------------------------------------------------------------------------------------ */

static PyObject *iso_ref; /* iso_setup's: the reference */

/* 0001-01-01T00:00:00Z and 10000-01-01T00:00:00Z in seconds since the epoch */
#define ISO_FIRST (-62135596800LL)
#define ISO_END 253402300800LL

/* iso_setup(reference) -> None */
static PyObject *
iso_setup(PyObject *self, PyObject *ref)
{
    Py_INCREF(ref);
    Py_XSETREF(iso_ref, ref);
    Py_RETURN_NONE;
}

/* _PyTime_RoundHalfEven (Python/pytime.c) */
static double
iso_round_half_even(double x)
{
    volatile double d = x;
    double rounded = round(d);
    if (fabs(d - rounded) == 0.5)
        rounded = 2.0 * round(d / 2.0);
    return rounded;
}

static PyObject *
iso_ms(PyObject *self, PyObject *t)
{
    if (iso_ref == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "iso_ms: iso_setup was not called");
        return NULL;
    }
    if (!PyFloat_CheckExact(t))
        return PyObject_CallOneArg(iso_ref, t);
    const double v = PyFloat_AS_DOUBLE(t);
    if (!(v > -1e12 && v < 1e12)) /* NaN, infinities and far beyond the years 1-9999: the reference's */
        return PyObject_CallOneArg(iso_ref, t);
    double intpart;
    volatile double frac = modf(v, &intpart);
    frac = frac * 1e6;
    frac = iso_round_half_even(frac);
    if (frac >= 1e6) {
        frac -= 1e6;
        intpart += 1.0;
    } else if (frac < 0) {
        frac += 1e6;
        intpart -= 1.0;
    }
    const long long sec = (long long)intpart;
    const long us = (long)frac;
    if (sec < ISO_FIRST || sec >= ISO_END)
        return PyObject_CallOneArg(iso_ref, t);
    /* days since 1970-01-01 and the second of the day (floor division), then the civil date of a day count
     * (H. Hinnant's days_from_civil inverted: eras of 400 years of 146097 days from 0000-03-01) */
    long long days = sec / 86400, sod = sec % 86400;
    if (sod < 0) {
        sod += 86400;
        days -= 1;
    }
    const long long zd = days + 719468;
    const long long era = (zd >= 0 ? zd : zd - 146096) / 146097;
    const long long doe = zd - era * 146097;                                    /* [0, 146096] */
    const long long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365; /* [0, 399] */
    const long long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);              /* [0, 365] */
    const long long mp = (5 * doy + 2) / 153;                                   /* [0, 11], from March */
    const int day = (int)(doy - (153 * mp + 2) / 5 + 1);
    const int month = (int)(mp < 10 ? mp + 3 : mp - 9);
    const int year = (int)(yoe + era * 400 + (month <= 2));
    char buf[40];
    int len = snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", year, month, day, (int)(sod / 3600),
                       (int)(sod / 60 % 60), (int)(sod % 60), (int)(us / 1000));
    return PyUnicode_FromStringAndSize(buf, len);
}


static PyMethodDef methods[] = {
    {"scored", (PyCFunction)(void (*)(void))scored, METH_FASTCALL,
     "scored(p_stat, p_comb, p_harm, (critical, high, medium, low, p_floor)) -> (score, harm, severity, named), "
     "or None for the reference to decide."},
    {"fisher", (PyCFunction)(void (*)(void))fisher, METH_FASTCALL,
     "fisher(total, k) -> detector.evidence.fisher(total, k), or None for the reference to decide."},
    {"round4", (PyCFunction)round4, METH_O, "round4(x) -> round(x, 4), to the last bit."},
    {"explain_setup", explain_setup, METH_VARARGS,
     "explain_setup(reference, names, parts, reason_z, reason_neglog, round) -> None: what explain needs."},
    {"explain", (PyCFunction)(void (*)(void))explain, METH_FASTCALL | METH_KEYWORDS,
     "explain(z, r, x, loc, *, extra=None, limit=5) -> detector.scoring._py_explain's reasons, to the last byte."},
    {"iso_setup", iso_setup, METH_O, "iso_setup(reference) -> None: what iso_ms calls outside the years 1-9999."},
    {"iso_ms", iso_ms, METH_O,
     "iso_ms(t) -> detector.timestamps._py_iso_ms(t): 2026-03-02T09:00:00.000Z, to the last byte."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "detector._score",
    "Compiled model-side scoring; see detector/scoring.py. Bit-identical to the pure-Python references.",
    -1, methods,
};

PyMODINIT_FUNC
PyInit__score(void)
{
    if (PyType_Ready(&CurveType) < 0 || PyType_Ready(&EvidenceType) < 0 || PyType_Ready(&CForestType) < 0)
        return NULL;
    static const char *names[5] = {"critical", "high", "medium", "low", "ok"};
    for (int i = 0; i < 5; i++)
        if (severities[i] == NULL && (severities[i] = PyUnicode_InternFromString(names[i])) == NULL)
            return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Curve", (PyObject *)&CurveType) < 0
            || PyModule_AddObjectRef(m, "Evidence", (PyObject *)&EvidenceType) < 0
            || PyModule_AddObjectRef(m, "Forest", (PyObject *)&CForestType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
