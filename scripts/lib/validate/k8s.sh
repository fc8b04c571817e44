# shellcheck shell=bash
# The Kubernetes manifests (deploy/k8s), checked without a cluster: every overlay rendered
# with `kubectl kustomize`, validated against the Kubernetes schemas (kubernetes-validate
# --strict) for the oldest version the manifests support and the newest the tool knows,
# then the policy checks of scripts/lib/k8s/policy.py (pod security, probes, resources,
# pinned images, selectors, references, NetworkPolicies, farol's rollout contract, custom
# resources); and the committed PrometheusRule and AlertmanagerConfig against a fresh generation. No real secret is ever
# read: the overlays are rendered from a temporary copy of deploy/k8s without any
# secrets.env or alerting.env, with each *.env.example standing in for it. The policy
# checker's and the generator's own tests run in the python area.

# 1.30: the first version that runs the preStop `sleep` action by default
K8S_SCHEMA_VERSIONS=(1.30.0 1.37.0)

validate_k8s() {
  need kubectl kubernetes-validate python3 promtool
  local failed=0 overlay name render version objects tmp
  # global, not local: validate runs each area in a bash process of its own, and this
  # trap fires when that process ends (on INT and TERM too), after the function returned
  K8S_TMP=$(mktemp -d)
  trap 'rm -rf "$K8S_TMP"' EXIT
  tmp=$K8S_TMP
  export PYTHONDONTWRITEBYTECODE=1

  # the env files of secrets must never be committed; the real ones (if any) are left out
  # of the copy
  if [ -n "$(git ls-files -- 'deploy/k8s/*secrets.env' 'deploy/k8s/*alerting.env')" ]; then
    warn "a secrets.env or alerting.env is tracked by git: remove it from the index and rotate what it holds"
    failed=1
  fi
  copy_k8s_for_render "$tmp"

  for overlay in "$tmp"/k8s/overlays/*/; do
    name=$(basename "$overlay")
    render=$tmp/$name.yaml
    if ! timeout 60 kubectl kustomize "$overlay" >"$render"; then
      warn "overlays/$name does not render"
      failed=1
      continue
    fi
    objects=$(grep -c '^kind:' "$render")
    ok "overlays/$name renders: $objects objects"
    for version in "${K8S_SCHEMA_VERSIONS[@]}"; do
      # --no-warn: kinds without a schema (the custom resources) are the policy checker's
      if timeout 120 kubernetes-validate --strict --quiet --no-warn -k "$version" "$render"; then
        ok "overlays/$name: Kubernetes $version schemas (strict)"
      else
        warn "overlays/$name does not validate against Kubernetes $version"
        failed=1
      fi
    done
    echo "  policy of overlays/$name:"
    timeout 120 python3 scripts/lib/k8s/policy.py --kubernetes-version "${K8S_SCHEMA_VERSIONS[0]}" "$render" || failed=1
  done

  if scripts/gen-prometheusrule --check >"$tmp/gen.log" 2>&1; then
    ok "$(cat "$tmp/gen.log")"
  else
    cat "$tmp/gen.log" >&2
    failed=1
  fi
  return "$failed"
}
