# syntax=docker/dockerfile:1
# Multi-stage build: compile the api and worker binaries, ship them on a slim base.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin api --bin worker \
 && mkdir -p /out && cp target/release/api target/release/worker /out/

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home conveyor
COPY --from=build /out/api /out/worker /usr/local/bin/
USER conveyor
ENV APP_ENV=production LOG_FORMAT=json
EXPOSE 8080 9100 9101
# Migrations are embedded in the binary: `api migrate`.
CMD ["api", "serve"]
