"""The training data: the CIFAR-100 archive (cifar.py), staged into the bucket (stage.py,
bucket.py, manifests.py), and the photos people labelled, pinned for a job
(reviewed_photos.py). `python -m training_job stage` is stage.py."""
