"""The GenScope service: FastAPI app, SQL persistence, blob store and the queue producer.

Nothing here imports torch: checkpoints and datasets are inspected in a subprocess and analyses
run in the worker (``worker/``).
"""
