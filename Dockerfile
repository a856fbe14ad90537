# One image for every service; the command picks the service, e.g.
#   docker run IMAGE python -m services.order
#   docker run IMAGE python -m services.billing.meter
# Kubernetes manifests are under k8s/. No Docker engine runs on the machine this project is
# developed on, so this file is checked by tests/unit/test_dockerfile.py, not by a build.

# Builder: installs the pinned dependencies, then the project's wheel, into a virtual environment.
FROM python:3.11.13-bookworm AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml requirements-runtime.lock ./
# Every package at the version and hash of the runtime lock (the build backend included), so
# nothing is resolved here; the project then installs without dependencies of its own.
RUN /opt/venv/bin/pip install --require-hashes -r requirements-runtime.lock
COPY services ./services
COPY idc ./idc
# A regular install: the data files the services open (NETCONF templates, migrations, price
# book, console assets) are package data, and pip byte-compiles everything it installs.
RUN /opt/venv/bin/pip install --no-deps --no-build-isolation .

# Runtime: slim base, no compilers, no source tree; the code is the installed package in
# /opt/venv, owned by root and read-only to the service user.
FROM python:3.11.13-slim-bookworm AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    IDC_VAR_DIR=/tmp/idc
COPY --from=builder /opt/venv /opt/venv
# Empty and root-owned: `python -m` puts the working directory first on sys.path.
WORKDIR /app
# A numeric user, so Kubernetes can verify runAsNonRoot without a passwd lookup.
USER 10001:10001
EXPOSE 50051 50052 50053 50054
# No HEALTHCHECK: Kubernetes probes the standard gRPC health service directly.
CMD ["python", "-m", "services.order"]
