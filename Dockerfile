# syntax=docker/dockerfile:1
# Multi-stage: build a wheel with the full toolchain, run it in a slim image as a non-root user.

FROM python:3.11-slim AS build
WORKDIR /src
RUN python -m pip install --no-cache-dir --upgrade pip build
COPY pyproject.toml README.md ./
COPY proto ./proto
COPY gateway ./gateway
COPY node ./node
COPY conformance ./conformance
COPY portal ./portal
COPY sdk ./sdk
RUN python -m build --wheel --outdir /wheels .

FROM python:3.11-slim AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 GOVNODE_LOG__FORMAT=json
RUN groupadd --system govnode && useradd --system --gid govnode --home-dir /var/lib/govnode \
        --create-home govnode
COPY --from=build /wheels /wheels
# The `otel` extra: [tracing] exporter = "otlp" works in the image.
RUN wheel="$(ls /wheels/govnode-*.whl)" && python -m pip install --no-cache-dir "${wheel}[otel]" \
    && rm -rf /wheels
USER govnode
WORKDIR /var/lib/govnode
# Mount the node directory made by `govnode init` (config + tls/ + node.db) at /var/lib/govnode/node.
VOLUME ["/var/lib/govnode/node"]
EXPOSE 7443
# gRPC health over mutual TLS, using the node's own certificate.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["govnode", "health", "--config", "/var/lib/govnode/node/govnode.toml"]
ENTRYPOINT ["govnode"]
CMD ["serve", "--config", "/var/lib/govnode/node/govnode.toml"]
