# shellcheck shell=bash
# Stand-in for the official postgres:<major>-trixie image (README.md): Debian's package
# laid out like the official image, with ../postgres/docker-entrypoint.sh.

# build_postgres IMAGE WORKDIR
build_postgres() {
  local image=$1 root=$2/root major
  major=${image#postgres:}
  major=${major%%-*}
  case $major in '' | *[!0-9]*) die "cannot read a PostgreSQL major version from $image" ;; esac

  rootfs_copy "$root"
  # the same fixed ids as the official image, so that data volumes move between the two
  in_root "$root" groupadd -r -g 999 postgres
  in_root "$root" useradd -r -g postgres -u 999 --home-dir=/var/lib/postgresql --shell=/bin/bash postgres
  # the package would otherwise create and start a cluster of its own
  mkdir -p "$root/etc/postgresql-common/createcluster.d" "$root/var/lib/postgresql"
  echo 'create_main_cluster = false' >"$root/etc/postgresql-common/createcluster.d/stand-in.conf"
  apt_install "$root" "postgresql-$major" gosu
  # listen on every interface of the container, as the official image does
  sed -ri "s!^#?(listen_addresses)\s*=\s*\S+.*!\1 = '*'!" "$root/usr/share/postgresql/$major/postgresql.conf.sample"

  install -d -o 999 -g 999 -m 3777 "$root/var/run/postgresql"
  install -d -o 999 -g 999 -m 1777 "$root/var/lib/postgresql/data"
  install -d -m 0755 "$root/docker-entrypoint-initdb.d"
  chown 999:999 "$root/var/lib/postgresql"
  install -m 0755 "$STANDIN_DIR/postgres/docker-entrypoint.sh" "$root/usr/local/bin/docker-entrypoint.sh"
  rootfs_scrub "$root"

  import_root "$root" "$image" \
    "ENV PG_MAJOR=$major LANG=C.UTF-8" \
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/lib/postgresql/$major/bin" \
    'ENV PGDATA=/var/lib/postgresql/data' \
    'VOLUME /var/lib/postgresql/data' \
    'ENTRYPOINT ["docker-entrypoint.sh"]' \
    'STOPSIGNAL SIGINT' \
    'EXPOSE 5432' \
    'CMD ["postgres"]'
}
