# shellcheck shell=bash
# Static security: checkov (offline) over the Dockerfile, the Kubernetes renders and the
# workflows; the compose files' hardening policy; a secret scan of the working tree and of
# git history (detect-secrets); cargo-deny's licenses, bans and sources (deny.toml).
# A finding is fixed, or waived in the file with a reason: `checkov:skip=ID:why`,
# `checkov.io/skipN: ID=why` (Kubernetes), `x-security-exceptions: {rule: why}` (compose),
# `pragma: allowlist secret`. security_checks.py beside this does what needs more than a command.

validate_security() {
  need checkov detect-secrets kubectl docker cargo-deny git
  local failed=0 overlay name compose
  # global: the trap fires when this area's bash process ends (on INT and TERM too)
  SECURITY_TMP=$(mktemp -d)
  trap 'rm -rf "$SECURITY_TMP"' EXIT

  _security_checks checkov Dockerfile --framework dockerfile --file Dockerfile || failed=1
  # rendered as deploy/k8s's own check does, from a copy with the *.env.example files standing in
  copy_k8s_for_render "$SECURITY_TMP"
  # one checkov run per overlay: checkov reports a resource once per run, and both name
  # their objects alike
  for overlay in "$SECURITY_TMP"/k8s/overlays/*/; do
    name=$(basename "$overlay")
    if timeout 60 kubectl kustomize "$overlay" >"$SECURITY_TMP/$name.yaml"; then
      _security_checks checkov-render "Kubernetes render of overlays/$name" "$SECURITY_TMP/$name.yaml" || failed=1
    else
      warn "overlays/$name does not render"
      failed=1
    fi
  done
  if [ -n "$(git ls-files --cached --others --exclude-standard -- '.github/workflows/*.yml' '.github/workflows/*.yaml')" ]; then
    _security_checks checkov .github/workflows --framework github_actions --directory .github || failed=1
  else
    warn "no workflow in .github/workflows: checkov has nothing to check"
    failed=1
  fi

  # normalised by compose itself, every profile on; an empty env file, so a developer's .env changes nothing
  for compose in docker-compose.yml monitoring/docker-compose.yml; do
    if GRAFANA_ADMIN_PASSWORD_FILE=/dev/null timeout 60 docker compose --env-file /dev/null -f "$compose" \
      --profile '*' config >"$SECURITY_TMP/compose.yaml"; then
      _security_checks compose "$compose" "$SECURITY_TMP/compose.yaml" || failed=1
    else
      warn "docker compose cannot read $compose"
      failed=1
    fi
  done

  _security_checks secrets || failed=1

  # cargo deny reads the metadata of every target's dependencies, including crates no
  # build here downloads (wasm ones): fetch them all first, by the lock file
  timeout 300 cargo fetch --locked --quiet || failed=1
  if timeout 300 cargo deny --frozen check --hide-inclusion-graph licenses bans sources \
    >"$SECURITY_TMP/deny.log" 2>&1; then
    ok "cargo deny: licenses, bans, sources ($(grep -c '^warning\[duplicate\]' "$SECURITY_TMP/deny.log") crates in two versions, a warning)"
  else
    grep -v '^warning\[duplicate\]' "$SECURITY_TMP/deny.log" >&2
    failed=1
  fi
  return "$failed"
}

_security_checks() { python3 "$REPO_ROOT/scripts/lib/validate/security_checks.py" "$@"; }
