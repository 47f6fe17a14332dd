# Parlor server image. Production runs pass DATABASE_URL and REDIS_URL; without them the embedded
# PostgreSQL starts in /data (fine for a trial, not for production).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    HOST=0.0.0.0 PORT=8080 DATA_DIR=/data

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY server ./server
COPY handlers ./handlers
COPY realtime ./realtime
COPY services ./services
COPY providers ./providers
COPY storage ./storage
COPY scheduler ./scheduler
COPY jobs ./jobs
COPY core ./core
COPY web ./web

RUN useradd --system --uid 10001 --home /data parlor && mkdir -p /data && chown parlor /data
USER parlor
VOLUME /data
EXPOSE 8080

HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD python -c "import os,urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/healthz', timeout=2)"

# SIGTERM → graceful shutdown (sockets told to go, in-flight requests finished).
STOPSIGNAL SIGTERM
CMD ["python", "-m", "server"]
