# syntax=docker/dockerfile:1
# Multi-stage build: dependencies are compiled in their own layer, so a code
# change rebuilds only the crate. The build and run commands are the same ones
# scripts/run.sh uses (tests/api/ops.rs checks that they stay so).

FROM rust:1-bookworm AS build
WORKDIR /app
# 1. Dependencies only: stub crates with the real manifests and lock file
#    (the workspace's load tester is only a stub here: it is not shipped).
COPY Cargo.toml Cargo.lock ./
COPY loadtest/Cargo.toml loadtest/Cargo.toml
RUN mkdir -p src loadtest/src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && echo 'fn main() {}' > loadtest/src/main.rs \
    && cargo build --release --locked --bin storefront \
    && rm -rf src
# 2. The crate itself.
COPY src src
COPY migrations migrations
COPY config config
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin storefront

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin storefront
WORKDIR /app
COPY --from=build /app/target/release/storefront /usr/local/bin/storefront
COPY --from=build /app/config /app/config
USER storefront
ENV APP_ENVIRONMENT=production \
    STOREFRONT_CONFIG_DIR=/app/config \
    PORT=8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["storefront", "healthcheck"]
ENTRYPOINT ["storefront"]
CMD ["serve"]
