"""`python -m training_job rollout`: a new model version onto the running endpoint, guarded.

The new version is an Approved version of the model registry (training_job/models/registry.py),
as deploy serves: `--model-version N`, or by default the newest approved one; never an
unregistered model.tar.gz, never a version pending approval or rejected. Its SageMaker
model is made from its package as deploy makes it, with the serving model's execution
role, and its variant is named after it (v<N>). Rolling back by hand is rolling out the
older approved version.

The endpoint keeps its name (the stack and the handlers never change when the model
does). Each stage is an UpdateEndpoint to a new endpoint configuration, so it runs the
same on SageMaker and on the local AWS (`source .local/aws.env`):

1. shadow: the new version as the shadow variant beside the serving one (SageMaker allows
   one production and one shadow variant in such a configuration). It answers copies of
   live traffic that nobody sees, for --shadow-seconds; then its answers are compared with
   production's (training_job/monitor/versions.py: agreement, confidence and doubtful
   share, errors). A version that disagrees or errors stops here, before any traffic moves.
   --skip-shadow skips it: the canary's alarms on the answers are then the check on them.
2. prepare: both versions as production variants, the new one at weight 0 (nothing moves;
   the new model is loaded, so one that cannot be loaded stops here, with SageMaker's
   FailureReason, on the configuration the endpoint had).
3. canary: UpdateEndpoint with SageMaker's deployment guardrails to the same two variants,
   weights swapped: blue/green with CANARY traffic shifting (--canary-percent of the
   traffic for --canary-seconds, then all, baked --termination-wait-seconds more), and
   automatic rollback when one of the alarms this command creates for the new variant
   goes to ALARM: 5XX errors, p99 model latency, and the answers themselves against the
   baselines, both ways: doubtful share, mean confidence, class mix
   (training_job/serving/canary_alarms.py; rollout_alarms.py makes and deletes them).
   Guardrails require the new configuration to name the same variants as the old one:
   that is why stage 2 exists, and why each answer still names the version that gave it
   (X-Amzn-Invoked-Production-Variant, contract.decisions.variant_for_version).
   SageMaker allows a canary of at most half a variant's instances: from stage 2 the new
   version runs as many instances as the old one runs now, and at least 2.
4. all: the new version alone, on the old one's live instance count. Its baseline
   becomes the monitor's. An autoscaled old variant is deregistered first (SageMaker
   refuses to remove a scalable target) and the new one registered with the same bounds
   and policy.

However it ends, the alarms it created are deleted.

A rollback (by SageMaker, or a failed shadow comparison) ends with the endpoint restored
to the configuration it had before (an UpdateEndpoint, no traffic lost) and exit status 1.
Rolling back by hand, and what each alarm means: docs/operations.md.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.exceptions import ClientError

from contract.decisions import variant_for_version
from training_job.arguments import bounded, endpoint_name, positive_int, positive_number
from training_job.errors import CommandError
from training_job.models import registry, serving_image
from training_job.serving import autoscaling, canary_alarms, deploy, deployment, rollout_alarms

MINIMUM_EXECUTION_TIMEOUT_SECONDS = 600  # SageMaker's floor for the deployment's timeout
# TrafficRoutingConfig.CanarySize "must be less than or equal to 50% of the variant's total
# instance count" (SageMaker API reference), and a canary is at least one instance: a
# one-instance variant cannot take a canary, two can take any --canary-percent up to 50.
MINIMUM_CANARY_INSTANCES = 2


class RolloutError(CommandError):
    """A rollout that cannot go on, or that was rolled back."""


_seconds = bounded(int, "a number of seconds from 0 to 3600", 0, 3600)

_share = bounded(float, "a share between 0 and 1", 0, 1)

_version = bounded(int, "a version number (1 or more)", 1)

_percent = bounded(int, "a canary percentage from 1 to 50", 1, 50)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "rollout",
        help="roll a new model version onto the endpoint: shadow, canary, all, with "
        "automatic rollback",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    registry.add_group_option(parser)
    parser.add_argument(
        "--model-version",
        type=_version,
        default=None,
        metavar="N",
        help="the approved version of --model-group to roll out; its variant is named vN "
        "(default: the newest approved, when the endpoint does not serve it already). "
        "An older approved version rolls back by the same stages",
    )
    parser.add_argument(
        "--endpoint-name",
        type=endpoint_name,
        default=deployment.DEFAULT_ENDPOINT_NAME,
        help="the endpoint to roll out on (default: %(default)s)",
    )
    parser.add_argument(
        "--bucket",
        help="the project bucket: the shadow comparison reads captures from "
        "s3://BUCKET/data_capture/ and the new baseline goes to the monitor's key "
        "(without it there is no shadow comparison)",
    )
    stages = parser.add_argument_group("stages")
    stages.add_argument(
        "--shadow-seconds",
        type=_seconds,
        default=300,
        help="how long the shadow variant answers copies of live traffic (default: %(default)s)",
    )
    stages.add_argument(
        "--skip-shadow",
        action="store_true",
        help="go straight to the canary (no comparison; the canary's alarms on the "
        "answers still judge them)",
    )
    stages.add_argument(
        "--min-agreement",
        type=_share,
        default=0.9,
        help="share of requests on which the shadow must name the class production named "
        "(default: %(default)s)",
    )
    stages.add_argument(
        "--min-compared",
        type=positive_int,
        default=20,
        help="requests the shadow must have answered to be compared; fewer stop the "
        "rollout (default: %(default)s)",
    )
    stages.add_argument(
        "--canary-percent",
        type=_percent,
        default=10,
        help="share of the traffic the new version takes first, in percent of the new "
        "fleet's capacity (CanarySize CAPACITY_PERCENT; default: %(default)s). SageMaker "
        "allows a canary of at most half the variant's instances, so the new version runs "
        "at least 2 instances during the canary, then as many as the old one ran",
    )
    stages.add_argument(
        "--canary-seconds",
        type=_seconds,
        default=600,
        help="the canary's baking period (WaitIntervalInSeconds; default: %(default)s)",
    )
    stages.add_argument(
        "--termination-wait-seconds",
        type=_seconds,
        default=300,
        help="alarms still roll back this long after all traffic moved "
        "(TerminationWaitInSeconds; default: %(default)s)",
    )
    stages.add_argument(
        "--poll-seconds",
        type=positive_number,
        default=30.0,
        help="how often DescribeEndpoint is asked (default: %(default)s)",
    )
    guards = parser.add_argument_group("alarms (automatic rollback)")
    guards.add_argument(
        "--max-latency-ms",
        type=positive_number,
        default=1000.0,
        help="p99 ModelLatency of the new variant above this is an alarm (default: %(default)s)",
    )
    guards.add_argument(
        "--doubtful-margin",
        type=_share,
        default=0.15,
        help="a doubtful share above the baseline share (the lower of the new model's and "
        "the serving model's) plus this, or below the serving model's minus this, is an "
        "alarm (default: %(default)s)",
    )
    guards.add_argument(
        "--confidence-margin",
        type=_share,
        default=0.1,
        help="a mean confidence this far below or above the serving model's baseline is an "
        "alarm (default: %(default)s)",
    )
    guards.add_argument(
        "--class-share-margin",
        type=_share,
        default=0.25,
        help="a class's share of the answers this far above its share in the serving "
        "model's baseline is an alarm (default: %(default)s)",
    )
    guards.add_argument(
        "--alarm-period-seconds",
        type=int,
        choices=(10, 30, 60, 120, 300),
        default=60,
        help="the alarms' period (default: %(default)s; SageMaker's metrics are per minute)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    sm = boto3.client("sagemaker")
    s3 = boto3.client("s3")
    # As deploy: only an Approved version, with the very archive that was registered.
    version = deploy.chosen_version(sm, s3, args.model_group, args.model_version)
    if serving_image.is_pytorch_image(version.image):
        deploy.require_servable(s3, version.model_data)
    return Rollout(sm, args, version).run()


class Rollout:
    def __init__(self, sm: Any, args: argparse.Namespace, version: registry.ModelVersion) -> None:
        self.sm = sm
        self.args = args
        self.name = args.endpoint_name
        self.version = version
        self.model_data = version.model_data
        self.variant = variant_for_version(version.version)
        self.stamp = f"{datetime.now(UTC):%Y%m%d-%H%M%S}"
        self.live_instances = 1  # the serving variant's, from DescribeEndpoint in run()

    def stage(self, name: str, text: str) -> None:
        print(f"[{datetime.now(UTC):%H:%M:%S}] {name}: {text}", flush=True)

    # --- the endpoint as it is --------------------------------------------------------

    def run(self) -> int:
        described = self._describe()
        if described["EndpointStatus"] != "InService":
            raise RolloutError(f"endpoint {self.name} is {described['EndpointStatus']}: wait")
        original = self.sm.describe_endpoint_config(
            EndpointConfigName=described["EndpointConfigName"]
        )
        if original.get("ShadowProductionVariants") or len(original["ProductionVariants"]) != 1:
            raise RolloutError(
                f"endpoint {self.name} serves {len(original['ProductionVariants'])} production "
                "variant(s) or a shadow: a rollout (or its rollback) is unfinished; finish it "
                "by hand first (docs/operations.md, Rolling back by hand)"
            )
        serving = original["ProductionVariants"][0]
        if serving["VariantName"] == self.variant:
            chosen = "" if self.args.model_version else ", the newest approved version,"
            raise RolloutError(
                f"endpoint {self.name} already serves {self.variant}{chosen}: name another "
                "approved version with --model-version N (an older one rolls back)"
            )
        self.stage(
            "start",
            f"endpoint {self.name} serves {serving['VariantName']} "
            f"({original['EndpointConfigName']}); rolling out {self.variant}: version "
            f"{self.version.version} of {self.version.group} ({self.model_data})",
        )
        new_model = self._create_model(serving["ModelName"])
        # Every configuration of the rollout keeps the fleet as it is now, autoscaled or not
        # (the old configuration's InitialInstanceCount is only what deploy started with).
        self.live_instances = live_instances(described, serving["VariantName"])
        serving = {**serving, "InitialInstanceCount": self.live_instances}
        new = {**serving, "VariantName": self.variant, "ModelName": new_model}
        new.pop("InitialVariantWeight", None)
        canary_new = {**new, "InitialInstanceCount": canary_instances(self.live_instances)}
        if canary_new["InitialInstanceCount"] > self.live_instances:
            self.stage(
                "start",
                f"{self.variant} runs {canary_new['InitialInstanceCount']} instances during "
                f"the canary (SageMaker: a canary is at most half a variant's instances, so "
                f"{self.live_instances} cannot take one); {self.live_instances} after it",
            )
        capture = original.get("DataCaptureConfig")
        try:
            if not self.args.skip_shadow:
                self._shadow(serving, new, capture)
            self._canary(serving, canary_new, capture)
        except RolloutError:
            self._restore(original["EndpointConfigName"], serving["VariantName"])
            raise
        finally:
            rollout_alarms.delete(self.name, self.variant, self.stage)
        final = self._all(serving, new, capture)
        if self.args.bucket:
            deployment.publish_baseline(self.args.bucket, self.name, self.model_data, None)
        self.stage("all", f"{self.variant} serves all traffic of {self.name} ({final})")
        return 0

    def _restore(self, config: str, variant: str) -> None:
        """Back to the configuration the endpoint had before, unless a failed update
        already left it there: then there is nothing to undo."""
        if self._describe()["EndpointConfigName"] != config:
            self.stage("restore", f"back to {config}")
            self._update(config)
        self.stage("restore", f"endpoint {self.name} serves {variant} again")

    def _all(
        self, serving: dict[str, Any], new: dict[str, Any], capture: dict[str, Any] | None
    ) -> str:
        """Stage 4, the new version alone, with the old variant's autoscaling moved to it:
        SageMaker refuses to remove a variant that is a scalable target ("Update endpoints
        that use auto scaling": deregister, update, register the updated variant and
        attach its policy again). It keeps the fleet the old version had before the canary
        (within the target's bounds)."""
        client = boto3.client("application-autoscaling")
        old = serving["VariantName"]
        scaling = autoscaling.Scaling.of(client, self.name, old)
        instances = self.live_instances
        if scaling is not None:
            instances = scaling.capacity_for(instances)
        final = self._config(
            "all",
            [{**new, "InitialVariantWeight": 1.0, "InitialInstanceCount": instances}],
            capture,
        )
        if scaling is None:
            self._update(final)
            return final
        scaling.remove(client, self.name, old)
        self.stage(
            "autoscaling",
            f"{old} deregistered ({scaling.min_capacity}-{scaling.max_capacity} instances)",
        )
        try:
            self._update(final)
        except RolloutError:
            scaling.apply(client, self.name, old)  # the endpoint still has the old variant
            self.stage("autoscaling", f"{old} registered again: the last update failed")
            raise
        scaling.apply(client, self.name, self.variant)
        policies = ", ".join(policy["PolicyName"] for policy in scaling.policies) or "no policy"
        self.stage(
            "autoscaling",
            f"{self.variant} registered: {scaling.min_capacity}-{scaling.max_capacity} "
            f"instances ({policies}), serving with {instances}",
        )
        return final

    def _describe(self) -> dict[str, Any]:
        try:
            return dict(self.sm.describe_endpoint(EndpointName=self.name))
        except ClientError as error:
            raise RolloutError(f"no endpoint {self.name} to roll out on: {error}") from error

    def _create_model(self, serving_model: str) -> str:
        """The new version's SageMaker model, made from its package as deploy makes it,
        with the serving model's execution role (the one that already reads the models
        and writes the captures)."""
        role = self.sm.describe_model(ModelName=serving_model).get("ExecutionRoleArn")
        name = f"{self.name[:40]}-{self.variant}-{self.stamp}"[:63]
        deploy.create_model(self.sm, name, self.version, role)
        return name

    def _config(
        self,
        stage: str,
        production: list[dict[str, Any]],
        capture: dict[str, Any] | None,
        shadow: list[dict[str, Any]] | None = None,
    ) -> str:
        name = f"{self.name[:40]}-{stage}-{self.stamp}"[:63]
        request: dict[str, Any] = {"EndpointConfigName": name, "ProductionVariants": production}
        if shadow:
            request["ShadowProductionVariants"] = shadow
        if capture:
            request["DataCaptureConfig"] = capture
        self.sm.create_endpoint_config(**request)
        return name

    def _update(self, config: str, deployment: dict[str, Any] | None = None) -> dict[str, Any]:
        """UpdateEndpoint, then DescribeEndpoint until InService, printing each status."""
        request: dict[str, Any] = {"EndpointName": self.name, "EndpointConfigName": config}
        if deployment:
            request["DeploymentConfig"] = deployment
        self.sm.update_endpoint(**request)
        seen = ""
        deadline = time.monotonic() + deploy.ENDPOINT_WAIT_SECONDS
        while True:
            described = self._describe()
            status = described["EndpointStatus"]
            if status != seen:
                self.stage("endpoint", f"{self.name} is {status}")
                seen = status
            if status == "InService":
                if not deployment and described["EndpointConfigName"] != config:
                    # SageMaker: InService with a FailureReason is an update that failed
                    # (its new containers never passed the health check, say).
                    reason = described.get("FailureReason", "SageMaker gave no reason")
                    raise RolloutError(f"endpoint {self.name} did not take {config}: {reason}")
                return described
            if status not in ("Updating", "RollingBack", "SystemUpdating"):
                reason = described.get("FailureReason", "SageMaker gave no reason")
                raise RolloutError(f"endpoint {self.name} is {status}: {reason}")
            if time.monotonic() > deadline:
                raise RolloutError(f"endpoint {self.name} is still {status} after an hour")
            time.sleep(self.args.poll_seconds)

    # --- stage 1: shadow --------------------------------------------------------------

    def _shadow(
        self, serving: dict[str, Any], new: dict[str, Any], capture: dict[str, Any] | None
    ) -> None:
        config = self._config("shadow", [serving], capture, shadow=[new])
        self._update(config)
        since = datetime.now(UTC)
        self.stage(
            "shadow",
            f"{self.variant} answers copies of live traffic (nobody sees them) for "
            f"{self.args.shadow_seconds}s",
        )
        time.sleep(self.args.shadow_seconds)
        if not self.args.bucket:
            self.stage("shadow", "no --bucket: the answers are not compared")
            return
        from training_job.monitor import versions

        time.sleep(versions.CAPTURE_SETTLE_SECONDS)  # the last captures reach S3
        comparison = versions.compare(
            self.args.bucket,
            self.name,
            production=serving["VariantName"],
            shadow=self.variant,
            since=since,
        )
        for line in comparison.lines():
            self.stage("shadow", line)
        problem = comparison.problem(self.args.min_agreement, self.args.min_compared)
        if problem:
            raise RolloutError(f"the shadow comparison stopped the rollout: {problem}")

    # --- stages 2 and 3: the guarded canary -------------------------------------------

    def _canary(
        self, serving: dict[str, Any], new: dict[str, Any], capture: dict[str, Any] | None
    ) -> None:
        old_weighted = {**serving, "InitialVariantWeight": 1.0}
        prepare = self._config(
            "prepare", [old_weighted, {**new, "InitialVariantWeight": 0.0}], capture
        )
        self._update(prepare)
        self.stage("prepare", f"{self.variant} beside {serving['VariantName']}, weight 0")
        names = self._create_alarms()
        swapped = self._config(
            "canary",
            [{**serving, "InitialVariantWeight": 0.0}, {**new, "InitialVariantWeight": 1.0}],
            capture,
        )
        wait, termination = self.args.canary_seconds, self.args.termination_wait_seconds
        deployment = {
            "BlueGreenUpdatePolicy": {
                "TrafficRoutingConfiguration": {
                    "Type": "CANARY",
                    "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": self.args.canary_percent},
                    "WaitIntervalInSeconds": wait,
                },
                "TerminationWaitInSeconds": termination,
                "MaximumExecutionTimeoutInSeconds": max(
                    MINIMUM_EXECUTION_TIMEOUT_SECONDS, 2 * (wait + termination) + 600
                ),
            },
            "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": name} for name in names]},
        }
        self.live_instances = live_instances(self._describe(), serving["VariantName"])
        self.stage(
            "canary",
            f"{self.args.canary_percent}% of the traffic to {self.variant} for {wait}s, then "
            f"all, baked {termination}s; rollback on {', '.join(names)}",
        )
        described = self._update(swapped, deployment)
        if described["EndpointConfigName"] != swapped:
            firing = rollout_alarms.firing(names)
            reason = described.get("FailureReason") or "SageMaker rolled the deployment back"
            raise RolloutError(
                f"{self.variant} was rolled back automatically ({reason}; in ALARM: "
                f"{', '.join(firing) or 'none now'})"
            )
        self.stage("canary", f"{self.variant} took all the traffic and passed its baking")

    def _create_alarms(self) -> list[str]:
        """The alarms that roll the canary back (docs/operations.md says what each means),
        judged against the serving version's baseline and the new version's own."""
        serving, new = rollout_alarms.references(
            self.name, self.variant, self.model_data, self.args.bucket
        )
        margins = canary_alarms.Margins(
            self.args.doubtful_margin, self.args.confidence_margin, self.args.class_share_margin
        )
        return rollout_alarms.create(
            self.name,
            self.variant,
            rollout_alarms.Limits(
                self.args.alarm_period_seconds, self.args.max_latency_ms, margins
            ),
            (serving, new),
            self.stage,
        )


def live_instances(described: dict[str, Any], variant: str) -> int:
    """The instances `variant` runs now (DescribeEndpoint: what autoscaling asked for, else
    what runs), at least 1."""
    for shown in described.get("ProductionVariants", []):
        if shown["VariantName"] == variant:
            count = shown.get("DesiredInstanceCount") or shown.get("CurrentInstanceCount") or 1
            return max(1, int(count))
    return 1


def canary_instances(instances: int) -> int:
    """The new variant's instances during the canary: as many as the old one runs, and at
    least MINIMUM_CANARY_INSTANCES, so a canary of up to 50% (rounded up to whole
    instances) is within CanarySize's bound."""
    return max(instances, MINIMUM_CANARY_INSTANCES)
