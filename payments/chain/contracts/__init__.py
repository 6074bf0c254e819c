"""lpstream's protocol contracts (Vyper sources here, compiled artifacts in ``build/``).

``load_artifact(name)`` reads a committed artifact; ``deploy_all(w3, owner)`` deploys the set
and wires it through the Controller. ``python -m payments.chain.contracts.build`` recompiles
the artifacts (``--check`` verifies them). The contracts and their rules: the docstrings at the
top of each ``.vy`` file and PAYMENTS.md.
"""

from __future__ import annotations

from .artifacts import CONTRACT_NAMES, Artifact, load_artifact
from .deploy import DEFAULT_PARAMETERS, ProtocolParameters, contract_at, contract_id, deploy_all

__all__ = [
    "CONTRACT_NAMES",
    "DEFAULT_PARAMETERS",
    "Artifact",
    "ProtocolParameters",
    "contract_at",
    "contract_id",
    "deploy_all",
    "load_artifact",
]
