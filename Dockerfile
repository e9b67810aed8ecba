# One image for every rebound binary: rebound-consumer, rebound-scheduler, rebound-producer and
# the admin CLI rebound. docker-compose.yml picks the binary per service with `command:`.
#
#   docker build -t rebound .
#   docker run --rm rebound rebound-consumer --help
#
# Needs BuildKit (RUN --mount; a client with buildx, or DOCKER_BUILDKIT=1 before Docker 23). No
# `# syntax=` line: BuildKit's built-in frontend is enough, and it needs no registry.
#
# The binaries come from the builder stage (default), or, with
# `--build-arg REBOUND_BINARIES=prebuilt`, from prebuilt/ in the build context: binaries built
# on the host, for machines where the Rust image cannot be pulled
# (scripts/docker-local.sh runtime-image does that, stripped).
ARG REBOUND_BINARIES=builder

# ---------------------------------------------------------------------------------------------
# Builder. rdkafka builds its bundled librdkafka with ./configure + make (not cmake, the
# `cmake-build` feature is off); its `ssl` feature links the system OpenSSL (libssl-dev,
# pkg-config), its `curl` feature the system libcurl (OIDC token requests), `libz` the system
# zlib; zstd and SQLite (rusqlite `bundled`) are compiled from source with the C compiler the
# rust image already has.
FROM rust:1-bookworm AS builder

RUN apt-get update \
    && apt-get install -y --no-install-recommends libssl-dev libcurl4-openssl-dev pkg-config zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .

# The cache mounts keep the crate registry and compiled dependencies between builds; the
# binaries are copied out of the cached target dir in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
        --bin rebound \
        --bin rebound-consumer \
        --bin rebound-scheduler \
        --bin rebound-producer \
    && mkdir -p /out \
    && cp target/release/rebound \
          target/release/rebound-consumer \
          target/release/rebound-scheduler \
          target/release/rebound-producer \
          /out/

# ---------------------------------------------------------------------------------------------
# Prebuilt: the binaries of the build context's prebuilt/ folder. BuildKit builds only the stage
# REBOUND_BINARIES names, so the Rust image is never pulled in this case.
FROM scratch AS prebuilt
COPY prebuilt/rebound prebuilt/rebound-consumer prebuilt/rebound-scheduler prebuilt/rebound-producer /out/

FROM ${REBOUND_BINARIES} AS binaries

# ---------------------------------------------------------------------------------------------
# Runtime: the binaries link OpenSSL 3 (libssl3) and libcurl (librdkafka's OIDC token client)
# dynamically; everything else is static or in the base image. CA certificates are for TLS to brokers and to an https:// sink.
FROM debian:bookworm-slim AS runtime

RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 libcurl4 \
    && rm -rf /var/lib/apt/lists/*

# Non-root user with a fixed uid, so volume ownership and `runAsNonRoot` checks are predictable.
# /data is where the consumer's SQLite sink lives; a fresh named volume mounted there takes over
# this ownership.
RUN groupadd --system --gid 10001 rebound \
    && useradd --system --uid 10001 --gid rebound --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin rebound \
    && mkdir -p /data \
    && chown rebound:rebound /data

COPY --from=binaries /out/rebound \
     /out/rebound-consumer \
     /out/rebound-scheduler \
     /out/rebound-producer \
     /usr/local/bin/

USER 10001:10001
WORKDIR /data

# Services pick their binary with `command:`; without one the image explains itself.
CMD ["rebound", "--help"]
