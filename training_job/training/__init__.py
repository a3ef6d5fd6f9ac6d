"""Training, from outside the container: `python -m training_job train` (launch.py)
starts the job on SageMaker or in local mode. What runs inside the container is
training_job/code/; the local runner that plays SageMaker is local_aws/training.py."""
