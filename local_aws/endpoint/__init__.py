"""The local SageMaker endpoint: the same model.tar.gz and inference script as on AWS,
served on 127.0.0.1 with the container contract and the Runtime API, micro-batched,
with data capture to the local S3 and Prometheus metrics.

`python -m training_job deploy --mode local` starts it; `python -m local_aws.endpoint`
serves a model directory directly.
"""
