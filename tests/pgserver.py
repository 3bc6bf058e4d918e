"""A throwaway PostgreSQL server on loopback, for the PostgreSQL backend tests.

initdb + pg_ctl in a temporary directory, on a free port of 127.0.0.1. PostgreSQL
refuses to run as root, so as root the server runs as the ``postgres`` user (or
``nobody``) through ``runuser``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time


class Unavailable(Exception):
    pass


def _bindir() -> str:
    for cand in [os.environ.get("PG_BINDIR", "")] + sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                                                           reverse=True):
        if cand and os.path.exists(os.path.join(cand, "initdb")):
            return cand
    initdb = shutil.which("initdb")
    if initdb:
        return os.path.dirname(os.path.realpath(initdb))
    raise Unavailable("initdb not found (install Debian's postgresql package)")


def postgres_user() -> pwd.struct_passwd:
    """The unprivileged user that runs PostgreSQL for a root process (it refuses root)."""
    for u in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(u)
        except KeyError:
            continue
    raise Unavailable("running as root and no unprivileged user to run PostgreSQL")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, _hint: str | None = None):
        self.bindir = None
        self.dir = None
        self.port = None
        self.user = None

    def _run(self, *argv: str) -> subprocess.CompletedProcess:
        cmd = list(argv)
        if self.user is not None:
            cmd = ["runuser", "-u", self.user, "--"] + cmd
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        self.bindir = _bindir()
        if os.geteuid() == 0:
            pw = postgres_user()
            self.user = pw.pw_name
        self.dir = tempfile.mkdtemp(prefix="cutscope-pg-")
        data = os.path.join(self.dir, "data")
        if self.user is not None:
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        r = self._run(os.path.join(self.bindir, "initdb"), "-D", data, "-U", "cutscope",
                      "--auth=trust", "-E", "UTF8", "--no-sync")
        if r.returncode != 0:
            raise Unavailable("initdb failed: " + (r.stderr.strip().splitlines() or ["?"])[-1])
        self.port = _free_port()
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off"
        r = self._run(os.path.join(self.bindir, "pg_ctl"), "-D", data, "-o", opts, "-w", "-t", "60",
                      "-l", os.path.join(self.dir, "log"), "start")
        if r.returncode != 0:
            raise Unavailable("pg_ctl start failed: " + (r.stderr or r.stdout).strip()[-300:])
        deadline = time.monotonic() + 30
        while True:
            r = self._run(os.path.join(self.bindir, "psql"), "-h", "127.0.0.1", "-p", str(self.port),
                          "-U", "cutscope", "-d", "postgres", "-c", "CREATE DATABASE cutscope")
            if r.returncode == 0 or "already exists" in r.stderr:
                break
            if time.monotonic() > deadline:
                raise Unavailable("createdb failed: " + r.stderr.strip())
            time.sleep(0.2)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://cutscope@127.0.0.1:{self.port}/cutscope"

    def fresh_url(self, name: str) -> str:
        """A URL for a new, empty database called ``name``."""
        r = self._run(os.path.join(self.bindir, "psql"), "-h", "127.0.0.1", "-p", str(self.port),
                      "-U", "cutscope", "-d", "postgres", "-c", f'CREATE DATABASE "{name}"')
        if r.returncode != 0:
            raise RuntimeError(r.stderr)
        return f"postgresql+psycopg://cutscope@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if self.dir is None:
            return
        self._run(os.path.join(self.bindir, "pg_ctl"), "-D", os.path.join(self.dir, "data"),
                  "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None
