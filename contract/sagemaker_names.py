"""SageMaker's one rule for the names this project gives its resources: training jobs,
endpoints, production variants and model package groups. The SageMaker API reference
gives each of them (CreateTrainingJob's TrainingJobName, CreateEndpoint's EndpointName,
ProductionVariant's VariantName, CreateModelPackageGroup's ModelPackageGroupName) the
same "Pattern: [a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}": 1 to 63 letters, digits and hyphens,
starting and ending with a letter or digit.

Standard library only: the classify handler checks its ENDPOINT_NAME with it (it ships in
that Lambda package), the commands check names before any call, and the local AWS refuses
what SageMaker refuses.
"""

from __future__ import annotations

import re

# The pattern as the API reference writes it (unanchored, for use inside other patterns).
NAME = r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}"
# \Z, not $: `$` also matches before a trailing newline, so NAME_PATTERN.match("name\n")
# would pass a name SageMaker refuses (deploy's and models' options call .match()).
NAME_PATTERN = re.compile(rf"^{NAME}\Z")
