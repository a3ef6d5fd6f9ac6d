"""The one seam from the product to the local emulator: what `--mode local` runs.

The product (training_job, handlers, contract) runs on AWS without local_aws; local_aws
may use the product's formats and code. So no product module imports local_aws: `train
--mode local` and `deploy --mode local` look their implementation up here, by module
name, when they run (tests/test_import_graph.py holds the graph to this). Each backend
module provides what its command calls:
  train:  run(plan, work_dir) -> exit code          (local_aws/training.py)
  deploy: add_arguments(group), check(args) (refuses, before anything is made),
          start(args) -> exit code, stop(args) -> exit code
                                                   (local_aws/endpoint/daemon.py)
The demo (training_job/demo/), which starts the local AWS itself, uses two more:
  local-aws:  DEFAULT_PORT, DEFAULT_ENDPOINT_PORT, client_environment(port,
              endpoint_port=), endpoint_url(port), wait_until_ready(url, timeout),
              local_aws_server(state_dir, port, endpoint_port=) (a context manager),
              free_port()                          (local_aws/server.py)
  supervisor: SupervisorError, what a refused start raises
                                                   (local_aws/supervisor.py)
"""

from __future__ import annotations

import importlib
from types import ModuleType

from training_job.errors import CommandError

BACKENDS = {
    "train": "local_aws.training",
    "deploy": "local_aws.endpoint.daemon",
    "local-aws": "local_aws.server",
    "supervisor": "local_aws.supervisor",
}


def backend(command: str) -> ModuleType:
    """The local_aws module that runs `command --mode local` (or that the demo uses)."""
    name = BACKENDS[command]
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name and name.startswith(error.name):
            raise CommandError(f"--mode local needs the local AWS ({name}), not found") from None
        raise
