"""A throwaway PostgreSQL server on 127.0.0.1 for tests that need a real RDB (Optuna's RDBStorage).

`start_postgres(tmp_dir)` runs initdb in `tmp_dir` and starts the server on a free loopback port,
with its unix socket in `tmp_dir` too; the returned `PostgresServer` is a context manager that stops
it (`pg_ctl -m fast stop`). The session fixture `postgres_url` does that once per test session,
creates the database `workbench_test` and yields its SQLAlchemy URL; `fresh_database(url, name)`
creates another empty database on the same server, so each test can have its own.

The binaries come from the PATH or /usr/lib/postgresql/<version>/bin (Debian's layout; the highest
version wins). When they are missing the fixture skips, or fails if WORKBENCH_REQUIRE_POSTGRES=1
(as in CI, which installs them with .ci/ensure-postgres). PostgreSQL refuses to run as root: as
root, initdb and pg_ctl run as the `postgres` system user, which then owns `tmp_dir`. A watchdog
process stops the server if the test process dies without doing so (kill -9, a CI timeout).

conftest.py makes the fixture available to every test with `from pg_server import postgres_url`.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

HOST = "127.0.0.1"
SUPERUSER = "postgres"
SERVER_OS_USER = "postgres"  # who runs the server when the tests run as root
TEST_DATABASE = "workbench_test"
REQUIRE_ENV = "WORKBENCH_REQUIRE_POSTGRES"
NOT_INSTALLED = "PostgreSQL is not installed: run .ci/ensure-postgres (apt-get install postgresql)"
DEBIAN_BIN_GLOB = "/usr/lib/postgresql/*/bin"
START_TIMEOUT_S = 30
START_ATTEMPTS = 4  # a free port can be taken between picking it and the server binding it
LOG_TAIL_LINES = 20
_DB_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
# argv: the directory to delete afterwards ("" for none), then the stop command; stdin: the pipe
_WATCHDOG = (
    "import shutil, subprocess, sys; sys.stdin.buffer.read(); subprocess.run(sys.argv[2:], check=False); "
    "sys.argv[1] and shutil.rmtree(sys.argv[1], ignore_errors=True)"
)


class PostgresUnavailable(RuntimeError):
    """This machine cannot run a PostgreSQL server (binaries or the server's OS user are missing)."""


class PostgresStartError(RuntimeError):
    """initdb or the server failed; the message carries the tail of the server log."""


@dataclass(frozen=True)
class Binaries:
    bin_dir: Path

    @property
    def initdb(self) -> str:
        return str(self.bin_dir / "initdb")

    @property
    def pg_ctl(self) -> str:
        return str(self.bin_dir / "pg_ctl")


def _version_key(bin_dir: Path) -> tuple[int, ...]:
    # /usr/lib/postgresql/<version>/bin: numeric order, so 15 beats 9.6
    return tuple(int(part) for part in re.findall(r"\d+", bin_dir.parent.name)) or (-1,)


def find_binaries() -> Binaries | None:
    """The directory holding initdb, pg_ctl and postgres: PATH first, then the highest Debian version."""
    candidates: list[Path] = []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)  # /usr/local/bin/initdb may be a symlink
    candidates += sorted((Path(p) for p in glob.glob(DEBIAN_BIN_GLOB)), key=_version_key, reverse=True)
    for bin_dir in candidates:
        if all(os.access(bin_dir / name, os.X_OK) for name in ("initdb", "pg_ctl", "postgres")):
            return Binaries(bin_dir)
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _server_user_command() -> list[str]:
    """The prefix that runs a command as the server's OS user ([] when not root)."""
    if os.geteuid() != 0:
        return []
    try:
        import pwd

        pwd.getpwnam(SERVER_OS_USER)
    except KeyError as exc:
        raise PostgresUnavailable(
            f"running as root and there is no {SERVER_OS_USER!r} system user to run PostgreSQL as "
            "(postgres refuses to run as root): install the postgresql package, which creates it"
        ) from exc
    if shutil.which("runuser"):
        return ["runuser", "-u", SERVER_OS_USER, "--"]
    if shutil.which("su"):
        return ["su", SERVER_OS_USER, "-s", "/bin/sh", "-c"]  # the command follows as one string
    raise PostgresUnavailable("running as root with neither runuser nor su to drop to the postgres user")


def _server_env() -> dict[str, str]:
    # libpq/PG* variables of the caller (PGDATA, PGPORT, PGHOST...) must not redirect our server.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"  # English log messages, and no dependency on generated locales
    return env


def _conf_quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass
class PostgresServer:
    """A running cluster in `base_dir`; `with` it (or call stop()) to shut it down."""

    binaries: Binaries
    base_dir: Path
    port: int = 0
    host: str = HOST
    remove_dir: bool = False  # delete base_dir once stopped (also when the test process is killed)
    _prefix: list[str] = field(default_factory=list, repr=False)
    _running: bool = field(default=False, repr=False)
    _watchdog: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _watchdog_fd: int = field(default=-1, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base_dir

    @property
    def log_file(self) -> Path:
        return self.base_dir / "postgres.log"

    @property
    def admin_url(self) -> str:
        """SQLAlchemy URL of the maintenance database `postgres`."""
        return f"postgresql+psycopg://{SUPERUSER}@{self.host}:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{SUPERUSER}@{self.host}:{self.port}/{database}"

    # --- process plumbing -------------------------------------------------------------------------

    def _as_server_user(self, cmd: list[str]) -> list[str]:
        if self._prefix and self._prefix[0] == "su":
            return [*self._prefix, shlex.join(cmd)]
        return [*self._prefix, *cmd]

    def _run(self, cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        # cwd: the server's user must be able to stat its working directory
        return subprocess.run(
            self._as_server_user(cmd), cwd=self.base_dir, env=_server_env(), capture_output=True,
            text=True, timeout=timeout, check=False,
        )

    def _stop_command(self) -> list[str]:
        return [self.binaries.pg_ctl, "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "30", "stop"]

    def _arm_watchdog(self) -> None:
        """A sidecar that stops the server once this process is gone, however it ends (kill -9 too).

        It blocks reading a pipe whose only write end this process holds (non-inheritable, so
        subprocesses do not keep it open); EOF means we exited or stop() ran, and it runs pg_ctl stop.
        """
        read_fd, self._watchdog_fd = os.pipe()
        try:
            self._watchdog = subprocess.Popen(
                [sys.executable, "-c", _WATCHDOG, str(self.base_dir) if self.remove_dir else "",
                 *self._as_server_user(self._stop_command())],
                stdin=read_fd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                cwd=self.base_dir, env=_server_env(), start_new_session=True,  # immune to Ctrl-C
            )
        finally:
            os.close(read_fd)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:]) or "(server log is empty)"

    # --- lifecycle --------------------------------------------------------------------------------

    def _init(self) -> None:
        self._prefix = _server_user_command()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if self._prefix:
            shutil.chown(self.base_dir, SERVER_OS_USER, SERVER_OS_USER)
            probe = self._run(["test", "-w", str(self.base_dir)], timeout=10)
            if probe.returncode != 0:
                raise PostgresStartError(
                    f"{self.base_dir} is not writable by the {SERVER_OS_USER!r} user (a parent directory "
                    "is probably private, like pytest's /tmp/pytest-of-root): use a directory under /tmp"
                )
        initdb = self._run(
            [self.binaries.initdb, "-D", str(self.data_dir), "--auth=trust", "-U", SUPERUSER,
             "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"],
            timeout=120,
        )
        if initdb.returncode != 0:
            raise PostgresStartError(f"initdb failed ({initdb.returncode}):\n{initdb.stdout}{initdb.stderr}")
        settings = {
            "listen_addresses": _conf_quote(HOST),  # loopback only; the port is given at start
            "unix_socket_directories": _conf_quote(str(self.socket_dir)),  # not /var/run/postgresql
            "max_connections": "100",  # Optuna workers each hold a pool
            "shared_buffers": "32MB",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# tests/pg_server.py\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def _start(self) -> None:
        for attempt in range(1, START_ATTEMPTS + 1):
            self.port = free_port()
            self.log_file.unlink(missing_ok=True)  # the tail must be this attempt's
            try:
                result = self._run(
                    [self.binaries.pg_ctl, "-D", str(self.data_dir), "-l", str(self.log_file),
                     "-o", f"-p {self.port}", "-w", "-t", str(START_TIMEOUT_S), "start"],
                    timeout=START_TIMEOUT_S + 15,
                )
                output = (result.stdout + result.stderr).strip()
                if result.returncode == 0:
                    self._running = True
                    try:
                        self._arm_watchdog()
                    except BaseException:
                        self.stop()
                        raise
                    return
            except subprocess.TimeoutExpired:
                output = "pg_ctl did not return"
            self._kill_leftover()
            tail = self.log_tail()
            if "could not bind" in tail and attempt < START_ATTEMPTS:
                continue  # someone took the port meanwhile: pick another
            raise PostgresStartError(
                f"PostgreSQL did not start on {HOST}:{self.port}: {output}\n"
                f"Last {LOG_TAIL_LINES} lines of {self.log_file}:\n{tail}"
            )

    def stop(self) -> None:
        """Fast shutdown (disconnects clients); idempotent."""
        if not self._running:
            return
        try:
            self._stop()
        finally:
            if self.remove_dir:
                shutil.rmtree(self.base_dir, ignore_errors=True)

    def _stop(self) -> None:
        self._running = False
        try:
            stopped = self._run(self._stop_command(), timeout=45).returncode == 0
        except subprocess.TimeoutExpired:
            stopped = False
        if not stopped:
            self._kill_leftover()
        self._disarm_watchdog()

    def _disarm_watchdog(self) -> None:
        if self._watchdog_fd >= 0:
            os.close(self._watchdog_fd)  # EOF: the watchdog's pg_ctl stop finds no server and exits
            self._watchdog_fd = -1
        if self._watchdog is not None:
            try:
                self._watchdog.wait(timeout=10)
            except subprocess.TimeoutExpired:
                # a fork()ed child (multiprocessing) still holds the pipe: the server is down anyway
                self._watchdog.kill()
                self._watchdog.wait()
            self._watchdog = None

    def _kill_leftover(self) -> None:
        """Kill a postmaster still recorded in postmaster.pid (a timed-out start or a stuck stop)."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
            # a stale pid file's number may belong to some other process by now
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            return
        if os.fsencode(str(self.data_dir)) not in cmdline:
            return
        try:
            os.kill(pid, signal.SIGQUIT)  # immediate shutdown: the postmaster takes its children along
        except (ProcessLookupError, PermissionError):
            return

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_postgres(tmp_dir: Path, *, remove_dir: bool = False) -> PostgresServer:
    """initdb a fresh cluster in `tmp_dir` and start it on 127.0.0.1:<free port>.

    A watchdog process stops the server if this process dies without stopping it (and then deletes
    `tmp_dir` too, when `remove_dir`, as does stop()).

    Raises PostgresUnavailable when the binaries (or, as root, the postgres user) are missing and
    PostgresStartError, with the end of the server log, when initdb or the start fails. As root,
    `tmp_dir` is chowned to the postgres user, so every parent must be traversable by it.
    """
    binaries = find_binaries()
    if binaries is None:
        raise PostgresUnavailable(NOT_INSTALLED)
    server = PostgresServer(binaries, Path(tmp_dir), remove_dir=remove_dir)
    server._init()
    server._start()
    return server


def _connect(url: str, dbname: str) -> psycopg.Connection:
    parsed = make_url(url)
    return psycopg.connect(
        host=parsed.host or HOST, port=parsed.port or 5432, user=parsed.username or SUPERUSER,
        dbname=dbname, autocommit=True, connect_timeout=10,
    )


def fresh_database(url: str, name: str) -> str:
    """Create an empty database `name` on the server of `url` (dropped first if it exists); its URL.

    `name` must be a plain identifier: letters, digits and underscores, at most 63 characters.
    """
    if not _DB_NAME.fullmatch(name) or name in ("postgres", "template0", "template1"):
        raise ValueError(f"not a usable test database name: {name!r}")
    with _connect(url, "postgres") as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """SQLAlchemy URL of the empty database `workbench_test` on a server private to this session."""
    # Not pytest's tmp_path: /tmp/pytest-of-root is private to root, and unix socket paths are
    # limited to ~107 bytes.
    base = Path(tempfile.mkdtemp(prefix="workbench-pg-"))
    try:
        try:
            server: PostgresServer | None = start_postgres(base, remove_dir=True)
        except PostgresUnavailable as exc:
            server, reason = None, str(exc)
        if server is None:
            _unavailable(reason)  # outside the except block: no chained traceback in the report
        with server:
            yield fresh_database(server.admin_url, TEST_DATABASE)
    finally:
        shutil.rmtree(base, ignore_errors=True)
