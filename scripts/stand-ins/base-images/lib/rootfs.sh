# shellcheck shell=bash
# Debian roots for the stand-ins: one cached debootstrap of trixie, copied per image, apt
# in a chroot, the import as a one-layer image. No mounts into the chroots: nothing
# outlives the script, and removing a scratch copy never reaches the host.

STANDIN_CACHE=$TOOLS_DIR/stand-ins
STANDIN_SUITE=trixie
STANDIN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
STANDIN_LABEL=farol.stand-in
STANDIN_RECIPE_LABEL=farol.stand-in.recipe

# rootfs_pristine: sets ROOTFS to a minbase trixie, debootstrapped once and then reused
rootfs_pristine() {
  ROOTFS=$STANDIN_CACHE/$STANDIN_SUITE-rootfs
  [ -d "$ROOTFS" ] && return 0
  need debootstrap
  step "debootstrap $STANDIN_SUITE into $ROOTFS (once; later runs reuse it)"
  mkdir -p "$STANDIN_CACHE"
  rm -rf --one-file-system "$ROOTFS.tmp"
  timeout 600 debootstrap --variant=minbase "$STANDIN_SUITE" "$ROOTFS.tmp" "$STANDIN_MIRROR" \
    >"$STANDIN_CACHE/debootstrap.log" 2>&1 \
    || { tail -20 "$STANDIN_CACHE/debootstrap.log" >&2; die "debootstrap failed (log: $STANDIN_CACHE/debootstrap.log)"; }
  # the .debs debootstrap leaves behind seed the package cache used by apt_install
  mkdir -p "$STANDIN_CACHE/apt-archives"
  mv "$ROOTFS.tmp"/var/cache/apt/archives/*.deb "$STANDIN_CACHE/apt-archives/" 2>/dev/null || true
  mv "$ROOTFS.tmp" "$ROOTFS"
}

rootfs_copy() {
  rm -rf --one-file-system "$1"
  cp -a "$ROOTFS" "$1"
}

# in_root DIR CMD...: CMD inside the chroot, with a clean environment
in_root() {
  local dir=$1
  shift
  chroot "$dir" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
}

# apt_install DIR PACKAGE...: install packages into the root. Maintainer scripts may not
# start daemons (policy-rc.d); downloaded .debs are kept in the cache for the next run.
apt_install() {
  local dir=$1 log=$STANDIN_CACHE/apt.log
  shift
  mkdir -p "$STANDIN_CACHE/apt-archives"
  printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"
  chmod 0755 "$dir/usr/sbin/policy-rc.d"
  cp /etc/resolv.conf "$dir/etc/resolv.conf"
  find "$STANDIN_CACHE/apt-archives" -name '*.deb' -exec cp -lf -t "$dir/var/cache/apt/archives/" {} +
  { in_root "$dir" apt-get update -q && in_root "$dir" apt-get install -y -q --no-install-recommends "$@"; } \
    >"$log" 2>&1 || { tail -30 "$log" >&2; die "apt-get install $* failed (log: $log)"; }
  find "$dir/var/cache/apt/archives" -maxdepth 1 -name '*.deb' -exec cp -n -t "$STANDIN_CACHE/apt-archives/" {} +
  in_root "$dir" apt-get clean
  rm -rf "$dir"/var/lib/apt/lists/* "$dir/usr/sbin/policy-rc.d"
}

# rootfs_scrub DIR: drop what belongs to this machine or to the build, not to an image
rootfs_scrub() {
  local dir=$1
  : >"$dir/etc/resolv.conf"
  : >"$dir/etc/hostname"
  rm -rf "${dir:?}"/dev/* "$dir"/var/cache/apt/archives/*.deb "$dir"/var/log/apt/* "$dir"/var/log/dpkg.log \
    "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/info/*
}

# recipe_hash IMAGE: a digest of the files its stand-in is built from, kept on the image,
# so that a stand-in built from an older recipe is built again (build) rather than used
recipe_hash() {
  local files
  case $1 in
    rust:*) files=(lib/rust.sh) ;;
    gcr.io/distroless/*) files=(lib/distroless.sh) ;;
    postgres:*) files=(lib/postgres.sh postgres/docker-entrypoint.sh) ;;
    *) die "no stand-in recipe for $1" ;;
  esac
  (cd "$STANDIN_DIR" && cat lib/rootfs.sh "${files[@]}") | sha256sum | cut -c1-16
}

# import_root DIR IMAGE [DOCKERFILE-LINE...]: DIR as a one-layer image, its settings as
# Dockerfile lines (docker import cannot set them all: STOPSIGNAL)
import_root() {
  local dir=$1 image=$2 tmp
  shift 2
  tmp=farol-stand-in-rootfs:$$
  tar --numeric-owner -C "$dir" -c . | docker import - "$tmp" >/dev/null
  {
    printf 'FROM %s\n' "$tmp"
    printf '%s\n' "$@"
    printf 'LABEL %s="%s"\n' "$STANDIN_LABEL" "stand-in for $image built by scripts/stand-ins/base-images/build, not the real image"
    printf 'LABEL %s="%s"\n' "$STANDIN_RECIPE_LABEL" "$(recipe_hash "$image")"
  } | DOCKER_BUILDKIT=0 docker build -q -t "$image" - >"$STANDIN_CACHE/import.log" 2>&1 \
    || { cat "$STANDIN_CACHE/import.log" >&2; die "could not set up the image $image"; }
  docker image rm "$tmp" >/dev/null
}
