# shellcheck shell=bash
# Stand-in for the official rust:<version>-slim-trixie image (README.md): this machine's
# toolchain where the official image keeps it, and this machine's CA bundle (crates.io
# is reached through a proxy with its own CA).

# build_rust IMAGE WORKDIR
build_rust() {
  local image=$1 root=$2/root sysroot version want toolchain bin
  want=${image#rust:}
  want=${want%%-*}
  sysroot=$(cd "$REPO_ROOT" && rustc --print sysroot) || die "no Rust toolchain on this machine (rustc)"
  version=$("$sysroot/bin/rustc" --version | awk '{print $2}')
  case $version in
    "$want" | "$want".*) ;;
    *) warn "$image stands in with Rust $version from this machine, not $want" ;;
  esac
  toolchain=$version-x86_64-unknown-linux-gnu

  rootfs_copy "$root"
  apt_install "$root" ca-certificates gcc libc6-dev
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"

  # the documentation and the standard library's sources: most of the size, never needed
  mkdir -p "$root/usr/local/rustup/toolchains/$toolchain" "$root/usr/local/cargo/bin"
  tar -C "$sysroot" --exclude=./share/doc --exclude=./lib/rustlib/src -c . \
    | tar -C "$root/usr/local/rustup/toolchains/$toolchain" -x
  for bin in "$root/usr/local/rustup/toolchains/$toolchain"/bin/*; do
    ln -s "../../rustup/toolchains/$toolchain/bin/${bin##*/}" "$root/usr/local/cargo/bin/${bin##*/}"
  done
  rootfs_scrub "$root"

  import_root "$root" "$image" \
    'ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo' \
    'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "ENV RUST_VERSION=$version" \
    'CMD ["bash"]'
}
