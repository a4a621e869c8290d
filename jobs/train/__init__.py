"""The trainer child (torch side): ``python -m jobs.train <job_dir>``; see runner.py."""
