# syntax=docker/dockerfile:1
# Signet's image: one binary that is the controller, every worker subcommand the CronJobs run,
# and `signet migrate`. Build with `make image` (docker or podman).

# Build stage. The Rust image's Debian release matches the runtime's (bookworm = Debian 12), so
# the binary links against the same glibc. gcc is there for ring and the bundled SQLite.
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
# Only what the build reads: the manifest and lock, the sources, the SQL migrations that
# sqlx::migrate! embeds, and the benches Cargo.toml declares (cargo checks they exist).
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
COPY benches ./benches
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin signet \
 && cp target/release/signet /signet

# Runtime stage: glibc, libgcc, CA certificates and tzdata, no shell, no package manager. TLS is
# rustls throughout (no OpenSSL). The nonroot variant's user 65532 is the UID the chart and the
# worker CronJobs run as.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /signet /signet
USER 65532:65532
ENTRYPOINT ["/signet"]
