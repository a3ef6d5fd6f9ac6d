"""Thin fixes for the gaps between moto 5.2.5's CloudFormation and AWS that `sls deploy` hits.

Each `patch_*` function closes one gap, names it in its docstring, and is installed in the
server process by `local_aws.moto_patches.install_all` (listed there). Each has a
test in tests/local_aws/test_cloudformation.py named after the gap. They change how moto
behaves, never what the project deploys: the template `sls package` writes is the one AWS
gets.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


def patch_validate_template_errors_only() -> None:
    """Gap: moto's ValidateTemplate runs cfn-lint and refuses the template on *any* finding.

    osls calls ValidateTemplate before every deploy, and serverless-step-functions writes a
    `DependsOn` on the state machine's role that cfn-lint reports as a warning (W3005,
    "dependency already enforced by a 'GetAtt'"); osls' own templates draw W1020 ("'Fn::Sub'
    isn't needed"). moto turned the first finding into "The CloudFormation template is
    invalid: Stack with id <warning text> does not exist". AWS refuses a template only for
    errors, so keep the findings whose rule id starts with "E" (cfn-lint's errors).
    """
    from moto.cloudformation.models import CloudFormationBackend
    from moto.cloudformation.utils import validate_template_cfn_lint

    def validate_template(self: CloudFormationBackend, template: str) -> list[Any]:
        return [
            match
            for match in validate_template_cfn_lint(template)
            if str(match.rule.id).startswith("E")
        ]

    CloudFormationBackend.validate_template = validate_template  # type: ignore[method-assign]


def patch_fn_sub_variables_named_by_hashes() -> None:
    """Gap: moto's `Fn::Sub` drops variables whose names start with a digit.

    serverless-step-functions writes the definition as `{"Fn::Sub": [definition, {"97d2...":
    {"Fn::GetAtt": [...]}}]}`, naming each variable by an md5 hex digest. moto substitutes
    the variable map with `string.Template`, whose identifiers cannot start with a digit, so
    `${97d2...}` survived and was then looked up as a resource ("KeyError: '97d2...'" in
    ListStackResources, the deploy failing with an HTML 500 page). CloudFormation accepts
    any alphanumeric name there. Substitute the map's variables first, literally, then let
    moto resolve what is left (`${AWS::Region}`, `${Resource.Attr}`, `${!literal}`).
    """
    from moto.cloudformation import parsing

    original_clean_json = parsing.clean_json

    def clean_json(resource_json: Any, resources_map: Any) -> Any:
        if isinstance(resource_json, dict) and isinstance(resource_json.get("Fn::Sub"), list):
            template, variables = resource_json["Fn::Sub"]
            for name, value in variables.items():
                template = template.replace(
                    "${" + name + "}", str(clean_json(value, resources_map))
                )
            return original_clean_json({"Fn::Sub": template}, resources_map)
        return original_clean_json(resource_json, resources_map)

    # `clean_json` recurses through the module global, so nested Subs come back here too.
    parsing.clean_json = clean_json


def patch_state_machines_into_the_served_backend() -> None:
    """Gap: a state machine created by CloudFormation is invisible to the Step Functions API.

    With `stepfunctions.execute_state_machine` on, moto serves the Step Functions API from
    its parser backend (`moto.stepfunctions.parser.models.stepfunctions_parser_backends`,
    the one that runs executions), but `StateMachine.create/update/delete_from_
    cloudformation_json` write to the plain `stepfunctions_backends`. The stack completed
    and ListStateMachines stayed empty. Route the three through the backend the API reads
    (`moto.stepfunctions.responses.get_backend`, which picks by that same config).
    """
    from moto.stepfunctions import models
    from moto.stepfunctions.responses import get_backend

    class ServedBackends:
        """Stands in for `stepfunctions_backends[account][region]` inside the three methods."""

        def __getitem__(self, account_id: str) -> Any:
            return _ServedRegions(account_id)

    class _ServedRegions:
        def __init__(self, account_id: str) -> None:
            self.account_id = account_id

        def __getitem__(self, region_name: str) -> Any:
            return get_backend(self.account_id, region_name)

    def routed(original: Callable[..., Any]) -> Callable[..., Any]:
        # The methods look `stepfunctions_backends` up in their module's globals at call
        # time; run each with a copy of those globals where the name means the served one.
        import types

        function = types.FunctionType(
            original.__code__,
            {**original.__globals__, "stepfunctions_backends": ServedBackends()},
            original.__name__,
            original.__defaults__,
            original.__closure__,
        )
        return classmethod(function)  # type: ignore[return-value]

    for name in (
        "create_from_cloudformation_json",
        "update_from_cloudformation_json",
        "delete_from_cloudformation_json",
    ):
        setattr(models.StateMachine, name, routed(getattr(models.StateMachine, name).__func__))


def patch_outputs_after_change_sets() -> None:
    """Gap: after ExecuteChangeSet, moto's DescribeStacks shows the *previous* template's Outputs.

    `execute_change_set` applies the change set's resources and stores its template text,
    but never re-parses it, so the stack's output map stays the one built when the stack
    was created: none at all when osls creates it through a CREATE change set, only
    `ServerlessDeploymentBucketName` when it was created from osls' create template.
    serverless-step-functions then crashed after the deploy (`Cannot read properties of
    undefined (reading 'filter')`), and `sls invoke stepf` could not find the state
    machine's ARN output (`<Name>Arn`). Rebuild the outputs from the applied template, as
    `Stack.update` already does for UpdateStack, and their exports with them (osls
    exports the deployment bucket's name): `sls remove` then failed with KeyError on the
    export (an HTML 500), which left the stack half deleted.
    """
    from moto.cloudformation.models import CloudFormationBackend

    execute_change_set = CloudFormationBackend.execute_change_set

    def execute_and_refresh_outputs(
        self: CloudFormationBackend, change_set_name: str, stack_name: str | None = None
    ) -> None:
        execute_change_set(self, change_set_name, stack_name)
        change_set = change_set_named(self, change_set_name)
        if change_set is None:
            return
        stack = self.stacks[change_set.stack_id]
        # The stack's exports are registered by name: drop the old ones, add the new, so
        # that DeleteStack (which removes them by name) and ListExports see the applied.
        for export in stack.exports:
            self.exports.pop(export.name, None)
        stack._parse_template()
        stack.output_map = stack._create_output_map()
        for export in stack.exports:
            self.exports[export.name] = export

    CloudFormationBackend.execute_change_set = execute_and_refresh_outputs  # type: ignore[method-assign]


def change_set_named(backend: Any, name: str) -> Any:
    """The change set moto's ExecuteChangeSet runs: by ARN, else the newest of that name
    (osls reuses its change set's name, so a stage removed and deployed again has an
    older one of the same name)."""
    named = [cs for cs in backend.change_sets.values() if cs.change_set_name == name]
    return backend.change_sets.get(name) or (named[-1] if named else None)


def patch_retained_tables_fail_the_change_set() -> None:
    """Gap: a change set that creates a table whose name an existing table has (the one
    `sls remove` left: DeletionPolicy Retain) made moto's ExecuteChangeSet fail inside
    DynamoDB's CreateTable, an HTML 500 ("Deserialization error" in osls). On AWS the
    execution is accepted and the stack operation fails: the table's CREATE_FAILED event
    says it already exists, and the stack rolls back (UPDATE_ROLLBACK_COMPLETE; a CREATE
    change set: ROLLBACK_COMPLETE), the table untouched. So here, checked before anything
    is applied: nothing of the change set is created, the events say why."""
    from moto.cloudformation.models import CloudFormationBackend, Event
    from moto.dynamodb.models import dynamodb_backends

    execute_change_set = CloudFormationBackend.execute_change_set

    def execute_unless_a_table_exists(
        self: CloudFormationBackend, change_set_name: str, stack_name: str | None = None
    ) -> None:
        change_set = change_set_named(self, change_set_name)
        if change_set is None or change_set.stack_id not in self.stacks:
            return execute_change_set(self, change_set_name, stack_name)
        stack = self.stacks[change_set.stack_id]
        owned = set((stack.template_dict or {}).get("Resources", {}))
        existing = dynamodb_backends[self.account_id][self.region_name].tables
        taken = [
            (logical_id, str(resource["Properties"]["TableName"]))
            for logical_id, resource in (change_set.template_dict or {})
            .get("Resources", {})
            .items()
            if resource.get("Type") == "AWS::DynamoDB::Table"
            and logical_id not in owned
            and isinstance((resource.get("Properties") or {}).get("TableName"), str)
            and resource["Properties"]["TableName"] in existing
        ]
        if not taken:
            return execute_change_set(self, change_set_name, stack_name)
        creating = change_set.change_set_type == "CREATE"
        stack._add_stack_event("CREATE_IN_PROGRESS" if creating else "UPDATE_IN_PROGRESS")
        for logical_id, table in taken:
            stack.events.append(
                Event(
                    stack_id=stack.stack_id,
                    stack_name=stack.name,
                    logical_resource_id=logical_id,
                    physical_resource_id=table,
                    resource_type="AWS::DynamoDB::Table",
                    resource_status="CREATE_FAILED",
                    resource_status_reason=f"Resource of type 'AWS::DynamoDB::Table' with "
                    f"identifier '{table}' already exists.",
                    resource_properties=None,
                )
            )
        rollback = "ROLLBACK" if creating else "UPDATE_ROLLBACK"
        stack._add_stack_event(
            f"{rollback}_IN_PROGRESS",
            f"The following resource(s) failed to create: [{', '.join(t[0] for t in taken)}].",
        )
        stack._add_stack_event(f"{rollback}_COMPLETE")
        stack.status = f"{rollback}_COMPLETE"
        change_set.execution_status = "EXECUTE_FAILED"
        return None

    CloudFormationBackend.execute_change_set = execute_unless_a_table_exists  # type: ignore[method-assign]


def patch_bucket_properties_from_templates() -> None:
    """Gap: moto's `AWS::S3::Bucket` ignores `NotificationConfiguration` and
    `PublicAccessBlockConfiguration`.

    Only `BucketEncryption` and `Tags` were applied, so a bucket declared with
    `EventBridgeConfiguration: {EventBridgeEnabled: true}` never sent its Object Created
    events to EventBridge, and the trigger of the workflow never fired; and the bucket was
    created without its public access block. Apply both after moto creates or updates the
    bucket, through the same backend calls the S3 API uses.
    """
    from moto.s3.models import FakeBucket, s3_backends
    from moto.utilities.utils import get_partition

    create = FakeBucket.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]
    update = FakeBucket.update_from_cloudformation_json.__func__  # type: ignore[attr-defined]

    def apply_properties(bucket: FakeBucket, cloudformation_json: Any, region_name: str) -> None:
        properties = cloudformation_json.get("Properties") or {}
        backend = s3_backends[bucket.account_id][get_partition(region_name)]
        notification = properties.get("NotificationConfiguration") or {}
        event_bridge = notification.get("EventBridgeConfiguration") or {}
        if event_bridge.get("EventBridgeEnabled") in (True, "true", "True"):
            # The S3 API hands moto `EventBridgeConfiguration` as an empty dict.
            backend.put_bucket_notification_configuration(
                bucket.name, {"EventBridgeConfiguration": {}}
            )
        elif bucket.notification_configuration is not None:
            bucket.notification_configuration.event_bridge = None
        block = properties.get("PublicAccessBlockConfiguration")
        if block:
            backend.put_public_access_block(
                bucket.name, {key: str(value).lower() for key, value in block.items()}
            )

    def create_bucket(
        cls: type[FakeBucket],
        resource_name: str,
        cloudformation_json: Any,
        account_id: str,
        region_name: str,
        **kwargs: Any,
    ) -> FakeBucket:
        bucket = create(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)
        apply_properties(bucket, cloudformation_json, region_name)
        return bucket

    def update_bucket(
        cls: type[FakeBucket],
        original_resource: Any,
        new_resource_name: str,
        cloudformation_json: Any,
        account_id: str,
        region_name: str,
    ) -> FakeBucket:
        bucket = update(
            cls,
            original_resource,
            new_resource_name,
            cloudformation_json,
            account_id,
            region_name,
        )
        apply_properties(bucket, cloudformation_json, region_name)
        return bucket

    FakeBucket.create_from_cloudformation_json = classmethod(create_bucket)  # type: ignore[assignment]
    FakeBucket.update_from_cloudformation_json = classmethod(update_bucket)  # type: ignore[assignment]


def patch_table_properties_from_templates() -> None:
    """Gap: moto's `AWS::DynamoDB::Table` read `SSESpecification` in the API's shape
    (`Enabled`), not CloudFormation's (`SSEEnabled`), so a table declared encrypted with
    the AWS managed key was created without it; and it ignored
    `PointInTimeRecoverySpecification`. Translate the one and apply the other, as the
    DynamoDB API's UpdateContinuousBackups does."""
    from moto.dynamodb.models.table import Table

    create = Table.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]

    def create_table(
        cls: type[Table],
        resource_name: str,
        cloudformation_json: Any,
        account_id: str,
        region_name: str,
        **kwargs: Any,
    ) -> Table:
        properties = dict(cloudformation_json.get("Properties") or {})
        sse = properties.get("SSESpecification")
        if isinstance(sse, dict) and "SSEEnabled" in sse:
            enabled = sse["SSEEnabled"] in (True, "true", "True")
            api_sse = {"Enabled": enabled, "SSEType": sse.get("SSEType", "KMS")}
            if sse.get("KMSMasterKeyId"):
                api_sse["KMSMasterKeyId"] = sse["KMSMasterKeyId"]
            properties["SSESpecification"] = api_sse if enabled else None
        table = create(
            cls,
            resource_name,
            {**cloudformation_json, "Properties": properties},
            account_id,
            region_name,
            **kwargs,
        )
        recovery = properties.get("PointInTimeRecoverySpecification") or {}
        if recovery.get("PointInTimeRecoveryEnabled") in (True, "true", "True"):
            table.continuous_backups["PointInTimeRecoveryDescription"] = {
                "PointInTimeRecoveryStatus": "ENABLED"
            }
        return table

    Table.create_from_cloudformation_json = classmethod(create_table)  # type: ignore[assignment]


SSM_PARAMETER_TYPE_PREFIX = "AWS::SSM::Parameter::"


def missing_ssm_parameters(
    template: str, parameters: dict[str, Any], account_id: str, region: str
) -> list[str]:
    """The Parameter Store names a template's SSM-typed parameters give (the value passed,
    else the Default) that are not in Parameter Store for this account and Region."""
    import yaml
    from moto.cloudformation.utils import yaml_tag_constructor
    from moto.ssm import ssm_backends
    from moto.ssm.exceptions import ParameterNotFound, ParameterVersionNotFound

    yaml.add_multi_constructor("", yaml_tag_constructor)
    try:
        parsed = yaml.load(template or "{}", Loader=yaml.Loader)
    except yaml.YAMLError:
        return []  # not this check's to refuse: moto's own parsing answers it
    declared = parsed.get("Parameters") if isinstance(parsed, dict) else None
    store = ssm_backends[account_id][region]
    missing = []
    for name, declaration in (declared or {}).items():
        kind = str((declaration or {}).get("Type", ""))
        value = parameters.get(name, (declaration or {}).get("Default"))
        if not kind.startswith(SSM_PARAMETER_TYPE_PREFIX) or not value:
            continue
        try:
            found = store.get_parameter(str(value))
        except (ParameterNotFound, ParameterVersionNotFound):
            found = None
        if found is None:
            missing.append(str(value))
    return missing


def patch_missing_ssm_parameters_refused() -> None:
    """Gap: a template whose `AWS::SSM::Parameter::Value<...>` parameter names a missing
    Parameter Store parameter was accepted by CreateChangeSet and CreateStack, and the
    execution then failed inside moto (`'NoneType' object has no attribute 'value'`, an
    HTML 500 the SDKs print as "Deserialization error"). CloudFormation resolves those
    parameters when the change set or stack is created (User Guide, "Specify existing
    resources at runtime with CloudFormation-supplied parameter types") and refuses a
    missing one with ValidationError "Unable to fetch parameters [NAMES] from parameter
    store for this account.", creating nothing."""
    from moto.cloudformation.exceptions import ValidationError
    from moto.cloudformation.models import CloudFormationBackend

    def refuse_missing(self: CloudFormationBackend, template: str, parameters: Any) -> None:
        missing = missing_ssm_parameters(
            template, dict(parameters or {}), self.account_id, self.region_name
        )
        if missing:
            raise ValidationError(
                message=f"Unable to fetch parameters [{','.join(missing)}] from parameter "
                "store for this account."
            )

    create_change_set = CloudFormationBackend.create_change_set
    create_stack = CloudFormationBackend.create_stack

    def create_checked_change_set(self: CloudFormationBackend, *args: Any, **kwargs: Any) -> Any:
        refuse_missing(self, kwargs.get("template", ""), kwargs.get("parameters"))
        return create_change_set(self, *args, **kwargs)

    def create_checked_stack(self: CloudFormationBackend, *args: Any, **kwargs: Any) -> Any:
        refuse_missing(self, kwargs.get("template", ""), kwargs.get("parameters"))
        return create_stack(self, *args, **kwargs)

    CloudFormationBackend.create_change_set = create_checked_change_set  # type: ignore[method-assign]
    CloudFormationBackend.create_stack = create_checked_stack  # type: ignore[method-assign]


def patch_sqs_queue_policies_from_templates() -> None:
    """Gap: moto's CloudFormation has no `AWS::SQS::QueuePolicy` (it warned and created
    nothing), so the trigger's dead-letter queue had no policy and EventBridge could not
    send to it. The resource now sets each of its `Queues`' (their URLs) `Policy`
    attribute to its `PolicyDocument`, and deleting it clears them, as on AWS."""
    from moto.cloudformation.parsing import get_model_map
    from moto.core.common_models import CloudFormationModel
    from moto.sqs.models import sqs_backends

    def queue_names(properties: dict[str, Any]) -> list[str]:
        return [str(url).rstrip("/").rsplit("/", 1)[-1] for url in properties.get("Queues", [])]

    class QueuePolicy(CloudFormationModel):
        def __init__(self, resource_name: str, queues: list[str]) -> None:
            self.physical_resource_id = resource_name
            self.queues = queues

        @staticmethod
        def cloudformation_name_type() -> str:
            return ""

        @staticmethod
        def cloudformation_type() -> str:
            return "AWS::SQS::QueuePolicy"

        @classmethod
        def has_cfn_attr(cls, attr: str) -> bool:
            return attr == "Id"

        @classmethod
        def create_from_cloudformation_json(
            cls,
            resource_name: str,
            cloudformation_json: dict[str, Any],
            account_id: str,
            region_name: str,
            **kwargs: Any,
        ) -> QueuePolicy:
            properties = cloudformation_json["Properties"]
            document = json.dumps(properties["PolicyDocument"])
            backend = sqs_backends[account_id][region_name]
            for name in queue_names(properties):
                backend.set_queue_attributes(name, {"Policy": document})
            return cls(resource_name, queue_names(properties))

        @classmethod
        def update_from_cloudformation_json(
            cls,
            original_resource: Any,
            new_resource_name: str,
            cloudformation_json: dict[str, Any],
            account_id: str,
            region_name: str,
        ) -> QueuePolicy:
            return cls.create_from_cloudformation_json(
                new_resource_name, cloudformation_json, account_id, region_name
            )

        @classmethod
        def delete_from_cloudformation_json(
            cls,
            resource_name: str,
            cloudformation_json: dict[str, Any],
            account_id: str,
            region_name: str,
        ) -> None:
            backend = sqs_backends[account_id][region_name]
            for name in queue_names(cloudformation_json.get("Properties", {})):
                if name in backend.queues:
                    backend.set_queue_attributes(name, {"Policy": ""})

        def is_created(self) -> bool:
            return True

    get_model_map.cache_clear()  # the map lists CloudFormationModel's subclasses once
