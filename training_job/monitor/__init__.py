"""`python -m training_job monitor`: drift and performance monitoring of captured traffic."""
