# IOC backend: API, scheduler, live hub and wall display in one image.
# The same image also runs the upstream simulators (`ioc simulate …`), see docker-compose.yml.
FROM python:3.11-slim

# Without PostgreSQL (IOC_DATABASE_URL unset by the deployer) the service keeps a SQLite file in a
# directory the app user may write.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TZ=Asia/Ho_Chi_Minh \
    IOC_HOST=0.0.0.0 \
    IOC_PORT=8000 \
    IOC_TIMEZONE=Asia/Ho_Chi_Minh \
    IOC_DATABASE_URL=sqlite+aiosqlite:////app/data/ioc.db

RUN groupadd --system --gid 10001 ioc \
    && useradd --system --uid 10001 --gid ioc --home-dir /app --no-create-home ioc

WORKDIR /app

# Dependencies first, in their own layer, so a source change does not reinstall them all:
# install the project once from its metadata with empty packages, then drop it.
COPY pyproject.toml README.md ./
RUN mkdir ioc connectors \
    && touch ioc/__init__.py connectors/__init__.py \
    && pip install --no-cache-dir . \
    && pip uninstall --yes ioc-backend \
    && rm -rf ioc connectors

COPY . .
RUN pip install --no-cache-dir --no-deps . \
    && mkdir -p /app/data \
    && chown ioc:ioc /app/data

# `ioc migrate` finds alembic.ini and alembic/ in the working directory, /app.
USER ioc
EXPOSE 8000

# python:3.11-slim has no curl; the standard library does the probe.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('IOC_PORT', '8000')}/healthz\", timeout=4)"]

CMD ["sh", "-c", "ioc migrate && exec ioc serve"]
