# pragma version 0.4.3
# @license MIT
"""
@title BondingManager
@notice The part of Livepeer's BondingManager that ticket redemption needs: stake, the
        orchestrator pool, each round's active set, and fee accounting.

        Stake is ETH, not LPT: bond(_amount, _to) is payable and takes exactly `_amount` wei,
        which the Minter holds until the bond is unbonded and withdrawn after
        `unbondingPeriod` rounds. A delegator bonds to one address at a time; bonding to
        another moves the whole bond there (a registered orchestrator may bond only to itself).
        An orchestrator's stake is everything bonded to it, its own bond included.

        Unbonding, as Livepeer does it: unbond(_amount) takes `_amount` off the caller's bond
        into a new unbonding lock (ids count up from 0 per delegator, getDelegator's
        nextUnbondingLockId is the next one), withdrawable from round currentRound +
        unbondingPeriod. withdrawStake(id) pays a lock out from then on; rebond(id) cancels a
        lock at any time and bonds its amount back to the caller's delegate (the caller must
        still be bonded, or pending); rebondFromUnbonded(_to, id) does the same for a caller
        that unbonded everything, delegating to `_to` from the next round. A lock is valid
        while it exists (isValidUnbondingLock): paid out or rebonded, it is gone. Livepeer
        tells a lock by withdrawRound > 0; here by amount > 0, which holds for the same locks
        (an unbond is never of 0) even on a chain still in round 0. delegatorStatus answers
        Livepeer's Pending (0), Bonded (1) or Unbonded (2). Unlike Livepeer these calls do
        not need the current round to be initialized, as bond and unbond here never did.

        An address registers as an orchestrator with transcoder(rewardCut, feeShare) once it
        has bonded to itself; it stays registered until it unbonds all of its own bond. At most
        MAX_POOL_SIZE addresses are registered at once.

        Active set: when the RoundsManager initializes round r it calls
        setCurrentRoundTotalActiveStake, which takes the registered orchestrators with
        non-zero stake, sorts them by stake (ties to the earlier registration) and fixes the
        top `numActiveTranscoders` as round r's active set. Bonding, unbonding and registering
        during round r change round r + 1's set at the earliest, and a round that was never
        initialized has no active set. isActiveTranscoder and getTranscoderPoolSize answer for
        the current round's set, so the TicketBroker's reserve allocation
        (reserve / pool size) and who may claim it agree with each other for a whole round.

        Fees: the TicketBroker credits a winning ticket's payout with updateTranscoderWithFees;
        the whole amount goes to the orchestrator's own withdrawable fees. rewardCut and
        feeShare are recorded and reported but not applied: there are no rewards, and fees are
        not shared with delegators.
"""

interface IController:
    def getContract(_id: bytes32) -> address: view
    def owner() -> address: view


interface IRoundsManager:
    def currentRound() -> uint256: view


interface IMinter:
    def trustedDepositETH(): payable
    def trustedWithdrawETH(_to: address, _amount: uint256): nonpayable


ROUNDS_MANAGER: constant(bytes32) = keccak256("RoundsManager")
TICKET_BROKER: constant(bytes32) = keccak256("TicketBroker")
MINTER: constant(bytes32) = keccak256("Minter")

PERC_DIVISOR: constant(uint256) = 1000000
MAX_POOL_SIZE: constant(uint256) = 100

# Livepeer's DelegatorStatus enum, as delegatorStatus returns it.
PENDING: constant(uint8) = 0
BONDED: constant(uint8) = 1
UNBONDED: constant(uint8) = 2


struct Delegator:
    bondedAmount: uint256
    fees: uint256
    delegateAddress: address
    delegatedAmount: uint256
    startRound: uint256
    nextUnbondingLockId: uint256


struct Transcoder:
    rewardCut: uint256
    feeShare: uint256
    activationRound: uint256
    cumulativeFees: uint256
    lastFeeRound: uint256


struct UnbondingLock:
    amount: uint256
    withdrawRound: uint256


event Bond:
    newDelegate: indexed(address)
    oldDelegate: indexed(address)
    delegator: indexed(address)
    additionalAmount: uint256
    bondedAmount: uint256


event Unbond:
    delegate: indexed(address)
    delegator: indexed(address)
    unbondingLockId: uint256
    amount: uint256
    withdrawRound: uint256


event Rebond:
    delegate: indexed(address)
    delegator: indexed(address)
    unbondingLockId: uint256
    amount: uint256


event WithdrawStake:
    delegator: indexed(address)
    unbondingLockId: uint256
    amount: uint256
    withdrawRound: uint256


event TranscoderUpdate:
    transcoder: indexed(address)
    rewardCut: uint256
    feeShare: uint256


event TranscoderResigned:
    transcoder: indexed(address)


event TranscoderActivated:
    transcoder: indexed(address)
    activationRound: uint256


event WithdrawFees:
    delegator: indexed(address)
    recipient: address
    amount: uint256


event ParameterUpdate:
    param: String[32]


controller: public(address)
unbondingPeriod: public(uint256)
numActiveTranscoders: public(uint256)
totalBonded: uint256

delegators: HashMap[address, Delegator]
transcoders: HashMap[address, Transcoder]
unbondingLocks: HashMap[address, HashMap[uint256, UnbondingLock]]

# Registered orchestrators, in registration order (a resignation moves the last one into the
# gap); poolIndex is the position + 1, 0 for an unregistered address.
pool: DynArray[address, MAX_POOL_SIZE]
poolIndex: HashMap[address, uint256]

# Each initialized round's active set: its members in stake order, each member's position + 1
# (0 = not active), and their total stake.
activeSetSize: HashMap[uint256, uint256]
activeSetMember: HashMap[uint256, HashMap[uint256, address]]
activeSetIndex: HashMap[uint256, HashMap[address, uint256]]
activeSetStake: HashMap[uint256, uint256]


@deploy
def __init__(_controller: address, _numActiveTranscoders: uint256, _unbondingPeriod: uint256):
    assert _numActiveTranscoders <= MAX_POOL_SIZE, "numActiveTranscoders above MAX_POOL_SIZE"
    self.controller = _controller
    self.numActiveTranscoders = _numActiveTranscoders
    self.unbondingPeriod = _unbondingPeriod


@internal
@view
def _contract(_id: bytes32) -> address:
    return staticcall IController(self.controller).getContract(_id)


@internal
@view
def _currentRound() -> uint256:
    return staticcall IRoundsManager(self._contract(ROUNDS_MANAGER)).currentRound()


@internal
@view
def _requireControllerOwner():
    owner: address = staticcall IController(self.controller).owner()
    assert msg.sender == owner, "caller must be Controller owner"


@external
def setNumActiveTranscoders(_numActiveTranscoders: uint256):
    """
    @notice Sets the active set size from the next initialized round on (owner only).
    """
    self._requireControllerOwner()
    assert _numActiveTranscoders <= MAX_POOL_SIZE, "numActiveTranscoders above MAX_POOL_SIZE"
    self.numActiveTranscoders = _numActiveTranscoders
    log ParameterUpdate(param="numActiveTranscoders")


@external
def setUnbondingPeriod(_unbondingPeriod: uint256):
    self._requireControllerOwner()
    self.unbondingPeriod = _unbondingPeriod
    log ParameterUpdate(param="unbondingPeriod")


@external
@payable
def bond(_amount: uint256, _to: address):
    """
    @notice Bonds `_amount` more wei (sent with the call) and delegates the caller's whole bond
            to `_to`.
    """
    assert msg.value == _amount, "msg.value does not equal bond amount"
    assert _to != empty(address), "delegate is the zero address"
    current_delegate: address = self.delegators[msg.sender].delegateAddress
    bonded: uint256 = self.delegators[msg.sender].bondedAmount
    delegation: uint256 = _amount
    if current_delegate == empty(address):
        self.delegators[msg.sender].startRound = self._currentRound() + 1
    elif current_delegate != _to:
        assert self.poolIndex[msg.sender] == 0, (
            "registered transcoders can't delegate towards other addresses"
        )
        self.delegators[msg.sender].startRound = self._currentRound() + 1
        delegation += bonded
        self.delegators[current_delegate].delegatedAmount -= bonded
    assert delegation > 0, "delegation amount must be greater than 0"
    self.delegators[msg.sender].delegateAddress = _to
    self.delegators[_to].delegatedAmount += delegation
    if _amount > 0:
        self.delegators[msg.sender].bondedAmount = bonded + _amount
        self.totalBonded += _amount
        extcall IMinter(self._contract(MINTER)).trustedDepositETH(value=_amount)
    log Bond(
        newDelegate=_to,
        oldDelegate=current_delegate,
        delegator=msg.sender,
        additionalAmount=_amount,
        bondedAmount=bonded + _amount,
    )


@external
def unbond(_amount: uint256):
    """
    @notice Starts unbonding `_amount` wei of the caller's bond; withdrawStake pays it out
            `unbondingPeriod` rounds later. An orchestrator that unbonds all of its own bond
            resigns from the pool.
    """
    assert _amount > 0, "unbond amount must be greater than 0"
    bonded: uint256 = self.delegators[msg.sender].bondedAmount
    assert bonded > 0, "caller must be bonded"
    assert _amount <= bonded, "amount is greater than bonded amount"
    delegate: address = self.delegators[msg.sender].delegateAddress
    withdraw_round: uint256 = self._currentRound() + self.unbondingPeriod
    lock_id: uint256 = self.delegators[msg.sender].nextUnbondingLockId
    self.unbondingLocks[msg.sender][lock_id] = UnbondingLock(
        amount=_amount, withdrawRound=withdraw_round
    )
    self.delegators[msg.sender].nextUnbondingLockId = lock_id + 1
    self.delegators[msg.sender].bondedAmount = bonded - _amount
    self.delegators[delegate].delegatedAmount -= _amount
    self.totalBonded -= _amount
    if bonded == _amount:
        if delegate == msg.sender and self.poolIndex[msg.sender] != 0:
            self._resign(msg.sender)
        self.delegators[msg.sender].delegateAddress = empty(address)
        self.delegators[msg.sender].startRound = 0
    log Unbond(
        delegate=delegate,
        delegator=msg.sender,
        unbondingLockId=lock_id,
        amount=_amount,
        withdrawRound=withdraw_round,
    )


@internal
def _resign(_transcoder: address):
    index: uint256 = self.poolIndex[_transcoder] - 1
    last: address = self.pool.pop()
    if last != _transcoder:
        self.pool[index] = last
        self.poolIndex[last] = index + 1
    self.poolIndex[_transcoder] = 0
    log TranscoderResigned(transcoder=_transcoder)


@internal
@view
def _delegatorStatus(_delegator: address) -> uint8:
    if self.delegators[_delegator].bondedAmount == 0:
        return UNBONDED
    if self.delegators[_delegator].startRound > self._currentRound():
        return PENDING
    return BONDED


@internal
def _processRebond(_delegator: address, _unbondingLockId: uint256):
    lock: UnbondingLock = self.unbondingLocks[_delegator][_unbondingLockId]
    assert lock.amount > 0, "invalid unbonding lock ID"
    delegate: address = self.delegators[_delegator].delegateAddress
    self.delegators[_delegator].bondedAmount += lock.amount
    self.delegators[delegate].delegatedAmount += lock.amount
    self.totalBonded += lock.amount
    self.unbondingLocks[_delegator][_unbondingLockId] = empty(UnbondingLock)
    log Rebond(
        delegate=delegate,
        delegator=_delegator,
        unbondingLockId=_unbondingLockId,
        amount=lock.amount,
    )


@external
def rebond(_unbondingLockId: uint256):
    """
    @notice Cancels an unbonding lock and bonds its amount back to the caller's delegate.
            The caller must still be bonded (or pending); after unbonding everything, use
            rebondFromUnbonded.
    """
    assert self._delegatorStatus(msg.sender) != UNBONDED, "caller must be bonded"
    self._processRebond(msg.sender, _unbondingLockId)


@external
def rebondFromUnbonded(_to: address, _unbondingLockId: uint256):
    """
    @notice Cancels an unbonding lock of a caller with nothing bonded and bonds its amount to
            `_to`, from the next round (the caller is pending until then).
    """
    assert self._delegatorStatus(msg.sender) == UNBONDED, "caller must be unbonded"
    assert _to != empty(address), "delegate is the zero address"
    self.delegators[msg.sender].startRound = self._currentRound() + 1
    self.delegators[msg.sender].delegateAddress = _to
    self._processRebond(msg.sender, _unbondingLockId)


@external
def withdrawStake(_unbondingLockId: uint256):
    """
    @notice Pays out an unbonding lock once its withdraw round has come.
    """
    lock: UnbondingLock = self.unbondingLocks[msg.sender][_unbondingLockId]
    assert lock.amount > 0, "invalid unbonding lock ID"
    assert lock.withdrawRound <= self._currentRound(), (
        "withdraw round must be before or equal to the current round"
    )
    self.unbondingLocks[msg.sender][_unbondingLockId] = empty(UnbondingLock)
    extcall IMinter(self._contract(MINTER)).trustedWithdrawETH(msg.sender, lock.amount)
    log WithdrawStake(
        delegator=msg.sender,
        unbondingLockId=_unbondingLockId,
        amount=lock.amount,
        withdrawRound=lock.withdrawRound,
    )


@external
def transcoder(_rewardCut: uint256, _feeShare: uint256):
    """
    @notice Registers the caller as an orchestrator, or updates its rewardCut and feeShare
            (parts per million). The caller must have bonded to itself.
    """
    assert _rewardCut <= PERC_DIVISOR, "invalid rewardCut percentage"
    assert _feeShare <= PERC_DIVISOR, "invalid feeShare percentage"
    assert (
        self.delegators[msg.sender].delegateAddress == msg.sender
        and self.delegators[msg.sender].bondedAmount > 0
    ), "transcoder must be bonded to self"
    self.transcoders[msg.sender].rewardCut = _rewardCut
    self.transcoders[msg.sender].feeShare = _feeShare
    if self.poolIndex[msg.sender] == 0:
        assert len(self.pool) < MAX_POOL_SIZE, "transcoder pool is full"
        self.pool.append(msg.sender)
        self.poolIndex[msg.sender] = len(self.pool)
        activation_round: uint256 = self._currentRound() + 1
        self.transcoders[msg.sender].activationRound = activation_round
        log TranscoderActivated(transcoder=msg.sender, activationRound=activation_round)
    log TranscoderUpdate(transcoder=msg.sender, rewardCut=_rewardCut, feeShare=_feeShare)


@external
def setCurrentRoundTotalActiveStake():
    """
    @notice Fixes the current round's active set: the registered orchestrators with the most
            stake, at most numActiveTranscoders of them. Called by initializeRound.
    """
    assert msg.sender == self._contract(ROUNDS_MANAGER), "caller must be RoundsManager"
    round: uint256 = self._currentRound()
    candidates: DynArray[address, MAX_POOL_SIZE] = []
    stakes: DynArray[uint256, MAX_POOL_SIZE] = []
    for candidate: address in self.pool:
        stake: uint256 = self.delegators[candidate].delegatedAmount
        if stake > 0:
            candidates.append(candidate)
            stakes.append(stake)
    # Selection sort over memory: at most MAX_POOL_SIZE^2 comparisons, no storage reads.
    size: uint256 = min(self.numActiveTranscoders, len(candidates))
    total: uint256 = 0
    for position: uint256 in range(size, bound=MAX_POOL_SIZE):
        best: uint256 = 0
        for i: uint256 in range(len(stakes), bound=MAX_POOL_SIZE):
            if stakes[i] > stakes[best]:
                best = i
        member: address = candidates[best]
        total += stakes[best]
        stakes[best] = 0
        self.activeSetMember[round][position] = member
        self.activeSetIndex[round][member] = position + 1
    self.activeSetSize[round] = size
    self.activeSetStake[round] = total


@external
def updateTranscoderWithFees(_transcoder: address, _fees: uint256, _round: uint256):
    """
    @notice Credits a winning ticket's payout to a registered orchestrator (TicketBroker only).
            `_round` is the ticket's creation round, kept for Livepeer's signature.
    """
    assert msg.sender == self._contract(TICKET_BROKER), "caller must be TicketBroker"
    assert self.poolIndex[_transcoder] != 0, "transcoder must be registered"
    self.delegators[_transcoder].fees += _fees
    self.transcoders[_transcoder].cumulativeFees += _fees
    self.transcoders[_transcoder].lastFeeRound = self._currentRound()


@external
def withdrawFees(_recipient: address, _amount: uint256):
    """
    @notice Pays `_amount` of the caller's credited fees to `_recipient`.
    """
    assert _recipient != empty(address), "invalid recipient"
    fees: uint256 = self.delegators[msg.sender].fees
    assert fees >= _amount, "insufficient fees to withdraw"
    self.delegators[msg.sender].fees = fees - _amount
    extcall IMinter(self._contract(MINTER)).trustedWithdrawETH(_recipient, _amount)
    log WithdrawFees(delegator=msg.sender, recipient=_recipient, amount=_amount)


@view
@external
def pendingFees(_delegator: address, _endRound: uint256) -> uint256:
    """
    @notice The caller's withdrawable fees (fees are credited at once; `_endRound` is unused).
    """
    return self.delegators[_delegator].fees


@view
@external
def isActiveTranscoder(_transcoder: address) -> bool:
    """
    @notice Whether `_transcoder` is in the current round's active set.
    """
    return self.activeSetIndex[self._currentRound()][_transcoder] != 0


@view
@external
def getTranscoderPoolSize() -> uint256:
    """
    @notice The size of the current round's active set (0 if the round is not initialized).
    """
    return self.activeSetSize[self._currentRound()]


@view
@external
def currentRoundTotalActiveStake() -> uint256:
    return self.activeSetStake[self._currentRound()]


@view
@external
def getFirstTranscoderInPool() -> address:
    """
    @notice The current round's active orchestrator with the most stake; zero if none.
    """
    return self.activeSetMember[self._currentRound()][0]


@view
@external
def getNextTranscoderInPool(_transcoder: address) -> address:
    """
    @notice The active orchestrator after `_transcoder` in stake order; zero after the last.
    """
    round: uint256 = self._currentRound()
    index: uint256 = self.activeSetIndex[round][_transcoder]
    if index == 0:
        return empty(address)
    return self.activeSetMember[round][index]


@view
@external
def isRegisteredTranscoder(_transcoder: address) -> bool:
    return self.poolIndex[_transcoder] != 0


@view
@external
def getRegisteredTranscoderCount() -> uint256:
    return len(self.pool)


@view
@external
def transcoderTotalStake(_transcoder: address) -> uint256:
    return self.delegators[_transcoder].delegatedAmount


@view
@external
def getTotalBonded() -> uint256:
    return self.totalBonded


@view
@external
def getDelegator(
    _delegator: address,
) -> (uint256, uint256, address, uint256, uint256, uint256, uint256):
    """
    @notice Livepeer's tuple: bondedAmount, fees, delegateAddress, delegatedAmount, startRound,
            lastClaimRound (always 0 here), nextUnbondingLockId.
    """
    d: Delegator = self.delegators[_delegator]
    return (
        d.bondedAmount,
        d.fees,
        d.delegateAddress,
        d.delegatedAmount,
        d.startRound,
        0,
        d.nextUnbondingLockId,
    )


@view
@external
def getDelegatorUnbondingLock(_delegator: address, _unbondingLockId: uint256) -> (uint256, uint256):
    """
    @notice An unbonding lock's amount and withdraw round; (0, 0) for one that is not valid.
    """
    lock: UnbondingLock = self.unbondingLocks[_delegator][_unbondingLockId]
    return lock.amount, lock.withdrawRound


@view
@external
def isValidUnbondingLock(_delegator: address, _unbondingLockId: uint256) -> bool:
    """
    @notice Whether the lock exists: made by unbond, not yet withdrawn or rebonded.
    """
    return self.unbondingLocks[_delegator][_unbondingLockId].amount > 0


@view
@external
def delegatorStatus(_delegator: address) -> uint8:
    """
    @notice Livepeer's DelegatorStatus: 0 Pending (bonded from a round still to come),
            1 Bonded, 2 Unbonded (nothing bonded).
    """
    return self._delegatorStatus(_delegator)


@view
@external
def getTranscoder(
    _transcoder: address,
) -> (uint256, uint256, uint256, uint256, uint256, uint256, uint256, uint256, uint256, uint256):
    """
    @notice Livepeer's tuple: lastRewardRound (0), rewardCut, feeShare,
            lastActiveStakeUpdateRound (0), activationRound, deactivationRound (0),
            activeCumulativeRewards (0), cumulativeRewards (0), cumulativeFees, lastFeeRound.
    """
    t: Transcoder = self.transcoders[_transcoder]
    return (
        0, t.rewardCut, t.feeShare, 0, t.activationRound, 0, 0, 0, t.cumulativeFees, t.lastFeeRound
    )
