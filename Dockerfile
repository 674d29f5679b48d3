# One image with both binaries; docker-compose.yml picks which one runs.
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin supportrag-api --bin supportrag-worker

FROM debian:bookworm-slim
# mueller7-dict: the RU<->EN dictionary cross-language questions use.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates mueller7-dict \
    && rm -rf /var/lib/apt/lists/* && useradd --system --uid 10001 supportrag
COPY --from=build /src/target/release/supportrag-api /src/target/release/supportrag-worker /usr/local/bin/
COPY config /app/config
WORKDIR /app
USER supportrag
EXPOSE 8000
CMD ["supportrag-api"]
