/* cutscope.integrations._fastq: the hot paths of queue.Queue.put / get in C (optional;
 * integrations/queues.py's put and get are the reference and the fallback).
 *
 * What is here, and only this: the common case of a traced FIFO queue, where
 *   - put: the producer already has its endpoint, no snapshot is asked of it
 *     (lp.pending empty), and the item goes in at once (unbounded, or bounded and
 *     not full, with a plain block/timeout);
 *   - get: no snapshot is asked of the consumer, no marker waits (st.pend empty, the
 *     head of the side deque is the entry of the head item), and the consumer already
 *     knows the item's channel.
 * The tests are those of the Python hot path, in the same order, on the same state;
 * the work done is the same, under the same lock (the queue's mutex), with the same
 * calls (lp.send / lp.recv through the method, st.sent, tracer.fault, the
 * condition's notify only when a thread waits on it). Whenever a test fails, the
 * Python function replaced is called instead, before anything has been done (a test
 * that needs the mutex releases it first): the Python code then does everything,
 * so every other case (blocking, timeouts, markers, first put/get, no logical
 * process, LIFO/priority queues) is the Python code's by construction.
 *
 * Slots of QState, LogicalProcess and OutEndpoint (__slots__) are read at their
 * offsets (looked up once from the member descriptors); an object whose type is not
 * exactly the configured class takes the Python path. The queue's own attributes
 * (mutex, queue, maxsize, unfinished_tasks, not_empty, not_full) are read with the
 * generic getattr, as the Python code does.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include "_fast.h"
#include <string.h>

/* ---- the module's state -------------------------------------------------------------
 *
 * Everything the module keeps lives here, in the module object's state (multi-phase
 * initialisation). The method descriptors installed on queue.Queue receive the queue,
 * not the module: they reach this state through `Q`, the state of the one module object
 * a process loads (a second one is refused; the module object lives until the process
 * ends). Hence the module declares that it supports one interpreter, and that it needs
 * the GIL: on a free-threaded build it is not loaded (integrations/queues.py loads it
 * only with the core's extension, which tracer/process.py does not load there). */
#define NPLAIN 8
typedef struct {
    /* configuration (set once by setup) */
    PyTypeObject *q_type, *qs_type, *lp_type, *ep_type, *deque_type, *lock_type;
    Py_ssize_t s_fifo, s_side, s_out, s_seen, s_pend, s_last, s_last_consumer, s_last_channel;
    Py_ssize_t o_name, o_pending, o_tracer;
    Py_ssize_t e_channel;
    PyObject *c_current;     /* the ContextVar of the logical process */
    PyObject *c_default;     /* [main logical process or None] */
    PyObject *c_qsize;       /* queue.Queue._qsize, CPython's (len(self.queue)) */
    PyObject *c_py_put, *c_py_get;  /* the Python functions replaced (fallbacks) */
    PyObject *d_append, *d_popleft, *l_acquire, *l_release;  /* method descriptors */
    /* interned names and constants */
    PyObject *n_is_shutdown;  /* 3.13+: queue.Queue.shutdown() sets it (under the mutex) */
    PyObject *n_cutscope_q, *n_mutex, *n_queue, *n_maxsize, *n_qsize, *n_unfinished,
        *n_not_empty, *n_not_full, *n_waiters, *n_notify, *n_capture, *n_send, *n_recv,
        *n_sent, *n_fault, *n_acquire, *n_release, *n_append, *n_block, *n_timeout,
        *w_put, *w_get, *s_hash, *s_empty;
    PyObject *one, *zero;
    PyObject *attr_names;  /* tuple of every name read or written on the queue's objects */
    /* caches, each valid while a type's version tag holds (see plain_type, lp_call) */
    struct { PyTypeObject *tp; unsigned int tag; } plain_cache[NPLAIN];
    int plain_next;
    PyObject *m_send, *m_recv;  /* borrowed from the type's dict while the tag holds */
    unsigned int m_tag;
    /* how often each path ran (tests: the C path is the one taken) */
    unsigned long long n_put_fast, n_put_py, n_get_fast, n_get_py;
} fastq_state;

static fastq_state *Q;

/* ---- attributes of the queue, its conditions and the tracer ----
 * `obj.name` is looked up in the instance's __dict__ directly when the type is
 * "plain" for every name read here: generic getattr/setattr, and no data descriptor
 * of that name on the type (so the instance's __dict__ decides, as in the generic
 * lookup); a name missing from the __dict__ takes the generic lookup. The verdict is
 * cached per (type, version tag): any change to the type gives it a new tag. */

static int
plain_type(PyTypeObject *tp)
{
    for (int i = 0; i < NPLAIN; i++)
        if (Q->plain_cache[i].tp == tp) {
            if ((tp->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG) && tp->tp_version_tag == Q->plain_cache[i].tag)
                return 1;
            Q->plain_cache[i].tp = NULL;
            break;
        }
    if (tp->tp_getattro != PyObject_GenericGetAttr || tp->tp_setattro != PyObject_GenericSetAttr)
        return 0;
    Py_ssize_t n = PyTuple_GET_SIZE(Q->attr_names);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *d = mro_lookup(tp, PyTuple_GET_ITEM(Q->attr_names, i));
        if (d != NULL && Py_TYPE(d)->tp_descr_set != NULL)
            return 0;
    }
    if (tp->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG) {
        Q->plain_cache[Q->plain_next].tp = tp;
        Q->plain_cache[Q->plain_next].tag = tp->tp_version_tag;
        Q->plain_next = (Q->plain_next + 1) % NPLAIN;
    }
    return 1;
}

/* The instance's __dict__ when its type is plain (PyObject_GenericGetDict: the public
 * way to the dict that generic getattr reads): borrowed (the object holds it), or NULL
 * with no error. */
static inline PyObject *
inst_dict(PyObject *obj)
{
    if (!plain_type(Py_TYPE(obj)))
        return NULL;
    PyObject *d = PyObject_GenericGetDict(obj, NULL);
    if (d == NULL) {
        PyErr_Clear();
        return NULL;
    }
    Py_DECREF(d);  /* the object keeps its dict */
    return PyDict_CheckExact(d) ? d : NULL;
}

/* obj.name (new reference; NULL with an error). `d`: inst_dict(obj) or NULL. */
static inline PyObject *
attr_in(PyObject *obj, PyObject *d, PyObject *name)
{
    if (d != NULL) {
        PyObject *v = PyDict_GetItemWithError(d, name);
        if (v != NULL) {
            Py_INCREF(v);
            return v;
        }
        if (PyErr_Occurred())
            return NULL;
    }
    return PyObject_GetAttr(obj, name);
}

static inline PyObject *
attr(PyObject *obj, PyObject *name)
{
    return attr_in(obj, inst_dict(obj), name);
}

static inline int
set_attr_in(PyObject *obj, PyObject *d, PyObject *name, PyObject *v)
{
    if (d != NULL)
        return PyDict_SetItem(d, name, v);
    return PyObject_SetAttr(obj, name, v);
}

/* lp.send(...) / lp.recv(...): LogicalProcess has __slots__ and no __dict__, so the
 * attribute is the type's; a function or method descriptor found there is called with
 * lp first (what the bound method does). Cached per version tag of the type (a new
 * LogicalProcess.send, e.g. a test's patch, gives the type a new tag). */

static PyObject *
lp_call(PyObject *name, PyObject *const *args, size_t nargs)
{
    PyTypeObject *tp = Q->lp_type;
    if (!((tp->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG) && tp->tp_version_tag == Q->m_tag &&
          Q->m_send != NULL)) {
        PyObject *s = mro_lookup(tp, Q->n_send), *r = mro_lookup(tp, Q->n_recv);
        Q->m_send = Q->m_recv = NULL;
        if (s != NULL && r != NULL && (tp->tp_flags & Py_TPFLAGS_VALID_VERSION_TAG) &&
            (PyFunction_Check(s) || Py_IS_TYPE(s, &PyMethodDescr_Type)) &&
            (PyFunction_Check(r) || Py_IS_TYPE(r, &PyMethodDescr_Type))) {
            Q->m_send = s;
            Q->m_recv = r;
            Q->m_tag = tp->tp_version_tag;
        }
        else
            return PyObject_VectorcallMethod(name, args, nargs, NULL);
    }
    PyObject *fn = name == Q->n_send ? Q->m_send : Q->m_recv;
    Py_INCREF(fn);  /* (a patch of the type during the call cannot free it under us) */
    PyObject *r = PyObject_Vectorcall(fn, args, nargs, NULL);
    Py_DECREF(fn);
    return r;
}


static inline void
slot_set(PyObject *obj, Py_ssize_t off, PyObject *v)  /* new reference to v taken */
{
    PyObject *old = SLOT(obj, off);
    Py_INCREF(v);
    SLOT(obj, off) = v;
    Py_XDECREF(old);
}

/* Truth of a slot without calling Python for the exact built-in containers:
 * 1 / 0, -1 with an error. A missing slot (never set) is "empty" (the Python code
 * would raise AttributeError: callers take the fallback on anything but 0). */
static inline int
truth(PyObject *v)
{
    if (v == NULL)
        return 0;
    if (v == Py_None || v == Py_False)
        return 0;
    if (v == Py_True)
        return 1;
    if (PyList_CheckExact(v))
        return PyList_GET_SIZE(v) > 0;
    if (PyDict_CheckExact(v))
        return PyDict_GET_SIZE(v) > 0;
    if (PyTuple_CheckExact(v))
        return PyTuple_GET_SIZE(v) > 0;
    return PyObject_IsTrue(v);
}

/* An empty list / dict slot (lp.pending, st.pend): 1; anything else (a missing slot
 * too, where the Python code would raise): 0, and the Python code runs. */
static inline int
slot_empty(PyObject *v)
{
    if (v == NULL)
        return 0;
    if (PyList_CheckExact(v))
        return PyList_GET_SIZE(v) == 0;
    if (PyDict_CheckExact(v))
        return PyDict_GET_SIZE(v) == 0;
    return 0;
}

/* `current_var.get() or default_process[0]` when it is a LogicalProcess (borrowed), else NULL. */
static inline PyObject *
current_lp(void)
{
    PyObject *v = NULL;
    if (PyContextVar_Get(Q->c_current, NULL, &v) < 0) {
        PyErr_Clear();
        return NULL;
    }
    if (v != NULL) {
        Py_DECREF(v);  /* the context holds it */
        if (v != Py_None)
            return Py_IS_TYPE(v, Q->lp_type) ? v : NULL;
    }
    if (PyList_CheckExact(Q->c_default) && PyList_GET_SIZE(Q->c_default) > 0) {
        PyObject *d = PyList_GET_ITEM(Q->c_default, 0);
        return Py_IS_TYPE(d, Q->lp_type) ? d : NULL;
    }
    return NULL;
}

static inline int
call_void(PyObject *fn, PyObject *const *args, size_t n)
{
    PyObject *r = PyObject_Vectorcall(fn, args, n, NULL);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

static inline int
mutex_acquire(PyObject *m)
{
    if (Py_IS_TYPE(m, Q->lock_type))
        return call_void(Q->l_acquire, &m, 1);
    PyObject *r = PyObject_CallMethodNoArgs(m, Q->n_acquire);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

static inline int
mutex_release(PyObject *m)
{
    if (Py_IS_TYPE(m, Q->lock_type))
        return call_void(Q->l_release, &m, 1);
    PyObject *r = PyObject_CallMethodNoArgs(m, Q->n_release);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* Release the mutex on an error path: the pending error stands (as a `finally`
 * whose release succeeds; if the release fails too, its error wins, chained). */
static void
release_keep_error(PyObject *m)
{
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    if (mutex_release(m) < 0) {
        PyErr_NormalizeException(&et, &ev, &tb);
        PyObject *et2, *ev2, *tb2;
        PyErr_Fetch(&et2, &ev2, &tb2);
        PyErr_NormalizeException(&et2, &ev2, &tb2);
        if (ev != NULL && ev2 != NULL) {
            if (tb != NULL)
                PyException_SetTraceback(ev, tb);
            PyException_SetContext(ev2, ev);  /* steals ev */
            ev = NULL;
        }
        Py_XDECREF(et);
        Py_XDECREF(ev);
        Py_XDECREF(tb);
        PyErr_Restore(et2, ev2, tb2);
        return;
    }
    PyErr_Restore(et, ev, tb);
}

static inline int
deque_append(PyObject *d, PyObject *x)
{
    if (Py_IS_TYPE(d, Q->deque_type)) {
        PyObject *a[2] = {d, x};
        return call_void(Q->d_append, a, 2);
    }
    PyObject *r = PyObject_CallMethodOneArg(d, Q->n_append, x);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* `cond._waiters` (AttributeError: True), then `cond.notify()` if it is true. */
static int
notify_if_waiting(PyObject *self, PyObject *qd, PyObject *cname)
{
    PyObject *cond = attr_in(self, qd, cname);
    if (cond == NULL)
        return -1;
    int waiting;
    PyObject *w = attr(cond, Q->n_waiters);
    if (w == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
            Py_DECREF(cond);
            return -1;
        }
        PyErr_Clear();
        waiting = 1;
    }
    else {
        waiting = truth(w);
        Py_DECREF(w);
        if (waiting < 0) {
            Py_DECREF(cond);
            return -1;
        }
    }
    if (waiting) {
        PyObject *r = PyObject_CallMethodNoArgs(cond, Q->n_notify);
        if (r == NULL) {
            Py_DECREF(cond);
            return -1;
        }
        Py_DECREF(r);
    }
    Py_DECREF(cond);
    return 0;
}

/* `except Exception as exc: lp.tracer.fault(exc, where)` with the current error:
 * 0 if swallowed, -1 with an error set if it propagates (not an Exception, or
 * fault raised: strict mode). */
static int
fault_current(PyObject *lp, PyObject *where)
{
    if (!PyErr_ExceptionMatches(PyExc_Exception))
        return -1;
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    PyErr_NormalizeException(&et, &ev, &tb);
    if (tb != NULL && ev != NULL)
        PyException_SetTraceback(ev, tb);
    Py_XDECREF(et);
    Py_XDECREF(tb);
    PyObject *t = SLOT(lp, Q->o_tracer);
    if (t == NULL) {
        Py_XDECREF(ev);
        PyErr_SetString(PyExc_AttributeError, "tracer");
        return -1;
    }
    Py_INCREF(t);
    PyObject *a[3] = {t, ev ? ev : Py_None, where};
    PyObject *r = PyObject_VectorcallMethod(Q->n_fault, a, 3, NULL);
    Py_DECREF(t);
    Py_XDECREF(ev);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* `item if lp.tracer.capture else None` (new reference; NULL with an error). */
static inline PyObject *
payload_of(PyObject *lp, PyObject *item)
{
    PyObject *t = SLOT(lp, Q->o_tracer);
    if (t == NULL) {
        PyErr_SetString(PyExc_AttributeError, "tracer");
        return NULL;
    }
    Py_INCREF(t);
    PyObject *cap = attr(t, Q->n_capture);
    Py_DECREF(t);
    if (cap == NULL)
        return NULL;
    int c = truth(cap);
    Py_DECREF(cap);
    if (c < 0)
        return NULL;
    PyObject *p = c ? item : Py_None;
    Py_INCREF(p);
    return p;
}

/* `len(item) if type(item) is bytes else 0` */
static inline PyObject *
nbytes_of(PyObject *item)
{
    if (PyBytes_CheckExact(item))
        return PyLong_FromSsize_t(PyBytes_GET_SIZE(item));
    Py_INCREF(Q->zero);
    return Q->zero;
}

/* f"{name}#{seq}" */
static PyObject *
msg_id(PyObject *name, PyObject *seq)
{
    if (PyUnicode_CheckExact(name) && PyLong_CheckExact(seq)) {
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(seq, &overflow);
        if (!overflow && v >= 0) {
            char digits[24];
            int nd = 0;
            do {
                digits[nd++] = (char)('0' + v % 10);
                v /= 10;
            } while (v);
            Py_ssize_t ln = PyUnicode_GET_LENGTH(name);
            PyObject *s = PyUnicode_New(ln + 1 + nd, PyUnicode_MAX_CHAR_VALUE(name));
            if (s == NULL)
                return NULL;
            int kind = PyUnicode_KIND(s);
            if (kind == PyUnicode_1BYTE_KIND)
                memcpy(PyUnicode_DATA(s), PyUnicode_DATA(name), ln);
            else if (PyUnicode_CopyCharacters(s, 0, name, 0, ln) < 0) {
                Py_DECREF(s);
                return NULL;
            }
            void *data = PyUnicode_DATA(s);
            PyUnicode_WRITE(kind, data, ln, '#');
            for (int i = 0; i < nd; i++)
                PyUnicode_WRITE(kind, data, ln + 1 + i, (Py_UCS4)digits[nd - 1 - i]);
            return s;
        }
        if (PyErr_Occurred())
            return NULL;
    }
    PyObject *a = PyObject_Format(name, Q->s_empty);
    PyObject *b = a == NULL ? NULL : PyObject_Format(seq, Q->s_empty);
    PyObject *out = NULL;
    if (b != NULL) {
        PyObject *ab = PyUnicode_Concat(a, Q->s_hash);
        if (ab != NULL) {
            out = PyUnicode_Concat(ab, b);
            Py_DECREF(ab);
        }
    }
    Py_XDECREF(a);
    Py_XDECREF(b);
    return out;
}


/* Positional-or-keyword (block, timeout) after `npos0` leading positional parameters:
 * 1 parsed, 0 anything unusual (the Python function sorts it out). */
static int
parse_bt(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, Py_ssize_t npos0,
         PyObject **block, PyObject **timeout)
{
    *block = Py_True;
    *timeout = Py_None;
    if (nargs < npos0 || nargs > npos0 + 2)
        return 0;
    if (nargs > npos0)
        *block = args[npos0];
    if (nargs > npos0 + 1)
        *timeout = args[npos0 + 1];
    if (kwnames != NULL) {
        Py_ssize_t nkw = PyTuple_GET_SIZE(kwnames);
        for (Py_ssize_t i = 0; i < nkw; i++) {
            PyObject *k = PyTuple_GET_ITEM(kwnames, i);
            PyObject *v = args[nargs + i];
            if (PyUnicode_Check(k) && PyUnicode_Compare(k, Q->n_block) == 0 && nargs <= npos0)
                *block = v;
            else if (PyUnicode_Check(k) && PyUnicode_Compare(k, Q->n_timeout) == 0 &&
                     nargs <= npos0 + 1)
                *timeout = v;
            else {
                PyErr_Clear();
                return 0;
            }
        }
        /* a keyword given twice is rejected by the caller's kwnames already */
    }
    return 1;
}

/* The QState of queue `self` (borrowed from its __dict__ through getattr), or NULL
 * (no error) when the Python code must run. */
static inline PyObject *
qstate(PyObject *self, PyObject *qd)
{
    PyObject *st = attr_in(self, qd, Q->n_cutscope_q);
    if (st == NULL) {
        PyErr_Clear();
        return NULL;
    }
    if (!Py_IS_TYPE(st, Q->qs_type) || SLOT(st, Q->s_fifo) != Py_True) {
        Py_DECREF(st);
        return NULL;
    }
    return st;  /* new reference */
}

/* ---- put ------------------------------------------------------------------------- */

/* The fast path of put. NULL with no error and *fallback set: the Python put must run
 * (nothing has been done). */
static PyObject *
fast_put(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
         int *fallback)
{
    *fallback = 1;
    PyObject *block, *timeout;
    if (nargs < 1 || !parse_bt(args, nargs, kwnames, 1, &block, &timeout))
        return NULL;
    PyObject *item = args[0];
    PyObject *lp = current_lp();
    if (lp == NULL)
        return NULL;
    if (!slot_empty(SLOT(lp, Q->o_pending)))  /* a snapshot asked of it: _put_then_safepoint */
        return NULL;
    PyObject *qd = inst_dict(self);
    PyObject *st = qstate(self, qd);
    if (st == NULL)
        return NULL;
    Py_INCREF(lp);
    Py_XINCREF(qd);  /* (Python code runs below: notify, st.sent, fault) */
    PyObject *ep = NULL, *mutex = NULL, *container = NULL, *result = NULL;
    int set_last = 0;
    PyObject *epb = NULL;  /* borrowed */
    PyObject *last = SLOT(st, Q->s_last);
    if (last != NULL && PyTuple_CheckExact(last) && PyTuple_GET_SIZE(last) == 2 &&
        PyTuple_GET_ITEM(last, 0) == lp)
        epb = PyTuple_GET_ITEM(last, 1);
    else {
        PyObject *out = SLOT(st, Q->s_out);
        if (out == NULL || !PyDict_CheckExact(out))
            goto fallback;
        epb = PyDict_GetItemWithError(out, lp);  /* identity-hashed: no Python code */
        if (epb == NULL) {  /* the first put of this producer: it opens its endpoint */
            PyErr_Clear();
            goto fallback;
        }
        set_last = 1;
    }
    if (!Py_IS_TYPE(epb, Q->ep_type))
        goto fallback;
    ep = epb;
    Py_INCREF(ep);
    mutex = attr_in(self, qd, Q->n_mutex);
    if (mutex == NULL) {
        PyErr_Clear();
        goto fallback;
    }
    if (mutex_acquire(mutex) < 0) {
        *fallback = 0;  /* as the Python code: the acquire's error propagates */
        goto out;
    }
    /* Under the mutex, as the Python code reads them: maxsize (unbounded, or bounded
     * and not full, with a plain block: True and no timeout, or False), the container
     * (a deque). Else: release, and the Python put waits, raises Full, or sorts it out. */
    {
        int ok = 0;
        long long maxsize = 0;
#if PY_VERSION_HEX >= 0x030D0000
        /* A shut-down queue: the Python put (the stdlib's) raises ShutDown. */
        PyObject *sd = attr_in(self, qd, Q->n_is_shutdown);
        int down = sd != Py_False;
        Py_XDECREF(sd);
        PyObject *m = down ? NULL : attr_in(self, qd, Q->n_maxsize);
#else
        PyObject *m = attr_in(self, qd, Q->n_maxsize);
#endif
        if (m != NULL && PyLong_CheckExact(m)) {
            int overflow = 0;
            maxsize = PyLong_AsLongLongAndOverflow(m, &overflow);
            ok = !overflow && !(maxsize == -1 && PyErr_Occurred());
        }
        Py_XDECREF(m);
        if (ok && maxsize > 0) {
            ok = block == Py_False || (block == Py_True && timeout == Py_None);
            if (ok && qd != NULL)  /* self._qsize is CPython's (len(self.queue)) */
                ok = PyDict_GetItemWithError(qd, Q->n_qsize) == NULL && !PyErr_Occurred() &&
                     mro_lookup(Py_TYPE(self), Q->n_qsize) == Q->c_qsize;
            else if (ok) {
                PyObject *qs = PyObject_GetAttr(self, Q->n_qsize);
                ok = qs != NULL && PyMethod_Check(qs) && PyMethod_GET_FUNCTION(qs) == Q->c_qsize &&
                     PyMethod_GET_SELF(qs) == self;
                Py_XDECREF(qs);
            }
        }
        if (ok) {
            container = attr_in(self, qd, Q->n_queue);
            ok = container != NULL && Py_IS_TYPE(container, Q->deque_type) &&
                 !(maxsize > 0 && PySequence_Size(container) >= maxsize);
        }
        if (!ok) {
            PyErr_Clear();
            if (mutex_release(mutex) < 0) {
                *fallback = 0;
                goto out;
            }
            goto fallback;
        }
    }
    /* From here the put is ours. */
    *fallback = 0;
    if (set_last) {  /* st.last = (lp, ep) */
        PyObject *t = PyTuple_Pack(2, lp, ep);
        if (t == NULL)
            goto unlock_fail;
        slot_set(st, Q->s_last, t);
        Py_DECREF(t);
    }
    if (deque_append(container, item) < 0)
        goto unlock_fail;
    {  /* self.unfinished_tasks += 1 */
        PyObject *u = attr_in(self, qd, Q->n_unfinished);
        if (u == NULL)
            goto unlock_fail;
        PyObject *u1 = PyNumber_InPlaceAdd(u, Q->one);
        Py_DECREF(u);
        if (u1 == NULL)
            goto unlock_fail;
        int r = set_attr_in(self, qd, Q->n_unfinished, u1);
        Py_DECREF(u1);
        if (r < 0)
            goto unlock_fail;
    }
    {  /* try: the send event, the side deque; except Exception: tracer.fault */
        PyObject *nb = NULL, *pl = NULL, *r = NULL, *msg = NULL;
        int err = 1;
        nb = nbytes_of(item);
        if (nb == NULL)
            goto send_done;
        pl = payload_of(lp, item);
        if (pl == NULL)
            goto send_done;
        {
            PyObject *a[4] = {lp, ep, nb, pl};
            r = lp_call(Q->n_send, a, 4);
        }
        if (r == NULL)
            goto send_done;
        if (!(PyTuple_CheckExact(r) && PyTuple_GET_SIZE(r) == 3)) {
            PyObject *t = PySequence_Tuple(r);
            Py_SETREF(r, t);
            if (r == NULL)
                goto send_done;
            if (PyTuple_GET_SIZE(r) != 3) {
                PyErr_Format(PyExc_ValueError, "expected 3 values to unpack (got %zd)",
                             PyTuple_GET_SIZE(r));
                goto send_done;
            }
        }
        PyObject *seq = PyTuple_GET_ITEM(r, 0), *lam = PyTuple_GET_ITEM(r, 1),
                 *markers = PyTuple_GET_ITEM(r, 2);
        int has = truth(markers);
        if (has < 0)
            goto send_done;
        PyObject *name = SLOT(lp, Q->o_name);
        if (name == NULL) {
            PyErr_SetString(PyExc_AttributeError, "name");
            goto send_done;
        }
        msg = msg_id(name, seq);
        if (msg == NULL)
            goto send_done;
        if (!has) {  /* st.side.append((item, ep.channel, msg, lam)) */
            PyObject *side = SLOT(st, Q->s_side), *cid = SLOT(ep, Q->e_channel);
            if (side == NULL || cid == NULL) {
                PyErr_SetString(PyExc_AttributeError, side == NULL ? "side" : "channel");
                goto send_done;
            }
            PyObject *e = PyTuple_Pack(4, item, cid, msg, lam);
            if (e == NULL)
                goto send_done;
            int rc = deque_append(side, e);
            Py_DECREF(e);
            if (rc < 0)
                goto send_done;
        }
        else {  /* st.sent(item, ep, msg, lam, markers) */
            PyObject *a[6] = {st, item, ep, msg, lam, markers};
            PyObject *x = PyObject_VectorcallMethod(Q->n_sent, a, 6, NULL);
            if (x == NULL)
                goto send_done;
            Py_DECREF(x);
        }
        err = 0;
    send_done:
        Py_XDECREF(nb);
        Py_XDECREF(pl);
        Py_XDECREF(r);
        Py_XDECREF(msg);
        if (err && fault_current(lp, Q->w_put) < 0)
            goto unlock_fail;
    }
    if (notify_if_waiting(self, qd, Q->n_not_empty) < 0)
        goto unlock_fail;
    if (mutex_release(mutex) < 0)
        goto out;
    Py_INCREF(Py_None);
    result = Py_None;
    goto out;

unlock_fail:
    release_keep_error(mutex);
    goto out;
fallback:
    *fallback = 1;
out:
    Py_XDECREF(container);
    Py_XDECREF(mutex);
    Py_XDECREF(ep);
    Py_XDECREF(qd);
    Py_DECREF(st);
    Py_DECREF(lp);
    return result;
}

static PyObject *
q_put(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    int fb;
    PyObject *r = fast_put(self, args, nargs, kwnames, &fb);
    if (r == NULL && fb && !PyErr_Occurred()) {
        Q->n_put_py++;
        return call_with_self(Q->c_py_put, self, args, nargs, kwnames);
    }
    Q->n_put_fast += !fb;
    return r;
}

/* ---- get ------------------------------------------------------------------------- */

static PyObject *
fast_get(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
         int *fallback)
{
    *fallback = 1;
    PyObject *block, *timeout;
    if (!parse_bt(args, nargs, kwnames, 0, &block, &timeout))
        return NULL;
    /* `not block`, `timeout < 0` without Python code: plain bools, and a timeout that is
     * None or a non-negative int or float (a negative one raises ValueError there) */
    if (block != Py_True && block != Py_False)
        return NULL;
    if (block == Py_True && timeout != Py_None) {
        if (PyFloat_CheckExact(timeout)) {
            if (PyFloat_AS_DOUBLE(timeout) < 0.0)
                return NULL;
        }
        else if (PyLong_CheckExact(timeout)) {
            if (PyObject_RichCompareBool(timeout, Q->zero, Py_LT) != 0) {
                PyErr_Clear();
                return NULL;
            }
        }
        else
            return NULL;
    }
    PyObject *lp = current_lp();
    if (lp == NULL)
        return NULL;
    PyObject *qd = inst_dict(self);
    PyObject *st = qstate(self, qd);
    if (st == NULL)
        return NULL;
    if (!slot_empty(SLOT(lp, Q->o_pending))) {  /* a safe point: the Python code records */
        Py_DECREF(st);
        return NULL;
    }
    PyObject *side = SLOT(st, Q->s_side);
    if (side == NULL || !Py_IS_TYPE(side, Q->deque_type)) {
        Py_DECREF(st);
        return NULL;
    }
    Py_INCREF(lp);
    Py_INCREF(side);
    Py_XINCREF(qd);
    PyObject *mutex = NULL, *container = NULL, *e = NULL, *head = NULL, *item = NULL,
             *result = NULL;
    mutex = attr_in(self, qd, Q->n_mutex);
    if (mutex == NULL) {
        PyErr_Clear();
        goto fallback;
    }
    if (mutex_acquire(mutex) < 0) {
        *fallback = 0;
        goto out;
    }
    /* `if fifo and side and not st.pend`, the head entry is the head item's, and the
     * consumer knows its channel (else: st.first, in the Python code) */
    int ok = PySequence_Size(side) > 0 && slot_empty(SLOT(st, Q->s_pend));
    if (ok) {
        e = PySequence_GetItem(side, 0);
        ok = e != NULL && PyTuple_CheckExact(e) && PyTuple_GET_SIZE(e) == 4;
    }
    if (ok) {
        container = attr_in(self, qd, Q->n_queue);
        ok = container != NULL && Py_IS_TYPE(container, Q->deque_type) &&
             PySequence_Size(container) > 0;
    }
    if (ok) {
        head = PySequence_GetItem(container, 0);
        ok = head != NULL && head == PyTuple_GET_ITEM(e, 0);
    }
    PyObject *cid = ok ? PyTuple_GET_ITEM(e, 1) : NULL;
    int known = 0;  /* st.last_consumer is lp and st.last_channel is cid */
    if (ok) {
        known = SLOT(st, Q->s_last_consumer) == lp && SLOT(st, Q->s_last_channel) == cid;
        if (!known) {
            PyObject *seen = SLOT(st, Q->s_seen);
            ok = seen != NULL && PyDict_CheckExact(seen) && PyUnicode_CheckExact(cid);
            PyObject *s = ok ? PyDict_GetItemWithError(seen, cid) : NULL;
            ok = s != NULL && PyAnySet_CheckExact(s) && PySet_Contains(s, lp) == 1;
        }
    }
    if (!ok) {
        PyErr_Clear();
        if (mutex_release(mutex) < 0) {
            *fallback = 0;
            goto out;
        }
        goto fallback;
    }
    /* From here the get is ours. */
    *fallback = 0;
    {
        PyObject *x = PyObject_Vectorcall(Q->d_popleft, &container, 1, NULL);
        if (x == NULL)
            goto unlock_fail;
        item = x;
        x = PyObject_Vectorcall(Q->d_popleft, &side, 1, NULL);
        if (x == NULL)
            goto unlock_fail;
        Py_DECREF(x);
    }
    if (notify_if_waiting(self, qd, Q->n_not_full) < 0)
        goto unlock_fail;
    {  /* try: the receive event; except Exception: tracer.fault */
        PyObject *nb = NULL, *pl = NULL, *r = NULL;
        if (!known) {  /* st.last_consumer, st.last_channel = lp, cid */
            slot_set(st, Q->s_last_consumer, lp);
            slot_set(st, Q->s_last_channel, cid);
        }
        nb = nbytes_of(item);
        pl = nb == NULL ? NULL : payload_of(lp, item);
        if (pl != NULL) {
            PyObject *a[7] = {lp, cid, PyTuple_GET_ITEM(e, 2), PyTuple_GET_ITEM(e, 3), nb, pl,
                              item};
            r = lp_call(Q->n_recv, a, 7);
        }
        Py_XDECREF(nb);
        Py_XDECREF(pl);
        if (r != NULL)
            Py_DECREF(r);
        else if (fault_current(lp, Q->w_get) < 0)
            goto unlock_fail;
    }
    if (mutex_release(mutex) < 0)
        goto out;
    result = item;
    item = NULL;
    goto out;

unlock_fail:
    release_keep_error(mutex);
    goto out;
fallback:
    *fallback = 1;
out:
    Py_XDECREF(item);
    Py_XDECREF(head);
    Py_XDECREF(e);
    Py_XDECREF(container);
    Py_XDECREF(mutex);
    Py_DECREF(side);
    Py_XDECREF(qd);
    Py_DECREF(st);
    Py_DECREF(lp);
    return result;
}

static PyObject *
q_get(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    int fb;
    PyObject *r = fast_get(self, args, nargs, kwnames, &fb);
    if (r == NULL && fb && !PyErr_Occurred()) {
        Q->n_get_py++;
        return call_with_self(Q->c_py_get, self, args, nargs, kwnames);
    }
    Q->n_get_fast += !fb;
    return r;
}

static PyMethodDef q_put_def = {"put", (PyCFunction)(void (*)(void))q_put,
                                METH_FASTCALL | METH_KEYWORDS,
                                "Queue.put, traced (cutscope; C fast path of "
                                "integrations/queues.py's put)"};
static PyMethodDef q_get_def = {"get", (PyCFunction)(void (*)(void))q_get,
                                METH_FASTCALL | METH_KEYWORDS,
                                "Queue.get, traced (cutscope; C fast path of "
                                "integrations/queues.py's get)"};

/* ---- module -------------------------------------------------------------------- */

static int
method_of(PyTypeObject *tp, const char *name, PyObject **dst)
{
    PyObject *d = PyObject_GetAttrString((PyObject *)tp, name);
    if (d == NULL)
        return -1;
    if (!PyObject_TypeCheck(d, &PyMethodDescr_Type)) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not a method descriptor", tp->tp_name, name);
        Py_DECREF(d);
        return -1;
    }
    Py_XSETREF(*dst, d);
    return 0;
}

static PyObject *
setup(PyObject *mod, PyObject *args)
{
    PyObject *qt, *qst, *lpt, *ept, *dqt, *lkt, *cur, *dflt, *qsize, *pput, *pget;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!O!OO!OOO:setup", &PyType_Type, &qt, &PyType_Type,
                          &qst, &PyType_Type, &lpt, &PyType_Type, &ept, &PyType_Type, &dqt,
                          &PyType_Type, &lkt, &cur, &PyList_Type, &dflt, &qsize, &pput, &pget))
        return NULL;
    if (!PyContextVar_CheckExact(cur)) {
        PyErr_SetString(PyExc_TypeError, "not a ContextVar");
        return NULL;
    }
    PyTypeObject *qs = (PyTypeObject *)qst, *lt = (PyTypeObject *)lpt, *et = (PyTypeObject *)ept;
#define OFF(var, tp, name) if ((var = slot_offset(tp, name)) < 0) return NULL
    OFF(Q->s_fifo, qs, "fifo");
    OFF(Q->s_side, qs, "side");
    OFF(Q->s_out, qs, "out");
    OFF(Q->s_seen, qs, "seen");
    OFF(Q->s_pend, qs, "pend");
    OFF(Q->s_last, qs, "last");
    OFF(Q->s_last_consumer, qs, "last_consumer");
    OFF(Q->s_last_channel, qs, "last_channel");
    OFF(Q->o_name, lt, "name");
    OFF(Q->o_pending, lt, "pending");
    OFF(Q->o_tracer, lt, "tracer");
    OFF(Q->e_channel, et, "channel");
#undef OFF
    if (method_of((PyTypeObject *)dqt, "append", &Q->d_append) < 0 ||
        method_of((PyTypeObject *)dqt, "popleft", &Q->d_popleft) < 0 ||
        method_of((PyTypeObject *)lkt, "acquire", &Q->l_acquire) < 0 ||
        method_of((PyTypeObject *)lkt, "release", &Q->l_release) < 0)
        return NULL;
    PyObject **dst[] = {(PyObject **)&Q->q_type, (PyObject **)&Q->qs_type, (PyObject **)&Q->lp_type,
                        (PyObject **)&Q->ep_type, (PyObject **)&Q->deque_type, (PyObject **)&Q->lock_type,
                        &Q->c_current, &Q->c_default, &Q->c_qsize, &Q->c_py_put, &Q->c_py_get};
    PyObject *src[] = {qt, qst, lpt, ept, dqt, lkt, cur, dflt, qsize, pput, pget};
    for (int i = 0; i < 11; i++) {
        Py_INCREF(src[i]);
        Py_XSETREF(*dst[i], src[i]);
    }
    PyObject *p = PyDescr_NewMethod((PyTypeObject *)qt, &q_put_def);
    PyObject *g = PyDescr_NewMethod((PyTypeObject *)qt, &q_get_def);
    if (p == NULL || g == NULL) {
        Py_XDECREF(p);
        Py_XDECREF(g);
        return NULL;
    }
    return Py_BuildValue("(NN)", p, g);
}

static PyObject *
counts(PyObject *mod, PyObject *unused)
{
    return Py_BuildValue("{sKsKsKsK}", "put", Q->n_put_fast, "put_py", Q->n_put_py, "get", Q->n_get_fast,
                         "get_py", Q->n_get_py);
}

static PyMethodDef methods[] = {
    {"counts", counts, METH_NOARGS,
     "counts() -> {'put', 'put_py', 'get', 'get_py'}: calls that took the C path / the "
     "Python functions, since the module was loaded (for the tests)."},
    {"setup", setup, METH_VARARGS,
     "setup(queue.Queue, QState, LogicalProcess, OutEndpoint, collections.deque, "
     "_thread.LockType, current_var, default_process, Queue._qsize, py_put, py_get) -> "
     "(put, get): method descriptors for queue.Queue."},
    {NULL, NULL, 0, NULL},
};

static int
mod_exec(PyObject *mod)
{
    fastq_state *st = PyModule_GetState(mod);
    if (Q != NULL) {
        PyErr_SetString(PyExc_ImportError, "cutscope.integrations._fastq: one module object "
                        "per process");
        return -1;
    }
#define INTERN(var, s) if ((var = PyUnicode_InternFromString(s)) == NULL) return -1
    INTERN(st->n_cutscope_q, "_cutscope_q");
    INTERN(st->n_mutex, "mutex");
    INTERN(st->n_queue, "queue");
    INTERN(st->n_maxsize, "maxsize");
    INTERN(st->n_is_shutdown, "is_shutdown");
    INTERN(st->n_qsize, "_qsize");
    INTERN(st->n_unfinished, "unfinished_tasks");
    INTERN(st->n_not_empty, "not_empty");
    INTERN(st->n_not_full, "not_full");
    INTERN(st->n_waiters, "_waiters");
    INTERN(st->n_notify, "notify");
    INTERN(st->n_capture, "capture");
    INTERN(st->n_send, "send");
    INTERN(st->n_recv, "recv");
    INTERN(st->n_sent, "sent");
    INTERN(st->n_fault, "fault");
    INTERN(st->n_acquire, "acquire");
    INTERN(st->n_release, "release");
    INTERN(st->n_append, "append");
    INTERN(st->n_block, "block");
    INTERN(st->n_timeout, "timeout");
    INTERN(st->w_put, "queue.put");
    INTERN(st->w_get, "queue.get");
    INTERN(st->s_hash, "#");
    INTERN(st->s_empty, "");
#undef INTERN
    st->attr_names = PyTuple_Pack(11, st->n_cutscope_q, st->n_mutex, st->n_queue, st->n_maxsize, st->n_unfinished,
                              st->n_not_empty, st->n_not_full, st->n_waiters, st->n_capture, st->n_qsize,
                              st->n_is_shutdown);
    if (st->attr_names == NULL)
        return -1;
    if ((st->one = PyLong_FromLong(1)) == NULL || (st->zero = PyLong_FromLong(0)) == NULL)
        return -1;
    /* The state is reached through Q from now on, and the module object lives until
     * the process ends (a reference that is never given back): Q never dangles. */
    Q = st;
    Py_INCREF(mod);
    return 0;
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, mod_exec},
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
#if PY_VERSION_HEX >= 0x030D0000
    {Py_mod_gil, Py_MOD_GIL_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef moddef = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_fastq",
    .m_doc = "cutscope's queue.Queue hot paths in C (optional).",
    .m_size = sizeof(fastq_state),
    .m_methods = methods,
    .m_slots = slots,
};

PyMODINIT_FUNC
PyInit__fastq(void)
{
    return PyModuleDef_Init(&moddef);
}
