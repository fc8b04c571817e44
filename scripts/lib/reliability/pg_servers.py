"""PostgreSQL servers of the failover and pitr drills, on 127.0.0.1: made by
scripts/lib/postgres.sh, driven from here (stop, kill, promote, follow). As root the
binaries run as the `postgres` user, as postgres.sh runs them."""

import contextlib
import glob
import os
import signal
import subprocess
import time

from httpload import fail, free_port, shell

PG_BIN = max(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), default=None)
if PG_BIN is None:
    fail("PostgreSQL server binaries not found (looked in /usr/lib/postgresql/*/bin)")
USER = "farol"
ROOT = os.getuid() == 0


def as_server_user(args, timeout=300):
    args = ["runuser", "-u", "postgres", "--", *args] if ROOT else args
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        fail(f"{' '.join(args[:5])} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return done.stdout


class Server:
    """One cluster in DIR/data on 127.0.0.1:PORT."""

    def __init__(self, directory, name):
        self.dir, self.port, self.name = directory, free_port(), name
        self.data = os.path.join(directory, "data")
        self.killed = False
        os.makedirs(directory, exist_ok=True)
        if ROOT:
            subprocess.run(["chown", "postgres:", directory], check=True)

    def configure(self, **settings):
        """Appends to postgresql.auto.conf: the last line for a setting wins."""
        with open(os.path.join(self.data, "postgresql.auto.conf"), "a") as conf:
            conf.writelines(f"{key} = '{value}'\n" for key, value in settings.items())

    def pg_ctl(self, *args):
        as_server_user([f"{PG_BIN}/pg_ctl", "-D", self.data, "-w", "-t", "30", *args], timeout=60)

    def start(self):
        self.pg_ctl("-l", os.path.join(self.dir, "postgres.log"), "start")

    def stop(self):
        """Fast and clean: the standbys get every WAL record before it ends."""
        self.pg_ctl("-m", "fast", "stop")

    def promote(self):
        """Out of recovery, and taking writes, when this returns."""
        self.pg_ctl("promote")

    def kill(self):
        """SIGKILL to the postmaster and every process it started, at once: a crashed node."""
        with open(os.path.join(self.data, "postmaster.pid")) as pidfile:
            parent = int(pidfile.readline())
        pids = [parent]
        for stat in glob.glob("/proc/[0-9]*/stat"):
            with contextlib.suppress(OSError), open(stat) as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == parent:
                    pids.append(int(stat.split("/")[2]))
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.killed = True

    def sql(self, query, database="postgres"):
        return as_server_user([f"{PG_BIN}/psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", USER,
                               "-d", database, "-qtAX", "-c", query], timeout=15).strip()

    def follow(self, primary):
        """Turns this stopped server into a standby of PRIMARY, and starts it."""
        open(os.path.join(self.data, "standby.signal"), "w").close()
        if ROOT:
            subprocess.run(["chown", "postgres:", os.path.join(self.data, "standby.signal")], check=True)
        self.configure(primary_conninfo=f"host=127.0.0.1 port={primary.port} user={USER}",
                       cluster_name=self.name, synchronous_standby_names="")
        self.start()


def new_server(directory, name, started, **settings):
    """A running cluster with a database farol, appended to STARTED before it starts.
    A commit is acknowledged once its WAL is written, with full pages, as in production
    (postgres.sh's defaults are laxer); fsync stays off: the drills never crash the machine."""
    server = Server(directory, name)
    started.append(server)
    settings = {"cluster_name": name, "synchronous_commit": "on", "full_page_writes": "on", **settings}
    shell("pg_start", server.dir, server.port, PG_EXTRA_CONF="".join(f"{k} = '{v}'\n" for k, v in settings.items()))
    return server


def replicated_pair(work, synchronous, started):
    """(primary, standby), streaming, synchronous (a commit waits until the standby flushed
    it) or not; each appended to STARTED as soon as it exists."""
    primary = new_server(os.path.join(work, "primary"), "primary", started, wal_level="replica",
                         max_wal_senders=5, synchronous_standby_names="")
    standby = Server(os.path.join(work, "standby"), "standby")
    started.append(standby)
    shell("pg_standby_start", primary.dir, standby.dir, standby.port, "standby")
    # synchronous only once the standby is there: until then every commit would wait for it
    if synchronous:
        primary.sql("ALTER SYSTEM SET synchronous_standby_names = 'standby'")
        primary.sql("SELECT pg_reload_conf()")
    wanted, deadline = "sync" if synchronous else "async", time.time() + 20
    while primary.sql("SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby' "
                      "AND state = 'streaming'") != wanted:
        if time.time() > deadline:
            fail(f"the standby is not streaming ({wanted}) after 20 s")
        time.sleep(0.1)
    return primary, standby


def database_url(*servers):
    """libpq's several-hosts form, the writable one wanted: what farol is given."""
    return (f"host={','.join('127.0.0.1' for _ in servers)} port={','.join(str(s.port) for s in servers)} "
            f"user={USER} dbname=farol sslmode=disable target_session_attrs=read-write")


def stop_all(*servers):
    """Stops what still runs, at once (immediate shutdown cleans up after itself, which
    SIGKILL does not); a killed server has a stale postmaster.pid and is left."""
    for server in servers:
        if not server.killed and os.path.exists(os.path.join(server.data, "postmaster.pid")):
            args = [f"{PG_BIN}/pg_ctl", "-D", server.data, "-m", "immediate", "-w", "-t", "10", "stop"]
            done = subprocess.run(["runuser", "-u", "postgres", "--", *args] if ROOT else args,
                                  capture_output=True, timeout=30, check=False)
            if done.returncode != 0:
                with contextlib.suppress(OSError, ValueError):
                    server.kill()
