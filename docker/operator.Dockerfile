# syntax=docker/dockerfile:1
# The control plane: sluice-operator, static (musl), on distroless/static as uid 65532.
# Build from the repository root:
#   docker build -f docker/operator.Dockerfile -t sluice/sluice-operator:0.1.0 .
# The chart (charts/sluice) runs it read-only, non-root, with every capability
# dropped; its writable paths are emptyDir volumes.

FROM rust:1-bookworm AS build
# musl-tools: a C compiler for the musl target (ring / aws-lc in the TLS stack).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --target x86_64-unknown-linux-musl -p sluice-operator \
 && cp target/x86_64-unknown-linux-musl/release/sluice-operator /sluice-operator

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /sluice-operator /usr/local/bin/sluice-operator
USER 65532:65532
EXPOSE 8081
ENTRYPOINT ["/usr/local/bin/sluice-operator"]
