"""PostgreSQL servers for the drills, on 127.0.0.1: a primary and a streaming standby
(scripts/reliability failover: PostgreSQL's own replication, nothing in between), and a
server that archives its WAL, restored to a point in time (scripts/reliability pitr).
They are made by scripts/lib/postgres.sh, the scripts' one throwaway PostgreSQL; this
drives them (stop, kill, promote, follow). As root the binaries run as the `postgres`
system user, as postgres.sh runs them."""

import contextlib
import glob
import os
import signal
import subprocess
import time

from httpload import fail, free_port

POSTGRES_SH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "postgres.sh")


def _pg_bin():
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    if not found:
        fail("PostgreSQL server binaries not found (looked in /usr/lib/postgresql/*/bin)")
    return found[-1]


PG_BIN = _pg_bin()
USER = "farol"


def _as_server_user(args):
    return ["runuser", "-u", "postgres", "--", *args] if os.getuid() == 0 else args


def _run(args, timeout=60):
    done = subprocess.run(_as_server_user(args), capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        fail(f"{' '.join(args[:2])} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return done.stdout


class Server:
    """One cluster in DIR/data on 127.0.0.1:PORT."""

    def __init__(self, directory, port, name):
        self.dir, self.port, self.name = directory, port, name
        self.data = os.path.join(directory, "data")
        self.killed = False
        os.makedirs(directory, exist_ok=True)
        if os.getuid() == 0:
            os.chmod(os.path.dirname(directory), 0o755)
            subprocess.run(["chown", "postgres:", directory], check=True)

    def configure(self, **settings):
        """Appends to postgresql.auto.conf: the last line for a setting wins."""
        lines = [f"{key} = '{value}'\n" for key, value in settings.items()]
        with open(os.path.join(self.data, "postgresql.auto.conf"), "a") as conf:
            conf.writelines(lines)

    def start(self):
        _run([f"{PG_BIN}/pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "postgres.log"),
              "-w", "-t", "30", "start"])

    def stop(self):
        """A clean, fast shutdown: the standbys get every WAL record before it ends."""
        _run([f"{PG_BIN}/pg_ctl", "-D", self.data, "-m", "fast", "-w", "-t", "30", "stop"])

    def promote(self):
        """Out of recovery, and taking writes, when this returns."""
        _run([f"{PG_BIN}/pg_ctl", "-D", self.data, "-w", "-t", "30", "promote"])

    def postmaster_pid(self):
        with open(os.path.join(self.data, "postmaster.pid")) as pidfile:
            return int(pidfile.readline())

    def kill(self):
        """SIGKILL to the postmaster and every process it started, at once: a crashed node."""
        parent = self.postmaster_pid()
        pids = [parent]
        for stat in glob.glob("/proc/[0-9]*/stat"):
            try:
                with open(stat) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent:
                pids.append(int(stat.split("/")[2]))
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.killed = True

    def sql(self, query, database="postgres"):
        return _run([f"{PG_BIN}/psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, "-d", database,
                     "-qtAX", "-c", query], timeout=15).strip()

    def wal_receiver_pid(self):
        return int(self.sql("SELECT pid FROM pg_stat_wal_receiver"))

    def follow(self, primary):
        """Turns this stopped server into a standby of PRIMARY, and starts it."""
        open(os.path.join(self.data, "standby.signal"), "w").close()
        if os.getuid() == 0:
            subprocess.run(["chown", "postgres:", os.path.join(self.data, "standby.signal")], check=True)
        self.configure(primary_conninfo=f"host=127.0.0.1 port={primary.port} user={USER}",
                       cluster_name=self.name, synchronous_standby_names="")
        self.start()


def _postgres_sh(*args, **env):
    done = subprocess.run([POSTGRES_SH, *args], capture_output=True, text=True, timeout=240, check=False,
                          env={**os.environ, **env})
    if done.returncode != 0:
        fail(f"postgres.sh {args[0]} failed ({done.returncode}): {done.stderr.strip()[-500:]}")


def new_server(directory, name, started, **settings):
    """A new cluster with a database farol, running; SETTINGS on top of the defaults. It
    is appended to STARTED before it starts. A commit is acknowledged only once its WAL is
    written, with full pages, as in production (postgres.sh's defaults, made for the bench,
    are laxer): the drills judge what an acknowledged commit keeps. fsync stays off: the
    drills crash processes, never the machine."""
    server = Server(directory, free_port(), name)
    started.append(server)
    durable = {"synchronous_commit": "on", "full_page_writes": "on"}
    extra = "".join(f"{key} = '{value}'\n" for key, value in {"cluster_name": name, **durable, **settings}.items())
    _postgres_sh("start", server.dir, str(server.port), PG_EXTRA_CONF=extra)
    return server


def as_server_user(args):
    """ARGS run as the user the servers run as (what reads their data directories)."""
    return _run(args, timeout=300)


def replicated_pair(work, synchronous, started):
    """A primary with one streaming standby, synchronous (every commit waits until the
    standby has flushed it) or asynchronous. Returns (primary, standby), both running;
    each is appended to STARTED as soon as it exists, for the caller to stop whatever
    happens."""
    primary = new_server(os.path.join(work, "primary"), "primary", started, wal_level="replica",
                         max_wal_senders=5, synchronous_commit="on", synchronous_standby_names="")

    standby = Server(os.path.join(work, "standby"), free_port(), "standby")
    started.append(standby)
    _postgres_sh("standby", primary.dir, standby.dir, str(standby.port), "standby")
    # synchronous only once the standby is there: until then every commit would wait for it
    if synchronous:
        primary.sql("ALTER SYSTEM SET synchronous_standby_names = 'standby'")
        primary.sql("SELECT pg_reload_conf()")
    wanted = "sync" if synchronous else "async"
    deadline = time.time() + 20
    while primary.sql("SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby' "
                      "AND state = 'streaming'") != wanted:
        if time.time() > deadline:
            fail(f"the standby is not streaming ({wanted}) after 20 s")
        time.sleep(0.1)
    return primary, standby


def database_url(*servers):
    """libpq's several-hosts form, writable one wanted: what farol is given."""
    hosts = ",".join("127.0.0.1" for _ in servers)
    ports = ",".join(str(s.port) for s in servers)
    return (f"host={hosts} port={ports} user={USER} dbname=farol sslmode=disable "
            f"target_session_attrs=read-write")


def stop_all(*servers):
    """Stops what still runs, at once (an immediate shutdown cleans up after itself, which
    SIGKILL does not); a server already killed has a stale postmaster.pid and is left."""
    for server in servers:
        if not server.killed and os.path.exists(os.path.join(server.data, "postmaster.pid")):
            done = subprocess.run(_as_server_user([f"{PG_BIN}/pg_ctl", "-D", server.data, "-m", "immediate",
                                                   "-w", "-t", "10", "stop"]),
                                  capture_output=True, timeout=30, check=False)
            if done.returncode != 0:
                with contextlib.suppress(OSError, ValueError):
                    server.kill()
