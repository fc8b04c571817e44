# shellcheck shell=bash
# farol:dev, built the way `docker compose up --build` builds it. Shared by
# scripts/build-image and scripts/e2e-compose, so that the second finds every layer of
# the first's release build in the cache. Sourced after common.sh.
#
#   image_build_args
#       exports the compose file's build arguments for this checkout: FAROL_VERSION
#       (Cargo.toml), FAROL_COMMIT (git HEAD) and BUILD_DATE (now).
#   image_build COMPOSE_COMMAND... -- LOG
#       the base images first (local stand-ins for those missing), then
#       `COMPOSE_COMMAND build app` with its output in LOG, the last lines of it shown on
#       failure. The previous farol:dev is removed: each build has a new created label,
#       so it would be left behind untagged. IMAGE_BUILD_SECONDS: how long the build took.

image_build_args() {
  FAROL_VERSION=$(awk -F'"' '/^version *=/ { print $2; exit }' "$REPO_ROOT/Cargo.toml")
  FAROL_COMMIT=$(git -C "$REPO_ROOT" rev-parse --verify -q HEAD 2>/dev/null || echo no-commit)
  BUILD_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  export FAROL_VERSION FAROL_COMMIT BUILD_DATE
}

image_build() {
  local compose=() log previous started
  while [ "$1" != -- ]; do compose+=("$1"); shift; done
  log=$2
  "$REPO_ROOT/scripts/stand-ins/base-images/build"
  previous=$(docker image inspect --format '{{.Id}}' farol:dev 2>/dev/null || true)
  started=$SECONDS
  timeout 2400 "${compose[@]}" build --progress=plain app >"$log" 2>&1 \
    || { tail -40 "$log" >&2; die "docker compose build failed (log: $log)"; }
  # shellcheck disable=SC2034 # for the caller, which sources this file
  IMAGE_BUILD_SECONDS=$((SECONDS - started))
  [ -z "$previous" ] || [ "$previous" = "$(docker image inspect --format '{{.Id}}' farol:dev)" ] \
    || docker image rm "$previous" >/dev/null 2>&1 || true
}
