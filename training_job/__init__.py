"""The ML side of the Scones Unlimited workflow: stage data, train, deploy, evaluate, monitor.

`python -m training_job --help` lists the commands. The code that runs inside SageMaker's
containers (and, in local mode, here) is in `training_job/code/`.
"""
