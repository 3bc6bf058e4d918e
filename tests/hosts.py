"""Simulated hosts for the tests: network namespaces with their own address,
hostname and temporary directory, joined by a bridge, created by the test and
removed after.

Layout (every name carries a tag made of this process's pid, so that two runs
never meet):

- a "switch" namespace holding a bridge; nothing else lives there, and the
  machine's own namespace is left untouched;
- one namespace per host, its ``eth0`` a veth whose other end is on the
  bridge, with the address ``198.18.0.<10 + i>/24``. 198.18.0.0/15 is the
  range RFC 2544 sets aside for network tests; these addresses exist only
  inside the namespaces made here, and no route leads out of them;
- each command on a host runs under ``unshare --uts`` with its own hostname
  (``host<i>``) and its own temporary directory (``TMPDIR``, and cutscope's
  control directory, ``CUTSCOPE_CONTROL_DIR``, in it), so that what cutscope
  keeps per host (its control sockets and registries, the hostname in its
  records) is separate as on real machines. Everything else (the file system,
  the venv, the pid space) is shared: /tmp itself is not hidden, since the
  checkout and its venv may live there.

Needs root and iproute2's ``ip``; ``Unavailable`` says why otherwise, and the
tests skip with that reason.
"""

from __future__ import annotations

import json
import os
import textwrap
import shutil
import subprocess
import sys
import tempfile

NET = "198.18.0"

_ECHO = """
import socket, sys
s = socket.create_server((sys.argv[1], 0))
print(s.getsockname()[1], flush=True)
c, _ = s.accept()
c.sendall(c.recv(16))
"""
_DIAL = """
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
c.sendall(b"ping")
assert c.recv(16) == b"ping"
"""


class Unavailable(Exception):
    pass


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise Unavailable(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r


class Hosts:
    """``n`` hosts, ``host0`` ... ``host<n-1>``; ``address(i)`` is host i's address."""

    def __init__(self, n: int):
        self.n = n
        self.tag = f"cs{os.getpid() % 100000}"
        self.switch = f"{self.tag}-sw"
        self.names = [f"{self.tag}-h{i}" for i in range(n)]
        self.procs: list[subprocess.Popen] = []
        self.made: list[str] = []
        self.tmp: list[str] = []

    def address(self, i: int) -> str:
        return f"{NET}.{10 + i}"

    def start(self) -> "Hosts":
        if os.geteuid() != 0:
            raise Unavailable("network namespaces need root")
        if shutil.which("ip") is None or shutil.which("unshare") is None:
            raise Unavailable("iproute2's ip or util-linux's unshare is missing")
        for i in range(self.n):  # each host's temporary directory, its control directory in it
            self.tmp.append(tempfile.mkdtemp(prefix=f"cutscope-host{i}-"))
            os.mkdir(os.path.join(self.tmp[-1], "cutscope"), 0o700)
        try:
            for ns in [self.switch] + self.names:
                _ip("netns", "add", ns)
                self.made.append(ns)
                _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")
            for i, ns in enumerate(self.names):
                port = f"p{i}"
                _ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", port,
                    "netns", self.switch)
                _ip("-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
                _ip("-n", self.switch, "link", "set", port, "master", "br0")
                _ip("-n", self.switch, "link", "set", port, "up")
        except BaseException:
            self.stop()
            raise
        # The first host reaches the last through the bridge (a TCP connection).
        last = self.names[-1]
        server = subprocess.Popen(
            ["ip", "netns", "exec", last, sys.executable, "-c", _ECHO, self.address(self.n - 1)],
            stdout=subprocess.PIPE, text=True)
        try:
            port = server.stdout.readline().strip()
            r = subprocess.run(["ip", "netns", "exec", self.names[0], sys.executable, "-c", _DIAL,
                                self.address(self.n - 1), port or "0"],
                               capture_output=True, text=True, timeout=30)
        finally:
            server.kill()
            server.wait()
        if r.returncode != 0:
            self.stop()
            raise Unavailable("the simulated hosts cannot reach each other: "
                              + r.stderr.strip()[-200:])
        return self

    def command(self, i: int, argv: list[str]) -> list[str]:
        """``argv`` as run on host ``i``: its network, its hostname, its own
        temporary and control directories."""
        tmp = self.tmp[i]
        script = 'hostname "$0" && exec "$@"'
        return ["ip", "netns", "exec", self.names[i], "unshare", "--uts", "sh", "-c", script,
                f"host{i}", "env", f"TMPDIR={tmp}", f"CUTSCOPE_CONTROL_DIR={tmp}/cutscope",
                *argv]

    def run(self, i: int, argv: list[str], wait: bool = False, quiet: bool = False, **kw):
        """Start ``argv`` on host ``i`` (a Popen, stopped by ``stop()``), or with
        ``wait`` run it to its end (a CompletedProcess)."""
        cmd = self.command(i, argv)
        if wait:
            kw.setdefault("timeout", 120)
            if quiet:
                kw.setdefault("capture_output", True)
            return subprocess.run(cmd, text=True, **kw)
        p = subprocess.Popen(cmd, text=True, **kw)
        self.procs.append(p)
        return p

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.procs.clear()
        for ns in reversed(self.made):  # removing a namespace removes its veth ends
            _ip("netns", "del", ns, check=False)
        self.made.clear()
        for d in self.tmp:
            shutil.rmtree(d, ignore_errors=True)
        self.tmp.clear()


class Postgres:
    """A throwaway PostgreSQL server on host ``i`` of ``hosts``, listening on that
    host's address (the tests' own server, as tests/pgserver.py on loopback)."""

    def __init__(self, hosts: Hosts, i: int = 0):
        self.hosts, self.i = hosts, i
        self.dir = None
        self.bindir = None
        self.user = None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://cutscope@{self.hosts.address(self.i)}:5432/cutscope"

    def _run(self, *argv: str) -> subprocess.CompletedProcess:
        cmd = ["ip", "netns", "exec", self.hosts.names[self.i], "runuser", "-u", self.user,
               "--", *argv]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    def start(self) -> "Postgres":
        import pgserver

        try:
            self.bindir = pgserver._bindir()
            pw = pgserver.postgres_user()
        except pgserver.Unavailable as exc:
            raise Unavailable(str(exc))
        self.user = pw.pw_name
        self.dir = tempfile.mkdtemp(prefix="cutscope-pg-hosts-")
        os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        data = os.path.join(self.dir, "data")
        r = self._run(os.path.join(self.bindir, "initdb"), "-D", data, "-U", "cutscope",
                      "--auth=trust", "-E", "UTF8", "--no-sync")
        if r.returncode != 0:
            raise Unavailable("initdb failed: " + r.stderr.strip()[-300:])
        with open(os.path.join(data, "pg_hba.conf"), "a") as f:
            f.write(f"host all all {NET}.0/24 trust\n")
        addr = self.hosts.address(self.i)
        opts = f"-c listen_addresses={addr} -p 5432 -k {self.dir} -c fsync=off"
        r = self._run(os.path.join(self.bindir, "pg_ctl"), "-D", data, "-o", opts, "-w", "-t", "60",
                      "-l", os.path.join(self.dir, "log"), "start")
        if r.returncode != 0:
            raise Unavailable("pg_ctl start failed: " + (r.stderr or r.stdout).strip()[-300:])
        r = self._run(os.path.join(self.bindir, "psql"), "-h", addr, "-U", "cutscope",
                      "-d", "postgres", "-c", "CREATE DATABASE cutscope")
        if r.returncode != 0:
            raise Unavailable("createdb failed: " + r.stderr.strip()[-300:])
        return self

    def stop(self) -> None:
        if self.dir is None:
            return
        self._run(os.path.join(self.bindir, "pg_ctl"), "-D", os.path.join(self.dir, "data"),
                  "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None


def leftovers() -> list[str]:
    """Namespaces of runs that died before removing theirs (``ip netns`` lists them)."""
    r = _ip("netns", "list", check=False)
    return [ln.split()[0] for ln in r.stdout.splitlines() if ln.startswith("cs")]


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BANK = os.path.join(ROOT, "examples", "bank_tcp.py")


def start_bank(hosts: Hosts, url: str, branches: int, seconds: float, rate: float, env: dict):
    """examples/bank_tcp.py's branches, branch i on host i + 1 under ``cutscope run``
    into the store ``url``, wired up and started. Returns their Popen objects (each
    prints its final balance as JSON on its last line)."""
    procs = []
    for i in range(branches):
        h = i + 1
        procs.append(hosts.run(h, [
            sys.executable, "-m", "cutscope", "run", "--db", url, "--name", f"bank-{i}", "--",
            sys.executable, BANK, "branch", "--index", str(i), "--seconds", str(seconds),
            "--rate", str(rate), "--bind", hosts.address(h)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=ROOT))
    ends = [[hosts.address(i + 1), int(p.stdout.readline())] for i, p in enumerate(procs)]
    for p in procs:
        p.stdin.write(json.dumps(ends) + "\n")
        p.stdin.flush()
    for p in procs:
        if p.stdout.readline().strip() != "ready":
            raise RuntimeError("a branch did not start")
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    return procs


# A script for a host that runs no branch (python -c ASKER EXAMPLES URL N K): wait for the bank, take snapshots, print one JSON line each.
ASKER = textwrap.dedent(r'''
    import json, sys, time
    sys.path.insert(0, sys.argv[1])  # python -c: argv[0] is '-c'
    import bank_tcp
    from cutscope.tracer.snapshot.coordinator import Coordinator, SNAPSHOT_LIVE_NS
    from cutscope.tracer.store import open_store
    url, n, k = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    names = {f"bank-{i}" for i in range(n)}
    store = open_store(url, create=False)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        live = set(store.live_processes(time.time_ns() - SNAPSHOT_LIVE_NS))
        ends = store.channel_ends()
        if names <= live and sum(c["src"] in names and c["dst"] in names for c in ends) >= n * (n - 1):
            break
        time.sleep(0.1)
    for j in range(k):
        c = Coordinator(store, initiator=f"bank-{j % n}", timeout=10)
        c.start()
        s = c.wait()
        print(json.dumps({"id": s.id, "status": s.status, "elapsed": s.elapsed,
                          "balances": bank_tcp.balances(s), "in_transit": bank_tcp.in_transit(s),
                          "hosts": sorted({p["host"] for p in store.load(events=False)["processes"]}),
                          "missing": s.missing, "timings": c.timings}), flush=True)
        time.sleep(0.2)
    doc = store.load(events=False)
    print(json.dumps({"channels": [c for c in doc["channels"]
                                   if c["src"] in names and c["dst"] in names]}))
    store.close()
''')



__all__ = ["Hosts", "Postgres", "Unavailable", "NET", "leftovers", "start_bank", "ASKER"]
