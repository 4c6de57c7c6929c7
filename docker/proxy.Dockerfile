# syntax=docker/dockerfile:1
# The data plane: sluice-proxy on a distroless base as uid 65532.
#
# Two ways to build it, from the repository root, with this file unchanged:
#   - Docker (BuildKit), the release image: a static musl binary from the
#     `build` stage, on distroless/static:
#       docker build -f docker/proxy.Dockerfile -t sluice/sluice-proxy:0.1.0 .
#     (buildah/podman 1.28 see no ARG default when they skip stages: add
#     --build-arg BINARY=build.)
#   - scripts/images, on the development machines: they pull no image and their
#     Rust has no musl target. The binary is the host's glibc build, put in
#     target/images/bin/sluice-proxy, and the base a distroless/cc
#     equivalent (glibc, libgcc_s, CA bundle, tzdata, nonroot) made from Debian
#     packages; the `build` stage is skipped, nothing is pulled:
#       --build-arg BINARY=context --build-arg BASE=localhost/sluice-base-cc:bookworm
#
# The chart (charts/sluice) runs it read-only, non-root, with every capability
# dropped; its writable paths are emptyDir volumes.

ARG BUILDER=rust:1-bookworm
ARG BASE=gcr.io/distroless/static-debian12:nonroot
# `build` (compile here) or `context` (take target/images/bin/sluice-proxy, a
# glibc build: then BASE must carry glibc too, e.g. distroless/cc-debian12).
ARG BINARY=build

FROM ${BUILDER} AS build
# musl-tools: a C compiler for the musl target (ring / aws-lc in the TLS stack).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    CARGO_PROFILE_RELEASE_STRIP=debuginfo \
    cargo build --release --locked --target x86_64-unknown-linux-musl -p sluice-proxy \
 && cp target/x86_64-unknown-linux-musl/release/sluice-proxy /sluice-proxy

# A binary built outside, on the host; .dockerignore lets target/images/bin/ through.
FROM scratch AS context
COPY target/images/bin/sluice-proxy /sluice-proxy

FROM ${BINARY} AS binary

FROM ${BASE}
COPY --from=binary /sluice-proxy /usr/local/bin/sluice-proxy
USER 65532:65532
EXPOSE 8080 9901
ENTRYPOINT ["/usr/local/bin/sluice-proxy"]
