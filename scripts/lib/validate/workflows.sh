# shellcheck shell=bash
# The GitHub workflows and Dependabot, checked without GitHub: actionlint (with shellcheck
# of every `run:`); zizmor's offline audits, pedantic, with no finding; the JSON schemas,
# with a timeout on every job; every third-party action pinned to a commit SHA with its
# version in a comment; and every `make TARGET` a Makefile target, every step of `make ci`
# run by some job. The checkers' own tests run in the python area.

validate_workflows() {
  need actionlint zizmor check-jsonschema shellcheck python3 make
  python3 -c 'import yaml' 2>/dev/null || die "python3 lacks PyYAML: run scripts/install-deps lint"
  local failed=0 workflows=() unpinned targets steps
  mapfile -t workflows < <(git ls-files --cached --others --exclude-standard -- '.github/workflows/*.yml' '.github/workflows/*.yaml')
  [ ${#workflows[@]} -gt 0 ] || { warn "no workflow in .github/workflows"; return 1; }

  if actionlint "${workflows[@]}"; then ok "actionlint (and shellcheck of the run: scripts): ${workflows[*]}"; else failed=1; fi

  # offline: CI cannot reach the GitHub API. Pedantic adds a missing concurrency group and
  # unexplained permissions to the regular audits; a finding is silenced inline with its
  # reason. scripts/lib/workflows/test_zizmor.py breaks the workflow in each caught way.
  if timeout 120 zizmor --offline --no-progress --persona pedantic .github/; then
    ok "zizmor (offline audits, pedantic persona, no finding): .github/"
  else
    warn "zizmor reports findings (above)"
    failed=1
  fi

  if timeout 120 check-jsonschema --quiet --builtin-schema vendor.github-workflows "${workflows[@]}" \
    && timeout 120 check-jsonschema --quiet --builtin-schema custom.github-workflows-require-timeout "${workflows[@]}"; then
    ok "github-workflows schema, and timeout-minutes on every job"
  else
    failed=1
  fi
  if [ ! -f .github/dependabot.yml ]; then
    warn "no .github/dependabot.yml: nothing keeps the pinned actions and crates current"
    failed=1
  elif timeout 120 check-jsonschema --quiet --builtin-schema vendor.dependabot .github/dependabot.yml; then
    ok "dependabot schema: .github/dependabot.yml"
  else
    failed=1
  fi

  # a tag can be moved to other code (as trivy-action's were in 2026); a commit cannot
  unpinned=$(grep -nE '^[[:space:]]*(-[[:space:]]+)?uses:' "${workflows[@]}" \
    | grep -vE 'uses:[[:space:]]*["'\'']?\./' \
    | grep -vE 'uses:[[:space:]]*[^@[:space:]]+@[0-9a-f]{40}[[:space:]]+#[[:space:]]*[^[:space:]]' || true)
  if [ -z "$unpinned" ]; then
    ok "every action pinned to a commit SHA, with its version in a comment"
  else
    warn "actions not pinned to a full commit SHA with a '# version' comment:"
    printf '%s\n' "$unpinned" >&2
    failed=1
  fi

  # make_steps.py says what counts as a step certainly run
  # (make -q exits 1 when a target is out of date)
  targets=$({ make -qp 2>/dev/null || true; } | awk -F: '/^[a-z0-9-]+:/ {print $1}' | sort -u | tr '\n' ' ')
  # shellcheck disable=SC2016 # $(CI_STEPS) is make's, expanded by make
  steps=$(make -s -f Makefile -f - print-ci-steps <<<'print-ci-steps: ; @echo $(CI_STEPS)')
  if timeout 60 env PYTHONDONTWRITEBYTECODE=1 python3 scripts/lib/workflows/make_steps.py \
      --steps "$steps" --targets "$targets" "${workflows[@]}"; then
    ok "the workflow certainly runs every step of make ci ($steps), and only Makefile targets"
  else
    failed=1
  fi
  return "$failed"
}
