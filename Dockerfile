# The shardis image: a release build on Debian bookworm, run as an unprivileged user.
#
#   docker build -t shardis .
#   docker run --rm -p 6380:6380 -v "$PWD/my.toml:/etc/shardis/shardis.toml:ro" shardis
#
# The bundled /etc/shardis/shardis.toml is conf/shardis.toml, whose shards are on 127.0.0.1:
# inside a container that is the container itself, so mount a config that names your Redis
# nodes (or override keys with SHARDIS__... environment variables).

# ---- build ----
FROM rust:1-bookworm AS builder
WORKDIR /build

# Dependencies first, compiled against stub sources, in a layer that is rebuilt only when
# Cargo.toml or Cargo.lock change. Cargo refuses a manifest whose [[bench]] files are missing,
# hence the empty benches (they are not built). A target or build script added to Cargo.toml
# needs its stub here and its COPY below.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs benches/parse.rs benches/ring.rs \
    && cargo build --release --locked \
    && rm -rf src benches

COPY src ./src
COPY benches ./benches
# COPY keeps the files' modification times, which can be older than the stub build above:
# touch the crate roots so that cargo rebuilds shardis itself, not only its dependencies.
RUN touch src/lib.rs src/main.rs \
    && cargo build --release --locked \
    && install -m 0755 target/release/shardis /usr/local/bin/shardis

# ---- run ----
FROM debian:bookworm-slim

# A fixed uid and gid (10001), so that mounted files and volumes can be given to the user.
# /var/lib/shardis is where a [replication] state_file can live (mount a volume there to keep it).
RUN groupadd --system --gid 10001 shardis \
    && useradd --system --uid 10001 --gid shardis --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin shardis \
    && install -d -o shardis -g shardis -m 0750 /var/lib/shardis

COPY --from=builder /usr/local/bin/shardis /usr/local/bin/shardis
COPY conf/shardis.toml /etc/shardis/shardis.toml

# The shardis user, by number: Kubernetes' runAsNonRoot can only verify a numeric user.
USER 10001:10001
EXPOSE 6380
# shardis handles SIGTERM itself (graceful shutdown within shutdown_grace), as PID 1 too.
ENTRYPOINT ["shardis"]
CMD ["--config", "/etc/shardis/shardis.toml", "--listen", "0.0.0.0:6380"]
