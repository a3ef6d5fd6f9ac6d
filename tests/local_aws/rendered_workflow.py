"""The real `serverless.yml`, rendered once (`sls package --stage local`) and made call by
call in the local AWS: its roles, decisions table, functions and state machines, with the
roles to run them under (the `workflow` fixture in conftest.py; test_iam_statements.py,
test_decision_safeguards.py, test_backfill.py)."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.handlers.conftest import encode_image
from tests.local_aws.conftest import LocalAws
from tests.statemachine.packaging import ACCOUNT_ID, package

REGION = "us-east-1"  # the local AWS's default; the region tests run elsewhere


ENDPOINT = "scones-iam-endpoint"


IMAGE_KEY = "test/iam-probe.png"


def statement_actions(statement: dict[str, Any]) -> list[str]:
    actions = statement.get("Action", [])
    return [actions] if isinstance(actions, str) else list(actions)


def listed_statements(policy: dict[str, Any]) -> list[dict[str, Any]]:
    statements = policy["PolicyDocument"]["Statement"]
    return [statements] if isinstance(statements, dict) else list(statements)


@dataclass
class Rendered:
    template: dict[str, Any]
    artifacts: Path

    @property
    def resources(self) -> dict[str, Any]:
        resources: dict[str, Any] = self.template["Resources"]
        return resources

    def arn(self, logical_id: str) -> str:
        resource = self.resources[logical_id]
        kind, properties = resource["Type"], resource.get("Properties", {})
        if kind == "AWS::Lambda::Function":
            return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{properties['FunctionName']}"
        if kind == "AWS::Logs::LogGroup":
            name = properties["LogGroupName"]
            return f"arn:aws:logs:{REGION}:{ACCOUNT_ID}:log-group:{name}:*"
        if kind == "AWS::StepFunctions::StateMachine":
            name = properties["StateMachineName"]
            return f"arn:aws:states:{REGION}:{ACCOUNT_ID}:stateMachine:{name}"
        if kind == "AWS::IAM::Role":
            return f"arn:aws:iam::{ACCOUNT_ID}:role/{logical_id}"
        if kind == "AWS::Events::Rule":
            return f"arn:aws:events:{REGION}:{ACCOUNT_ID}:rule/{logical_id}"
        if kind == "AWS::DynamoDB::Table":
            return f"arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/{properties['TableName']}"
        if kind == "AWS::SQS::Queue":
            return f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{properties['QueueName']}"
        raise AssertionError(f"no ARN for {logical_id} ({kind})")

    def ref(self, name: str) -> str:
        pseudo = {"AWS::Region": REGION, "AWS::AccountId": ACCOUNT_ID, "AWS::Partition": "aws"}
        if name in pseudo:
            return pseudo[name]
        if name == "EndpointName":
            return ENDPOINT
        if self.resources[name]["Type"] == "AWS::StepFunctions::StateMachine":
            return self.arn(name)  # a state machine's Ref is its ARN
        if self.resources[name]["Type"] == "AWS::DynamoDB::Table":
            return str(self.resources[name]["Properties"]["TableName"])  # a table's is its name
        raise AssertionError(f"no Ref value for {name}")

    def resolve(self, value: Any) -> Any:
        """CloudFormation's intrinsic functions, for the ones the template uses."""
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        if not isinstance(value, dict):
            return value
        if set(value) == {"Ref"}:
            return self.ref(value["Ref"])
        if set(value) == {"Fn::GetAtt"}:
            logical_id, attribute = value["Fn::GetAtt"]
            assert attribute == "Arn", value
            return self.arn(logical_id)
        if set(value) == {"Fn::Join"}:
            separator, items = value["Fn::Join"]
            return separator.join(str(self.resolve(item)) for item in items)
        if set(value) == {"Fn::Sub"}:
            text, variables = (
                value["Fn::Sub"] if isinstance(value["Fn::Sub"], list) else (value["Fn::Sub"], {})
            )
            resolved = {name: str(self.resolve(v)) for name, v in variables.items()}

            def substitute(match: re.Match[str]) -> str:
                name = match.group(1)
                if name in resolved:
                    return resolved[name]
                if name.endswith(".Arn"):
                    return self.arn(name.removesuffix(".Arn"))
                return self.ref(name)

            return re.sub(r"\$\{([^}!]+)\}", substitute, text)
        return {key: self.resolve(item) for key, item in value.items()}

    def role(self, logical_id: str, without: str | None = None) -> dict[str, Any]:
        """The role's trust policy and policies, resolved, minus the statement whose
        actions are `without`."""
        properties = self.resolve(self.resources[logical_id]["Properties"])
        policies, removed = [], 0
        for policy in properties.get("Policies", []):
            kept = [
                s for s in listed_statements(policy) if ",".join(statement_actions(s)) != without
            ]
            removed += len(listed_statements(policy)) - len(kept)
            if kept:
                policies.append(
                    (policy["PolicyName"], {**policy["PolicyDocument"], "Statement": kept})
                )
        assert removed == (0 if without is None else 1), f"{logical_id}: {without} x {removed}"
        return {"trust": properties["AssumeRolePolicyDocument"], "policies": policies}


@dataclass
class Workflow:
    """The rendered workflow created in the local AWS, and the roles to run it with."""

    aws: LocalAws
    rendered: Rendered
    bucket: str
    machine_arn: str
    backfill_arn: str = ""
    functions: dict[str, str] = field(default_factory=dict)  # role logical id -> function
    environments: dict[str, dict[str, str]] = field(default_factory=dict)  # ... -> variables
    whole_roles: dict[str, str] = field(default_factory=dict)  # role logical id -> ARN

    def create_role(self, logical_id: str, without: str | None = None) -> str:
        role = self.rendered.role(logical_id, without)
        name = f"{logical_id}-{uuid.uuid4().hex[:8]}"
        iam = self.aws.client("iam")
        arn: str = iam.create_role(
            RoleName=name, AssumeRolePolicyDocument=json.dumps(role["trust"])
        )["Role"]["Arn"]
        for policy_name, document in role["policies"]:
            iam.put_role_policy(
                RoleName=name, PolicyName=policy_name, PolicyDocument=json.dumps(document)
            )
        return arn

    def use_roles(self, **roles: str) -> None:
        """Give each function its whole role unless `roles` names another for it."""
        lambda_ = self.aws.client("lambda")
        for logical_id, function in self.functions.items():
            arn = roles.get(logical_id) or self.whole_roles[logical_id]
            lambda_.update_function_configuration(FunctionName=function, Role=arn)
        machine_role = roles.get("ImageWorkflowRole") or self.whole_roles["ImageWorkflowRole"]
        self.aws.client("stepfunctions").update_state_machine(
            stateMachineArn=self.machine_arn, roleArn=machine_role
        )


def _functions(rendered: Rendered) -> Iterator[dict[str, Any]]:
    for resource in rendered.resources.values():
        if resource["Type"] == "AWS::Lambda::Function":
            properties = dict(resource["Properties"])
            code = properties.pop("Code")  # in the deployment bucket: read from the package
            yield {**rendered.resolve(properties), "Code": code}


def build_workflow(workflow_aws: LocalAws, tmp_path_factory: pytest.TempPathFactory) -> Workflow:
    """The packaged stack's roles, table, functions and state machine, made one by one in
    the local AWS (the `workflow` fixture in conftest.py: once a session, since the names
    are the stage's own and every module that runs the workflow shares them)."""
    artifacts = tmp_path_factory.mktemp("iam-package")
    rendered = Rendered(package("local", artifacts), artifacts)
    aws = workflow_aws
    bucket = str(
        rendered.resolve(
            next(
                iter(
                    p["Properties"]["Environment"]["Variables"]["DATA_BUCKET"]
                    for p in rendered.resources.values()
                    if p["Type"] == "AWS::Lambda::Function"
                    and "DATA_BUCKET" in p["Properties"].get("Environment", {}).get("Variables", {})
                )
            )
        )
    )
    s3 = aws.client("s3")
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_notification_configuration(
        Bucket=bucket, NotificationConfiguration={"EventBridgeConfiguration": {}}
    )
    # An even number of bytes: the stand-in endpoint (conftest) answers it confidently.
    image = encode_image("PNG", (16, 16))
    assert len(image) % 2 == 0
    s3.put_object(Bucket=bucket, Key=IMAGE_KEY, Body=image)

    for resource in rendered.resources.values():
        if resource["Type"] == "AWS::DynamoDB::Table":
            table = rendered.resolve(resource["Properties"])
            aws.client("dynamodb").create_table(
                **{
                    name: table[name]
                    for name in (
                        "TableName",
                        "BillingMode",
                        "AttributeDefinitions",
                        "KeySchema",
                        "GlobalSecondaryIndexes",
                    )
                    if name in table
                },
                # CloudFormation's SSEEnabled is the API's Enabled.
                SSESpecification={"Enabled": table["SSESpecification"]["SSEEnabled"]},
            )

    roles = {
        name: ""
        for name, resource in rendered.resources.items()
        if resource["Type"] == "AWS::IAM::Role"
    }
    workflow = Workflow(aws, rendered, bucket, rendered.arn("ImageWorkflow"))
    workflow.whole_roles = {name: workflow.create_role(name) for name in roles}
    lambda_ = aws.client("lambda")
    for properties in _functions(rendered):
        role_id = properties["Role"].rsplit("/", 1)[-1]
        code = (artifacts / Path(properties["Code"]["S3Key"]).name).read_bytes()
        variables = dict(properties.get("Environment", {}).get("Variables", {}))
        variables["SETTLE_SECONDS"] = "0"  # the monitor reads captures as soon as they exist
        lambda_.create_function(
            FunctionName=properties["FunctionName"],
            Runtime=properties["Runtime"],
            Role=workflow.whole_roles[role_id],
            Handler=properties["Handler"],
            Code={"ZipFile": code},
            Timeout=int(properties.get("Timeout", 3)),
            MemorySize=int(properties.get("MemorySize", 128)),
            Environment={"Variables": {k: str(v) for k, v in variables.items()}},
        )
        workflow.functions[role_id] = properties["FunctionName"]
        workflow.environments[role_id] = {k: str(v) for k, v in variables.items()}
    for logical_id, role_id in (
        ("ImageWorkflow", "ImageWorkflowRole"),
        ("Backfill", "BackfillWorkflowRole"),
    ):
        machine = rendered.resources[logical_id]["Properties"]
        definition = rendered.resolve(machine["DefinitionString"])
        created = aws.client("stepfunctions").create_state_machine(
            name=machine["StateMachineName"],
            definition=definition,
            roleArn=workflow.whole_roles[role_id],
        )
    workflow.backfill_arn = created["stateMachineArn"]
    return workflow
