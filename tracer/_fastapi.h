/* The C entry points of the core (cutscope.tracer._fast) for the integrations' C fast
 * paths, exported in a capsule: an integration's extension takes them with
 *
 *     const cutscope_core_api *core = PyCapsule_Import(CUTSCOPE_CORE_CAPSULE, 0);
 *
 * and checks core->version. The core knows no integration; an integration knows the
 * core only through these functions (no slot offset, no type of the core's but through
 * is_process / is_endpoint).
 *
 * Every function needs the core configured (_fast.setup, which tracer/process.py calls
 * when it loads the extension); before that, is_process and is_endpoint answer 0, so an
 * integration's fast path is never taken. The GIL is held for every call. */
#ifndef CUTSCOPE_FASTAPI_H
#define CUTSCOPE_FASTAPI_H

#define CUTSCOPE_CORE_CAPSULE "cutscope.tracer._fast._C_API"
#define CUTSCOPE_CORE_API_VERSION 1

typedef struct {
    int version;  /* CUTSCOPE_CORE_API_VERSION */
    /* obj's type is exactly the configured LogicalProcess / OutEndpoint: 1, else 0. */
    int (*is_process)(PyObject *obj);
    int (*is_endpoint)(PyObject *obj);
    /* A snapshot is asked of the process (lp.pending), one is being recorded by it
     * (lp.snaps), markers wait on the endpoint (ep.pending): 1, 0, or -1 with an error.
     * The object has the configured type. */
    int (*asked)(PyObject *lp);
    int (*recording)(PyObject *lp);
    int (*markers_waiting)(PyObject *ep);
    /* LogicalProcess.send(ep, nbytes, payload) for the configured types: a new
     * (seq, lamport, markers) tuple, or NULL with an error. */
    PyObject *(*send)(PyObject *lp, PyObject *ep, PyObject *nbytes, PyObject *payload);
    /* LogicalProcess.recv(channel, msg_id, stamp, nbytes, payload): the new event's seq,
     * or NULL with an error. The message id is msg when mnum < 0, else "<msg>#<mnum>"
     * (built only when something needs it as a string). Arguments the C path does not
     * take go to the Python method. */
    PyObject *(*recv)(PyObject *lp, PyObject *channel, PyObject *msg, long long mnum,
                      PyObject *stamp, PyObject *nbytes, PyObject *payload);
    /* "<name>#<seq>", a message id: a new str, or NULL with an error. */
    PyObject *(*msg_id)(PyObject *name, unsigned long long seq);
} cutscope_core_api;

#endif
