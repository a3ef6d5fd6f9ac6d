"""The SageMaker model registry in the local AWS, and how a local endpoint finds its model.

`training_job deploy` creates a SageMaker model from a model package version
(Containers=[{ModelPackageName}]), in both modes. On AWS, SageMaker resolves the package
to its image and model.tar.gz; here `serving_source` is that resolution, the one place
the local endpoint (local_aws/endpoint/daemon.py) learns what a model serves.

moto (5.2.5) keeps model packages and groups but accepts what SageMaker refuses, and
loses what an update did not mention. The gaps closed here, one function each (listed in
docs/local-mode.md):
  - CreateModel from a versioned package that is not Approved: refused with
    ValidationException (SageMaker: a versioned model's ModelApprovalStatus "must be set
    to Approved to deploy the model"); from a package that does not exist, likewise;
  - CreateModelPackageGroup of a name that exists: refused (moto replaced the group);
  - the request limits SageMaker checks and moto does not: CustomerMetadataProperties
    (at most 50 entries, keys 1-128 and values 1-256 characters of letters, digits,
    spaces and `_.:/=+-@`), ApprovalDescription (at most 1,024 characters), a group's
    name (1-63 letters, digits and hyphens) and description (at most 1,024 characters);
  - UpdateModelPackage keeps the ApprovalDescription and CustomerMetadataProperties it
    was not given (moto set them to nothing) and merges the properties it was given;
  - DescribeModel of a model created without ExecutionRoleArn (a local endpoint deployed
    without --role) has none, as SageMaker's (moto answered "arn:test", a role that a
    model made from it, as `rollout` makes the new version's, would be refused);
  - ListModels honours NameContains (moto listed every model).
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Any

from contract.sagemaker_names import NAME, NAME_PATTERN

APPROVED = "Approved"
MAX_METADATA_ENTRIES = 50
_METADATA_TEXT = r"[\w .:/=+\-@]"
METADATA_KEY = re.compile(rf"^{_METADATA_TEXT}{{1,128}}$", re.UNICODE)
METADATA_VALUE = re.compile(rf"^{_METADATA_TEXT}{{1,256}}$", re.UNICODE)
MAX_DESCRIPTION = 1024


class ModelSourceError(Exception):
    """A model the local endpoint cannot serve, with the reason."""


@dataclass(frozen=True)
class ServingSource:
    """What a SageMaker model made from a package serves."""

    package_arn: str
    version: int | None
    image: str
    model_data_url: str
    environment: dict[str, str]


def serving_source(sm: Any, model_name: str) -> ServingSource:
    """The image, model.tar.gz and environment of `model_name`'s package, as SageMaker
    resolves a model made with Containers=[{ModelPackageName}]."""
    model = sm.describe_model(ModelName=model_name)
    containers = model.get("Containers") or [model.get("PrimaryContainer") or {}]
    package_name = containers[0].get("ModelPackageName")
    if not package_name:
        raise ModelSourceError(f"model {model_name} was not made from a model package")
    package = sm.describe_model_package(ModelPackageName=package_name)
    [container, *rest] = package["InferenceSpecification"]["Containers"]
    if rest:
        raise ModelSourceError(f"{package_name} has {1 + len(rest)} containers; the local "
                               "endpoint serves one")  # fmt: skip
    return ServingSource(
        package_arn=str(package["ModelPackageArn"]),
        version=package.get("ModelPackageVersion"),
        image=str(container.get("Image", "")),
        model_data_url=str(container.get("ModelDataUrl", "")),
        environment=dict(container.get("Environment") or {}),
    )


def record_endpoint(
    sm: Any, endpoint_name: str, model_name: str, variant: str, capture_uri: str | None = None
) -> None:
    """The local endpoint in the local AWS's SageMaker, as CreateEndpoint leaves it on AWS
    (configuration with its data capture, endpoint), so DescribeEndpoint tells what it
    serves (`models list` marks that version) and UpdateEndpoint can roll a new version
    out on it (`training_job rollout`) while the compute runs here. Replaces an earlier
    record."""
    forget_endpoint(sm, endpoint_name, keep_model=model_name)
    capture: dict[str, Any] = {}
    if capture_uri:
        capture["DataCaptureConfig"] = {
            "EnableCapture": True,
            "InitialSamplingPercentage": 100,
            "DestinationS3Uri": capture_uri,
            "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        }
    sm.create_endpoint_config(
        EndpointConfigName=model_name,
        **capture,
        ProductionVariants=[
            {
                "VariantName": variant,
                "ModelName": model_name,
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.xlarge",  # a stand-in: the compute is this machine
                "InitialVariantWeight": 1.0,
            }
        ],
    )
    sm.create_endpoint(EndpointName=endpoint_name, EndpointConfigName=model_name)


def forget_endpoint(sm: Any, endpoint_name: str, keep_model: str | None = None) -> None:
    """Remove the local endpoint's record, its configuration and models (but `keep_model`)."""
    from botocore.exceptions import ClientError

    try:
        config_name = sm.describe_endpoint(EndpointName=endpoint_name)["EndpointConfigName"]
    except ClientError:
        return  # no record: nothing to forget
    config = sm.describe_endpoint_config(EndpointConfigName=config_name)
    sm.delete_endpoint(EndpointName=endpoint_name)
    sm.delete_endpoint_config(EndpointConfigName=config_name)
    for variant in config["ProductionVariants"]:
        if variant["ModelName"] != keep_model:
            with contextlib.suppress(ClientError):  # already gone
                sm.delete_model(ModelName=variant["ModelName"])


# --- IAM: the resource of a SageMaker request ------------------------------------------

# Operation -> (request parameter naming the resource, its ARN's resource type). The rest
# are evaluated against "*", as ListModelPackages is on AWS (it has no resource).
IAM_RESOURCES = {
    "CreateModelPackageGroup": ("ModelPackageGroupName", "model-package-group"),
    "DescribeModelPackageGroup": ("ModelPackageGroupName", "model-package-group"),
    "CreateModelPackage": ("ModelPackageGroupName", "model-package-group"),
    "DescribeModelPackage": ("ModelPackageName", "model-package"),
    "UpdateModelPackage": ("ModelPackageArn", "model-package"),
    "DescribeEndpoint": ("EndpointName", "endpoint"),
    "DescribeEndpointConfig": ("EndpointConfigName", "endpoint-config"),
    "DescribeModel": ("ModelName", "model"),
    "CreateModel": ("ModelName", "model"),
}


def iam_resource(operation: str, parameter: Any, region: str, account: str) -> str:
    """The ARN IAM evaluates a SageMaker request on (local_aws.iam), from its parameters
    (`parameter(name)`); SageMaker's ARNs are lower case. "*" for other operations."""
    known = IAM_RESOURCES.get(operation)
    value = parameter(known[0]) if known else None
    if not known or not value:
        return "*"
    if str(value).startswith("arn:"):
        return str(value)
    return f"arn:aws:sagemaker:{region}:{account}:{known[1]}/{str(value).lower()}"


# --- the gaps ---------------------------------------------------------------------------


def _backend_class() -> Any:
    from moto.sagemaker.models import SageMakerModelBackend

    return SageMakerModelBackend


def _invalid(message: str) -> Exception:
    from moto.sagemaker.exceptions import ValidationError

    return ValidationError(message)


def create_model_only_from_approved_packages() -> None:
    """Gap: moto creates a model from any package, or from none (see the module)."""
    backend = _backend_class()
    create_model = backend.create_model

    def checked(self: Any, *args: Any, **kwargs: Any) -> Any:
        primary = kwargs.get("primary_container") or {}
        for container in [primary, *(kwargs.get("containers") or [])]:
            name = container.get("ModelPackageName") if isinstance(container, dict) else None
            if not name:
                continue
            package = self.describe_model_package(name)  # ValidationError when missing
            status = package.model_approval_status
            if package.model_package_version is not None and status != APPROVED:
                raise _invalid(
                    f"Model package {package.arn} has ModelApprovalStatus {status}: a "
                    "versioned model package must be Approved to be deployed."
                )
        return create_model(self, *args, **kwargs)

    backend.create_model = checked


def _check_metadata(properties: Any) -> None:
    if properties is None:
        return
    if not isinstance(properties, dict) or not 1 <= len(properties) <= MAX_METADATA_ENTRIES:
        raise _invalid(
            "1 validation error detected: Value at 'customerMetadataProperties' failed to "
            f"satisfy constraint: Member must have between 1 and {MAX_METADATA_ENTRIES} entries"
        )
    for key, value in properties.items():
        if not METADATA_KEY.fullmatch(str(key)):
            raise _invalid(
                "1 validation error detected: Value at 'customerMetadataProperties' failed "
                "to satisfy constraint: Map keys must satisfy constraint: [Member must have "
                "length between 1 and 128, Member must satisfy regular expression pattern: "
                "^([\\p{L}\\p{Z}\\p{N}_.:\\/=+\\-@]*)${1,128}]"
            )
        if not isinstance(value, str) or not METADATA_VALUE.fullmatch(value):
            raise _invalid(
                "1 validation error detected: Value at 'customerMetadataProperties' failed "
                "to satisfy constraint: Map value must satisfy constraint: [Member must have "
                "length between 1 and 256, Member must satisfy regular expression pattern: "
                "^([\\p{L}\\p{Z}\\p{N}_.:\\/=+\\-@]*)${1,256}]"
            )


def _check_description(text: Any, field: str) -> None:
    if text is not None and len(str(text)) > MAX_DESCRIPTION:
        raise _invalid(
            f"1 validation error detected: Value at '{field}' failed to satisfy constraint: "
            f"Member must have length less than or equal to {MAX_DESCRIPTION}"
        )


def refuse_what_the_registry_refuses() -> None:
    """Gap: moto checks none of the registry's limits, and replaces an existing group
    (see the module)."""
    backend = _backend_class()
    create_group = backend.create_model_package_group
    create_package = backend.create_model_package

    def checked_group(self: Any, *args: Any, **kwargs: Any) -> Any:
        name = kwargs.get("model_package_group_name") or (args[0] if args else "")
        if not NAME_PATTERN.fullmatch(str(name)):
            raise _invalid(
                "1 validation error detected: Value at 'modelPackageGroupName' failed to "
                "satisfy constraint: Member must satisfy regular expression pattern: "
                f"{NAME}"
            )
        description = kwargs.get("model_package_group_description")
        _check_description(description, "modelPackageGroupDescription")
        if name in self.model_package_groups:
            arn = self.model_package_groups[name].arn
            raise _invalid(f"Model Package Group already exists: {arn}")
        return create_group(self, *args, **kwargs)

    def checked_package(self: Any, *args: Any, **kwargs: Any) -> Any:
        _check_metadata(kwargs.get("customer_metadata_properties"))
        _check_description(kwargs.get("model_package_description"), "modelPackageDescription")
        return create_package(self, *args, **kwargs)

    backend.create_model_package_group = checked_group
    backend.create_model_package = checked_package


def update_keeps_what_it_was_not_given() -> None:
    """Gap: moto's UpdateModelPackage set the approval description and the metadata it
    was not given to nothing (see the module)."""
    backend = _backend_class()
    update = backend.update_model_package

    def merged(
        self: Any,
        model_package_arn: str,
        model_approval_status: str | None,
        approval_description: str | None,
        customer_metadata_properties: dict[str, str] | None,
        customer_metadata_properties_to_remove: list[str],
        additional_inference_specifications_to_add: list[Any] | None,
    ) -> str:
        _check_metadata(customer_metadata_properties)
        _check_description(approval_description, "approvalDescription")
        package = self.describe_model_package(model_package_arn)
        if approval_description is None:
            approval_description = package.approval_description
        properties = dict(package.customer_metadata_properties or {})
        properties.update(customer_metadata_properties or {})
        return str(
            update(
                self,
                model_package_arn,
                model_approval_status or package.model_approval_status,
                approval_description,
                properties,
                customer_metadata_properties_to_remove or [],
                additional_inference_specifications_to_add,
            )
        )

    backend.update_model_package = merged


def a_model_without_a_role_has_none() -> None:
    """Gap: moto gives a model created without ExecutionRoleArn the role "arn:test"."""
    from moto.sagemaker.models import Model

    initialise = Model.__init__

    def without_placeholder(self: Any, *args: Any, **kwargs: Any) -> None:
        initialise(self, *args, **kwargs)
        if self.execution_role_arn == "arn:test":  # what moto put in place of none
            self.execution_role_arn = None  # DescribeModel leaves out what is None

    Model.__init__ = without_placeholder  # type: ignore[method-assign]


def list_models_by_name() -> None:
    """Gap: moto's ListModels ignores NameContains and lists every model."""
    from moto.core.responses import ActionResult
    from moto.sagemaker.responses import SageMakerResponse

    def listed(self: Any) -> Any:
        contains = self._get_param("NameContains") or ""
        models = [
            model.response_object
            for model in self.sagemaker_backend.list_models()
            if contains in model.model_name
        ]
        return ActionResult({"Models": models})

    SageMakerResponse.list_models = listed  # type: ignore[method-assign]
