# syntax=docker/dockerfile:1
#
# Realtime gateway image: one uvicorn process (uvloop + httptools) per container; scale with
# replicas, not workers. Build from the repository root:
#
#   docker build -t realtime-gateway:0.1.0 .
#
# Two stages: the builder makes a wheel of the project and installs it with its dependencies
# into a virtual environment; the final stage copies only that venv onto a clean slim base, so
# no compiler, pip cache or source tree ends up in the image.

ARG PYTHON_IMAGE=python:3.11-slim

# --- builder -------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src

# Every compiled dependency (uvloop, httptools, picows, orjson, lupa, pydantic-core) ships
# manylinux wheels for CPython 3.11 on amd64 and arm64, so the builder needs no apt packages.
RUN python -m venv /opt/venv

COPY pyproject.toml ./
COPY gateway ./gateway

# Build the project's wheel, then install it (and its dependencies, preferring wheels) into the
# venv. pip compiles the .pyc files here, so the read-only root filesystem at run time is fine.
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/python -m pip install --prefer-binary /wheels/*.whl \
 && /opt/venv/bin/realtime-gateway --help > /dev/null

# --- runtime -------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ARG APP_UID=10001
ARG APP_GID=10001

LABEL org.opencontainers.image.title="realtime-gateway" \
      org.opencontainers.image.description="Multi-tenant gateway for the OpenAI Realtime API" \
      org.opencontainers.image.licenses="Proprietary"

# A fixed, unprivileged UID/GID (the Helm chart's securityContext uses the same numbers) with no
# home directory and no login shell.
RUN groupadd --system --gid "${APP_GID}" gateway \
 && useradd --system --uid "${APP_UID}" --gid gateway --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin gateway

COPY --from=builder /opt/venv /opt/venv

# GATEWAY_DRAIN_SECONDS: on SIGTERM the gateway refuses new sessions and lets live ones finish
# for this long, then exits. The orchestrator's grace period must be longer (the chart
# computes it from the same value plus its preStop sleep).
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8080 \
    GATEWAY_DRAIN_SECONDS=25 \
    GATEWAY_LOG_FORMAT=json

USER ${APP_UID}:${APP_GID}
EXPOSE 8080

# SIGTERM starts the graceful drain (readiness false, new upgrades 503, live sessions closed
# with 1012 once their response is done). uvicorn is PID 1 and installs its own handler.
STOPSIGNAL SIGTERM

ENTRYPOINT ["realtime-gateway"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
