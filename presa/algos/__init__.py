"""Training algorithms: PreSa and its baselines.

Importing this package registers every algorithm; ``get_algorithm(name)`` returns the class.
To add one, write ``presa/algos/<name>.py`` with a class decorated ``@register("<name>")``
(see :mod:`presa.algos.base` for the contract) and import the module here.
"""

# registration side effects:
from presa.algos import (  # noqa: F401
    bc_all,
    bc_safe,
    bc_safe_seg,
    binary,
    cpl,
    presa,
    safety_only,
    trac,
    two_stage,
)
from presa.algos.base import (
    ALGORITHMS,
    Algorithm,
    ReferenceAlignment,
    available_algorithms,
    get_algorithm,
    register,
    warmup_lr,
)

__all__ = ["ALGORITHMS", "Algorithm", "ReferenceAlignment", "available_algorithms", "get_algorithm",
           "register", "warmup_lr"]
