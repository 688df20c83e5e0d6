"""Measures: each module registers its measures with :mod:`genscope.measures.registry`."""
