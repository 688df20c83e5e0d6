"""One module per zoo architecture, each defining its :class:`~genscope.io.zoo.architecture.
Architecture` record (fields, checks, parameter count, builder); listed in
:mod:`genscope.io.zoo.catalogue`."""
