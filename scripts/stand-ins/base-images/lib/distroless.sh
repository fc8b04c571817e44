# shellcheck shell=bash
# Stand-in for gcr.io/distroless/cc-debian13 (README.md): the packages' files only, no
# shell. The :nonroot tag runs as 65532, the others as root.

DISTROLESS_PACKAGES=(libc6 libgcc-s1 libstdc++6 tzdata base-files)

# build_distroless IMAGE WORKDIR
build_distroless() {
  local image=$1 root=$2/root files=$2/files pkg list user=0:0 workdir=/root
  case $image in *:nonroot | *:debug-nonroot) user=65532:65532 workdir=/home/nonroot ;; esac
  mkdir -p "$root"

  # every file the packages ship (directories come as parents), but no documentation
  for pkg in "${DISTROLESS_PACKAGES[@]}"; do
    list=$ROOTFS/var/lib/dpkg/info/$pkg:amd64.list
    [ -f "$list" ] || list=$ROOTFS/var/lib/dpkg/info/$pkg.list
    [ -f "$list" ] || die "package $pkg is not in the trixie root"
    grep -vE '^/usr/share/(doc|man|info|lintian|bug|locale)/' "$list" | while read -r path; do
      if [ -L "$ROOTFS$path" ] || [ -f "$ROOTFS$path" ]; then printf '.%s\n' "$path"; fi
    done
  done >"$files"
  tar -C "$ROOTFS" --no-recursion -c -T "$files" | tar -C "$root" -x
  # merged /usr (base-files ships the links): the binary names its loader by that path
  [ -e "$root/lib64/ld-linux-x86-64.so.2" ] || die "no dynamic loader in the distroless stand-in"

  mkdir -p "$root/etc/ssl/certs" "$root/tmp" "$root/root" "$root/home/nonroot"
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' 'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
    'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >"$root/etc/passwd"
  printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'tty:x:5:' 'staff:x:50:' 'nonroot:x:65532:' >"$root/etc/group"
  printf '%s\n' 'passwd: files' 'group: files' 'hosts: files dns' >"$root/etc/nsswitch.conf"
  chmod 1777 "$root/tmp"
  chmod 0700 "$root/root" "$root/home/nonroot"
  chown 65532:65532 "$root/home/nonroot"

  import_root "$root" "$image" \
    'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    "USER $user" \
    "WORKDIR $workdir"
}
