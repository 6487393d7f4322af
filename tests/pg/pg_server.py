"""A private PostgreSQL server for the tests: ``initdb`` into a temporary directory, ``pg_ctl``
on a Unix socket in a private directory and a random loopback port, stopped at the end.

``initdb`` refuses to run as root: as root, the server's directory belongs to the ``postgres``
user (0700, so private to it and root) and every server command runs as that user through
``runuser``. The binaries are found on ``PATH`` or in ``/usr/lib/postgresql/*/bin`` (where the
Debian package puts them; ``.ci/run`` installs it when neither has them).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["PgServer", "find_bindir"]


def find_bindir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``, or None."""
    found = shutil.which("initdb")
    if found:
        real = Path(found).resolve().parent
        if (real / "pg_ctl").exists():
            return real
    def version(path: str) -> int:
        name = Path(path).parent.parent.name
        return int(name) if name.isdigit() else 0

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """One server: :meth:`start`, :meth:`stop`, :meth:`url`, :meth:`sql` (as the superuser)."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.as_root = os.geteuid() == 0
        self.root = Path(tempfile.mkdtemp(prefix="versatil-pg-"))
        if self.as_root:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self.data = self.root / "data"
        self.sockets = self.root / "sockets"
        self.port = _free_port()
        self.superuser = "postgres"
        self.log = self.root / "server.log"

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / argv[0]), *argv[1:]]
        if self.as_root:
            # initdb refuses root: run the server's commands as `postgres` (runuser, or
            # setpriv where util-linux ships without it).
            if shutil.which("runuser"):
                command = ["runuser", "-u", "postgres", "--", *command]
            else:
                command = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups",
                           *command]
        return subprocess.run(
            command, capture_output=True, text=True, check=True, timeout=120,
            env={**os.environ, "LC_ALL": "C"}, cwd=self.root,
        )

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", self.superuser,
                  "--no-sync", "-E", "UTF8")
        self.sockets.mkdir(mode=0o700)
        if self.as_root:
            user = pwd.getpwnam("postgres")
            os.chown(self.sockets, user.pw_uid, user.pw_gid)

    def start(self) -> None:
        options = (
            f"-k {self.sockets} -p {self.port} -c listen_addresses=127.0.0.1 "
            "-c max_connections=400 -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c shared_buffers=32MB"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                  "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def url(self, database: str = "versatil", user: str | None = None, *, tcp: bool = False) -> str:
        who = user or self.superuser
        if tcp:
            return f"postgresql://{who}@127.0.0.1:{self.port}/{database}"
        return f"postgresql:///{database}?host={self.sockets}&port={self.port}&user={who}"

    def sql(self, statement: str, *, database: str = "postgres") -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            cursor = conn.execute(statement)  # type: ignore[arg-type]
            return cursor.fetchall() if cursor.description else []

    def cleanup(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)
