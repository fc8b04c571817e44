"""Backup and point-in-time recovery (scripts/reliability pitr), with the tools of
CloudNativePG's Barman Cloud plugin: WAL archived (barman-cloud-wal-archive) and a base
backup (barman-cloud-backup) into an S3 API on 127.0.0.1 (moto); farol writes for 3 s,
T is recorded 1 s later, farol writes 3 s more 1 s after T; then barman-cloud-restore and
WAL replay to T into a fresh data directory, judged through a new farol on it."""

import asyncio
import datetime
import json
import os
import subprocess
import time
import urllib.request

from httpload import Farol, Load, fail, free_port, read_back, run_drill
from pg_servers import Server, as_server_user, new_server, stop_all

BUCKET, SERVER_NAME = "farol-backups", "farol-db"
CONNECTIONS, WRITE_S, GAP_S = 16, 3, 1
# the drill's own made-up credentials for the S3 API on loopback, which accepts any
CREDENTIALS = ("AWS_ACCESS_KEY_ID=drill AWS_DEFAULT_REGION=us-east-1 "
               "AWS_SECRET_ACCESS_KEY=drill")  # pragma: allowlist secret


def start_object_store(work):
    port = free_port()
    with open(os.path.join(work, "moto.log"), "wb") as log:
        process = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log)
    # for scripts/reliability to stop, should this process die before its own cleanup
    with open(os.path.join(work, "moto.pid"), "w") as pidfile:
        pidfile.write(f"{process.pid}\n")
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while True:
        try:
            # an unsigned path-style PUT creates the bucket: moto asks for no signature
            urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{BUCKET}", method="PUT"), timeout=2)
            return process, endpoint
        except OSError:
            if process.poll() is not None or time.time() > deadline:
                fail(f"moto_server did not answer within 30 s (log: {work}/moto.log)")
            time.sleep(0.2)


def barman(endpoint, tool, *args):
    """A barman-cloud-* command against the bucket, as the server's user (it reads PGDATA)."""
    return f"{CREDENTIALS} {tool} --cloud-provider aws-s3 --endpoint-url {endpoint} " + " ".join(args)


def sh(command):
    return as_server_user(["sh", "-c", command])


async def write_for(farol, seconds, tag):
    return await Load("127.0.0.1", farol.port, {"post": 1}, tag).run(CONNECTIONS, seconds)


def restore(work, endpoint, target, started):
    """The latest base backup, replayed to TARGET, then taking writes; appended to STARTED."""
    server = Server(os.path.join(work, "restored"), "restored")
    listed = json.loads(sh(barman(endpoint, "barman-cloud-backup-list", "--format", "json", f"s3://{BUCKET}",
                                  SERVER_NAME)))
    backup = listed["backups_list"][-1]["backup_id"]
    sh(barman(endpoint, "barman-cloud-restore", f"s3://{BUCKET}", SERVER_NAME, backup, server.data))
    server.configure(port=server.port, unix_socket_directories=server.dir, cluster_name="restored",
                     archive_mode="off",
                     restore_command=barman(endpoint, "barman-cloud-wal-restore", f"s3://{BUCKET}", SERVER_NAME,
                                            "%f", "%p"),
                     recovery_target_time=target, recovery_target_action="promote")
    open(os.path.join(server.data, "recovery.signal"), "w").close()
    if os.getuid() == 0:
        subprocess.run(["chown", "-R", "postgres:", server.data], check=True)
    started.append(server)
    server.start()
    deadline = time.time() + 60
    while server.sql("SELECT pg_is_in_recovery()") != "f":
        if time.time() > deadline:
            fail(f"the restored server still in recovery after 60 s (log: {server.dir}/postgres.log)")
        time.sleep(0.2)
    return server


async def drill(binary, work, verdict):
    store, endpoint = await asyncio.to_thread(start_object_store, work)
    servers, farol = [], None
    try:
        archive = barman(endpoint, "barman-cloud-wal-archive", f"s3://{BUCKET}", SERVER_NAME, "%p")
        origin = await asyncio.to_thread(lambda: new_server(os.path.join(work, "origin"), "origin", servers,
                                                    wal_level="replica", archive_mode="on",
                                                    archive_command=archive))
        url = f"postgres://farol@127.0.0.1:{origin.port}/farol?sslmode=disable"
        farol = Farol(binary, work, {"DATABASE_URL": url}, name="farol-origin")
        farol.start()
        await asyncio.to_thread(sh, barman(endpoint, "barman-cloud-backup", "--immediate-checkpoint",
                                   "-h", "127.0.0.1", "-p", str(origin.port), "-U", "farol",
                                   f"s3://{BUCKET}", SERVER_NAME))
        before = await write_for(farol, WRITE_S, "before")
        await asyncio.sleep(GAP_S)
        target = datetime.datetime.now(datetime.UTC).isoformat(sep=" ")
        await asyncio.sleep(GAP_S)
        after = await write_for(farol, WRITE_S, "after")
        farol.stop()
        # the last segment into the archive, and wait until it is there
        segment = await asyncio.to_thread(origin.sql, "SELECT pg_walfile_name(pg_switch_wal())")
        deadline = time.time() + 60
        while await asyncio.to_thread(origin.sql, "SELECT last_archived_wal FROM pg_stat_archiver") < segment:
            if time.time() > deadline:
                fail("the last WAL segment was not archived within 60 s")
            await asyncio.sleep(0.2)
        await asyncio.to_thread(stop_all, origin)
        started = time.time()
        restored = await asyncio.to_thread(restore, work, endpoint, target, servers)
        took = time.time() - started
        url = f"postgres://farol@127.0.0.1:{restored.port}/farol?sslmode=disable"
        farol = Farol(binary, work, {"DATABASE_URL": url}, name="farol-restored")
        farol.start()
        missing = await read_back(farol.port, before.created)
        # absent means 404: any other failure to read would prove nothing
        absent = {note_id for note_id, status in await read_back(farol.port, after.created)
                  if status == 404}
        present = [note_id for note_id in after.created if note_id not in absent]
        write = await write_for(farol, 1, "restored")
        writable = bool(write.created) and all(r.status == 201 for r in write.records)
    finally:
        if farol is not None:
            farol.stop()
        await asyncio.to_thread(stop_all, *servers)
        store.terminate()
        store.wait()

    verdict.figure("written", f"{len(before.created)} notes acknowledged before T ({target} UTC), "
                   f"{len(after.created)} after it")
    verdict.figure("restore", f"barman-cloud-restore and WAL replay to T took {took:.1f} s")
    verdict.check(before.created and not missing, "every note acknowledged before T is restored, and served",
                  f"{len(before.created)} acknowledged before T, {len(missing)} missing {missing[:3]}")
    verdict.check(after.created and not present, "no note written after T is restored",
                  f"{len(after.created)} written after T, {len(present)} present {present[:3]}")
    verdict.check(writable, "the restored server takes writes (recovery ended at T)",
                  f"{len(write.created)} notes written through farol in 1 s, "
                  f"{sum(1 for r in write.records if r.status != 201)} failed")


if __name__ == "__main__":
    run_drill("pitr", drill)
