# shellcheck shell=bash
# Every shell script of the repository passes shellcheck (warnings and above).

validate_shell() {
  need shellcheck
  local files=()
  mapfile -t files < <(
    git ls-files --cached --others --exclude-standard -- .ci scripts tests deploy monitoring \
      | while read -r f; do
          [ -f "$f" ] || continue
          case $f in *.sh) echo "$f"; continue ;; esac
          head -c 64 "$f" | grep -qE '^#!.*(ba)?sh' && echo "$f"
        done
  )
  shellcheck -x -S warning "${files[@]}"
  ok "shellcheck: ${#files[@]} scripts"
}
