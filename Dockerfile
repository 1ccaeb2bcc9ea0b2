# The Revisor image: the `revisor` engine CLI and the `revisor-operator` operator.
#
#   docker build -t ghcr.io/revisor-dev/revisor:0.1.0 .
#   docker run --rm ghcr.io/revisor-dev/revisor:0.1.0 revisor --help
#   docker run --rm ghcr.io/revisor-dev/revisor:0.1.0 revisor-operator --help
#
# One image, two programs, no ENTRYPOINT: the chart's Deployment runs
# `revisor-operator ...` and the operator's Jobs run `revisor ...` (their
# `command`), and `docker run IMAGE revisor ...` reads the same way.
# Both run as uid 65532 with a read-only root filesystem, so every module is
# compiled here: nothing can be written at run time (see docs/image.md).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- build: a virtualenv with the distribution and its operator/async extras --------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/revisor
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY engine/ engine/
COPY operator/ operator/
# --no-compile, then compileall: one explicit place where bytecode is made.
# -c constraints.txt: the exact versions `make test` last passed with.
RUN /opt/revisor/bin/pip install --no-compile -c constraints.txt ".[operator,async]"
# unchecked-hash: the .pyc is used without comparing the source's mtime, which
# COPY --from and image layering do not promise to keep.
RUN /opt/revisor/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash /opt/revisor

# -- runtime --------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="revisor" \
      org.opencontainers.image.description="Alembic migrations as Kubernetes Jobs: locked, recorded, reversible." \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/revisor-dev/revisor"
# The standard library too: the base image may ship it without bytecode.
RUN python -m compileall -q -j 0 --invalidation-mode unchecked-hash -x '/tests?/' \
        /usr/local/lib/python3.11
COPY --from=build /opt/revisor /opt/revisor
ENV PATH=/opt/revisor/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
WORKDIR /tmp
# The uid the chart and the operator's Jobs run as (runAsUser: 65532), "nonroot" in distroless.
USER 65532:65532
CMD ["revisor", "--help"]
