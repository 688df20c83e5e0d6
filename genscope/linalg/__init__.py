"""Matrix-free linear algebra for curvature: operators, Lanczos, trace and spectral density.

* :mod:`~genscope.linalg.operators`: the loss Hessian and the generalized Gauss-Newton over a
  params dict, chunked over the sample, with several Hessian-vector-product paths.
* :mod:`~genscope.linalg.lanczos`: Lanczos with full reorthogonalization and thick restarts.
* :mod:`~genscope.linalg.trace`: Hutchinson, Hutch++ and Frobenius-norm estimates with stderr.
* :mod:`~genscope.linalg.slq`: stochastic Lanczos quadrature spectral densities and outliers.
* :mod:`~genscope.linalg.eval_batchnorm`: inference-mode BatchNorm as an affine map inside the
  operators (the same Hessian, cheaper products).
* :mod:`~genscope.linalg.heap`: freed CPU memory kept in the process while the algorithms run
  (glibc), so that products do not page-fault their working set back in.
"""

from genscope.linalg.lanczos import EigenResult, Tridiagonal, eigsh, lanczos_tridiagonal
from genscope.linalg.operators import (
    DenseOperator,
    GGNOperator,
    HessianOperator,
    Operator,
    as_operator,
    layer_groups,
    module_functional,
)
from genscope.linalg.slq import Quadrature, SpectralDensity, slq, spectral_density
from genscope.linalg.trace import Estimate, frobenius, hutchinson, hutchpp

__all__ = [
    "DenseOperator",
    "EigenResult",
    "Estimate",
    "GGNOperator",
    "HessianOperator",
    "Operator",
    "Quadrature",
    "SpectralDensity",
    "Tridiagonal",
    "as_operator",
    "eigsh",
    "frobenius",
    "hutchinson",
    "hutchpp",
    "lanczos_tridiagonal",
    "layer_groups",
    "module_functional",
    "slq",
    "spectral_density",
]
