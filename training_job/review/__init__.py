"""`python -m training_job review`: a person answers the photos the model doubted.

store.py reads and answers the review queue in the decisions table (conditional writes),
reviewed.py keeps the answers as a `.lst` manifest for training, server.py serves the
page (static/) and its JSON API on 127.0.0.1, scripted.py answers through that API for
the demo, table.py describes the table's keys.
"""
