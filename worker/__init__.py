"""The GenScope worker: the only code that knows Celery.

``celery_app`` builds the Celery app from the settings (importable by the API to send tasks by
name: it imports no task code and no torch), ``tasks`` holds the one analysis task, ``progress``
the throttled progress/lease writer, and recovery of lost runs.
"""
