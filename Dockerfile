# issuer-guard's container image.
#
#   docker build -t registry.example.com/issuer-guard:0.1.0 .
#   docker push registry.example.com/issuer-guard:0.1.0
#
# The Helm chart (charts/issuer-guard) runs it as `issuer-guard serve`.

# --- build ---------------------------------------------------------------
# Debian bookworm, so the binary links the same glibc (2.36) as the runtime
# image below.
FROM rust:1.95-bookworm AS build
WORKDIR /src

# Only what the release binary needs. benches/ is there because Cargo.toml
# declares `[[bench]] admission`, and cargo checks that every declared target
# exists when it reads the manifest, even when building a single binary.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches

# --locked: exactly the dependency versions of Cargo.lock. No test-only
# features: this is the binary as it ships. The release profile keeps line
# tables for readable backtraces; compressing them (backtraces still read
# them) more than halves the binary without losing them.
RUN cargo build --release --locked --bin issuer-guard \
 && objcopy --compress-debug-sections=zlib target/release/issuer-guard /issuer-guard

# --- runtime -------------------------------------------------------------
# distroless "cc": glibc and libgcc_s, nothing else (no shell, no package
# manager). Not the static image: the binary links glibc dynamically and
# tunes glibc's malloc at start-up (src/server/allocator.rs, docs/memory.md).
# The :nonroot variant's user is 65532, the UID the chart runs as.
FROM gcr.io/distroless/cc-debian12:nonroot

COPY --from=build /issuer-guard /issuer-guard

# Numeric, so Kubernetes can verify runAsNonRoot without a passwd lookup.
USER 65532:65532

# 8443: the HTTPS webhook (--listen). 8080: plain HTTP /healthz, /readyz and
# /metrics (--health-listen). Both bind 0.0.0.0 in a cluster.
EXPOSE 8443 8080

# With --tls-cert/--tls-key given (as the chart does) nothing is written to
# disk, so a read-only root filesystem works. Without them, serve would
# create a development CA under ./certs, which fails read-only: always give
# a certificate in a container.
ENTRYPOINT ["/issuer-guard"]
CMD ["serve"]
