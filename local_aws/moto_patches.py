"""Every change the local AWS makes to moto, in one list, installed from here in that order.

The emulator rests on assignments into moto's internals (its classes, modules and
settings): each `Patch` names the function that installs ours, the moto objects it
assigns (dotted paths; `[...]` an item of a dict), and why, in one line; the function's
docstring says more, and docs/local-mode.md lists them per service. They were written
against moto `MOTO_VERSION`, the version requirements.txt pins: a moto upgrade must
re-check each of them (tests/local_aws/test_moto_patches.py fails, naming them all, when
the installed moto is another version, and fails when local_aws/ assigns into moto
anywhere this list does not name).

Order matters where two wrap the same object: a later patch wraps the earlier one's
replacement (StartExecution: the Express starts, then the input size check around both;
ExecuteChangeSet: the outputs refresh, then the retained-table check around it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from local_aws import (
    cloudformation,
    conditional_writes,
    distributed_map,
    events,
    express,
    iam_enforcement,
    lambda_executor,
    model_packages,
    moto_speedups,
    s3_policy,
    sagemaker_endpoints,
    sagemaker_runtime,
    service_roles,
    stepfunctions,
)

MOTO_VERSION = "5.2.5"  # requirements.txt: moto[server,stepfunctions]==5.2.5


@dataclass(frozen=True)
class Patch:
    install: Callable[[], None]  # ours: assigns our replacement into moto when called
    patched: tuple[str, ...]  # the moto objects it assigns
    why: str

    @property
    def name(self) -> str:
        return f"{self.install.__module__}.{self.install.__qualname__}"


def use_local_settings() -> None:
    """Run state machines for real and keep Lambda off Docker (no engine here)."""
    from moto.core.config import default_user_config

    default_user_config["stepfunctions"] = {"execute_state_machine": True}
    default_user_config["lambda"] = {"use_docker": False}
    default_user_config["batch"] = {"use_docker": False}


_SFN = "moto.stepfunctions.parser"
_TASK = f"{_SFN}.asl.component.state.exec.state_task"
_PARSER_BACKEND = f"{_SFN}.models.StepFunctionsParserBackend"
_CFN_BACKEND = "moto.cloudformation.models.CloudFormationBackend"
_SAGEMAKER_BACKEND = "moto.sagemaker.models.SageMakerModelBackend"
_SAGEMAKER_RESPONSE = "moto.sagemaker.responses.SageMakerResponse"

# What the local AWS answers: gaps between moto and AWS closed, AWS's rules enforced.
EMULATOR_PATCHES: tuple[Patch, ...] = (
    Patch(
        use_local_settings,
        ("moto.core.config.default_user_config[...]",),
        "execute state machines; Lambda and Batch without Docker",
    ),
    # CloudFormation (local_aws/cloudformation.py): what `sls deploy` needs.
    Patch(
        cloudformation.patch_validate_template_errors_only,
        (f"{_CFN_BACKEND}.validate_template",),
        "ValidateTemplate refused a template on any cfn-lint finding, warnings included",
    ),
    Patch(
        cloudformation.patch_fn_sub_variables_named_by_hashes,
        ("moto.cloudformation.parsing.clean_json",),
        "Fn::Sub dropped variables whose names start with a digit (the plugin's md5 names)",
    ),
    Patch(
        cloudformation.patch_state_machines_into_the_served_backend,
        tuple(
            f"moto.stepfunctions.models.StateMachine.{verb}_from_cloudformation_json"
            for verb in ("create", "update", "delete")
        ),
        "a stack's state machine went to a backend the Step Functions API does not serve",
    ),
    Patch(
        cloudformation.patch_outputs_after_change_sets,
        (f"{_CFN_BACKEND}.execute_change_set",),
        "DescribeStacks showed the previous template's Outputs after ExecuteChangeSet",
    ),
    Patch(
        cloudformation.patch_bucket_properties_from_templates,
        (
            "moto.s3.models.FakeBucket.create_from_cloudformation_json",
            "moto.s3.models.FakeBucket.update_from_cloudformation_json",
        ),
        "AWS::S3::Bucket ignored NotificationConfiguration and PublicAccessBlockConfiguration",
    ),
    Patch(
        cloudformation.patch_table_properties_from_templates,
        ("moto.dynamodb.models.table.Table.create_from_cloudformation_json",),
        "AWS::DynamoDB::Table misread SSESpecification and ignored point-in-time recovery",
    ),
    Patch(
        cloudformation.patch_missing_ssm_parameters_refused,
        (f"{_CFN_BACKEND}.create_change_set", f"{_CFN_BACKEND}.create_stack"),
        "a template naming a missing SSM parameter was accepted; AWS refuses it",
    ),
    Patch(
        cloudformation.patch_sqs_queue_policies_from_templates,
        ("moto.cloudformation.parsing.get_model_map (a new CloudFormationModel subclass)",),
        "AWS::SQS::QueuePolicy did not exist: the trigger's dead-letter queue had no policy",
    ),
    Patch(
        cloudformation.patch_retained_tables_fail_the_change_set,  # wraps the outputs' one
        (f"{_CFN_BACKEND}.execute_change_set",),
        "a change set creating a table a retained one still names failed with an HTML 500",
    ),
    # Conditional writes (local_aws/conditional_writes.py).
    Patch(
        conditional_writes.serialize_conditional_writes,
        (
            *(
                f"moto.dynamodb.responses.DynamoHandler.{name}"
                for name in ("put_item", "update_item", "delete_item", "transact_write_items")
            ),
            "moto.s3.responses.S3Response.put_object",
        ),
        "a conditional write's check and write could interleave with another's (threads)",
    ),
    Patch(
        conditional_writes.check_copy_source_if_match,
        ("moto.s3.responses.S3Response.copy_object",),
        "CopyObject ignored x-amz-copy-source-if-match",
    ),
    # Distributed Map (local_aws/distributed_map.py).
    Patch(
        distributed_map.patch_distributed_map_definitions,
        (
            f"{_PARSER_BACKEND}._validate_definition",
            f"{_SFN}.asl.parse.asl_parser.AmazonStateLanguageParser.parse",
        ),
        "moto's grammar refuses the backfill's Distributed Map; AWS's rules checked instead",
    ),
    Patch(
        distributed_map.patch_distributed_map_runs,
        (
            f"{_SFN}.asl.component.state.exec.state_map.iteration"
            ".distributed_iteration_component.DistributedIterationComponent._eval_body",
        ),
        "moto's map run reads one page, without the role, and never fails the Map",
    ),
    # EventBridge (local_aws/events.py).
    Patch(
        events.patch_state_machine_targets,
        ("moto.events.models.Rule.send_to_targets",),
        "rules never started a Step Functions target",
    ),
    Patch(
        events.patch_put_events_size_checked,
        ("moto.events.models.EventsBackend.put_events",),
        "PutEvents accepted entries of any size; AWS refuses over 256 KB",
    ),
    # IAM (local_aws/iam_enforcement.py, local_aws/service_roles.py).
    Patch(
        iam_enforcement.enforce_iam_for_assumed_roles,
        ("moto.core.authorization.ActionAuthenticatorMixin._authenticate_and_authorize_action",),
        "moto evaluates no policies unless it evaluates every request's: roles' ones are",
    ),
    Patch(
        iam_enforcement.remember_s3_keys,
        ("moto.s3.responses.S3Response._authenticate_and_authorize_s3_action",),
        "moto's S3 keeps a request's key name out of what authorization sees",
    ),
    Patch(
        iam_enforcement.answer_refusals,
        ("moto.core.responses.BaseResponse.call_action",),
        "an AccessDenied answered in the called service's own protocol, with a request id",
    ),
    Patch(
        service_roles.step_functions_act_as_their_role,
        (
            f"{_TASK}.state_task.StateTask._eval_state_credentials",
            f"{_TASK}.lambda_eval_utils.boto_client_for",
            f"{_TASK}.service.state_task_service_dynamodb.boto_client_for",
            f"{_TASK}.service.state_task_service_events.boto_client_for",
        ),
        "the interpreter signed its calls with fixed dummy keys, not the machine's role",
    ),
    # Lambda (local_aws/lambda_executor.py).
    Patch(
        lambda_executor.run_deployed_code,
        ("moto.awslambda_simple.models.LambdaSimpleBackend.invoke",),
        "Lambda without Docker answered every Invoke with a canned string",
    ),
    # SageMaker: the model registry (local_aws/model_packages.py).
    Patch(
        model_packages.create_model_only_from_approved_packages,
        (f"{_SAGEMAKER_BACKEND}.create_model",),
        "CreateModel accepted a model package that is not Approved",
    ),
    Patch(
        model_packages.refuse_what_the_registry_refuses,
        (
            f"{_SAGEMAKER_BACKEND}.create_model_package_group",
            f"{_SAGEMAKER_BACKEND}.create_model_package",
        ),
        "the registry's limits went unchecked, and an existing group was replaced",
    ),
    Patch(
        model_packages.update_keeps_what_it_was_not_given,
        (f"{_SAGEMAKER_BACKEND}.update_model_package",),
        "UpdateModelPackage cleared the description and metadata it was not given",
    ),
    Patch(
        model_packages.a_model_without_a_role_has_none,
        ("moto.sagemaker.models.Model.__init__",),
        'a model created without ExecutionRoleArn had the role "arn:test"',
    ),
    Patch(
        model_packages.list_models_by_name,
        (f"{_SAGEMAKER_RESPONSE}.list_models",),
        "ListModels ignored NameContains",
    ),
    # S3 bucket policies (local_aws/s3_policy.py).
    Patch(
        s3_policy.evaluate_bucket_policy_conditions,
        ("moto.s3.models.FakeBucket.get_permission",),
        "bucket policies' Conditions were ignored (a TLS-only Deny denied everything)",
    ),
    # SageMaker endpoints (local_aws/sagemaker_endpoints.py).
    Patch(
        sagemaker_endpoints.patch_create_endpoint_config,
        (f"{_SAGEMAKER_RESPONSE}.create_endpoint_config",),
        "CreateEndpointConfig dropped ShadowProductionVariants and checked no variant rule",
    ),
    Patch(
        sagemaker_endpoints.patch_create_endpoint,
        (f"{_SAGEMAKER_RESPONSE}.create_endpoint",),
        "DescribeEndpoint showed no shadow variant; nothing published the variants' metrics",
    ),
    Patch(
        sagemaker_endpoints.patch_update_endpoint,
        (f"{_SAGEMAKER_RESPONSE}.update_endpoint",),
        "moto has no UpdateEndpoint: deployments with guardrails and rollback added",
    ),
    # SageMaker Runtime (local_aws/sagemaker_runtime.py).
    Patch(
        sagemaker_runtime.serve_invocations_here,
        ("moto.sagemakerruntime.urls.url_paths[...]",),
        "InvokeEndpoint answered canned strings; IAM checked, then the local endpoint answers",
    ),
    # Step Functions (local_aws/stepfunctions.py, local_aws/express.py).
    Patch(
        stepfunctions.patch_states_all_leaves_terminal_errors,
        (f"{_SFN}.asl.component.common.error_name.error_equals_decl.ErrorEqualsDecl._eval_body",),
        "a Catch on States.ALL caught States.DataLimitExceeded and States.Runtime",
    ),
    # Express: its starts before the input check below, which wraps both kinds of start.
    Patch(
        express.patch_type_and_logging_from_templates,
        (
            "moto.stepfunctions.models.StateMachine.create_from_cloudformation_json",
            "moto.stepfunctions.models.StateMachine.update_from_cloudformation_json",
        ),
        "a stack's StateMachineType and LoggingConfiguration were dropped",
    ),
    Patch(
        express.patch_executions_logged,
        (f"{_SFN}.backend.execution.Execution.start",),
        "executions wrote no history to CloudWatch Logs",
    ),
    Patch(
        express.patch_express_starts,
        (f"{_PARSER_BACKEND}.start_execution",),
        "every machine ran as Standard; an unnamed execution was named None",
    ),
    Patch(
        express.patch_express_history_not_kept,
        (
            f"{_PARSER_BACKEND}.describe_execution",
            f"{_PARSER_BACKEND}.get_execution_history",
            f"{_PARSER_BACKEND}.list_executions",
        ),
        "an Express execution's history was kept and listed; AWS refuses those calls",
    ),
    Patch(
        express.patch_start_sync_execution,
        ("moto.stepfunctions.responses.StepFunctionResponse.start_sync_execution",),
        "moto has no StartSyncExecution",
    ),
    Patch(
        stepfunctions.patch_execution_input_size_checked,
        (f"{_PARSER_BACKEND}.start_execution",),
        "StartExecution accepted an input over 256 KiB",
    ),
    Patch(
        stepfunctions.patch_eventbridge_task_errors_named,
        (f"{_TASK}.service.state_task_service_events.StateTaskServiceEvents._from_error",),
        "a refused events:putEvents task failed with States.Runtime, which no Catch sees",
    ),
)

# For speed only (local_aws/moto_speedups.py): what the emulator answers stays the same.
SPEED_PATCHES: tuple[Patch, ...] = (
    Patch(
        moto_speedups.cache_moto_module_list,
        ("moto.backends.list_of_moto_modules",),
        "moto listed its package folder twice per request, under a lock",
    ),
    Patch(
        moto_speedups.cache_response_method_names,
        ("moto.core.responses.method_names_from_class",),
        "moto listed a response class's methods on every request",
    ),
    Patch(
        moto_speedups.reuse_parsed_state_machines,
        (f"{_SFN}.backend.execution_worker.ExecutionWorker._get_evaluation_entrypoint",),
        "moto parsed the definition (ANTLR, pure Python) on every execution",
    ),
    Patch(
        moto_speedups.reuse_parsed_json_paths,
        (
            f"{_SFN}.asl.utils.json_path.parse",
            f"{_SFN}.asl.component.common.path.result_path.parse",
        ),
        "every JSONPath built a new PLY parser, about five per execution",
    ),
)

PATCHES: tuple[Patch, ...] = (*EMULATOR_PATCHES, *SPEED_PATCHES)


def install_all() -> None:
    """Install every patch, in order, before the server takes its first request."""
    for patch in PATCHES:
        patch.install()
