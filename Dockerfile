# nvca's image: every binary (nvca-operator, nvca-self-managed, nvca-agent, nvca-state,
# sis-sim) built static against musl, on an empty base, run as a non-root user.
#
#   docker build -t <REGISTRY>/<REPOSITORY>/nvca:<version> .
#
# The chart runs /usr/bin/nvca-self-managed and /usr/bin/nvca-operator from this image,
# and the operator's Deployment `nvca` runs /usr/bin/nvca-agent from it.
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
 && mkdir /out \
 && for bin in nvca-operator nvca-self-managed nvca-agent nvca-state sis-sim nvca-mirror nvca-operator-cleanup; do \
      cp "target/x86_64-unknown-linux-musl/release/$bin" /out/; \
    done

FROM scratch
# TLS to SIS and NATS verifies against the system roots.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/ /usr/bin/
# The distroless "nonroot" user; the chart's securityContext asks for non-root too.
USER 65532:65532
ENTRYPOINT ["/usr/bin/nvca-operator"]
