"""The endpoint: `python -m training_job deploy` (deploy.py) and `rollout` (rollout.py), with
what they configure: autoscaling, the canary's answer alarms and data capture."""
