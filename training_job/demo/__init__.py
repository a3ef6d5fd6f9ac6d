"""The demo (`make demo`, `python -m training_job.demo`): the main job, the whole workflow
in local mode, run with the commands a user runs against AWS. `run.py` runs the steps,
`review_step.py` is its scripted reviewer, `summary.py` counts and prints what happened,
`sagemaker_role.py` makes the execution role it deploys with. It drives the product and
starts the local AWS through training_job/local_mode.py, the product's one seam to it."""
