# shellcheck shell=bash
# The Kubernetes manifests checked without a cluster (docs/kubernetes.md, "How the manifests
# are verified"), from a copy of deploy/k8s where each *.env.example stands in for the real
# env file. The checker's and the generator's own tests run in the python area.

# 1.30: the first version that runs the preStop `sleep` action by default
K8S_SCHEMA_VERSIONS=(1.30.0 1.37.0)

validate_k8s() {
  need kubectl kubernetes-validate python3 promtool
  local failed=0 overlay name render version objects tmp
  # global: the trap fires when this area's own bash process ends, after the function returned
  K8S_TMP=$(mktemp -d)
  trap 'rm -rf "$K8S_TMP"' EXIT
  tmp=$K8S_TMP
  export PYTHONDONTWRITEBYTECODE=1

  # env files of secrets are never committed (and left out of the copy)
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
