"""The deployed workflow driven from the command line: `python -m training_job evaluate`
(one execution per test photo) and `backfill` (a prefix of photos in batches)."""
