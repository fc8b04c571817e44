# shellcheck shell=bash
# The toolkit's own tests: one pytest run over scripts/ (pyproject.toml), checkov's and
# zizmor's among them.

validate_python() {
  need pytest checkov zizmor
  # global: the trap fires when this area's bash process ends
  PYTEST_LOG=$(mktemp)
  trap 'rm -f "$PYTEST_LOG"' EXIT
  if timeout 300 env PYTHONDONTWRITEBYTECODE=1 pytest -q "$REPO_ROOT/scripts" >"$PYTEST_LOG" 2>&1; then
    ok "the toolkit's tests (pytest): $(tail -n 1 "$PYTEST_LOG")"
  else
    cat "$PYTEST_LOG" >&2
    return 1
  fi
}
