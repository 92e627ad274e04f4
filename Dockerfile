# syntax=docker/dockerfile:1.7
# switchyard's image: one static binary (musl, rustls with ring: no OpenSSL, no libc needed at
# run time) on distroless/static, which carries CA roots, /etc/passwd with `nonroot` (65532)
# and nothing else. The process writes no files, so the root filesystem can be read-only.
#
#   docker build -t switchyard:0.1.0 .
#   docker run --rm --read-only -p 127.0.0.1:4000:4000 switchyard:0.1.0 serve --listen 0.0.0.0:4000
#
# The same image runs the sidecar (`serve`, the default) and the injector (`inject`).

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
# musl-gcc compiles ring's C and assembly for the static target.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The registry and target caches survive between builds (BuildKit cache mounts), so a source
# change recompiles switchyard only.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    set -eu; \
    arch="$(uname -m)"; \
    target="${arch}-unknown-linux-musl"; \
    rustup target add "$target"; \
    cargo build --release --locked --bin switchyard --target "$target"; \
    install -D -m 0755 "target/$target/release/switchyard" /out/switchyard

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/switchyard /usr/local/bin/switchyard
USER 65532:65532
# 4000 data plane (loopback by default), 9464 admin plane, 8443 the injector's webhook.
EXPOSE 4000 9464 8443
ENTRYPOINT ["/usr/local/bin/switchyard"]
CMD ["serve"]
