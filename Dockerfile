# tinygate in a container: a static binary on an empty image.
#
#   docker build -t tinygate .
#   docker run --rm -p 9080:9080 tinygate                    # the article's demo
#   docker run --rm -p 9080:9080 -v "$PWD/myconf:/conf:ro" tinygate
#
# The builder stage compiles tinygate against musl (Alpine's native libc),
# so the binary needs no shared library; the final image holds only that
# binary, the demo configuration and the article's plugin, and runs as an
# unprivileged user. Mount your own configuration over /conf: /conf/config.yaml
# is read, and relative paths in it (the routes file, plugin .wasm files)
# resolve against /conf. Listen on 0.0.0.0 in a container (apisix.node_listen),
# or the port is unreachable from outside it.

FROM rust:1-alpine AS build
# musl-dev: the C runtime the static link needs; gcc: ring (TLS) builds C
# (and brings binutils' readelf, for the static check).
RUN apk add --no-cache bash musl-dev gcc
WORKDIR /src
COPY . .
# Builds, checks the binary needs no libc or loader, and lays out /out:
# tinygate, conf/ (listening on 0.0.0.0) and the article's plugin. CI runs
# the same script on its own build to check the layout (.ci/run).
RUN scripts/image-root.sh /out

FROM scratch
COPY --from=build /out/ /
# nobody:nogroup; nothing in the image needs to be written.
USER 65534:65534
VOLUME /conf
EXPOSE 9080
ENTRYPOINT ["/tinygate"]
CMD ["-c", "/conf/config.yaml"]
