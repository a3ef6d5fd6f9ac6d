# The serving image: the project's model server (training_job/code/serve.py) on a
# patched slim base, PyTorch's CPU build, every wheel pinned by hash, a non-root user.
# Build and publish it with `python -m training_job image build|push`; docs/serving-image.md
# says where the base's and the framework's support dates come from.

# --- build: a virtual environment from the hashed wheels (binary wheels only: no compiler
# is needed, and none reaches the final image) -------------------------------------------
FROM python:3.11-slim-trixie AS build
COPY requirements-serving.txt /tmp/requirements-serving.txt
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --require-hashes --only-binary=:all: \
        --extra-index-url https://download.pytorch.org/whl/cpu \
        -r /tmp/requirements-serving.txt

# --- serve: the environment, the server, and nothing to build with -----------------------
FROM python:3.11-slim-trixie
COPY --from=build /opt/venv /opt/venv
COPY training_job/code/serve.py training_job/code/batching.py /opt/program/
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin model-server
USER 10001
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
EXPOSE 8080
# SageMaker runs `docker run IMAGE serve` and reaches the container from outside it: the
# server binds every interface here (it binds 127.0.0.1 by default). Exec form, so the
# server itself receives SageMaker's SIGTERM. No HEALTHCHECK: SageMaker pings /ping.
ENTRYPOINT ["python", "/opt/program/serve.py", "--host", "0.0.0.0"]
CMD ["serve"]
