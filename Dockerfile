# directory-api: the pyz on python:3.11-slim, as a non-root user.
#   docker build -t directory-api .
#   docker run --rm --env-file .env --env-file migrate.env directory-api migrate   # the schema first, as its owner
#   docker run --env-file .env --no-healthcheck directory-api work   # the worker, same image
#   docker run --env-file .env -p 8000:8000 directory-api            # serve, one process per CPU of the quota
# serve and work refuse a schema older than their code: migrate first, on every release.
# docs/production.md ("Containers") has the env files; docs/compose.yaml the same order for compose.
#
# The pyz is built in a first stage on the image's own platform: psycopg2-binary
# is a binary wheel, so a pyz built on a Mac or on ARM would not run here.

FROM python:3.11-slim AS build
WORKDIR /src
# build.sh makes its own build environment from requirements-build.txt.
COPY requirements.txt requirements-build.txt build.sh ./
COPY directory_api ./directory_api
# Only python3.11 runs in the image: no extension modules for other versions.
ARG SOURCE_DATE_EPOCH=1577836800
RUN PYTHON=python3 EXTRA_PYTHON_VERSIONS="" SOURCE_DATE_EPOCH="$SOURCE_DATE_EPOCH" ./build.sh

FROM python:3.11-slim
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /app --shell /usr/sbin/nologin directory-api
COPY --from=build /src/dist/directory-api.pyz /app/directory-api.pyz
# shiv unpacks the pyz into SHIV_ROOT on first run: do it now, as the service
# user, with every module's bytecode compiled (SHIV_COMPILE_PYC), so a
# container starts in a fraction of a second and needs no write access there
# at run time.
ENV SHIV_ROOT=/app/shiv \
    PYTHONUNBUFFERED=1
USER directory-api
WORKDIR /app
RUN SHIV_COMPILE_PYC=1 python3 -I /app/directory-api.pyz --help >/dev/null
EXPOSE 8000
# python3 rather than curl, which slim does not ship; GET / needs no signature.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python3", "-I", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/' % os.environ.get('PORT', '8000'), timeout=4)"]
ENTRYPOINT ["python3", "-I", "/app/directory-api.pyz"]
# auto: one process per CPU of the container's quota (cgroup cpu.max), not per host core.
CMD ["serve", "--processes", "auto"]
