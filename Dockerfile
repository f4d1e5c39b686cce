# nvca's image: every binary (nvca-operator, nvca-self-managed, nvca-mirror,
# nvca-operator-cleanup, nvca, webhook-server, nvca-state, sis-sim) built static against
# musl, on an empty base, run as a non-root user.
#
#   docker build -t <REGISTRY>/<REPOSITORY>/nvca:<version> .
#
# Like NVIDIA's distroless images it has no entrypoint: every container names its binary
# as args[0] (the chart: /usr/bin/nvca-self-managed, nvca-operator, nvca-mirror,
# nvca-operator-cleanup; Deployment `nvca`, from either operator: /usr/bin/nvca and
# /usr/bin/webhook-server).
# Where this recipe was and was not tested: README.md, "The image".

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY tests ./tests
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --bins \
 && mkdir -p /out /root-fs/var/lib/nvca /root-fs/tmp \
 && chmod 1777 /root-fs/var/lib/nvca /root-fs/tmp \
 && for bin in nvca-operator nvca-self-managed nvca webhook-server nvca-state sis-sim nvca-mirror nvca-operator-cleanup; do \
      cp "target/x86_64-unknown-linux-musl/release/$bin" /out/; \
    done

FROM scratch
# TLS to SIS and NATS verifies against the system roots.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/ /usr/bin/
# Writable for any user: NVIDIA's Deployment `nvca` mounts no store volume and runs as
# uid 1000, and the agent keeps its store under /var/lib/nvca (nvca's operator mounts a
# volume there).
COPY --from=build /root-fs/ /
# The distroless "nonroot" user; the chart's securityContext asks for non-root too.
USER 65532:65532
