# Images of the scale-out stack (docker-compose.yml builds all three; `docker build .` builds the worker).
#
#   worker     the project itself: `mta-ablate worker|sweep|status|report`, CPU torch by default;
#              a CUDA build with --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/<cuda tag>
#   mlflow     the official MLflow server image plus the PostgreSQL driver (psycopg 3) and boto3 for S3 artifacts
#   dashboard  optuna-dashboard with the same Optuna as the worker (the RDB schema must match) and psycopg 3
#
# Versions come from build args, which docker-compose.yml fills from .env.
ARG PYTHON_VERSION=3.11
ARG MLFLOW_VERSION=3.17.2

# -- mlflow ------------------------------------------------------------------------------------------------------
FROM ghcr.io/mlflow/mlflow:v${MLFLOW_VERSION} AS mlflow
ARG PSYCOPG_VERSION=3.3.9
RUN pip install --no-cache-dir "psycopg[binary]==${PSYCOPG_VERSION}" boto3

# -- dashboard ---------------------------------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim AS dashboard
ARG OPTUNA_VERSION=5.0.0
ARG OPTUNA_DASHBOARD_VERSION=0.21.0
ARG PSYCOPG_VERSION=3.3.9
RUN pip install --no-cache-dir "optuna==${OPTUNA_VERSION}" "optuna-dashboard==${OPTUNA_DASHBOARD_VERSION}" \
        "psycopg[binary]==${PSYCOPG_VERSION}"
USER nobody
EXPOSE 8080
ENTRYPOINT ["optuna-dashboard"]

# -- worker (last: the default target) ---------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim AS worker
ARG TORCH_SPEC=torch==2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG OPTUNA_VERSION=5.0.0
ARG MLFLOW_VERSION=3.17.2
ARG PSYCOPG_VERSION=3.3.9
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    MTA_HOME=/workspace
WORKDIR /app
# torch first, from the chosen index, so no dependency can pull a different (multi-GB CUDA) build
RUN pip install --index-url "${TORCH_INDEX_URL}" "${TORCH_SPEC}"
COPY pyproject.toml README.md ./
COPY mta_ablate ./mta_ablate
COPY lightning_modules ./lightning_modules
COPY dashboards ./dashboards
# client versions pinned to the servers' (MLflow client = server, Optuna = dashboard's)
RUN pip install . "optuna==${OPTUNA_VERSION}" "mlflow==${MLFLOW_VERSION}" "psycopg[binary]==${PSYCOPG_VERSION}"
COPY sweeps ./sweeps
# MTA_HOME (caches, checkpoints, worker logs) is a volume owned by an unprivileged user
RUN useradd --create-home --uid 1000 mta && mkdir -p /workspace && chown mta /workspace
USER mta
VOLUME ["/workspace"]
CMD ["mta-ablate", "--help"]
