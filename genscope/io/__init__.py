"""Inputs: checkpoints (the format registry in :mod:`genscope.io.formats`, safe loading in
:mod:`genscope.io.checkpoints`), datasets and the model zoo (:mod:`genscope.io.zoo`)."""
