"""The chain seam: lpstream's contracts and, later, the client that talks to them."""

from __future__ import annotations

from .contracts import CONTRACT_NAMES, Artifact, contract_at, deploy_all, load_artifact

__all__ = ["CONTRACT_NAMES", "Artifact", "contract_at", "deploy_all", "load_artifact"]
