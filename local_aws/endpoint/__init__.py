"""The local SageMaker endpoint: the same model.tar.gz and inference script as on AWS,
served on 127.0.0.1 by the serving image's own model server (training_job/code/serve.py,
one process per variant), behind what SageMaker adds in front of a container: the Runtime
API, variants and routing, data capture to the local S3 and Prometheus metrics.

`python -m training_job deploy --mode local` starts it; `python -m local_aws.endpoint`
serves a model directory directly.
"""
