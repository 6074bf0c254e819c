# pragma version 0.4.3
# @license MIT
"""
@title RoundsManager
@notice Cuts the chain into rounds of `roundLength` blocks, as Livepeer's RoundsManager does.
        A round has to be initialized (by anyone, once) before tickets redeem in it:
        initializeRound stores blockhash(block.number - 1) as the round's block hash, which
        tickets quote in their auxData, and asks the BondingManager to fix the round's active
        orchestrator set.

        Round numbers are anchored at the last round length change:
            currentRound = lastRoundLengthUpdateRound
                           + (block.number - lastRoundLengthUpdateStartBlock) // roundLength
        so changing the length keeps the current round and its start block, and only moves
        the rounds after it. Round 0 starts at block 0.

        A round counts as initialized when it has a stored block hash (lastInitializedRound is
        0 both before any round is initialized and after round 0 is, so it cannot tell).
"""

interface IController:
    def getContract(_id: bytes32) -> address: view
    def owner() -> address: view


interface IBondingManager:
    def setCurrentRoundTotalActiveStake(): nonpayable


BONDING_MANAGER: constant(bytes32) = keccak256("BondingManager")


event NewRound:
    round: indexed(uint256)
    blockHash: bytes32


event ParameterUpdate:
    param: String[32]


controller: public(address)
roundLength: public(uint256)
lastInitializedRound: public(uint256)
lastRoundLengthUpdateRound: public(uint256)
lastRoundLengthUpdateStartBlock: public(uint256)
roundBlockHashes: HashMap[uint256, bytes32]


@deploy
def __init__(_controller: address, _roundLength: uint256):
    assert _roundLength > 0, "round length cannot be 0"
    self.controller = _controller
    self.roundLength = _roundLength


@internal
@view
def _currentRound() -> uint256:
    return self.lastRoundLengthUpdateRound + (
        block.number - self.lastRoundLengthUpdateStartBlock
    ) // self.roundLength


@internal
@view
def _currentRoundStartBlock() -> uint256:
    rounds: uint256 = (block.number - self.lastRoundLengthUpdateStartBlock) // self.roundLength
    return self.lastRoundLengthUpdateStartBlock + rounds * self.roundLength


@external
def setRoundLength(_roundLength: uint256):
    """
    @notice Changes the round length from the current round's start on (owner only).
    """
    owner: address = staticcall IController(self.controller).owner()
    assert msg.sender == owner, "caller must be Controller owner"
    assert _roundLength > 0, "round length cannot be 0"
    self.lastRoundLengthUpdateRound = self._currentRound()
    self.lastRoundLengthUpdateStartBlock = self._currentRoundStartBlock()
    self.roundLength = _roundLength
    log ParameterUpdate(param="roundLength")


@external
def initializeRound():
    """
    @notice Initializes the current round: stores its block hash and fixes its active set.
    """
    round: uint256 = self._currentRound()
    assert self.roundBlockHashes[round] == empty(bytes32), "round already initialized"
    block_hash: bytes32 = blockhash(block.number - 1)
    self.lastInitializedRound = round
    self.roundBlockHashes[round] = block_hash
    bonding_manager: address = staticcall IController(self.controller).getContract(BONDING_MANAGER)
    extcall IBondingManager(bonding_manager).setCurrentRoundTotalActiveStake()
    log NewRound(round=round, blockHash=block_hash)


@view
@external
def currentRound() -> uint256:
    return self._currentRound()


@view
@external
def currentRoundStartBlock() -> uint256:
    return self._currentRoundStartBlock()


@view
@external
def currentRoundInitialized() -> bool:
    return self.roundBlockHashes[self._currentRound()] != empty(bytes32)


@view
@external
def blockHashForRound(_round: uint256) -> bytes32:
    """
    @notice The block hash stored when `_round` was initialized; zero if it never was.
    """
    return self.roundBlockHashes[_round]


@view
@external
def blockNum() -> uint256:
    return block.number
