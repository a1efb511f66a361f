# The loyalty service on a slim Python base, run as a non-root user.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    LOYALTY_DATABASE_URL=sqlite+aiosqlite:////data/loyalty.db

WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY service ./service
COPY migrations ./migrations
RUN pip install -c constraints.txt . \
    && useradd --create-home --uid 10001 loyalty \
    && mkdir /data && chown loyalty:loyalty /data

USER loyalty
WORKDIR /data
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)" || exit 1

# Applies pending migrations, then serves. Production: set LOYALTY_DATABASE_URL to PostgreSQL
# (postgresql+asyncpg://user:pass@host/db) and --workers to the number of cores.
CMD ["loyalty", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
