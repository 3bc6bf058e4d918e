/* cutscope.integrations.sockets._fastsock: the socket integration's hot paths in C
 * (optional; integrations/sockets/hotpath.py's send, sendall and recv are the reference
 * and the fallback).
 *
 * What is here, and only this: socket.socket.send / sendall / recv on a framed blocking
 * TCP connection (hotpath.py: _fast_sender, recv), with the same tests in the same
 * order, the same state read and written, the same calls. Whenever one of those tests
 * fails, the Python function they replace is called instead, before anything has been
 * done, so behaviour is the Python code's by construction.
 *
 * The Lamport events go through the core's C entry points (tracer/_fastapi.h, taken
 * from the capsule cutscope.tracer._fast._C_API): this module knows the core's types
 * only through them, and the core knows nothing of sockets.
 *
 * Locking is the Python code's: the connection's token (the one item of a list) around
 * a direction's state; the core takes the logical process's lock.
 *
 * Conn's hot attributes are slots, read at their offsets (looked up once from the
 * member descriptors); an object whose type is not exactly Conn is read by name.
 *
 * Module state: everything setup() is given and every interned name lives in the
 * module's state (multi-phase initialisation). The three method descriptors installed
 * on socket.socket receive the socket, not the module: they reach the state of the one
 * module object a process loads through `the_state` (a second one is refused; the
 * module object lives until the process ends). Hence the module declares that it
 * supports one interpreter, and that it needs the GIL (a free-threaded build runs the
 * Python paths: tracer/process.py does not load the core's extension there, and this
 * one is loaded only with it).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include "_fast.h"
#include "_fastapi.h"
#include <string.h>

#define HDR_SIZE 21
#define T_DATA 1

typedef struct {
    const cutscope_core_api *core;
    PyObject *core_module;  /* keeps the core (and its entry points) loaded */
    int ready;              /* setup() done */
    PyObject *objs;         /* id(socket object) -> Conn */
    PyObject *current;      /* the ContextVar of the logical process */
    PyObject *dflt;         /* [main logical process or None] */
    PyObject *tracer;       /* [tracer or None] */
    PyObject *fault;        /* _fault(exc, where) */
    PyObject *prefix;       /* _marker_prefix(conn, markers) -> bytes */
    PyObject *real_sendall, *real_recv;
    PyObject *py_send, *py_sendall, *py_recv;  /* the Python functions (fallbacks) */
    PyObject *gettimeout;   /* _socket.socket.gettimeout */
    PyTypeObject *socket_type;  /* socket.socket */
    PyTypeObject *conn_type;    /* Conn: its hot attributes are slots */
    Py_ssize_t c_fast_lp, c_fast_in, c_stok, c_rtok, c_ep, c_out_left, c_out_pending,
        c_in_left, c_in_buf, c_in_cid, c_in_name;
    /* interned names */
    PyObject *n_gettimeout, *n_fast_lp, *n_stok, *n_rtok, *n_out_left, *n_out_pending,
        *n_ep, *n_fast_in, *n_in_left, *n_in_buf, *n_in_cid, *n_in_name, *n_capture,
        *n_markers_after, *n_push, *n_recv_framed, *n_block;
    PyObject *kw_block;        /* ("block",) */
    PyObject *w_send, *w_recv; /* "recording a send", "recording a receive" */
    PyObject *zero;            /* the int 0 */
} sock_state;

/* The state of the module object loaded in this process (see the top). */
static sock_state *the_state;

static sock_state *
configured(void)
{
    if (the_state == NULL || !the_state->ready) {
        PyErr_SetString(PyExc_RuntimeError,
                        "cutscope.integrations.sockets._fastsock is not set up");
        return NULL;
    }
    return the_state;
}

/* The exact int 0 (the flags argument of the plain calls). */
static inline int
is_zero(PyObject *v)
{
    if (!PyLong_CheckExact(v))
        return 0;
    int overflow = 0;
    long r = PyLong_AsLongAndOverflow(v, &overflow);
    return r == 0 && !overflow;
}

static inline PyObject *  /* borrowed */
current_lp(sock_state *st)
{
    PyObject *v = NULL;
    if (PyContextVar_Get(st->current, NULL, &v) < 0) {
        PyErr_Clear();
        return NULL;
    }
    if (v != NULL) {
        Py_DECREF(v);  /* the context holds it */
        if (v != Py_None)
            return v;
    }
    if (PyList_CheckExact(st->dflt) && PyList_GET_SIZE(st->dflt) > 0) {
        PyObject *d = PyList_GET_ITEM(st->dflt, 0);
        return d == Py_None ? NULL : d;
    }
    return NULL;
}

/* The Conn of a socket object (its entry in _objs, keyed by id()): a new reference, or
 * NULL with no error when it has none. */
static inline PyObject *
conn_of(sock_state *st, PyObject *sock)
{
    PyObject *key = PyLong_FromVoidPtr(sock);
    if (key == NULL) {
        PyErr_Clear();
        return NULL;
    }
    PyObject *c = PyDict_GetItemWithError(st->objs, key);
    Py_DECREF(key);
    if (c == NULL) {
        PyErr_Clear();
        return NULL;
    }
    Py_INCREF(c);
    return c;
}

/* A hot attribute of a Conn (a slot, `off`), or of anything else by name: a new
 * reference, or NULL with no error when it is not set. */
static inline PyObject *
cattr(sock_state *st, PyObject *c, Py_ssize_t off, PyObject *name)
{
    if (Py_IS_TYPE(c, st->conn_type)) {
        PyObject *v = SLOT(c, off);
        Py_XINCREF(v);
        return v;
    }
    PyObject *v = PyObject_GetAttr(c, name);
    if (v == NULL)
        PyErr_Clear();
    return v;
}

/* 1: the value is the int 0 or an empty bytes/bytearray (steals v; NULL: 0). */
static inline int
zero_or_empty(PyObject *v)
{
    if (v == NULL)
        return 0;
    int z;
    if (PyLong_CheckExact(v))
        z = is_zero(v);
    else if (PyByteArray_CheckExact(v))
        z = PyByteArray_GET_SIZE(v) == 0;
    else if (PyBytes_CheckExact(v))
        z = PyBytes_GET_SIZE(v) == 0;
    else
        z = 0;
    Py_DECREF(v);
    return z;
}

/* Take the token of a direction (the single item of a list, as the Python code's
 * tok.pop()): 1 taken, 0 not (-1 never: a failure to delete is "not taken"). */
static inline int
take_token(PyObject *tok)
{
    if (!PyList_CheckExact(tok))
        return 0;
    Py_ssize_t n = PyList_GET_SIZE(tok);
    if (n == 0)
        return 0;
    if (PyList_SetSlice(tok, n - 1, n, NULL) < 0) {
        PyErr_Clear();
        return 0;
    }
    return 1;
}

/* Give the token back (tok.append(True)), keeping a pending error; if the append itself
 * fails, *result is dropped and that error stands. */
static inline void
give_token(PyObject *tok, PyObject **result)
{
    if (!PyErr_Occurred()) {
        if (PyList_Append(tok, Py_True) < 0)
            Py_CLEAR(*result);
        return;
    }
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    if (PyList_Append(tok, Py_True) < 0) {
        Py_CLEAR(*result);
        Py_XDECREF(et);
        Py_XDECREF(ev);
        Py_XDECREF(tb);
        return;
    }
    PyErr_Restore(et, ev, tb);
}

/* _fault(exc, where) with the current exception; 0 if it was swallowed, -1 if it
 * raised (strict mode: the error is set). */
static int
fault_current(sock_state *st, PyObject *where)
{
    PyObject *et, *ev, *tb;
    PyErr_Fetch(&et, &ev, &tb);
    PyErr_NormalizeException(&et, &ev, &tb);
    if (tb != NULL && ev != NULL)
        PyException_SetTraceback(ev, tb);
    PyObject *r = PyObject_CallFunctionObjArgs(st->fault, ev ? ev : Py_None, where, NULL);
    Py_XDECREF(et);
    Py_XDECREF(ev);
    Py_XDECREF(tb);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* obj.name for a plain Python object (the tracer), from its __dict__ when it is there
 * (the class defines no descriptor of that name), else by getattr: a new reference, or
 * NULL with an error. */
static inline PyObject *
inst_attr(PyObject *obj, PyObject *name)
{
    PyObject *d = PyObject_GenericGetDict(obj, NULL);
    if (d == NULL)
        PyErr_Clear();
    else {
        PyObject *v = PyDict_CheckExact(d) ? PyDict_GetItemWithError(d, name) : NULL;
        Py_XINCREF(v);
        Py_DECREF(d);
        if (v != NULL)
            return v;
        PyErr_Clear();
    }
    return PyObject_GetAttr(obj, name);
}

static inline int  /* tracer.capture or lp.snaps */
want_payload(sock_state *st, PyObject *lp)
{
    PyObject *t = PyList_CheckExact(st->tracer) && PyList_GET_SIZE(st->tracer) ?
        PyList_GET_ITEM(st->tracer, 0) : Py_None;
    if (t != Py_None) {
        PyObject *cap = inst_attr(t, st->n_capture);
        if (cap == NULL)
            return -1;
        int r = PyObject_IsTrue(cap);
        Py_DECREF(cap);
        if (r != 0)
            return r;
    }
    return st->core->recording(lp);
}

/* sock.gettimeout() is None (the plain method called directly on a socket.socket). */
static inline int
blocking(sock_state *st, PyObject *sock)
{
    PyObject *to = Py_IS_TYPE(sock, st->socket_type) ?
        PyObject_Vectorcall(st->gettimeout, &sock, 1, NULL) :
        PyObject_CallMethodNoArgs(sock, st->n_gettimeout);
    if (to == NULL) {
        PyErr_Clear();
        return 0;
    }
    Py_DECREF(to);
    return to == Py_None;
}

static inline void
put_header(char *p, unsigned long long n, unsigned long long seq, unsigned long long lam)
{
    p[0] = T_DATA;
    for (int i = 0; i < 4; i++)
        p[1 + i] = (char)(n >> (24 - 8 * i));
    for (int i = 0; i < 8; i++) {
        p[5 + i] = (char)(seq >> (56 - 8 * i));
        p[13 + i] = (char)(lam >> (56 - 8 * i));
    }
}

static inline unsigned long long
get_be(const unsigned char *p, int k)
{
    unsigned long long v = 0;
    for (int i = 0; i < k; i++)
        v = (v << 8) | p[i];
    return v;
}

/* The send itself, the token held and every test passed (sockets/hotpath.py _fast_sender). */
static PyObject *
framed_send(sock_state *st, PyObject *self, PyObject *c, PyObject *fl, PyObject *ep, PyObject *data,
            Py_ssize_t n, int ret_n)
{
    unsigned long long seq = 0, lam = 0;
    PyObject *markers = NULL, *pre = NULL, *r;
    PyObject *nb = PyLong_FromSsize_t(n);
    if (nb == NULL)
        return NULL;
    int wp = want_payload(st, fl);
    r = wp < 0 ? NULL : st->core->send(fl, ep, nb, wp ? data : Py_None);
    Py_DECREF(nb);
    if (r == NULL) {
        if (fault_current(st, st->w_send) < 0)
            return NULL;  /* strict mode: nothing was sent */
    }
    else {
        seq = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(r, 0));
        lam = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(r, 1));
        markers = PyTuple_GET_ITEM(r, 2);
        Py_INCREF(markers);
        Py_DECREF(r);
        if (PyErr_Occurred()) {
            Py_DECREF(markers);
            return NULL;
        }
        int has = nonempty(markers);
        if (has > 0) {
            pre = PyObject_CallFunctionObjArgs(st->prefix, c, markers, NULL);
            if (pre != NULL && !PyBytes_Check(pre)) {
                Py_CLEAR(pre);
                PyErr_SetString(PyExc_TypeError, "cutscope: marker prefix is not bytes");
            }
        }
        Py_DECREF(markers);
        if (has < 0 || (has > 0 && pre == NULL))
            return NULL;
    }
    Py_ssize_t np = pre == NULL ? 0 : PyBytes_GET_SIZE(pre);
    PyObject *buf = PyBytes_FromStringAndSize(NULL, np + HDR_SIZE + n);
    if (buf == NULL) {
        Py_XDECREF(pre);
        return NULL;
    }
    char *p = PyBytes_AS_STRING(buf);
    if (np)
        memcpy(p, PyBytes_AS_STRING(pre), np);
    Py_XDECREF(pre);
    put_header(p + np, (unsigned long long)n, seq, lam);
    memcpy(p + np + HDR_SIZE, PyBytes_AS_STRING(data), n);
    /* a blocking socket takes it all (or fails, and the stream is gone) */
    PyObject *sa[2] = {self, buf};
    r = PyObject_Vectorcall(st->real_sendall, sa, 2, NULL);
    Py_DECREF(buf);
    if (r == NULL)
        return NULL;
    Py_DECREF(r);
    int more = st->core->markers_waiting(ep);
    if (more < 0)
        return NULL;
    if (more) {  /* markers queued meanwhile: after this frame, now */
        r = PyObject_CallMethodNoArgs(c, st->n_markers_after);
        if (r == NULL)
            return NULL;
        Py_DECREF(r);
        PyObject *pa[3] = {c, self, Py_True};
        r = PyObject_VectorcallMethod(st->n_push, pa, 2, st->kw_block);
        if (r == NULL)
            return NULL;
        Py_DECREF(r);
    }
    if (ret_n)
        return PyLong_FromSsize_t(n);
    Py_RETURN_NONE;
}

/* send / sendall: the fast path, or the Python function (before anything is done). */
static PyObject *
fast_send(sock_state *st, PyObject *self, PyObject *const *args, Py_ssize_t nargs, int ret_n, PyObject *py)
{
    PyObject *c = NULL, *fl = NULL, *tok = NULL, *ep = NULL, *result = NULL;
    if (nargs < 1 || nargs > 2 || !PyBytes_CheckExact(args[0]) ||
        (nargs == 2 && !is_zero(args[1])))
        goto python;
    Py_ssize_t n = PyBytes_GET_SIZE(args[0]);
    if (n <= 0 || n > 65536 || (c = conn_of(st, self)) == NULL)
        goto python;
    fl = cattr(st, c, st->c_fast_lp, st->n_fast_lp);
    if (fl == NULL || !st->core->is_process(fl) || current_lp(st) != fl)
        goto python;
    tok = cattr(st, c, st->c_stok, st->n_stok);
    if (tok == NULL || !take_token(tok))
        goto python;  /* another thread sends on this connection: the general path waits */
    ep = cattr(st, c, st->c_ep, st->n_ep);
    if (ep == NULL || !st->core->is_endpoint(ep) || !zero_or_empty(cattr(st, c, st->c_out_left, st->n_out_left)) ||
        !zero_or_empty(cattr(st, c, st->c_out_pending, st->n_out_pending)) || !blocking(st, self)) {
        give_token(tok, &result);
        if (PyErr_Occurred())
            goto out;
        goto python;
    }
    result = framed_send(st, self, c, fl, ep, args[0], n, ret_n);
    give_token(tok, &result);
    goto out;
python:
    result = call_with_self(py, self, args, nargs, NULL);
out:
    Py_XDECREF(ep);
    Py_XDECREF(tok);
    Py_XDECREF(fl);
    Py_XDECREF(c);
    return result;
}

/* Keyword arguments go to the Python function, which hands them to the socket's own
 * method: the application gets that method's TypeError, word for word. */
static PyObject *
sock_send(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    sock_state *st = configured();
    if (st == NULL)
        return NULL;
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames) > 0)
        return call_with_self(st->py_send, self, args, nargs, kwnames);
    return fast_send(st, self, args, nargs, 1, st->py_send);
}

static PyObject *
sock_sendall(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    sock_state *st = configured();
    if (st == NULL)
        return NULL;
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames) > 0)
        return call_with_self(st->py_sendall, self, args, nargs, kwnames);
    return fast_send(st, self, args, nargs, 0, st->py_sendall);
}

/* One whole frame received on the fast path: record it, return its payload. */
static PyObject *
framed_piece(sock_state *st, PyObject *c, PyObject *lp, const unsigned char *p, Py_ssize_t len)
{
    unsigned long long seq = get_be(p + 5, 8), lam = get_be(p + 13, 8);
    Py_ssize_t n = len - HDR_SIZE;
    PyObject *piece = PyBytes_FromStringAndSize((const char *)p + HDR_SIZE, n);
    if (piece == NULL)
        return NULL;
    PyObject *cid = NULL, *msg = NULL, *nb = NULL, *stamp = NULL, *r = NULL;
    long long mnum = -1;  /* the id is "<msg>#<mnum>": the core makes the string only if needed */
    cid = cattr(st, c, st->c_in_cid, st->n_in_cid);
    if (cid == NULL) {
        PyErr_SetString(PyExc_AttributeError, "in_cid");
        goto recorded;
    }
    if (seq) {
        msg = cattr(st, c, st->c_in_name, st->n_in_name);  /* the sender's name */
        if (msg == NULL) {
            PyErr_SetString(PyExc_AttributeError, "in_name");
            goto recorded;
        }
        if (seq < (1ULL << 63) && PyUnicode_CheckExact(msg))
            mnum = (long long)seq;
        else {
            PyObject *name = msg;
            msg = st->core->msg_id(name, seq);
            Py_DECREF(name);
            if (msg == NULL)
                goto recorded;
        }
    }
    else {
        Py_INCREF(Py_None);
        msg = Py_None;
    }
    nb = PyLong_FromSsize_t(n);
    stamp = PyLong_FromUnsignedLongLong(lam);
    if (nb == NULL || stamp == NULL)
        goto recorded;
    int wp = want_payload(st, lp);
    if (wp < 0)
        goto recorded;
    r = st->core->recv(lp, cid, msg, mnum, stamp, nb, wp ? piece : Py_None);
recorded:
    Py_XDECREF(cid);
    Py_XDECREF(msg);
    Py_XDECREF(nb);
    Py_XDECREF(stamp);
    if (r == NULL && fault_current(st, st->w_recv) < 0) {
        Py_DECREF(piece);
        return NULL;
    }
    Py_XDECREF(r);
    return piece;
}

/* recv: the fast path, or the Python function (before anything is done). */
static PyObject *
sock_recv(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    sock_state *st = configured();
    if (st == NULL)
        return NULL;
    PyObject *c = NULL, *tok = NULL, *result = NULL, *lp = NULL, *fin = NULL;
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames) > 0)  /* (as in sock_send) */
        return call_with_self(st->py_recv, self, args, nargs, kwnames);
    if (nargs < 1 || nargs > 2 || !PyLong_CheckExact(args[0]) ||
        (nargs == 2 && !is_zero(args[1])))
        goto python;
    Py_ssize_t bufsize = PyLong_AsSsize_t(args[0]);
    if (bufsize <= 0 || bufsize > PY_SSIZE_T_MAX - HDR_SIZE) {
        PyErr_Clear();
        goto python;
    }
    if ((c = conn_of(st, self)) == NULL)
        goto python;
    fin = cattr(st, c, st->c_fast_in, st->n_fast_in);
    if (fin != Py_True)
        goto python;
    lp = current_lp(st);
    if (lp == NULL || !st->core->is_process(lp) || st->core->asked(lp) != 0) {
        PyErr_Clear();
        lp = NULL;
        goto python;
    }
    Py_INCREF(lp);
    tok = cattr(st, c, st->c_rtok, st->n_rtok);
    if (tok == NULL || !take_token(tok))
        goto python;  /* another thread reads this connection: the Python path waits */
    if (!zero_or_empty(cattr(st, c, st->c_in_left, st->n_in_left)) ||
        !zero_or_empty(cattr(st, c, st->c_in_buf, st->n_in_buf))) {
        give_token(tok, &result);  /* mid-frame, or a header held: the Python path */
        if (PyErr_Occurred())
            goto out;
        goto python;
    }
    /* At a frame boundary: header and payload in one syscall (a timeout or a
     * non-blocking socket raises here exactly as the plain call would). */
    PyObject *sz = PyLong_FromSsize_t(bufsize + HDR_SIZE);
    if (sz != NULL) {
        PyObject *ra[2] = {self, sz};
        PyObject *data = PyObject_Vectorcall(st->real_recv, ra, 2, NULL);
        Py_DECREF(sz);
        if (data != NULL) {
            Py_ssize_t len = PyBytes_Check(data) ? PyBytes_GET_SIZE(data) : 0;
            const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(data);
            if (len > HDR_SIZE && p[0] == T_DATA &&
                (unsigned long long)(len - HDR_SIZE) == get_be(p + 1, 4))
                result = framed_piece(st, c, lp, p, len);  /* one whole frame */
            else {  /* the general path, still holding the token (see recv_framed) */
                PyObject *a[6] = {c, self, args[0], st->zero, data, Py_True};
                result = PyObject_VectorcallMethod(st->n_recv_framed, a, 6, NULL);
            }
            Py_DECREF(data);
        }
    }
    give_token(tok, &result);
    goto out;
python:
    result = call_with_self(st->py_recv, self, args, nargs, NULL);
out:
    Py_XDECREF(tok);
    Py_XDECREF(lp);
    Py_XDECREF(fin);
    Py_XDECREF(c);
    return result;
}



static PyMethodDef sock_send_def = {"send", (PyCFunction)(void (*)(void))sock_send,
                                    METH_FASTCALL | METH_KEYWORDS,
                                    "socket.send, traced (cutscope; C fast path)"};
static PyMethodDef sock_sendall_def = {"sendall", (PyCFunction)(void (*)(void))sock_sendall,
                                       METH_FASTCALL | METH_KEYWORDS,
                                       "socket.sendall, traced (cutscope; C fast path)"};
static PyMethodDef sock_recv_def = {"recv", (PyCFunction)(void (*)(void))sock_recv,
                                    METH_FASTCALL | METH_KEYWORDS,
                                    "socket.recv, traced (cutscope; C fast path)"};

/* ---- module -------------------------------------------------------------------- */

static PyObject *
setup(PyObject *mod, PyObject *args)
{
    sock_state *st = PyModule_GetState(mod);
    PyObject *sockt, *connt, *objs, *cur, *dflt, *tracer, *fault, *prefix, *rsa, *rr, *ps,
        *psa, *pr;
    if (!PyArg_ParseTuple(args, "O!O!O!OO!O!OOOOOOO:setup", &PyType_Type, &sockt,
                          &PyType_Type, &connt, &PyDict_Type, &objs, &cur, &PyList_Type, &dflt,
                          &PyList_Type, &tracer, &fault, &prefix, &rsa, &rr, &ps, &psa, &pr))
        return NULL;
    if (!PyContextVar_CheckExact(cur)) {
        PyErr_SetString(PyExc_TypeError, "not a ContextVar");
        return NULL;
    }
    PyTypeObject *ct = (PyTypeObject *)connt, *t = (PyTypeObject *)sockt;
#define OFF(var, name) if ((st->var = slot_offset(ct, name)) < 0) return NULL
    OFF(c_fast_lp, "fast_lp");
    OFF(c_fast_in, "fast_in");
    OFF(c_stok, "stok");
    OFF(c_rtok, "rtok");
    OFF(c_ep, "out_endpoint");
    OFF(c_out_left, "out_left");
    OFF(c_out_pending, "out_pending");
    OFF(c_in_left, "in_left");
    OFF(c_in_buf, "in_buf");
    OFF(c_in_cid, "in_cid");
    OFF(c_in_name, "in_name");
#undef OFF
    PyObject *gt = PyObject_GetAttrString((PyObject *)t->tp_base, "gettimeout");
    if (gt == NULL)
        return NULL;
    Py_XSETREF(st->gettimeout, gt);
    PyObject **dst[] = {&st->objs, &st->current, &st->dflt, &st->tracer, &st->fault,
                        &st->prefix, &st->real_sendall, &st->real_recv, &st->py_send,
                        &st->py_sendall, &st->py_recv, (PyObject **)&st->conn_type,
                        (PyObject **)&st->socket_type};
    PyObject *src[] = {objs, cur, dflt, tracer, fault, prefix, rsa, rr, ps, psa, pr, connt,
                       sockt};
    for (int i = 0; i < 13; i++) {
        Py_INCREF(src[i]);
        Py_XSETREF(*dst[i], src[i]);
    }
    PyObject *a = PyDescr_NewMethod(t, &sock_send_def);
    PyObject *b = PyDescr_NewMethod(t, &sock_sendall_def);
    PyObject *c = PyDescr_NewMethod(t, &sock_recv_def);
    if (a == NULL || b == NULL || c == NULL) {
        Py_XDECREF(a);
        Py_XDECREF(b);
        Py_XDECREF(c);
        return NULL;
    }
    st->ready = 1;
    return Py_BuildValue("(NNN)", a, b, c);
}

static PyMethodDef methods[] = {
    {"setup", setup, METH_VARARGS,
     "setup(socket.socket, Conn, _objs, current_var, default_process, _tracer, _fault, "
     "marker_prefix, real_sendall, real_recv, py_send, py_sendall, py_recv) -> "
     "(send, sendall, recv): method descriptors for socket.socket."},
    {NULL, NULL, 0, NULL},
};

static int
mod_exec(PyObject *mod)
{
    sock_state *st = PyModule_GetState(mod);
    if (the_state != NULL) {
        PyErr_SetString(PyExc_ImportError, "cutscope.integrations.sockets._fastsock: "
                        "one module object per process");
        return -1;
    }
#define INTERN(var, s) if ((st->var = PyUnicode_InternFromString(s)) == NULL) return -1
    INTERN(n_gettimeout, "gettimeout");
    INTERN(n_fast_lp, "fast_lp");
    INTERN(n_stok, "stok");
    INTERN(n_rtok, "rtok");
    INTERN(n_out_left, "out_left");
    INTERN(n_out_pending, "out_pending");
    INTERN(n_ep, "out_endpoint");
    INTERN(n_fast_in, "fast_in");
    INTERN(n_in_left, "in_left");
    INTERN(n_in_buf, "in_buf");
    INTERN(n_in_cid, "in_cid");
    INTERN(n_in_name, "in_name");
    INTERN(n_capture, "capture");
    INTERN(n_markers_after, "_markers_after");
    INTERN(n_push, "_push");
    INTERN(n_recv_framed, "recv_framed");
    INTERN(n_block, "block");
    INTERN(w_send, "recording a send");
    INTERN(w_recv, "recording a receive");
#undef INTERN
    if ((st->zero = PyLong_FromLong(0)) == NULL)
        return -1;
    if ((st->kw_block = PyTuple_Pack(1, st->n_block)) == NULL)
        return -1;
    /* The core's entry points; its module stays loaded while this one is. */
    if ((st->core_module = PyImport_ImportModule("cutscope.tracer._fast")) == NULL)
        return -1;
    st->core = PyCapsule_Import(CUTSCOPE_CORE_CAPSULE, 0);
    if (st->core == NULL)
        return -1;
    if (st->core->version != CUTSCOPE_CORE_API_VERSION) {
        PyErr_Format(PyExc_ImportError, "cutscope.tracer._fast's C API is version %d, "
                     "this module needs %d", st->core->version, CUTSCOPE_CORE_API_VERSION);
        return -1;
    }
    /* The state is reached through the_state from now on, and the module object lives
     * until the process ends (a reference that is never given back): it never dangles. */
    the_state = st;
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
    .m_name = "_fastsock",
    .m_doc = "The socket integration's hot paths in C (optional).",
    .m_size = sizeof(sock_state),
    .m_methods = methods,
    .m_slots = slots,
};

PyMODINIT_FUNC
PyInit__fastsock(void)
{
    return PyModuleDef_Init(&moddef);
}
