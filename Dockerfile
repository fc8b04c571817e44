# The farol container image: a pinned Rust builder compiles the release binary, and a
# distroless runtime (no shell, no package manager) runs it as a non-root user.
#
#   docker compose build                     (builds farol:dev, see docker-compose.yml)
#   docker buildx build --build-arg FAROL_COMMIT=$(git rev-parse HEAD) -t farol .
#
# Both bases are Debian 13 (trixie), so the glibc the binary links against is the one
# it runs on.

FROM rust:1.95-slim-trixie AS builder
WORKDIR /src

# Dependencies in their own layer: it is rebuilt only when Cargo.toml or Cargo.lock
# change, so a source-only change recompiles just the farol crate. The placeholder
# sources let cargo resolve the package; farol's own artefacts are then deleted so that
# the real build below cannot mistake them for up to date (COPY keeps old mtimes).
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src target/release/farol* target/release/deps/farol-* \
        target/release/deps/libfarol-* target/release/.fingerprint/farol-* \
        target/release/build/farol-*

COPY build.rs ./
COPY migrations ./migrations
COPY src ./src
# Declared here, after the dependency layer, so that a new commit does not invalidate
# it. The service reads FAROL_COMMIT at compile time for /version.
ARG FAROL_COMMIT=unknown
ENV FAROL_COMMIT=${FAROL_COMMIT}
RUN cargo build --release --locked \
    && install -D -m 0755 target/release/farol /out/farol

FROM gcr.io/distroless/cc-debian13:nonroot
ARG FAROL_VERSION=dev
ARG FAROL_COMMIT=unknown
ARG BUILD_DATE=1970-01-01T00:00:00Z
# The repository URL; the release pipeline passes the real one.
ARG SOURCE_URL=https://github.com/farol-project/farol
LABEL org.opencontainers.image.title="farol" \
      org.opencontainers.image.description="farol: a small Rust web service on PostgreSQL" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.version="${FAROL_VERSION}" \
      org.opencontainers.image.revision="${FAROL_COMMIT}" \
      org.opencontainers.image.created="${BUILD_DATE}"

COPY --from=builder /out/farol /usr/local/bin/farol
# The distroless nonroot user, stated explicitly so that no base-image change can
# silently turn the service into root; numeric so Kubernetes can verify runAsNonRoot.
USER 65532:65532
# mimalloc turns transparent huge pages off for the process before it maps anything, also
# on hosts whose THP mode is `always`, where farol's own switch comes after the first
# pages (src/allocator.rs)
ENV MIMALLOC_ALLOW_THP=0
EXPOSE 5000
# Exec form: there is no shell in this image. The binary GETs its own /livez.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/farol", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/farol"]
CMD ["serve"]
