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

# The base image, pinned by digest: a tag moves when Docker rebuilds it, a digest never does.
# python:3.11-slim-bookworm's OCI index (multi-arch; Python 3.11.16) as published on
# Docker Hub. Bump it deliberately: docker buildx imagetools inspect python:3.11-slim-bookworm
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b

# -- build: a virtualenv with the distribution and its operator/async extras --------------
# Nothing is resolved here: every third-party wheel is one requirements/*.txt names with
# its sha256 (scripts/lock-image-requirements.sh writes them from constraints.txt), and
# pip refuses anything else (--require-hashes, --no-deps, wheels only).
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY requirements/ requirements/
# The build backend (setuptools) in a virtualenv of its own, which the image does not keep.
RUN python -m venv /opt/build \
 && /opt/build/bin/pip install --require-hashes --no-deps --only-binary=:all: \
        -r requirements/build.txt
# --no-compile, then compileall: one explicit place where bytecode is made.
RUN python -m venv /opt/revisor \
 && /opt/revisor/bin/pip install --no-compile --require-hashes --no-deps --only-binary=:all: \
        -r requirements/image.txt
COPY pyproject.toml README.md ./
COPY engine/ engine/
COPY operator/ operator/
# Revisor itself, built here from this source (no index: --no-build-isolation uses the
# hashed setuptools above), then `pip check`: the hashed set is complete.
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /wheels . \
 && /opt/revisor/bin/pip install --no-compile --no-deps --no-index /wheels/revisor-*.whl \
 && /opt/revisor/bin/pip check
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
