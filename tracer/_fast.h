/* Helpers shared by cutscope's C extensions (tracer/_fast.c, integrations/_fastq.c). */
#ifndef CUTSCOPE_FAST_H
#define CUTSCOPE_FAST_H

/* An object slot (__slots__) of obj at offset off (see slot_offset). */
#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

/* The offset of an object slot of tp (a member descriptor of __slots__). */
static Py_ssize_t
slot_offset(PyTypeObject *tp, const char *name)
{
    PyObject *d = PyObject_GetAttrString((PyObject *)tp, name);
    if (d == NULL)
        return -1;
    if (!Py_IS_TYPE(d, &PyMemberDescr_Type)) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not a slot", tp->tp_name, name);
        Py_DECREF(d);
        return -1;
    }
    PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
    Py_ssize_t off = m->offset;
    int ok = m->type == T_OBJECT_EX;
    Py_DECREF(d);
    if (!ok) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not an object slot", tp->tp_name, name);
        return -1;
    }
    return off;
}

/* Truth of a container slot without calling Python for the exact built-in types. */
static inline int
nonempty(PyObject *v)
{
    if (v == NULL)
        return 0;
    if (PyList_CheckExact(v))
        return PyList_GET_SIZE(v) > 0;
    if (PyDict_CheckExact(v))
        return PyDict_GET_SIZE(v) > 0;
    return PyObject_IsTrue(v);
}

/* Call a Python function with `self` prepended to a vectorcall argument array. */
static PyObject *
call_with_self(PyObject *fn, PyObject *self, PyObject *const *args, Py_ssize_t nargs,
               PyObject *kwnames)
{
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    PyObject *small[8];
    PyObject **stack = small;
    if (nargs + nkw + 1 > 8) {
        stack = PyMem_Malloc((nargs + nkw + 1) * sizeof(PyObject *));
        if (stack == NULL)
            return PyErr_NoMemory();
    }
    stack[0] = self;
    for (Py_ssize_t i = 0; i < nargs + nkw; i++)
        stack[i + 1] = args[i];
    PyObject *r = PyObject_Vectorcall(fn, stack, nargs + 1, kwnames);
    if (stack != small)
        PyMem_Free(stack);
    return r;
}

/* What type attribute lookup finds for `name` before binding: the first class of tp's
 * MRO whose __dict__ has it. A borrowed reference (the class's dict holds it), or NULL
 * with no error when no class defines it. Public API only (the documented tp_mro, and
 * each class's __dict__: PyType_GetDict from 3.12, tp_dict before). */
static inline PyObject *
mro_lookup(PyTypeObject *tp, PyObject *name)
{
    PyObject *mro = tp->tp_mro;
    if (mro == NULL || !PyTuple_Check(mro))
        return NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(mro); i++) {
        PyObject *b = PyTuple_GET_ITEM(mro, i);
        if (!PyType_Check(b))
            continue;
#if PY_VERSION_HEX >= 0x030C0000
        PyObject *d = PyType_GetDict((PyTypeObject *)b);
#else
        PyObject *d = ((PyTypeObject *)b)->tp_dict;
        Py_XINCREF(d);
#endif
        if (d == NULL) {
            PyErr_Clear();
            continue;
        }
        PyObject *v = PyDict_GetItemWithError(d, name);
        Py_DECREF(d);
        if (v != NULL)
            return v;
        if (PyErr_Occurred()) {
            PyErr_Clear();
            return NULL;
        }
    }
    return NULL;
}

#endif
