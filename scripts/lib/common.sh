# shellcheck shell=bash
# Shared helpers for the scripts in scripts/: sourced, never run.
# Every script sets its own `set -euo pipefail`; this file only defines things.

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export REPO_ROOT
# Tools installed by scripts/install-deps live here (git-ignored, under target/).
TOOLS_DIR=${FAROL_TOOLS_DIR:-$REPO_ROOT/target/tools}
export TOOLS_DIR
export PATH="$TOOLS_DIR/venv/bin:$TOOLS_DIR/bin:$PATH"
# The Python toolkit's modules import each other by name from scripts/lib: this is the
# one place that says where they are (pyproject.toml says it for pytest).
export PYTHONPATH="$REPO_ROOT/scripts/lib${PYTHONPATH:+:$PYTHONPATH}"

if [ -t 1 ]; then _bold=$'\e[1m' _red=$'\e[31m' _green=$'\e[32m' _reset=$'\e[0m'; else _bold='' _red='' _green='' _reset=''; fi

# step "what is happening": a visible heading in the output
step() { printf '%s==> %s%s\n' "$_bold" "$*" "$_reset"; }
ok() { printf '%s  ok%s %s\n' "$_green" "$_reset" "$*"; }
warn() { printf '  warning: %s\n' "$*" >&2; }
die() { printf '%serror:%s %s\n' "$_red" "$_reset" "$*" >&2; exit 1; }

# need CMD...: fail with a pointer to scripts/install-deps when a tool is missing
need() {
  local cmd
  for cmd in "$@"; do
    command -v "$cmd" >/dev/null 2>&1 || die "$cmd is missing: run scripts/install-deps"
  done
}

# wait_until [--while-running PID] SECONDS DESCRIPTION COMMAND...: poll every 0.2 s until
# COMMAND succeeds; else 1 after SECONDS, or as soon as process PID has exited
wait_until() {
  local pid=''
  if [ "$1" = --while-running ]; then pid=$2; shift 2; fi
  local limit=$1 what=$2 deadline
  shift 2
  deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [ -z "$pid" ] || kill -0 "$pid" 2>/dev/null || { warn "$what exited (pid $pid)"; return 1; }
    [ "$SECONDS" -lt "$deadline" ] || { warn "timed out after ${limit}s waiting for $what"; return 1; }
    sleep 0.2
  done
}

# free_port: a TCP port on 127.0.0.1 that nothing listens on right now
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# copy_k8s_for_render DEST: deploy/k8s copied to DEST/k8s without any real secrets.env or
# alerting.env, each overlay's *.env.example standing in for its env file, so that every
# overlay renders on any machine and no real secret is ever read by a check
copy_k8s_for_render() {
  local dest=$1 example
  tar -C deploy -c --exclude=secrets.env --exclude=alerting.env k8s | tar -C "$dest" -x
  for example in "$dest"/k8s/overlays/*/*.env.example; do
    [ ! -f "$example" ] || cp "$example" "${example%.example}"
  done
}

# backup_metric DIR EPOCH_SECONDS: record when a backup last succeeded, for the node
# exporter's textfile collector (PostgresBackupTooOld reads it). Written beside and
# renamed, so the collector never reads half a file; readable by the exporter's user.
backup_metric() {
  local dir=$1 at=$2
  mkdir -p "$dir"
  chmod 755 "$dir"   # a clone made under umask 077 would hide it from the exporter
  printf '%s\n' \
    '# HELP farol_db_backup_last_success_timestamp_seconds When the last backup of the database succeeded.' \
    '# TYPE farol_db_backup_last_success_timestamp_seconds gauge' \
    "farol_db_backup_last_success_timestamp_seconds $at" >"$dir/farol_db_backup.prom.tmp"
  chmod 644 "$dir/farol_db_backup.prom.tmp"
  mv -f "$dir/farol_db_backup.prom.tmp" "$dir/farol_db_backup.prom"
}
