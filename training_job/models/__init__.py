"""The trained models: the registry of versions (registry.py; `python -m training_job models`
is cli.py), their model.tar.gz unpacked safely (archive.py) and the serving image they run
on (image.py, `python -m training_job image`)."""
