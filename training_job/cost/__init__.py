"""What a photo costs on AWS: `python -m training_job cost` (cli.py) reads what the stack
uses (usage.py, express.py, backfill.py) and prices it (model.py, prices-*.json)."""
