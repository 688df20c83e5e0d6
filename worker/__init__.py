"""The GenScope worker: the only code that knows Celery.

``celery_app`` builds the Celery app from the settings (importable by the API to send tasks by
name: it imports no task code and no torch); ``tasks`` is the Celery entry, the one analysis
task; ``execution`` computes a run (claim, cache, sandboxed analysis, results);
``result_cache`` keys, finds and stores results; ``progress`` is the throttled progress/lease
writer; ``sandboxed`` runs the analysis in a child process; ``lifecycle`` connects the worker's
signals (pool children, heartbeat and recovery of lost runs). Every status write goes through
:mod:`backend.run_state`.
"""
