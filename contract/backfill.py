"""A backfill: every photo under an S3 prefix scored by one model version, its decisions
written as the live workflow writes them (contract/decisions.py), and a results file.

The backfill state machine (statemachine/backfill.asl.yml) lists the prefix with a
Distributed Map and hands the batch-scoring handler (handlers/backfill.py) batches of
S3 objects; the handler answers one PhotoOutcome per photo. `python -m training_job
backfill` starts it and writes the results file from the map run's exported results:
one JSON line per photo, each a decision or a named failure.

Standard library only: packaged into the handler and read by training_job.
"""

from __future__ import annotations

# A photo's outcome in the results file (`outcome`): a decision this backfill wrote
# (its status), one that was already there, or a failure named by `error`.
OUTCOME_ROUTED = "routed"
OUTCOME_NEEDS_REVIEW = "needs_review"
OUTCOME_REJECTED = "rejected"
OUTCOME_ALREADY_DECIDED = "already_decided"  # decided before: left as it was
OUTCOME_FAILED = "failed"
DECIDED = (OUTCOME_ROUTED, OUTCOME_NEEDS_REVIEW, OUTCOME_REJECTED)
OUTCOMES = (*DECIDED, OUTCOME_ALREADY_DECIDED, OUTCOME_FAILED)

# Errors that name a failure in the results file besides the handler's own: the batch's
# child execution failed (its error), or the map run never started it.
NOT_PROCESSED = "NotProcessed"

# The decision item's attribute naming the backfill that wrote it (absent on the live
# path's): the backfill's execution name.
BACKFILL_ATTRIBUTE = "backfill"

# The results file's fields, per photo (one JSON object a line).
RESULT_FIELDS = ("key", "etag", "image", "outcome", "label", "confidence", "error", "cause")

# Where a backfill's files go in the data bucket: the map run's exported results under
# RESULTS_PREFIX/<name>/ (ResultWriter), the results file beside them.
RESULTS_PREFIX = "backfills/"
RESULTS_FILE = "results.jsonl"
