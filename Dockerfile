# The Roost broker program in a small image:
#   docker build -t roost .
#   docker run -p 1883:1883 -v roost-data:/data roost [flags, e.g. --allow-anonymous true]
# State lives in the /data volume; the broker runs as an unprivileged user.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo install --locked --path crates/server --root /out

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin roost \
    && mkdir -p /data \
    && chown roost /data
COPY --from=build /out/bin/roost-broker /usr/local/bin/roost-broker
USER 10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 1883
ENTRYPOINT ["roost-broker", "--data-dir", "/data", "--listen", "0.0.0.0:1883"]
