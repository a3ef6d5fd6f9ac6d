"""The workflow's data contract, shared by every side that reads or writes it.

Standard library only: this package is copied into each Lambda package
(`package.patterns` in serverless.yml) and into the SageMaker code directory (the
estimator's `dependencies`, and `code/` inside model.tar.gz), so the handlers, the
endpoint and training read one definition instead of copies.
"""
