# syntax=docker/dockerfile:1
# eqlstream: one image for every stage (EQLSTREAM_ROLE=ingest|sequence|all), see docs/deploy.md.
# Build: docker build --platform linux/amd64 -t eqlstream:0.2.0 .   (amd64: the platform built and tested)

# Python 3.11 on Debian 12, pinned by digest so a rebuild gets the same base.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:86adf8dbadc3d6e82ee5dd2c74bec2e1c2467cdad47886280501df722372d2e1

# -- 1. build: every wheel, at the versions of constraints.txt ----------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
# tini-static: a signal-forwarding init that needs no library from the runtime image.
RUN apt-get update \
    && apt-get install --yes --no-install-recommends tini=0.19.0-1+b3 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Only what the wheel is built from (.dockerignore keeps everything else out of the context).
COPY pyproject.toml constraints.txt README.md LICENSE NOTICE ./
COPY app ./app
RUN pip wheel --wheel-dir /wheels --constraint constraints.txt .

# -- 2. runtime: the wheels, a non-root user, nothing else --------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="eqlstream" \
      org.opencontainers.image.description="Elastic Security EQL sequence rules evaluated in real time on Kafka streams" \
      org.opencontainers.image.licenses="Apache-2.0"
ARG UID=10001
ARG GID=10001
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    EQLSTREAM_DATA_DIR=/var/lib/eqlstream
COPY --from=build /usr/bin/tini-static /usr/bin/tini
# /wheels holds exactly eqlstream and its dependencies at the constrained versions.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index /wheels/*.whl \
    && groupadd --system --gid "${GID}" eqlstream \
    && useradd --system --uid "${UID}" --gid "${GID}" --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin eqlstream \
    && install --directory --owner="${UID}" --group="${GID}" --mode=0750 /var/lib/eqlstream
WORKDIR /var/lib/eqlstream
USER ${UID}:${GID}
# /metrics, /livez, /readyz (EQLSTREAM_WEB_PORT)
EXPOSE 6066
# tini as PID 1 passes SIGTERM on to Python, which drains, commits and leaves the group.
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["eqlstream", "run"]
