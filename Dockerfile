# One image for every service; the command picks the service, e.g.
#   docker run IMAGE python -m services.order
#   docker run IMAGE python -m services.billing.meter
# Kubernetes manifests are under k8s/. No Docker engine runs on the machine this project is
# developed on, so this file is checked by tests/unit/test_dockerfile.py, not by a build.

# Builder: resolves and installs the pinned dependencies into a virtual environment.
FROM python:3.11.13-bookworm AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml requirements.lock ./
COPY services ./services
COPY idc ./idc
# Installing the project pulls its dependencies at the versions of requirements.lock; the
# project itself is then removed again because it runs from /app, next to the data files
# (netconf_templates/, migrations, price book) it finds relative to its source.
RUN /opt/venv/bin/pip install -c requirements.lock . \
 && /opt/venv/bin/pip uninstall -y idc-orchestrator

# Runtime: slim base, no compilers, code owned by root and read-only to the service user.
FROM python:3.11.13-slim-bookworm AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    IDC_VAR_DIR=/tmp/idc
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY services ./services
COPY idc ./idc
COPY netconf_templates ./netconf_templates
# Byte-compile now: at run time the root filesystem is read-only.
RUN python -m compileall -q /app/services /app/idc
# A numeric user, so Kubernetes can verify runAsNonRoot without a passwd lookup.
USER 10001:10001
EXPOSE 50051 50052 50053 50054
# No HEALTHCHECK: Kubernetes probes the standard gRPC health service directly.
CMD ["python", "-m", "services.order"]
