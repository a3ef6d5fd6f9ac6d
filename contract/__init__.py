"""The workflow's data contract, shared by every side that reads or writes it.

Standard library only: this package is copied into each Lambda package
(`package.patterns` in serverless.yml) and into the SageMaker code directory (the
estimator's `dependencies`, and `code/` inside model.tar.gz), so the handlers, the
endpoint and training read one definition instead of copies.
"""

_SHOWN = 80  # characters of a bad value echoed in an error


def shown(value: object) -> str:
    """`value` as in code, cut to a readable length: what the contract's errors echo comes
    from files and the network."""
    text = repr(value)
    if len(text) <= _SHOWN:
        return text
    total = len(value) if isinstance(value, str) else len(text)
    return f"{text[:_SHOWN]}... ({total} characters)"
