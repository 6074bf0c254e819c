# pragma version 0.4.3
# @license MIT
"""
@title Controller
@notice Names lpstream's protocol contracts, as Livepeer's Controller does: the owner
        registers each contract under keccak256(name) ("TicketBroker", "BondingManager",
        "RoundsManager", "Minter", "ServiceRegistry") and the contracts find each other
        through getContract at call time, so one can be replaced without redeploying the rest.
        The owner is also the protocol's governor: the other contracts take parameter changes
        only from Controller.owner().
"""

struct ContractInfo:
    contractAddress: address
    gitCommitHash: bytes20


event SetContractInfo:
    id: bytes32
    contractAddress: address
    gitCommitHash: bytes20


event OwnershipTransferred:
    previousOwner: indexed(address)
    newOwner: indexed(address)


owner: public(address)
registry: HashMap[bytes32, ContractInfo]


@deploy
def __init__():
    self.owner = msg.sender
    log OwnershipTransferred(previousOwner=empty(address), newOwner=msg.sender)


@external
def setContractInfo(_id: bytes32, _contractAddress: address, _gitCommitHash: bytes20):
    """
    @notice Registers `_contractAddress` under `_id` (keccak256 of the contract's name).
    """
    assert msg.sender == self.owner, "caller must be Controller owner"
    self.registry[_id] = ContractInfo(
        contractAddress=_contractAddress, gitCommitHash=_gitCommitHash
    )
    log SetContractInfo(id=_id, contractAddress=_contractAddress, gitCommitHash=_gitCommitHash)


@view
@external
def getContract(_id: bytes32) -> address:
    """
    @notice The address registered under `_id`; the zero address if none is.
    """
    return self.registry[_id].contractAddress


@view
@external
def getContractInfo(_id: bytes32) -> (address, bytes20):
    info: ContractInfo = self.registry[_id]
    return info.contractAddress, info.gitCommitHash


@external
def transferOwnership(_newOwner: address):
    assert msg.sender == self.owner, "caller must be Controller owner"
    assert _newOwner != empty(address), "new owner is the zero address"
    log OwnershipTransferred(previousOwner=self.owner, newOwner=_newOwner)
    self.owner = _newOwner
