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
"""

from __future__ import annotations

import importlib
from types import ModuleType

from training_job.errors import CommandError

BACKENDS = {
    "train": "local_aws.training",
    "deploy": "local_aws.endpoint.daemon",
}


def backend(command: str) -> ModuleType:
    """The local_aws module that runs `command --mode local`."""
    name = BACKENDS[command]
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name and name.startswith(error.name):
            raise CommandError(f"--mode local needs the local AWS ({name}), not found") from None
        raise
