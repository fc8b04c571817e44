# shellcheck shell=bash
# The operations toolkit's own tests: one pytest run over scripts/ (pyproject.toml),
# covering the drill's judge and config adjustment, the Kubernetes policy checker (and
# that checkov catches the generic policy it leaves to checkov) and PrometheusRule
# generator, the monitoring checks, the workflow checker (and that zizmor catches what the
# workflow area leaves to it).

validate_python() {
  need pytest checkov zizmor
  # global, not local: the trap fires when this area's bash process ends
  PYTEST_LOG=$(mktemp)
  trap 'rm -f "$PYTEST_LOG"' EXIT
  if timeout 300 env PYTHONDONTWRITEBYTECODE=1 pytest -q "$REPO_ROOT/scripts" >"$PYTEST_LOG" 2>&1; then
    ok "the toolkit's tests (pytest): $(tail -n 1 "$PYTEST_LOG")"
  else
    cat "$PYTEST_LOG" >&2
    return 1
  fi
}
