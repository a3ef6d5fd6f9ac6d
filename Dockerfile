# The project's image: the model server (training_job/code/serve.py) and the training
# program (training_job/code/container.py train) on a patched slim base, PyTorch's CPU
# build, every wheel pinned by hash; the server runs as a non-root user. SageMaker runs it as
# `docker run IMAGE serve` on an endpoint and `docker run IMAGE train` in a training job.
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

# --- run: the environment, the server, the training code, and nothing to build with -----
FROM python:3.11-slim-trixie
COPY --from=build /opt/venv /opt/venv
# What training_job/training/job.py names (SOURCE_DIR and DEPENDENCIES): train.py imports its
# siblings by name and contract/ beside them, and packs both into each model's code/.
COPY training_job/code/*.py /opt/program/
COPY contract/*.py /opt/program/contract/
# The server's user. The image itself starts as root, as SageMaker expects: a training
# job writes /opt/ml/model and /opt/ml/output, volumes SageMaker mounts owned by root;
# `serve` drops to this user before the server starts (container.py: MODEL_SERVER_UID).
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin model-server
# The commit the image's code came from (`image build` passes it): a training job in this
# image records it in metrics.json, not the commit of whoever launched the job.
ARG SCONES_GIT_COMMIT="unknown: built without --build-arg SCONES_GIT_COMMIT"
ENV PATH="/opt/venv/bin:${PATH}" \
    MODEL_SERVER_UID=10001 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SCONES_GIT_COMMIT="${SCONES_GIT_COMMIT}"
EXPOSE 8080
# SageMaker's argument picks the program (container.py): `serve` execs the server, bound
# to every interface (SageMaker reaches it from outside; serve.py binds 127.0.0.1 by
# default), `train` trains on /opt/ml. Exec form, and the server replaces the dispatcher,
# so SageMaker's SIGTERM reaches the program itself. No HEALTHCHECK: SageMaker pings /ping.
ENTRYPOINT ["python", "/opt/program/container.py"]
CMD ["serve"]
