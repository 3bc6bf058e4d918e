/* cutscope.tracer._fast: the core's hot paths in C (optional; the pure-Python code is
 * the reference and the fallback).
 *
 * What is here, and only this:
 *   - LogicalProcess.send / LogicalProcess.recv, the core's Lamport events, for the
 *     common case (an OutEndpoint, no keyword arguments); anything else calls the
 *     Python methods they replace.
 *   - The recorder's packed events (Chunk), its batches (take, events, held, expand)
 *     and the "cs2" event blocks of the store (encode, decode).
 *   - The C entry points of the core for an integration's C fast path, exported in the
 *     capsule `_C_API` (tracer/_fastapi.h). The core knows no integration.
 *
 * Locking is the Python code's: the logical process's lock (a _thread.lock, through
 * its acquire/release methods) around the clock and sequence. Between acquire and
 * release no Python code runs (only int, tuple and dict operations on str keys).
 *
 * Slots of LogicalProcess and OutEndpoint (__slots__) are read and written at their
 * offsets (looked up once from the member descriptors); an object whose type is not
 * exactly the configured class takes the Python path.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include "_fast.h"
#include "_fastapi.h"
#include <marshal.h>
#include <time.h>
#include <string.h>

#define CHECK_MASK 255

static inline PyObject *
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return PyLong_FromLongLong((long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
}

static inline int
lock_call(PyObject *lock, PyObject *name)
{
    PyObject *r = PyObject_CallMethodNoArgs(lock, name);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

/* Read an int slot as a long long; -1 with an error set if it is not one. */
static inline int
slot_ll(PyObject *obj, Py_ssize_t off, long long *out)
{
    PyObject *v = SLOT(obj, off);
    if (v == NULL || !PyLong_CheckExact(v)) {
        PyErr_SetString(PyExc_TypeError, "cutscope: clock slot is not an int");
        return -1;
    }
    *out = PyLong_AsLongLong(v);
    if (*out == -1 && PyErr_Occurred())
        return -1;
    return 0;
}

static inline void
slot_set(PyObject *obj, Py_ssize_t off, PyObject *v)  /* steals v */
{
    PyObject *old = SLOT(obj, off);
    SLOT(obj, off) = v;
    Py_XDECREF(old);
}

static inline long long
now_ll(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* ---- packed events ------------------------------------------------------------------
 *
 * The C paths do not build an event tuple (and three ints) per event: they write the
 * event's fields into a Chunk, an array of CHUNK_CAP records that sits in the
 * recorder's buffer (a deque) like one item. Retained until the writer's next batch,
 * the tuples cost the application more than building them (fresh memory for each,
 * freed by another thread on another CPU): a chunk is written in place, one cache line
 * and a bit per event. A record holds references to the process name, kind, channel,
 * msg, nbytes and payload objects, as the tuple did; `encode` writes a record exactly
 * as it writes the tuple, and `rows()` gives the tuples back.
 *
 * Events go into the current chunk while it is the last item of the deque that
 * lp._append appends to; anything else (the writer took it, another item came after
 * it, drop mode popped it, the deque was cleared after a fork, another deque) starts a
 * new chunk. All of it under the GIL with no Python code in between: atomic. */

#define CHUNK_CAP 64

typedef struct {
    PyObject *name, *kind, *channel, *msg, *nbytes, *payload;
    long long seq, lam, wall;
    long long mnum;  /* -1: msg is the message id (or None); else msg is the sender's name
                      * and the id "<msg>#<mnum>" (a framed receive makes no string) */
} evrec;

typedef struct {
    PyObject_HEAD
    Py_ssize_t n;
    evrec r[CHUNK_CAP];
} Chunk;

/* ---- the module's state ------------------------------------------------------------
 *
 * Everything the module keeps lives here, in the module object's state (multi-phase
 * initialisation). The method descriptors installed on LogicalProcess, and the entry
 * points of the capsule, receive a logical process, not the module: they reach this
 * state through `S`, the state of the one module object a process loads (a second one
 * is refused; the module object lives until the process ends). Hence the module
 * declares that it supports one interpreter, and that it needs the GIL: on a
 * free-threaded build, tracer/process.py does not load it. */
typedef struct {
    /* configuration (set once by setup) */
    PyTypeObject *lp_type, *ep_type;
    Py_ssize_t o_name, o_lock, o_clock, o_seq, o_pending, o_incoming, o_snaps, o_append,
        o_check;
    Py_ssize_t e_channel, e_pending;
    PyObject *k_send, *k_recv;    /* the event kinds, the core's own str objects */
    PyObject *py_send, *py_recv;  /* the Python methods replaced */
    PyTypeObject *lock_type;      /* _thread.LockType */
    PyObject *m_locked;           /* _thread.LockType.locked */
    /* interned attribute names */
    PyObject *n_acquire, *n_release, *n_record_after_send, *n_closed, *n_messages,
        *n_setdefault;
    /* packed events */
    PyTypeObject *chunk_type;
    PyCFunction deque_append_fn;  /* the C function of deque.append */
    PyTypeObject *deque_type;
    PyObject *cur_deque;          /* the deque cur_chunk was appended to */
    Chunk *cur_chunk;
    Py_ssize_t live_chunks, live_events;  /* chunks alive, and the events they hold */
} fast_state;

static fast_state *S;

static void
chunk_dealloc(Chunk *c)
{
    PyTypeObject *tp = Py_TYPE(c);
    fast_state *st = PyType_GetModuleState(tp);  /* the type keeps its module alive */
    if (st != NULL) {
        st->live_chunks--;
        st->live_events -= c->n;
    }
    for (Py_ssize_t i = 0; i < c->n; i++) {
        evrec *e = &c->r[i];
        Py_XDECREF(e->name);
        Py_XDECREF(e->kind);
        Py_XDECREF(e->channel);
        Py_XDECREF(e->msg);
        Py_XDECREF(e->nbytes);
        Py_XDECREF(e->payload);
    }
    tp->tp_free((PyObject *)c);
    Py_DECREF(tp);
}

static Py_ssize_t
chunk_len(Chunk *c)
{
    return c->n;
}

static PyObject *msg_id(PyObject *name, unsigned long long seq);

/* A message id: msg itself when mnum < 0, else "<msg>#<mnum>" (new references). */
static inline PyObject *
msg_of(PyObject *msg, long long mnum)
{
    if (mnum < 0) {
        Py_INCREF(msg);
        return msg;
    }
    return msg_id(msg, (unsigned long long)mnum);
}

/* The event tuple of a record: (name, seq, lamport, wall_ns, kind, channel, msg, nbytes,
 * payload, None). */
static PyObject *
rec_tuple(const evrec *e)
{
    PyObject *s = PyLong_FromLongLong(e->seq), *c = PyLong_FromLongLong(e->lam),
             *w = PyLong_FromLongLong(e->wall), *m = msg_of(e->msg, e->mnum);
    if (s == NULL || c == NULL || w == NULL || m == NULL) {
        Py_XDECREF(s);
        Py_XDECREF(c);
        Py_XDECREF(w);
        Py_XDECREF(m);
        return NULL;
    }
    return Py_BuildValue("(ONNNOONOOO)", e->name, s, c, w, e->kind, e->channel, m,
                         e->nbytes, e->payload, Py_None);
}

static PyObject *
chunk_rows(Chunk *c, PyObject *Py_UNUSED(ignored))
{
    PyObject *out = PyList_New(c->n);
    for (Py_ssize_t i = 0; out != NULL && i < c->n; i++) {
        PyObject *t = rec_tuple(&c->r[i]);
        if (t == NULL)
            Py_CLEAR(out);
        else
            PyList_SET_ITEM(out, i, t);
    }
    return out;
}

static PyMethodDef chunk_methods[] = {
    {"rows", (PyCFunction)chunk_rows, METH_NOARGS, "rows() -> list of the event tuples."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot chunk_slots[] = {
    {Py_tp_dealloc, chunk_dealloc},
    {Py_sq_length, chunk_len},
    {Py_tp_methods, chunk_methods},
    {Py_tp_doc, "Up to 64 events of the C paths, packed (see _fast.c)."},
    {0, NULL},
};

static PyType_Spec chunk_spec = {
    .name = "cutscope.tracer._fast.Chunk",
    .basicsize = sizeof(Chunk),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = chunk_slots,
};

/* Whether ch is the last item of the deque dq (O(1) for the last index). */
static inline int
last_of(PyObject *dq, PyObject *ch)
{
    Py_ssize_t n = PyObject_Size(dq);
    if (n <= 0) {
        PyErr_Clear();
        return 0;
    }
    PyObject *last = PySequence_GetItem(dq, n - 1);
    if (last == NULL) {
        PyErr_Clear();
        return 0;
    }
    Py_DECREF(last);
    return last == ch;
}

static int append_event(PyObject *lp, long long seq, PyObject *ev);
static PyObject *event_tuple(PyObject *lp, PyObject *s, PyObject *c, PyObject *kind,
                             PyObject *channel, PyObject *msg, PyObject *nbytes,
                             PyObject *payload);

/* Record the event: in a chunk when lp._append is a deque's own append, else as the
 * tuple passed to lp._append. Borrowed arguments; the message id is msg_of(msg, mnum). */
static int
put_event(PyObject *lp, PyObject *s, PyObject *c, long long seq, long long clk,
          PyObject *kind, PyObject *channel, PyObject *msg, long long mnum, PyObject *nbytes,
          PyObject *payload)
{
    PyObject *app = SLOT(lp, S->o_append), *name = SLOT(lp, S->o_name), *dq;
    if (app == NULL || S->deque_append_fn == NULL || !PyCFunction_Check(app) ||
        PyCFunction_GET_FUNCTION(app) != S->deque_append_fn ||
        (dq = PyCFunction_GET_SELF(app)) == NULL || !Py_IS_TYPE(dq, S->deque_type)) {
        PyObject *m = msg_of(msg, mnum);
        if (m == NULL)
            return -1;
        int r = append_event(lp, seq, event_tuple(lp, s, c, kind, channel, m, nbytes, payload));
        Py_DECREF(m);
        return r;
    }
    Chunk *ch = S->cur_chunk;
    if (ch == NULL || ch->n >= CHUNK_CAP || S->cur_deque != dq || !last_of(dq, (PyObject *)ch)) {
        ch = PyObject_New(Chunk, S->chunk_type);
        if (ch == NULL)
            return -1;
        ch->n = 0;
        S->live_chunks++;
        PyObject *r = PyObject_CallOneArg(app, (PyObject *)ch);
        if (r == NULL) {
            Py_DECREF(ch);
            return -1;
        }
        Py_DECREF(r);
        Py_INCREF(dq);
        Py_XSETREF(S->cur_deque, dq);
        Py_XSETREF(S->cur_chunk, ch);  /* our reference */
    }
    evrec *e = &ch->r[ch->n];
    PyObject *objs[6] = {name, kind, channel, msg, nbytes, payload};
    for (int i = 0; i < 6; i++)
        Py_INCREF(objs[i]);
    e->name = name;
    e->kind = kind;
    e->channel = channel;
    e->msg = msg;
    e->nbytes = nbytes;
    e->payload = payload;
    e->seq = seq;
    e->lam = clk;
    e->wall = now_ll();
    e->mnum = mnum;
    ch->n++;
    S->live_events++;
    if (!(seq & CHECK_MASK)) {
        PyObject *chk = SLOT(lp, S->o_check);
        if (chk != NULL) {
            PyObject *r = PyObject_CallNoArgs(chk);
            if (r == NULL)
                return -1;
            Py_DECREF(r);
        }
    }
    return 0;
}

/* After the event: the buffer bound check and the safe point of a process that never
 * receives (LogicalProcess.send's tail). */
static int
append_event(PyObject *lp, long long seq, PyObject *ev)  /* steals ev */
{
    PyObject *app = SLOT(lp, S->o_append);
    if (ev == NULL)
        return -1;
    if (app == NULL) {
        Py_DECREF(ev);
        PyErr_SetString(PyExc_AttributeError, "_append");
        return -1;
    }
    PyObject *r = PyObject_CallOneArg(app, ev);
    Py_DECREF(ev);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    if (!(seq & CHECK_MASK)) {
        PyObject *chk = SLOT(lp, S->o_check);
        if (chk != NULL) {
            r = PyObject_CallNoArgs(chk);
            if (r == NULL)
                return -1;
            Py_DECREF(r);
        }
    }
    return 0;
}

/* The critical section of a logical process (the Python code's `with self.lock`).
 *
 * enter() returns 1 when it took the lock, 0 when it did not need to: with the GIL,
 * a section that runs no Python code and never releases the GIL is atomic for every
 * other thread, so when the lock is free (no Python section is in progress, and none
 * can start before we are done) it is skipped. Such a section must not allocate
 * GC-tracked objects (a collection may run finalizers, i.e. Python code): the callers
 * allocate before, or take the lock (`force`). -1: error. */
static inline int
enter(PyObject *lock, int force)
{
#ifndef Py_GIL_DISABLED
    if (!force && Py_IS_TYPE(lock, S->lock_type)) {
        PyObject *r = PyObject_Vectorcall(S->m_locked, &lock, 1, NULL);
        if (r == NULL)
            return -1;
        int busy = r != Py_False;
        Py_DECREF(r);
        if (!busy)
            return 0;
    }
#endif
    return lock_call(lock, S->n_acquire) < 0 ? -1 : 1;
}

/* Leave the section; `held` is enter()'s answer. Keeps a pending error. */
static inline int
leave(PyObject *lock, int held)
{
    if (!held)
        return 0;
    if (PyErr_Occurred()) {
        PyObject *et, *ev, *tb;
        PyErr_Fetch(&et, &ev, &tb);
        lock_call(lock, S->n_release);
        PyErr_Clear();
        PyErr_Restore(et, ev, tb);
        return -1;
    }
    return lock_call(lock, S->n_release);
}

/* The event tuple (name, seq, lamport, wall_ns, kind, channel, msg, nbytes, payload,
 * None); borrowed arguments, s and c included. */
static PyObject *
event_tuple(PyObject *lp, PyObject *s, PyObject *c, PyObject *kind, PyObject *channel,
            PyObject *msg, PyObject *nbytes, PyObject *payload)
{
    PyObject *now = now_ns();
    if (now == NULL)
        return NULL;
    PyObject *ev = PyTuple_New(10);
    if (ev == NULL) {
        Py_DECREF(now);
        return NULL;
    }
    PyObject *items[10] = {SLOT(lp, S->o_name), s, c, now, kind, channel, msg, nbytes, payload,
                           Py_None};
    for (int i = 0; i < 10; i++) {
        if (i != 3)
            Py_INCREF(items[i]);
        PyTuple_SET_ITEM(ev, i, items[i]);
    }
    /* A tuple of strs, ints, bytes and None can never be part of a cycle: untracked
     * now (CPython would untrack it at its first collection), the events waiting in
     * the recorder's buffer add nothing to the collector's passes over the heap. */
    if (PyUnicode_CheckExact(items[0]) && PyLong_CheckExact(nbytes) &&
        (channel == Py_None || PyUnicode_CheckExact(channel)) &&
        (msg == Py_None || PyUnicode_CheckExact(msg)) &&
        (payload == Py_None || PyBytes_CheckExact(payload)))
        PyObject_GC_UnTrack(ev);
    return ev;
}

/* LogicalProcess.send(ep, nbytes, payload) for an OutEndpoint ep: (seq, lamport,
 * markers). NULL with an error set on failure. lp and ep have the exact types. */
static PyObject *
core_send(PyObject *lp, PyObject *ep, PyObject *nbytes, PyObject *payload)
{
    long long seq, clk;
    PyObject *lock = SLOT(lp, S->o_lock), *markers = NULL, *channel, *s = NULL, *c = NULL;
    PyObject *fresh = NULL;
    int held, force = 0;
    if (lock == NULL || SLOT(lp, S->o_name) == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cutscope: logical process not initialised");
        return NULL;
    }
    Py_INCREF(lock);
again:
    {
        PyObject *pend0 = SLOT(ep, S->e_pending);
        if (pend0 != NULL && !PyList_CheckExact(pend0))
            force = 1;
        else if (pend0 != NULL && PyList_GET_SIZE(pend0) && fresh == NULL &&
                 (fresh = PyList_New(0)) == NULL)
            goto fail;
    }
    held = enter(lock, force);
    if (held < 0)
        goto fail;
    if (slot_ll(lp, S->o_seq, &seq) < 0 || slot_ll(lp, S->o_clock, &clk) < 0)
        goto fail_in;
    PyObject *pend = SLOT(ep, S->e_pending);
    int has_markers = pend != NULL && nonempty(pend) > 0;
    if (has_markers && fresh == NULL) {
        if (!held) {  /* markers arrived meanwhile: allocate outside, then again */
            force = 1;
            goto again;
        }
        if ((fresh = PyList_New(0)) == NULL)
            goto fail_in;
    }
    seq += 1;
    clk += 1;
    s = PyLong_FromLongLong(seq);
    c = PyLong_FromLongLong(clk);
    if (s == NULL || c == NULL)
        goto fail_in;
    Py_INCREF(s);
    slot_set(lp, S->o_seq, s);
    Py_INCREF(c);
    slot_set(lp, S->o_clock, c);
    if (has_markers) {
        Py_INCREF(pend);
        markers = pend;
        slot_set(ep, S->e_pending, fresh);
        fresh = NULL;
    }
    else {
        Py_INCREF(Py_None);
        markers = Py_None;
    }
    channel = SLOT(ep, S->e_channel);
    if (channel == NULL)
        channel = Py_None;
    Py_INCREF(channel);
    if (leave(lock, held) < 0) {
        Py_DECREF(channel);
        goto fail;
    }
    Py_CLEAR(lock);
    Py_XDECREF(fresh);
    fresh = NULL;

    int rc = put_event(lp, s, c, seq, clk, S->k_send, channel, Py_None, -1, nbytes, payload);
    Py_DECREF(channel);
    if (rc < 0)
        goto fail;
    /* A process that never receives starts an asked-for snapshot at the exit of its send. */
    int pending = nonempty(SLOT(lp, S->o_pending));
    if (pending < 0)
        goto fail;
    if (pending && nonempty(SLOT(lp, S->o_incoming)) == 0) {
        PyObject *r = PyObject_CallMethodNoArgs(lp, S->n_record_after_send);
        if (r == NULL)
            goto fail;
        Py_DECREF(r);
    }
    PyObject *out = PyTuple_New(3);
    if (out == NULL)
        goto fail;
    PyTuple_SET_ITEM(out, 0, s);
    PyTuple_SET_ITEM(out, 1, c);
    PyTuple_SET_ITEM(out, 2, markers);
    return out;

fail_in:
    leave(lock, held);
fail:
    Py_XDECREF(lock);
    Py_XDECREF(fresh);
    Py_XDECREF(s);
    Py_XDECREF(c);
    Py_XDECREF(markers);
    return NULL;
}


/* In-transit bookkeeping of LogicalProcess.recv (under the lock): the message joins the
 * channel state of every unfinished snapshot that still records `channel`. */
static int
recv_into_snaps(PyObject *snaps, PyObject *channel, PyObject *msg, PyObject *nbytes,
                PyObject *payload, PyObject *value)
{
    PyObject *vals = PyObject_CallMethod(snaps, "values", NULL);
    if (vals == NULL)
        return -1;
    PyObject *it = PyObject_GetIter(vals);
    Py_DECREF(vals);
    if (it == NULL)
        return -1;
    PyObject *s;
    while ((s = PyIter_Next(it)) != NULL) {
        PyObject *closed = PyObject_GetAttr(s, S->n_closed);
        int in = closed == NULL ? -1 : PySequence_Contains(closed, channel);
        Py_XDECREF(closed);
        if (in < 0)
            goto fail_s;
        if (!in) {
            PyObject *msgs = PyObject_GetAttr(s, S->n_messages);
            if (msgs == NULL)
                goto fail_s;
            PyObject *empty = PyList_New(0);
            PyObject *lst = empty == NULL ? NULL :
                PyObject_CallMethodObjArgs(msgs, S->n_setdefault, channel, empty, NULL);
            Py_XDECREF(empty);
            Py_DECREF(msgs);
            if (lst == NULL)
                goto fail_s;
            PyObject *rec = PyTuple_Pack(4, msg, nbytes, payload, value);
            int r = rec == NULL ? -1 : PyList_Append(lst, rec);
            Py_XDECREF(rec);
            Py_DECREF(lst);
            if (r < 0)
                goto fail_s;
        }
        Py_DECREF(s);
        continue;
    fail_s:
        Py_DECREF(s);
        Py_DECREF(it);
        return -1;
    }
    Py_DECREF(it);
    return PyErr_Occurred() ? -1 : 0;
}

/* LogicalProcess.recv(channel, msg, stamp, nbytes, payload, value) -> seq (a new int
 * reference), or NULL with an error. `channel` is None or an exact str; `stamp` is
 * None or an int that fits (st, has); the message id is msg_of(msg, mnum). */
static PyObject *
core_recv(PyObject *lp, PyObject *channel, PyObject *msg, long long mnum, PyObject *stamp,
          PyObject *nbytes, PyObject *payload, PyObject *value, long long st, int has_stamp)
{
    long long seq, clk;
    PyObject *lock = SLOT(lp, S->o_lock), *s = NULL, *c = NULL;
    if (lock == NULL || SLOT(lp, S->o_name) == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cutscope: logical process not initialised");
        return NULL;
    }
    Py_INCREF(lock);
    /* The lock is needed when a snapshot records this channel (Python code runs then). */
    PyObject *snaps = SLOT(lp, S->o_snaps), *inc = SLOT(lp, S->o_incoming);
    int force = snaps == NULL || !PyDict_CheckExact(snaps) || PyDict_GET_SIZE(snaps) ||
        inc == NULL || !PyDict_CheckExact(inc);
    int held = enter(lock, force);
    if (held < 0)
        goto fail;
    if (slot_ll(lp, S->o_seq, &seq) < 0 || slot_ll(lp, S->o_clock, &clk) < 0)
        goto fail_in;
    seq += 1;
    clk = ((!has_stamp || clk > st) ? clk : st) + 1;
    s = PyLong_FromLongLong(seq);
    c = PyLong_FromLongLong(clk);
    if (s == NULL || c == NULL)
        goto fail_in;
    Py_INCREF(s);
    slot_set(lp, S->o_seq, s);
    Py_INCREF(c);
    slot_set(lp, S->o_clock, c);
    inc = SLOT(lp, S->o_incoming);
    if (inc == NULL || !PyDict_CheckExact(inc)) {
        PyErr_SetString(PyExc_TypeError, "cutscope: incoming is not a dict");
        goto fail_in;
    }
    if (channel != Py_None) {
        int has = PyDict_Contains(inc, channel);
        if (has < 0 || (!has && PyDict_SetItem(inc, channel, Py_True) < 0))
            goto fail_in;
    }
    if (held) {
        snaps = SLOT(lp, S->o_snaps);
        int ns = nonempty(snaps);
        if (ns < 0)
            goto fail_in;
        if (ns) {
            PyObject *fifo = PyDict_GetItemWithError(inc, channel);  /* borrowed */
            if (fifo == NULL && PyErr_Occurred())
                goto fail_in;
            int t = fifo == NULL ? 0 : PyObject_IsTrue(fifo);
            if (t > 0) {
                PyObject *m = msg_of(msg, mnum);
                t = m == NULL ? -1 : recv_into_snaps(snaps, channel, m, nbytes, payload, value);
                Py_XDECREF(m);
            }
            if (t < 0)
                goto fail_in;
        }
    }
    if (leave(lock, held) < 0)
        goto fail;
    Py_CLEAR(lock);

    int rc = put_event(lp, s, c, seq, clk, S->k_recv, channel, msg, mnum, nbytes, payload);
    Py_DECREF(c);
    c = NULL;
    if (rc < 0)
        goto fail;
    return s;

fail_in:
    leave(lock, held);
fail:
    Py_XDECREF(lock);
    Py_XDECREF(s);
    Py_XDECREF(c);
    return NULL;
}


/* A stamp the C path can compare: None, or an exact int in [0, 2**63). */
static inline int
stamp_value(PyObject *stamp, long long *st, int *has)
{
    if (stamp == Py_None) {
        *has = 0;
        *st = 0;
        return 1;
    }
    if (!PyLong_CheckExact(stamp))
        return 0;
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(stamp, &overflow);
    if (overflow || v < 0 || (v == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return 0;
    }
    *st = v;
    *has = 1;
    return 1;
}


/* ---- LogicalProcess.send / recv -------------------------------------------------- */

static PyObject *
lp_send(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    /* send(ep, nbytes, payload=None, channel=None) */
    if (kwnames == NULL && (nargs == 2 || nargs == 3) && Py_IS_TYPE(self, S->lp_type) &&
        Py_IS_TYPE(args[0], S->ep_type))
        return core_send(self, args[0], args[1], nargs == 3 ? args[2] : Py_None);
    return call_with_self(S->py_send, self, args, nargs, kwnames);
}

static PyObject *
lp_recv(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    /* recv(channel, msg, stamp, nbytes, payload=None, value=None) */
    long long st;
    int has;
    if (kwnames == NULL && nargs >= 4 && nargs <= 6 && Py_IS_TYPE(self, S->lp_type) &&
        (args[0] == Py_None || PyUnicode_CheckExact(args[0])) &&
        stamp_value(args[2], &st, &has))
        return core_recv(self, args[0], args[1], -1, args[2], args[3],
                         nargs > 4 ? args[4] : Py_None, nargs > 5 ? args[5] : Py_None,
                         st, has);
    return call_with_self(S->py_recv, self, args, nargs, kwnames);
}

static PyMethodDef lp_send_def = {"send", (PyCFunction)(void (*)(void))lp_send,
                                  METH_FASTCALL | METH_KEYWORDS,
                                  "LogicalProcess.send (C; see process.py)"};
static PyMethodDef lp_recv_def = {"recv", (PyCFunction)(void (*)(void))lp_recv,
                                  METH_FASTCALL | METH_KEYWORDS,
                                  "LogicalProcess.recv (C; see process.py)"};

/* "<name>#<seq>" (the message id), without the formatting machinery for ASCII names. */
static PyObject *
msg_id(PyObject *name, unsigned long long seq)
{
    if (!PyUnicode_CheckExact(name) || !PyUnicode_IS_ASCII(name))
        return PyUnicode_FromFormat("%S#%llu", name, seq);
    char digits[24];
    int k = 0;
    do {
        digits[k++] = (char)('0' + seq % 10);
        seq /= 10;
    } while (seq);
    Py_ssize_t nl = PyUnicode_GET_LENGTH(name);
    PyObject *s = PyUnicode_New(nl + 1 + k, 127);
    if (s == NULL)
        return NULL;
    Py_UCS1 *d = PyUnicode_1BYTE_DATA(s);
    memcpy(d, PyUnicode_1BYTE_DATA(name), nl);
    d[nl] = '#';
    for (int i = 0; i < k; i++)
        d[nl + 1 + i] = (Py_UCS1)digits[k - 1 - i];
    return s;
}


/* ---- the C entry points for the integrations' fast paths (tracer/_fastapi.h) ---- */

static int
api_is_process(PyObject *obj)
{
    return S->lp_type != NULL && Py_IS_TYPE(obj, S->lp_type);
}

static int
api_is_endpoint(PyObject *obj)
{
    return S->ep_type != NULL && Py_IS_TYPE(obj, S->ep_type);
}

static int
api_asked(PyObject *lp)
{
    return nonempty(SLOT(lp, S->o_pending));
}

static int
api_recording(PyObject *lp)
{
    return nonempty(SLOT(lp, S->o_snaps));
}

static int
api_markers_waiting(PyObject *ep)
{
    return nonempty(SLOT(ep, S->e_pending));
}

static PyObject *
api_send(PyObject *lp, PyObject *ep, PyObject *nbytes, PyObject *payload)
{
    return core_send(lp, ep, nbytes, payload);
}

static PyObject *
api_recv(PyObject *lp, PyObject *channel, PyObject *msg, long long mnum, PyObject *stamp,
         PyObject *nbytes, PyObject *payload)
{
    long long st;
    int has;
    if ((channel == Py_None || PyUnicode_CheckExact(channel)) && stamp_value(stamp, &st, &has))
        return core_recv(lp, channel, msg, mnum, stamp, nbytes, payload, Py_None, st, has);
    PyObject *m = msg_of(msg, mnum);
    if (m == NULL)
        return NULL;
    PyObject *a[5] = {channel, m, stamp, nbytes, payload};
    PyObject *r = call_with_self(S->py_recv, lp, a, 5, NULL);
    Py_DECREF(m);
    return r;
}

static const cutscope_core_api core_api = {
    .version = CUTSCOPE_CORE_API_VERSION,
    .is_process = api_is_process,
    .is_endpoint = api_is_endpoint,
    .asked = api_asked,
    .recording = api_recording,
    .markers_waiting = api_markers_waiting,
    .send = api_send,
    .recv = api_recv,
    .msg_id = msg_id,
};

/* ---- the recorder ------------------------------------------------------------------ */

/* The events an item of the recorder's buffer holds: a chunk's count, else 1. */
static inline Py_ssize_t
item_events(PyObject *x)
{
    return Py_IS_TYPE(x, S->chunk_type) ? ((Chunk *)x)->n : 1;
}

/* take(deque, n, max_events=-1) -> list: the first items of the deque, popped, up to n
 * items and (when >= 0) until they hold max_events events (the recorder's batch; what
 * `[buf.popleft() for _ in range(n)]` does, in one call). */
static PyObject *
take(PyObject *mod, PyObject *args)
{
    PyObject *dq;
    Py_ssize_t n, most = -1, got = 0;
    if (!PyArg_ParseTuple(args, "On|n:take", &dq, &n, &most))
        return NULL;
    PyObject *pop = PyObject_GetAttrString(dq, "popleft");
    if (pop == NULL)
        return NULL;
    PyObject *out = PyList_New(0);
    for (Py_ssize_t i = 0; out != NULL && i < n && (most < 0 || got < most); i++) {
        PyObject *x = PyObject_CallNoArgs(pop);
        if (x == NULL) {
            if (PyErr_ExceptionMatches(PyExc_IndexError)) {
                PyErr_Clear();  /* fewer than n: what there is */
                break;
            }
            Py_CLEAR(out);
            break;
        }
        got += item_events(x);
        int r = PyList_Append(out, x);
        Py_DECREF(x);
        if (r < 0)
            Py_CLEAR(out);
    }
    Py_DECREF(pop);
    return out;
}

/* events(items) -> int: the events the items hold (chunks count their records). */
static PyObject *
events(PyObject *mod, PyObject *items)
{
    PyObject *it = PyObject_GetIter(items), *x;
    if (it == NULL)
        return NULL;
    Py_ssize_t total = 0;
    while ((x = PyIter_Next(it)) != NULL) {
        total += item_events(x);
        Py_DECREF(x);
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
        return NULL;
    return PyLong_FromSsize_t(total);
}

/* held(buffer) -> int, in O(1): the buffer's items, counting every chunk alive as the
 * events it holds. At least the events in the buffer (chunks still being written by
 * the writer count too: the memory the tracer holds), for the buffer's bound. */
static PyObject *
held(PyObject *mod, PyObject *buf)
{
    Py_ssize_t n = PyObject_Length(buf);
    if (n < 0)
        return NULL;
    return PyLong_FromSsize_t(n - S->live_chunks + S->live_events);
}

/* expand(items) -> list of event tuples: the chunks' records as tuples, in place. */
static PyObject *
expand(PyObject *mod, PyObject *items)
{
    PyObject *it = PyObject_GetIter(items), *x;
    if (it == NULL)
        return NULL;
    PyObject *out = PyList_New(0);
    while (out != NULL && (x = PyIter_Next(it)) != NULL) {
        if (Py_IS_TYPE(x, S->chunk_type)) {
            Chunk *c = (Chunk *)x;
            for (Py_ssize_t i = 0; out != NULL && i < c->n; i++) {
                PyObject *t = rec_tuple(&c->r[i]);
                if (t == NULL || PyList_Append(out, t) < 0)
                    Py_CLEAR(out);
                Py_XDECREF(t);
            }
        }
        else if (PyList_Append(out, x) < 0)
            Py_CLEAR(out);
        Py_DECREF(x);
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
        Py_CLEAR(out);
    return out;
}

/* ---- event blocks: the "cs2" encoding (store.encode_block / decode_block) ---------------
 *
 * cs2 := "CS2\0" varint(nstrings) { varint(len) utf-8 }* varint(nrows) row*
 * row := 0x02 varint(process) zz(seq - seq') zz(lamport - lamport') zz(wall - wall')
 *             varint(kind) opt(channel) msg varint(nbytes)           (payload, data: None)
 *      | 0x01 varint(len) marshal(version 4) of the stored tuple      (anything else)
 * msg := varint(0)                         None
 *      | varint(2 i + 1)                   string i
 *      | varint(2 i + 2) zz(n - n'_i)      "<string i>#<n>" (a message id: n in decimal)
 * process, kind and channel are string indexes, opt() is 0 for None or index + 1; zz()
 * is the zigzag varint of a difference. seq' and lamport' are one more than the
 * previous 0x02 row's of the same process (0 at first): consecutive events of a process
 * cost a byte each; wall' is the previous 0x02 row's (0 at first), n'_i one more than
 * the previous n of a message id on string i (0 at first). A string is written once per block for each distinct
 * object (identity), or for each distinct sender name of a message id (content); ints
 * in [0, 2**63). cs1 (still read) is the same with 0x00 rows: varint(process)
 * varint(seq) varint(lamport) zz(wall - wall') varint(kind) opt(channel) opt(msg)
 * varint(nbytes). The Python reader (store.decode_cs) is the reference for both. */

typedef struct {
    char *buf;
    Py_ssize_t len, cap;
} wbuf;

static int
wb_grow(wbuf *b, Py_ssize_t need)
{
    if (b->len + need <= b->cap)
        return 0;
    Py_ssize_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + need)
        cap *= 2;
    char *nb = PyMem_Realloc(b->buf, cap);
    if (nb == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->buf = nb;
    b->cap = cap;
    return 0;
}

static inline int
wb_varint(wbuf *b, unsigned long long v)
{
    if (wb_grow(b, 10) < 0)
        return -1;
    while (v >= 0x80) {
        b->buf[b->len++] = (char)(v | 0x80);
        v >>= 7;
    }
    b->buf[b->len++] = (char)v;
    return 0;
}

static inline int
wb_bytes(wbuf *b, const char *p, Py_ssize_t n)
{
    if (wb_grow(b, n) < 0)
        return -1;
    memcpy(b->buf + b->len, p, n);
    b->len += n;
    return 0;
}

/* A message id's sender name in the string table, by content (a slice of the id). */
typedef struct {
    const char *p;
    Py_ssize_t len, idx;
    size_t h;
} centry;

/* The string table: str object (identity) -> index, open addressing on the pointer;
 * sender names of message ids (content) -> index; and, by index, the previous seq and
 * lamport of a process and the previous number of a message id (the deltas of 0x02). */
typedef struct {
    PyObject **keys;
    Py_ssize_t *vals;
    Py_ssize_t mask, n;
    wbuf out;  /* the table as written */
    centry *ce;
    Py_ssize_t cmask, cn;
    long long *last;  /* 3 per index: seq, lamport, message number (each + 1) */
    Py_ssize_t lcap;
} strtab;

static int
st_init(strtab *t, Py_ssize_t hint)
{
    Py_ssize_t size = 64;
    while (size < hint * 2)
        size *= 2;
    t->keys = PyMem_Calloc(size, sizeof(PyObject *));
    t->vals = PyMem_Malloc(size * sizeof(Py_ssize_t));
    t->mask = size - 1;
    t->n = 0;
    t->out.buf = NULL;
    t->out.len = t->out.cap = 0;
    t->ce = PyMem_Calloc(64, sizeof(centry));
    t->cmask = 63;
    t->cn = 0;
    t->last = NULL;
    t->lcap = 0;
    if (t->keys == NULL || t->vals == NULL || t->ce == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static void
st_free(strtab *t)
{
    PyMem_Free(t->keys);
    PyMem_Free(t->vals);
    PyMem_Free(t->out.buf);
    PyMem_Free(t->ce);
    PyMem_Free(t->last);
}

/* Write string bytes into the table as index t->n (its delta state zeroed); the index,
 * or -1 with an error. */
static Py_ssize_t
st_add(strtab *t, const char *u, Py_ssize_t n)
{
    if (wb_varint(&t->out, (unsigned long long)n) < 0 || wb_bytes(&t->out, u, n) < 0)
        return -1;
    if (t->n >= t->lcap) {
        Py_ssize_t cap = t->lcap ? t->lcap * 2 : 64;
        long long *l = PyMem_Realloc(t->last, (size_t)cap * 3 * sizeof(long long));
        if (l == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        t->last = l;
        t->lcap = cap;
    }
    memset(t->last + 3 * t->n, 0, 3 * sizeof(long long));
    return t->n++;
}

static int
st_rehash(strtab *t)
{
    Py_ssize_t size = (t->mask + 1) * 2;
    PyObject **keys = PyMem_Calloc(size, sizeof(PyObject *));
    Py_ssize_t *vals = PyMem_Malloc(size * sizeof(Py_ssize_t));
    if (keys == NULL || vals == NULL) {
        PyMem_Free(keys);
        PyMem_Free(vals);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i <= t->mask; i++) {
        if (t->keys[i] == NULL)
            continue;
        size_t h = ((size_t)t->keys[i] >> 4) & (size - 1);
        while (keys[h] != NULL)
            h = (h + 1) & (size - 1);
        keys[h] = t->keys[i];
        vals[h] = t->vals[i];
    }
    PyMem_Free(t->keys);
    PyMem_Free(t->vals);
    t->keys = keys;
    t->vals = vals;
    t->mask = size - 1;
    return 0;
}

/* The index of str s (added if new); -1 with an error; -2 if it cannot be written as
 * UTF-8 (a lone surrogate: the row goes as marshal). The rows hold the strings alive
 * for the whole encoding, so their addresses are stable keys. */
static Py_ssize_t
st_index(strtab *t, PyObject *s)
{
    size_t h = ((size_t)s >> 4) & t->mask;
    while (t->keys[h] != NULL) {
        if (t->keys[h] == s)
            return t->vals[h];
        h = (h + 1) & t->mask;
    }
    Py_ssize_t n;
    const char *u = PyUnicode_AsUTF8AndSize(s, &n);
    if (u == NULL) {
        PyErr_Clear();
        return -2;
    }
    Py_ssize_t i = st_add(t, u, n);
    if (i < 0)
        return -1;
    t->keys[h] = s;
    t->vals[h] = i;
    if (t->n * 2 > t->mask && st_rehash(t) < 0)
        return -1;
    return i;
}

/* The index of the sender name u[0:n] (ASCII, inside a message id that the rows hold
 * alive), added if new; -1 with an error. */
static Py_ssize_t
st_name(strtab *t, const char *u, Py_ssize_t n)
{
    size_t h = 1469598103934665603ULL;  /* FNV-1a */
    for (Py_ssize_t k = 0; k < n; k++)
        h = (h ^ (unsigned char)u[k]) * 1099511628211ULL;
    size_t j = h & t->cmask;
    while (t->ce[j].p != NULL) {
        centry *e = &t->ce[j];
        if (e->h == h && e->len == n && memcmp(e->p, u, n) == 0)
            return e->idx;
        j = (j + 1) & t->cmask;
    }
    Py_ssize_t i = st_add(t, u, n);
    if (i < 0)
        return -1;
    t->ce[j] = (centry){u, n, i, h};
    if (++t->cn * 2 > t->cmask) {
        Py_ssize_t size = (t->cmask + 1) * 2;
        centry *ce = PyMem_Calloc(size, sizeof(centry));
        if (ce == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t k = 0; k <= t->cmask; k++) {
            if (t->ce[k].p == NULL)
                continue;
            size_t m = t->ce[k].h & (size - 1);
            while (ce[m].p != NULL)
                m = (m + 1) & (size - 1);
            ce[m] = t->ce[k];
        }
        PyMem_Free(t->ce);
        t->ce = ce;
        t->cmask = size - 1;
    }
    return i;
}

/* A message id "<name>#<n>" with an ASCII name and n in canonical decimal (no leading
 * zero, at most 18 digits): 1, with the name's bytes and n; else 0. */
static inline int
msg_split(PyObject *msg, const char **name, Py_ssize_t *nlen, long long *num)
{
    if (!PyUnicode_IS_COMPACT_ASCII(msg))
        return 0;
    const char *u = (const char *)PyUnicode_1BYTE_DATA(msg);
    Py_ssize_t len = PyUnicode_GET_LENGTH(msg), k = len;
    while (k > 0 && u[k - 1] >= '0' && u[k - 1] <= '9')
        k--;
    Py_ssize_t digits = len - k;
    if (digits == 0 || digits > 18 || k == 0 || u[k - 1] != '#' || (u[k] == '0' && digits > 1))
        return 0;
    long long v = 0;
    for (Py_ssize_t j = k; j < len; j++)
        v = v * 10 + (u[j] - '0');
    *name = u;
    *nlen = k - 1;
    *num = v;
    return 1;
}

/* The zigzag varint of a - b (wrapping: the reader adds it back the same way). */
static inline int
wb_delta(wbuf *b, long long a, long long b0)
{
    long long d = (long long)((unsigned long long)a - (unsigned long long)b0);
    return wb_varint(b, ((unsigned long long)d << 1) ^ (unsigned long long)(d >> 63));
}

static inline int  /* an exact int in [0, 2**63) */
small_uint(PyObject *v, unsigned long long *out)
{
    if (!PyLong_CheckExact(v))
        return 0;
    int overflow = 0;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow || x < 0) {
        PyErr_Clear();
        return 0;
    }
    *out = (unsigned long long)x;
    return 1;
}

/* A compact row (0x02 ...); 1: written, 0: not compact (a str that is not UTF-8), -1:
 * error. ch and msg are None or exact strs; name and kind exact strs; the ints in
 * [0, 2**63). The message id is msg (mnum < 0) or "<msg>#<mnum>" (a chunk's record of
 * a framed receive: msg is the sender's name, indexed by identity). */
static int
enc_compact(strtab *t, wbuf *b, long long *prev, PyObject *name, long long seq,
            long long lam, long long wall, PyObject *kind, PyObject *ch,
            PyObject *msg, long long mnum, unsigned long long nb)
{
    Py_ssize_t ip, ik = -2, ic = -1, im = -1;
    const char *mname = NULL;
    Py_ssize_t mlen = 0;
    int split = 0;
    /* -1: error (set), -2: not UTF-8 (a marshal row); None stays -1 for ic/im */
    ip = st_index(t, name);
    if (ip >= 0)
        ik = st_index(t, kind);
    if (ik >= 0 && ch != Py_None && (ic = st_index(t, ch)) < 0)
        ik = ic;
    if (ik >= 0 && msg != Py_None) {
        if (mnum >= 0) {  /* the name object and the number, as they came */
            split = 1;
            im = st_index(t, msg);
        }
        else {
            split = msg_split(msg, &mname, &mlen, &mnum);
            im = split ? st_name(t, mname, mlen) : st_index(t, msg);
        }
        if (im < 0)
            ik = im;
    }
    if (PyErr_Occurred())
        return -1;
    if (ip < 0 || ik < 0)
        return 0;
    long long *lp = t->last + 3 * ip;
    if (wb_grow(b, 1) < 0)
        return -1;
    b->buf[b->len++] = 2;
    if (wb_varint(b, ip) < 0 || wb_delta(b, seq, lp[0]) < 0 || wb_delta(b, lam, lp[1]) < 0 ||
        wb_delta(b, wall, *prev) < 0 || wb_varint(b, ik) < 0 ||
        wb_varint(b, (unsigned long long)(ic + 1)) < 0)
        return -1;
    lp[0] = seq + 1;
    lp[1] = lam + 1;
    *prev = wall;
    if (msg == Py_None) {
        if (wb_varint(b, 0) < 0)
            return -1;
    }
    else if (!split) {
        if (wb_varint(b, 2 * (unsigned long long)im + 1) < 0)
            return -1;
    }
    else {
        long long *lm = t->last + 3 * im + 2;
        if (wb_varint(b, 2 * (unsigned long long)im + 2) < 0 || wb_delta(b, mnum, *lm) < 0)
            return -1;
        *lm = mnum + 1;
    }
    return wb_varint(b, nb) < 0 ? -1 : 1;
}

static inline int
str_or_none(PyObject *v)
{
    return v == Py_None || PyUnicode_CheckExact(v);
}

/* A tuple row: compact when it can be, else 0x01 and marshal(event_row(row, cap)) when it
 * has a payload or data, marshal(row) otherwise. 0 or -1. */
static int
enc_tuple(strtab *t, wbuf *b, long long *prev, PyObject *r, PyObject *event_row,
          PyObject *cap)
{
    unsigned long long seq, lam, wall, nb;
    if (PyTuple_CheckExact(r) && PyTuple_GET_SIZE(r) == 10 &&
        PyTuple_GET_ITEM(r, 8) == Py_None && PyTuple_GET_ITEM(r, 9) == Py_None &&
        PyUnicode_CheckExact(PyTuple_GET_ITEM(r, 0)) &&
        PyUnicode_CheckExact(PyTuple_GET_ITEM(r, 4)) &&
        str_or_none(PyTuple_GET_ITEM(r, 5)) && str_or_none(PyTuple_GET_ITEM(r, 6)) &&
        small_uint(PyTuple_GET_ITEM(r, 1), &seq) && small_uint(PyTuple_GET_ITEM(r, 2), &lam) &&
        small_uint(PyTuple_GET_ITEM(r, 3), &wall) && small_uint(PyTuple_GET_ITEM(r, 7), &nb)) {
        int w = enc_compact(t, b, prev, PyTuple_GET_ITEM(r, 0), seq, lam, wall,
                            PyTuple_GET_ITEM(r, 4), PyTuple_GET_ITEM(r, 5),
                            PyTuple_GET_ITEM(r, 6), -1, nb);
        if (w != 0)
            return w < 0 ? -1 : 0;
    }
    PyObject *stored;
    if (PyTuple_CheckExact(r) && PyTuple_GET_SIZE(r) == 10 &&
        (PyTuple_GET_ITEM(r, 8) != Py_None || PyTuple_GET_ITEM(r, 9) != Py_None))
        stored = PyObject_CallFunctionObjArgs(event_row, r, cap, NULL);
    else {
        Py_INCREF(r);
        stored = r;
    }
    if (stored == NULL)
        return -1;
    PyObject *m = PyMarshal_WriteObjectToString(stored, 4);
    Py_DECREF(stored);
    if (m == NULL)
        return -1;
    int bad = wb_grow(b, 1) < 0;
    if (!bad) {
        b->buf[b->len++] = 1;
        bad = wb_varint(b, (unsigned long long)PyBytes_GET_SIZE(m)) < 0 ||
            wb_bytes(b, PyBytes_AS_STRING(m), PyBytes_GET_SIZE(m)) < 0;
    }
    Py_DECREF(m);
    return bad ? -1 : 0;
}

/* encode(rows, event_row, cap) -> (bytes, n, wall_ns): the cs1 block of the rows (not
 * compressed; event tuples and chunks), the number of events and the wall clock of the
 * last. A row with a payload or data goes as marshal(event_row(row, cap)). */
static PyObject *
encode(PyObject *mod, PyObject *args)
{
    PyObject *rows, *event_row, *cap;
    if (!PyArg_ParseTuple(args, "O!OO:encode", &PyList_Type, &rows, &event_row, &cap))
        return NULL;
    Py_ssize_t nrows = 0;  /* rows written */
    long long last = 0;    /* wall_ns of the last: from a chunk, */
    PyObject *lastw = NULL;  /* or (borrowed) a tuple's */
    strtab t;
    wbuf b = {NULL, 0, 0};
    PyObject *result = NULL;
    if (st_init(&t, 64) < 0)
        goto done;
    long long prev = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(rows); i++) {
        PyObject *r = PyList_GET_ITEM(rows, i);
        if (!Py_IS_TYPE(r, S->chunk_type)) {
            if (enc_tuple(&t, &b, &prev, r, event_row, cap) < 0)
                goto done;
            nrows++;
            lastw = PyTuple_Check(r) && PyTuple_GET_SIZE(r) > 3 ? PyTuple_GET_ITEM(r, 3) : Py_None;
            continue;
        }
        Chunk *c = (Chunk *)r;
        for (Py_ssize_t k = 0; k < c->n; k++) {
            const evrec *e = &c->r[k];
            unsigned long long nb;
            int w = 0;
            if (e->payload == Py_None && e->seq >= 0 && e->lam >= 0 && e->wall >= 0 &&
                PyUnicode_CheckExact(e->name) && PyUnicode_CheckExact(e->kind) &&
                str_or_none(e->channel) && str_or_none(e->msg) && small_uint(e->nbytes, &nb))
                w = enc_compact(&t, &b, &prev, e->name, e->seq, e->lam, e->wall, e->kind,
                                e->channel, e->msg, e->mnum, nb);
            if (w == 0) {  /* as its tuple */
                PyObject *tup = rec_tuple(e);
                w = tup == NULL ? -1 : enc_tuple(&t, &b, &prev, tup, event_row, cap);
                Py_XDECREF(tup);
            }
            if (w < 0)
                goto done;
            nrows++;
            last = e->wall;
            lastw = NULL;
        }
    }
    {
        wbuf head = {NULL, 0, 0};
        if (wb_bytes(&head, "CS2\0", 4) < 0 || wb_varint(&head, (unsigned long long)t.n) < 0 ||
            wb_bytes(&head, t.out.buf, t.out.len) < 0 ||
            wb_varint(&head, (unsigned long long)nrows) < 0) {
            PyMem_Free(head.buf);
            goto done;
        }
        PyObject *data = PyBytes_FromStringAndSize(NULL, head.len + b.len);
        if (data != NULL) {
            memcpy(PyBytes_AS_STRING(data), head.buf, head.len);
            if (b.len)
                memcpy(PyBytes_AS_STRING(data) + head.len, b.buf, b.len);
            result = lastw != NULL ? Py_BuildValue("(NnO)", data, nrows, lastw)
                                   : Py_BuildValue("(NnL)", data, nrows, last);
        }
        PyMem_Free(head.buf);
    }
done:
    st_free(&t);
    PyMem_Free(b.buf);
    return result;
}

/* Reading: every length and index is checked; a bad block is a ValueError. */
typedef struct {
    const unsigned char *p, *end;
} rbuf;

static inline int
rb_varint(rbuf *r, unsigned long long *out)
{
    unsigned long long v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->p >= r->end)
            return -1;
        unsigned char c = *r->p++;
        v |= (unsigned long long)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

/* The signed difference of a zigzag varint, as an unsigned to add (wrapping). */
static inline unsigned long long
unzz(unsigned long long z)
{
    return (z >> 1) ^ (0ULL - (z & 1));
}

/* The block's head: magic, string table, row count. 0, or -1 with an exception set
   (a ValueError/UnicodeDecodeError for a damaged block: the callers word it). */
static int
read_head(rbuf *r, Py_ssize_t len, int *v2, PyObject **strs, unsigned long long *ns,
          unsigned long long *nrows)
{
    *strs = NULL;
    if (len < 4 || (memcmp(r->p, "CS1\0", 4) != 0 && memcmp(r->p, "CS2\0", 4) != 0))
        goto bad;
    *v2 = r->p[2] == '2';
    r->p += 4;
    if (rb_varint(r, ns) < 0 || *ns > (unsigned long long)len)
        goto bad;
    if ((*strs = PyList_New((Py_ssize_t)*ns)) == NULL)
        return -1;
    for (unsigned long long i = 0; i < *ns; i++) {
        unsigned long long n;
        if (rb_varint(r, &n) < 0 || n > (unsigned long long)(r->end - r->p))
            goto bad;
        PyObject *s = PyUnicode_DecodeUTF8((const char *)r->p, (Py_ssize_t)n, NULL);
        if (s == NULL)
            return -1;
        PyList_SET_ITEM(*strs, (Py_ssize_t)i, s);
        r->p += n;
    }
    if (rb_varint(r, nrows) < 0 || *nrows > (unsigned long long)len)
        goto bad;
    return 0;
bad:
    if (!PyErr_Occurred())
        PyErr_SetString(PyExc_ValueError, "not a cs1/cs2 event block");
    return -1;
}

/* One compact row (after its tag): string indexes, seq and lamport (cs2: resolved from
   the differences, with ``last``: 3 per string index, as the encoder keeps them), the
   wall-time difference, byte count, and the message: ``msg`` a new reference when cs2
   made an id "<string>#<n>", else NULL and ``im`` the string index + 1 (0: None).
   0, or -1 with an exception set (ValueError for a damaged row). */
typedef struct {
    unsigned long long ip, seq, lam, zz, ik, ic, im, nb;
    PyObject *msg;
} crow;

static int
read_compact(rbuf *r, int v2, PyObject *strs, unsigned long long ns, long long *last, crow *w)
{
    w->msg = NULL;
    if (rb_varint(r, &w->ip) < 0 || rb_varint(r, &w->seq) < 0 || rb_varint(r, &w->lam) < 0 ||
        rb_varint(r, &w->zz) < 0 || rb_varint(r, &w->ik) < 0 || rb_varint(r, &w->ic) < 0 ||
        rb_varint(r, &w->im) < 0)
        goto bad;
    if (w->ip >= ns || w->ik >= ns || w->ic > ns)
        goto bad;
    if (v2) {  /* seq and lamport are differences; msg is None, a string or an id */
        long long *lp = last + 3 * w->ip;
        w->seq = (unsigned long long)lp[0] + unzz(w->seq);
        w->lam = (unsigned long long)lp[1] + unzz(w->lam);
        if (w->seq >= (1ULL << 63) || w->lam >= (1ULL << 63))
            goto bad;
        lp[0] = (long long)w->seq + 1;
        lp[1] = (long long)w->lam + 1;
        if (w->im && (w->im - 1) / 2 >= ns)
            goto bad;
        if (w->im && !(w->im & 1)) {  /* "<string>#<n>" */
            unsigned long long dn;
            long long *lm = last + 3 * ((w->im - 2) / 2) + 2;
            if (rb_varint(r, &dn) < 0)
                goto bad;
            unsigned long long num = (unsigned long long)*lm + unzz(dn);
            if (num >= (1ULL << 63))
                goto bad;
            *lm = (long long)num + 1;
            if ((w->msg = msg_id(PyList_GET_ITEM(strs, (w->im - 2) / 2), num)) == NULL)
                return -1;
        }
        else if (w->im)
            w->im = (w->im - 1) / 2 + 1;  /* as opt(): index + 1 */
    }
    else if (w->im > ns)
        goto bad;
    if (rb_varint(r, &w->nb) < 0) {
        Py_CLEAR(w->msg);
        goto bad;
    }
    return 0;
bad:
    PyErr_SetString(PyExc_ValueError, "not a cs1/cs2 event block");
    return -1;
}

/* decode(data) -> list of 10-tuples (the inverse of encode, payload and data as stored). */
static PyObject *
decode(PyObject *mod, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    rbuf r = {(const unsigned char *)view.buf, (const unsigned char *)view.buf + view.len};
    PyObject *strs = NULL, *out = NULL;
    long long *last = NULL;  /* cs2: 3 per string index, as the encoder keeps them */
    unsigned long long ns, nrows;
    int v2;
    if (read_head(&r, view.len, &v2, &strs, &ns, &nrows) < 0)
        goto fail;
    if (v2 && (last = PyMem_Calloc(ns ? 3 * (size_t)ns : 1, sizeof(long long))) == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    out = PyList_New(0);
    if (out == NULL)
        goto fail;
    long long prev = 0;
    for (unsigned long long i = 0; i < nrows; i++) {
        if (r.p >= r.end)
            goto bad;
        unsigned char tag = *r.p++;
        PyObject *row;
        if ((tag == 0 && !v2) || (tag == 2 && v2)) {
            crow w;
            if (read_compact(&r, v2, strs, ns, last, &w) < 0)
                goto fail;
            unsigned long long ip = w.ip, seq = w.seq, lam = w.lam, zz = w.zz, ik = w.ik,
                               ic = w.ic, im = w.im, nb = w.nb;
            PyObject *msg = w.msg;
            prev = (long long)((unsigned long long)prev + unzz(zz));
            PyObject *items[10];
            items[0] = PyList_GET_ITEM(strs, ip);
            Py_INCREF(items[0]);
            items[1] = PyLong_FromUnsignedLongLong(seq);
            items[2] = PyLong_FromUnsignedLongLong(lam);
            items[3] = PyLong_FromLongLong(prev);
            items[4] = PyList_GET_ITEM(strs, ik);
            Py_INCREF(items[4]);
            items[5] = ic ? PyList_GET_ITEM(strs, ic - 1) : Py_None;
            Py_INCREF(items[5]);
            if (msg == NULL) {
                msg = im ? PyList_GET_ITEM(strs, im - 1) : Py_None;
                Py_INCREF(msg);
            }
            items[6] = msg;
            items[7] = PyLong_FromUnsignedLongLong(nb);
            items[8] = Py_None;
            Py_INCREF(Py_None);
            items[9] = Py_None;
            Py_INCREF(Py_None);
            row = PyTuple_New(10);
            int ok = row != NULL && items[1] && items[2] && items[3] && items[7];
            for (int k = 0; k < 10; k++) {
                if (row != NULL)
                    PyTuple_SET_ITEM(row, k, items[k]);
                else
                    Py_XDECREF(items[k]);
            }
            if (!ok) {
                Py_XDECREF(row);
                goto fail;
            }
        }
        else if (tag == 1) {
            unsigned long long n;
            if (rb_varint(&r, &n) < 0 || n > (unsigned long long)(r.end - r.p))
                goto bad;
            row = PyMarshal_ReadObjectFromString((const char *)r.p, (Py_ssize_t)n);
            r.p += n;
            if (row == NULL)
                goto fail;
            if (!PyTuple_CheckExact(row) || PyTuple_GET_SIZE(row) != 10) {
                Py_DECREF(row);
                goto bad;
            }
        }
        else
            goto bad;
        int a = PyList_Append(out, row);
        Py_DECREF(row);
        if (a < 0)
            goto fail;
    }
    if (r.p != r.end)
        goto bad;
    Py_DECREF(strs);
    PyMem_Free(last);
    PyBuffer_Release(&view);
    return out;
bad:
    if (!PyErr_Occurred() || PyErr_ExceptionMatches(PyExc_ValueError) ||
        PyErr_ExceptionMatches(PyExc_EOFError) || PyErr_ExceptionMatches(PyExc_TypeError)) {
        PyErr_Clear();
        PyErr_SetString(PyExc_ValueError, "not a cs1/cs2 event block");
    }
fail:
    if (PyErr_Occurred() && (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError) ||
                             PyErr_ExceptionMatches(PyExc_EOFError) ||
                             PyErr_ExceptionMatches(PyExc_TypeError))) {
        PyErr_Clear();
        PyErr_SetString(PyExc_ValueError, "not a cs1/cs2 event block");
    }
    PyMem_Free(last);
    Py_XDECREF(strs);
    Py_XDECREF(out);
    PyBuffer_Release(&view);
    return NULL;
}

/* ---- module -------------------------------------------------------------------- */

static PyObject *
setup(PyObject *mod, PyObject *args)
{
    PyObject *lpt, *ept, *ks, *kr, *ps, *pr;
    if (!PyArg_ParseTuple(args, "O!O!UUOO:setup", &PyType_Type, &lpt, &PyType_Type, &ept,
                          &ks, &kr, &ps, &pr))
        return NULL;
    PyTypeObject *lt = (PyTypeObject *)lpt, *et = (PyTypeObject *)ept;
#define OFF(var, tp, name) if ((var = slot_offset(tp, name)) < 0) return NULL
    OFF(S->o_name, lt, "name");
    OFF(S->o_lock, lt, "lock");
    OFF(S->o_clock, lt, "clock");
    OFF(S->o_seq, lt, "seq");
    OFF(S->o_pending, lt, "pending");
    OFF(S->o_incoming, lt, "incoming");
    OFF(S->o_snaps, lt, "snaps");
    OFF(S->o_append, lt, "_append");
    OFF(S->o_check, lt, "_check");
    OFF(S->e_channel, et, "channel");
    OFF(S->e_pending, et, "pending");
#undef OFF
    PyObject *thread = PyImport_ImportModule("_thread");
    if (thread == NULL)
        return NULL;
    PyObject *lk = PyObject_GetAttrString(thread, "LockType");
    Py_DECREF(thread);
    if (lk == NULL)
        return NULL;
    PyObject *lkd = PyObject_GetAttrString(lk, "locked");
    if (lkd == NULL) {
        Py_DECREF(lk);
        return NULL;
    }
    Py_XSETREF(S->lock_type, (PyTypeObject *)lk);
    Py_XSETREF(S->m_locked, lkd);
    Py_INCREF(lt);
    Py_XSETREF(S->lp_type, lt);
    Py_INCREF(et);
    Py_XSETREF(S->ep_type, et);
    Py_INCREF(ks);
    Py_XSETREF(S->k_send, ks);
    Py_INCREF(kr);
    Py_XSETREF(S->k_recv, kr);
    Py_INCREF(ps);
    Py_XSETREF(S->py_send, ps);
    Py_INCREF(pr);
    Py_XSETREF(S->py_recv, pr);
    PyObject *s = PyDescr_NewMethod(lt, &lp_send_def);
    PyObject *r = PyDescr_NewMethod(lt, &lp_recv_def);
    if (s == NULL || r == NULL) {
        Py_XDECREF(s);
        Py_XDECREF(r);
        return NULL;
    }
    return Py_BuildValue("(NN)", s, r);
}

/* The process index of a name: pindex[name] (a dict whose __missing__ gives a new name the
   next index). -1 with an exception set on failure. */
static long long
pindex_of(PyObject *pindex, PyObject *name)
{
    PyObject *v = PyObject_GetItem(pindex, name);
    if (v == NULL)
        return -1;
    long long i = PyLong_AsLongLong(v);
    Py_DECREF(v);
    if (i == -1 && PyErr_Occurred())
        return -1;
    if (i < 0 || i > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "process index out of range");
        return -1;
    }
    return i;
}

/* decode_columns(data, pindex) -> (pid, seq, lamport, wall, kind, channel, msg, nbytes, extra):
   the rows of a cs1/cs2 block as columns, the inverse of encode as decode reads it: pid the
   process indexes (pindex[name]) as int32 bytes, seq, lamport and wall as int64 bytes, kind,
   channel, msg and nbytes lists, extra a list of (row in the block, payload, data) for the rows
   whose payload or data is not None. The Python reader (viewer/model/columns.py's reference
   path over decode's tuples) gives the same columns. */
static PyObject *
decode_columns(PyObject *mod, PyObject *args)
{
    PyObject *arg, *pindex;
    if (!PyArg_ParseTuple(args, "OO:decode_columns", &arg, &pindex))
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    rbuf r = {(const unsigned char *)view.buf, (const unsigned char *)view.buf + view.len};
    PyObject *strs = NULL, *kinds = NULL, *chs = NULL, *msgs = NULL, *nbs = NULL, *extra = NULL;
    PyObject *result = NULL;
    long long *last = NULL, *pix = NULL, *c64 = NULL;
    int *c32 = NULL;
    unsigned long long ns, nrows;
    int v2;
    if (read_head(&r, view.len, &v2, &strs, &ns, &nrows) < 0)
        goto fail;
    last = PyMem_Calloc(ns ? 3 * (size_t)ns : 1, sizeof(long long));
    pix = PyMem_Malloc((ns ? (size_t)ns : 1) * sizeof(long long));
    c64 = PyMem_Malloc((nrows ? 3 * (size_t)nrows : 1) * sizeof(long long));
    c32 = PyMem_Malloc((nrows ? (size_t)nrows : 1) * sizeof(int));
    if (last == NULL || pix == NULL || c64 == NULL || c32 == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    for (unsigned long long i = 0; i < ns; i++)
        pix[i] = -1;
    long long *cseq = c64, *clam = c64 + nrows, *cwall = c64 + 2 * nrows;
    Py_ssize_t nr = (Py_ssize_t)nrows;
    if ((kinds = PyList_New(nr)) == NULL || (chs = PyList_New(nr)) == NULL ||
        (msgs = PyList_New(nr)) == NULL || (nbs = PyList_New(nr)) == NULL ||
        (extra = PyList_New(0)) == NULL)
        goto fail;
    long long prev = 0;
    for (Py_ssize_t i = 0; i < nr; i++) {
        if (r.p >= r.end)
            goto bad;
        unsigned char tag = *r.p++;
        if ((tag == 0 && !v2) || (tag == 2 && v2)) {
            crow w;
            if (read_compact(&r, v2, strs, ns, last, &w) < 0)
                goto fail;
            unsigned long long ip = w.ip, seq = w.seq, lam = w.lam, zz = w.zz, ik = w.ik,
                               ic = w.ic, im = w.im, nb = w.nb;
            PyObject *msg = w.msg;
            if (!v2 && (seq >= (1ULL << 63) || lam >= (1ULL << 63)))
                goto bad;  /* a column holds int64 */
            if (msg == NULL) {
                msg = im ? PyList_GET_ITEM(strs, im - 1) : Py_None;
                Py_INCREF(msg);
            }
            PyList_SET_ITEM(msgs, i, msg);
            prev = (long long)((unsigned long long)prev + unzz(zz));
            if (pix[ip] < 0 && (pix[ip] = pindex_of(pindex, PyList_GET_ITEM(strs, ip))) < 0)
                goto fail;
            c32[i] = (int)pix[ip];
            cseq[i] = (long long)seq;
            clam[i] = (long long)lam;
            cwall[i] = prev;
            PyObject *k = PyList_GET_ITEM(strs, ik);
            Py_INCREF(k);
            PyList_SET_ITEM(kinds, i, k);
            PyObject *c = ic ? PyList_GET_ITEM(strs, ic - 1) : Py_None;
            Py_INCREF(c);
            PyList_SET_ITEM(chs, i, c);
            PyObject *b = PyLong_FromUnsignedLongLong(nb);
            if (b == NULL)
                goto fail;
            PyList_SET_ITEM(nbs, i, b);
        }
        else if (tag == 1) {
            unsigned long long n;
            if (rb_varint(&r, &n) < 0 || n > (unsigned long long)(r.end - r.p))
                goto bad;
            PyObject *row = PyMarshal_ReadObjectFromString((const char *)r.p, (Py_ssize_t)n);
            r.p += n;
            if (row == NULL)
                goto fail;
            if (!PyTuple_CheckExact(row) || PyTuple_GET_SIZE(row) != 10) {
                Py_DECREF(row);
                goto bad;
            }
            long long p = pindex_of(pindex, PyTuple_GET_ITEM(row, 0));
            long long a = p < 0 ? -1 : PyLong_AsLongLong(PyTuple_GET_ITEM(row, 1));
            long long b = PyErr_Occurred() ? -1 : PyLong_AsLongLong(PyTuple_GET_ITEM(row, 2));
            long long w = PyErr_Occurred() ? -1 : PyLong_AsLongLong(PyTuple_GET_ITEM(row, 3));
            if (PyErr_Occurred()) {
                Py_DECREF(row);
                goto fail;
            }
            c32[i] = (int)p;
            cseq[i] = a;
            clam[i] = b;
            cwall[i] = w;
            PyObject *items[4];
            for (int k = 0; k < 4; k++) {
                items[k] = PyTuple_GET_ITEM(row, 4 + k);
                Py_INCREF(items[k]);
            }
            PyList_SET_ITEM(kinds, i, items[0]);
            PyList_SET_ITEM(chs, i, items[1]);
            PyList_SET_ITEM(msgs, i, items[2]);
            PyList_SET_ITEM(nbs, i, items[3]);
            PyObject *pl = PyTuple_GET_ITEM(row, 8), *d = PyTuple_GET_ITEM(row, 9);
            if (pl != Py_None || d != Py_None) {
                PyObject *x = Py_BuildValue("(nOO)", i, pl, d);
                int bad_append = x == NULL || PyList_Append(extra, x) < 0;
                Py_XDECREF(x);
                if (bad_append) {
                    Py_DECREF(row);
                    goto fail;
                }
            }
            Py_DECREF(row);
        }
        else
            goto bad;
    }
    if (r.p != r.end)
        goto bad;
    result = Py_BuildValue("(y#y#y#y#NNNNN)", (const char *)c32, (Py_ssize_t)(nr * sizeof(int)),
                           (const char *)cseq, (Py_ssize_t)(nr * sizeof(long long)),
                           (const char *)clam, (Py_ssize_t)(nr * sizeof(long long)),
                           (const char *)cwall, (Py_ssize_t)(nr * sizeof(long long)),
                           kinds, chs, msgs, nbs, extra);
    kinds = chs = msgs = nbs = extra = NULL;  /* stolen (N), even on failure */
    goto done;
bad:
    if (!PyErr_Occurred() || PyErr_ExceptionMatches(PyExc_ValueError) ||
        PyErr_ExceptionMatches(PyExc_EOFError) || PyErr_ExceptionMatches(PyExc_TypeError)) {
        PyErr_Clear();
        PyErr_SetString(PyExc_ValueError, "not a cs1/cs2 event block");
    }
fail:
    if (PyErr_Occurred() && (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError) ||
                             PyErr_ExceptionMatches(PyExc_EOFError) ||
                             PyErr_ExceptionMatches(PyExc_OverflowError) ||
                             PyErr_ExceptionMatches(PyExc_TypeError))) {
        PyErr_Clear();
        PyErr_SetString(PyExc_ValueError, "not a cs1/cs2 event block");
    }
done:
    PyMem_Free(last);
    PyMem_Free(pix);
    PyMem_Free(c64);
    PyMem_Free(c32);
    Py_XDECREF(strs);
    Py_XDECREF(kinds);
    Py_XDECREF(chs);
    Py_XDECREF(msgs);
    Py_XDECREF(nbs);
    Py_XDECREF(extra);
    PyBuffer_Release(&view);
    return result;
}

/* group(pid, nproc) -> (order, counts): a stable counting sort of the rows by process index.
   pid: a buffer of int32 process indexes, each in [0, nproc); order: the rows (int64 bytes),
   each process's rows in the order given, the processes in index order; counts: the rows of
   each process (a list). The Python loop in viewer/model/columns.py is the reference. */
static PyObject *
group(PyObject *mod, PyObject *args)
{
    PyObject *arg;
    Py_ssize_t nproc;
    if (!PyArg_ParseTuple(args, "On:group", &arg, &nproc))
        return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_FORMAT) < 0)
        return NULL;
    if (view.itemsize != (Py_ssize_t)sizeof(int) || view.format == NULL ||
        (strcmp(view.format, "i") != 0 && strcmp(view.format, "=i") != 0) || nproc < 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_TypeError, "group: pid must be an int32 buffer ('i')");
        return NULL;
    }
    const int *pid = (const int *)view.buf;
    Py_ssize_t n = view.len / (Py_ssize_t)sizeof(int);
    Py_ssize_t *pos = PyMem_Calloc(nproc + 1, sizeof(Py_ssize_t));
    PyObject *order = NULL, *counts = NULL, *result = NULL;
    if (pos == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t g = 0; g < n; g++) {
        if (pid[g] < 0 || pid[g] >= nproc) {
            PyErr_SetString(PyExc_ValueError, "group: a process index out of range");
            goto done;
        }
        pos[pid[g] + 1]++;
    }
    if ((counts = PyList_New(nproc)) == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < nproc; i++) {
        PyObject *c = PyLong_FromSsize_t(pos[i + 1]);
        if (c == NULL)
            goto done;
        PyList_SET_ITEM(counts, i, c);
        pos[i + 1] += pos[i];
    }
    order = PyBytes_FromStringAndSize(NULL, n * (Py_ssize_t)sizeof(long long));
    if (order == NULL)
        goto done;
    long long *o = (long long *)PyBytes_AS_STRING(order);
    for (Py_ssize_t g = 0; g < n; g++)
        o[pos[pid[g]]++] = (long long)g;
    result = PyTuple_Pack(2, order, counts);
done:
    PyMem_Free(pos);
    Py_XDECREF(order);
    Py_XDECREF(counts);
    PyBuffer_Release(&view);
    return result;
}

/* resolve_ids(ids, pindex, off, pid, seq, msg, kind, send) -> list of rows, or None: the row
   of the send each message id "<process>#<seq>" names, for the usual trace, as
   viewer/model/matching.py's _resolve_derived (the reference) computes it: the name (before
   the last '#') a key of pindex, the rest an int (int()), the row off[pindex[name]] + seq in
   range, of that process and seq, its msg None and its kind `send`. None as soon as one id
   does not resolve so (the caller then resolves one at a time). */
static PyObject *
resolve_ids(PyObject *mod, PyObject *args)
{
    PyObject *ids, *pindex, *off, *pidobj, *seqobj, *msg, *kind, *send;
    if (!PyArg_ParseTuple(args, "O!O!O!OOO!O!U:resolve_ids", &PyList_Type, &ids, &PyDict_Type,
                          &pindex, &PyList_Type, &off, &pidobj, &seqobj, &PyList_Type, &msg,
                          &PyList_Type, &kind, &send))
        return NULL;
    Py_buffer pv, sv;
    if (PyObject_GetBuffer(pidobj, &pv, PyBUF_FORMAT) < 0)
        return NULL;
    if (PyObject_GetBuffer(seqobj, &sv, PyBUF_FORMAT) < 0) {
        PyBuffer_Release(&pv);
        return NULL;
    }
    PyObject *out = NULL;
    if (pv.itemsize != (Py_ssize_t)sizeof(int) || strcmp(pv.format, "i") != 0 ||
        sv.itemsize != (Py_ssize_t)sizeof(long long) || strcmp(sv.format, "q") != 0) {
        PyErr_SetString(PyExc_TypeError, "resolve_ids: pid must be an 'i' array, seq a 'q' array");
        goto done;
    }
    const int *pid = (const int *)pv.buf;
    const long long *seq = (const long long *)sv.buf;
    Py_ssize_t n = sv.len / (Py_ssize_t)sizeof(long long);
    Py_ssize_t m = PyList_GET_SIZE(ids), noff = PyList_GET_SIZE(off);
    if (pv.len / (Py_ssize_t)sizeof(int) != n || PyList_GET_SIZE(msg) != n ||
        PyList_GET_SIZE(kind) != n) {
        PyErr_SetString(PyExc_ValueError, "resolve_ids: columns of different lengths");
        goto done;
    }
    out = PyList_New(m);
    if (out == NULL)
        goto done;
    PyObject *lastname = NULL;  /* the name of the previous id and its process */
    long long lastp = -1;
    for (Py_ssize_t j = 0; j < m; j++) {
        PyObject *s = PyList_GET_ITEM(ids, j);
        if (!PyUnicode_Check(s)) {
            PyErr_SetString(PyExc_TypeError, "resolve_ids: a message id that is not a string");
            goto error;
        }
        Py_ssize_t len = PyUnicode_GET_LENGTH(s);
        Py_ssize_t h = PyUnicode_FindChar(s, '#', 0, len, -1);
        if (h == -2)
            goto error;
        long long p, sq;
        /* the process: pindex[name] (rpartition: no '#' is the name "") */
        PyObject *name = PyUnicode_Substring(s, 0, h < 0 ? 0 : h);
        if (name == NULL)
            goto error;
        if (lastname != NULL && PyUnicode_Compare(name, lastname) == 0) {
            Py_DECREF(name);
            p = lastp;
        }
        else {
            if (PyErr_Occurred())
                goto error_name;
            PyObject *v = PyDict_GetItemWithError(pindex, name);
            if (v == NULL) {
                Py_DECREF(name);
                if (PyErr_Occurred())
                    goto error;
                goto none;
            }
            p = PyLong_AsLongLong(v);
            if (p == -1 && PyErr_Occurred())
                goto error_name;
            Py_XSETREF(lastname, name);
            lastp = p;
        }
        if (p < 0 || p >= noff)
            goto none;
        /* the seq: int() of the rest; plain ASCII digits read here */
        Py_ssize_t a = h + 1;
        int done_digits = 0;
        sq = 0;
        if (PyUnicode_IS_ASCII(s) && len - a >= 1 && len - a <= 18) {
            const Py_UCS1 *d = PyUnicode_1BYTE_DATA(s);
            done_digits = 1;
            for (Py_ssize_t k = a; k < len; k++) {
                if (d[k] < '0' || d[k] > '9') {
                    done_digits = 0;
                    break;
                }
                sq = sq * 10 + (d[k] - '0');
            }
        }
        if (!done_digits) {
            PyObject *rest = PyUnicode_Substring(s, a, len);
            if (rest == NULL)
                goto error;
            PyObject *v = PyLong_FromUnicodeObject(rest, 10);
            Py_DECREF(rest);
            if (v == NULL) {
                if (PyErr_ExceptionMatches(PyExc_ValueError)) {
                    PyErr_Clear();
                    goto none;
                }
                goto error;
            }
            int of;
            sq = PyLong_AsLongLongAndOverflow(v, &of);
            Py_DECREF(v);
            if (of)
                goto none;  /* past any row */
            if (sq == -1 && PyErr_Occurred())
                goto error;
        }
        long long o = PyLong_AsLongLong(PyList_GET_ITEM(off, p));
        if (o == -1 && PyErr_Occurred())
            goto error;
        if ((sq > 0 && o > LLONG_MAX - sq) || (sq < 0 && o < LLONG_MIN - sq))
            goto none;
        long long g = o + sq;
        if (g < 0 || g >= n || pid[g] != p || seq[g] != sq || PyList_GET_ITEM(msg, g) != Py_None)
            goto none;
        PyObject *k = PyList_GET_ITEM(kind, g);
        if (k != send) {
            int eq = PyObject_RichCompareBool(k, send, Py_EQ);
            if (eq < 0)
                goto error;
            if (!eq)
                goto none;
        }
        PyObject *row = PyLong_FromLongLong(g);
        if (row == NULL)
            goto error;
        PyList_SET_ITEM(out, j, row);
        continue;
    error_name:
        Py_DECREF(name);
        goto error;
    }
    Py_XDECREF(lastname);
    goto done;
none:
    Py_XDECREF(lastname);
    Py_CLEAR(out);
    out = Py_NewRef(Py_None);
    goto done;
error:
    Py_XDECREF(lastname);
    Py_CLEAR(out);
done:
    PyBuffer_Release(&pv);
    PyBuffer_Release(&sv);
    return out;
}

static PyMethodDef methods[] = {
    {"setup", setup, METH_VARARGS,
     "setup(LogicalProcess, OutEndpoint, SEND, RECV, py_send, py_recv) -> (send, recv): "
     "method descriptors for LogicalProcess."},
    {"take", take, METH_VARARGS,
     "take(deque, n, max_events=-1) -> list of the first items (up to n, and up to "
     "max_events events), popped."},
    {"events", events, METH_O, "events(items) -> the number of events the items hold."},
    {"held", held, METH_O,
     "held(buffer) -> its items, every chunk alive counted as its events (O(1))."},
    {"expand", expand, METH_O, "expand(items) -> list of event tuples (chunks expanded)."},
    {"encode", encode, METH_VARARGS,
     "encode(rows, event_row, cap) -> (bytes, n, wall_ns): the rows as a cs1 event block "
     "(uncompressed), the number of events, the wall clock of the last."},
    {"decode", decode, METH_O, "decode(data) -> list of event tuples of a cs1 block."},
    {"resolve_ids", resolve_ids, METH_VARARGS,
     "resolve_ids(ids, pindex, off, pid, seq, msg, kind, send) -> the send row of each "
     "derived message id, or None if one does not resolve by offset."},
    {"group", group, METH_VARARGS,
     "group(pid, nproc) -> (order, counts): the rows stably sorted by process index "
     "(int64 bytes), and each process's count."},
    {"decode_columns", decode_columns, METH_VARARGS,
     "decode_columns(data, pindex) -> (pid, seq, lamport, wall, kind, channel, msg, nbytes, "
     "extra): a cs1/cs2 block as columns (pid int32 bytes, seq/lamport/wall int64 bytes)."},
    {NULL, NULL, 0, NULL},
};

static int
mod_exec(PyObject *mod)
{
    fast_state *st = PyModule_GetState(mod);
    if (S != NULL) {
        PyErr_SetString(PyExc_ImportError, "cutscope.tracer._fast: one module object per "
                        "process");
        return -1;
    }
#define INTERN(var, s) if ((st->var = PyUnicode_InternFromString(s)) == NULL) return -1
    INTERN(n_acquire, "acquire");
    INTERN(n_release, "release");
    INTERN(n_record_after_send, "_record_after_send");
    INTERN(n_closed, "closed");
    INTERN(n_messages, "messages");
    INTERN(n_setdefault, "setdefault");
#undef INTERN
    st->chunk_type = (PyTypeObject *)PyType_FromModuleAndSpec(mod, &chunk_spec, NULL);
    if (st->chunk_type == NULL)
        return -1;
    if (PyModule_AddObjectRef(mod, "Chunk", (PyObject *)st->chunk_type) < 0)
        return -1;
    /* deque.append's C function: put_event recognises lp._append by it */
    PyObject *coll = PyImport_ImportModule("collections");
    if (coll == NULL)
        return -1;
    PyObject *dqt = PyObject_GetAttrString(coll, "deque");
    Py_DECREF(coll);
    if (dqt == NULL)
        return -1;
    PyObject *d = PyObject_CallNoArgs(dqt), *bound = d ? PyObject_GetAttrString(d, "append") : NULL;
    if (bound == NULL || !PyCFunction_Check(bound)) {
        Py_XDECREF(bound);
        Py_XDECREF(d);
        Py_DECREF(dqt);
        PyErr_SetString(PyExc_ImportError, "collections.deque.append is not a C method");
        return -1;
    }
    st->deque_append_fn = PyCFunction_GET_FUNCTION(bound);
    st->deque_type = (PyTypeObject *)dqt;  /* keeps the reference */
    Py_DECREF(bound);
    Py_DECREF(d);
    PyObject *capi = PyCapsule_New((void *)&core_api, CUTSCOPE_CORE_CAPSULE, NULL);
    if (capi == NULL || PyModule_AddObject(mod, "_C_API", capi) < 0) {
        Py_XDECREF(capi);
        return -1;
    }
    /* The state is reached through S from now on, and the module object lives until
     * the process ends (a reference that is never given back): S never dangles. */
    S = st;
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
    .m_name = "_fast",
    .m_doc = "cutscope's core hot paths in C (optional).",
    .m_size = sizeof(fast_state),
    .m_methods = methods,
    .m_slots = slots,
};

PyMODINIT_FUNC
PyInit__fast(void)
{
    return PyModuleDef_Init(&moddef);
}
