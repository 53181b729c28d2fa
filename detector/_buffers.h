/* Buffers the compiled modules read and write (detector/_native.c, detector/_score.c). */
#ifndef FLOWBREAKER_BUFFERS_H
#define FLOWBREAKER_BUFFERS_H

#include <Python.h>
#include <string.h>

/* A C-contiguous buffer of `itemsize`-byte items whose format is one of `kinds` (numpy says "i", "l",
 * "q", "d", maybe with a byte-order prefix for native order). */
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

#endif
