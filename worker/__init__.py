"""The GenScope worker: the code that runs analyses for the broker's messages.

``celery_app`` is the broker's Celery app (``backend.broker``, which the API also uses to send
tasks by name) with the task code included; ``cli`` is ``genscope worker``; ``tasks`` is the
Celery entry, the one analysis task; ``execution`` computes a run (claim, cache, sandboxed
analysis, results); ``result_cache`` keys, finds and stores results; ``progress`` is the
throttled progress/lease writer; ``sandboxed`` runs the analysis in a child process;
``lifecycle`` connects the worker's signals (pool children, heartbeat and recovery of lost
runs). Every status write goes through :mod:`backend.run_state`.
"""
