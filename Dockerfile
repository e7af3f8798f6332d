# syntax=docker/dockerfile:1
# Build stage: resolve and install dependencies with uv into /app/.venv.
FROM python:3.11-slim AS build
COPY --from=ghcr.io/astral-sh/uv:0.13 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY app ./app
COPY migrations ./migrations
COPY alembic.ini .env.default ./
RUN uv sync --frozen --no-dev

# Runtime stage: the virtualenv and the sources, run as an unprivileged user.
FROM python:3.11-slim AS runtime
RUN groupadd --system copilot && useradd --system --gid copilot --home-dir /app copilot
WORKDIR /app
COPY --from=build --chown=copilot:copilot /app /app
ENV PATH="/app/.venv/bin:$PATH" PYTHONUNBUFFERED=1 COPILOT_DATA_DIR=/app/data
USER copilot
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/healthz')" || exit 1
CMD ["copilot", "serve", "--host", "0.0.0.0", "--port", "8000"]
