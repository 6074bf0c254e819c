# pragma version 0.4.3
# @license MIT
"""
@title TicketBroker
@notice Livepeer's probabilistic micropayment broker, with Livepeer's ABI: the same function
        signatures, selectors, checks, check order and revert reasons, so one client redeems
        on either.

        Senders fund a deposit and a reserve (held by the Minter). A winning ticket pays its
        faceValue from the deposit; when the deposit falls short, the rest comes from the
        recipient's share of the reserve, which only the current round's active orchestrators
        may claim: each may take (reserve left + claimed this round) / active set size, less
        what it already claimed this round. The payout is credited to the recipient's fees in
        the BondingManager.

        A sender leaves with unlock(), which sets withdrawRound = currentRound + unlockPeriod,
        and withdraw() once that round has come. While an unlock is pending the sender is still
        locked and its tickets still redeem; funding again cancels the unlock.

        redeemWinningTicket checks, in this order (each reverts with the reason in quotes):
          the current round is initialized ("current round is not initialized");
          recipient and sender are not zero ("ticket recipient is null address",
          "ticket sender is null address"); auxData is 64 bytes ("invalid length for ticket
          auxData: must be 64 bytes"); the creation round has a block hash ("ticket
          creationRound does not have a block hash") and it is the one in auxData ("ticket
          creationRoundBlockHash invalid for creationRound"); creationRound +
          ticketValidityPeriod > currentRound ("ticket is expired"); keccak256(recipientRand)
          is recipientRandHash ("recipientRand does not match recipientRandHash"); the ticket
          is unused ("ticket is used"); the signature is 65 bytes ("INVALID_SIGNATURE_LENGTH"),
          low-s ("ECDSA: invalid signature 's' value"), v 27 or 28 ("ECDSA: invalid signature
          'v' value"), recovers a key ("ECDSA: invalid signature") and that key is the
          sender's ("invalid signature over ticket hash"); the ticket won ("ticket did not
          win"); the sender is locked ("sender is unlocked"); the deposit or the reserve is
          not zero ("sender deposit and reserve are zero"). The signature reasons after the
          length are those of the OpenZeppelin 4 ECDSA library Livepeer calls.

        batchRedeemWinningTickets redeems each ticket in a call of its own to
        redeemWinningTicket, as Livepeer's does: a ticket that fails is skipped, its effects
        undone, and the rest still redeem; which ones failed shows in usedTickets (and in the
        WinningTicketRedeemed events, one per ticket that redeemed).

        Claims are counted per (sender, round). withdraw() clears the reserve but not the
        claim counts, which cannot matter: the sender is unlocked from its withdrawRound on, so
        no claim is made in the round it withdraws in before it does.

        Differences from Livepeer: no pause switch; auxData and signatures longer than
        MAX_BYTES, and batches longer than MAX_BATCH, fail ABI decoding (a revert without a
        reason); the batch checks that its three arrays have one length.
"""

interface IController:
    def getContract(_id: bytes32) -> address: view
    def owner() -> address: view


interface IRoundsManager:
    def currentRound() -> uint256: view
    def currentRoundInitialized() -> bool: view
    def blockHashForRound(_round: uint256) -> bytes32: view


interface IBondingManager:
    def isActiveTranscoder(_transcoder: address) -> bool: view
    def getTranscoderPoolSize() -> uint256: view
    def updateTranscoderWithFees(_transcoder: address, _fees: uint256, _round: uint256): nonpayable


interface IMinter:
    def trustedDepositETH(): payable
    def trustedWithdrawETH(_to: address, _amount: uint256): nonpayable


ROUNDS_MANAGER: constant(bytes32) = keccak256("RoundsManager")
BONDING_MANAGER: constant(bytes32) = keccak256("BondingManager")
MINTER: constant(bytes32) = keccak256("Minter")

MAX_BYTES: constant(uint256) = 256
MAX_BATCH: constant(uint256) = 64
# redeemWinningTicket((address,address,uint256,uint256,uint256,bytes32,bytes),bytes,uint256)
REDEEM_WINNING_TICKET: constant(bytes4) = 0xec8b3cb6
# Its calldata at most: selector, 3 head words, the ticket's 7 head words, and the two
# byte strings (auxData, sig) with their length words, padded.
BATCH_CALL_SIZE: constant(uint256) = 4 + 32 * 3 + 32 * 7 + 2 * (32 + MAX_BYTES)
# secp256k1's group order // 2 (OpenZeppelin's bound on s): 0x7FFF...FF5D576E7357A4501DDFE92F46681B20A0
SECP256K1_HALF_N: constant(uint256) = (
    57896044618658097711785492504343953926418782139537452191302581570759080747168
)


struct Ticket:
    recipient: address
    sender: address
    faceValue: uint256
    winProb: uint256
    senderNonce: uint256
    recipientRandHash: bytes32
    auxData: Bytes[MAX_BYTES]


struct Sender:
    deposit: uint256
    withdrawRound: uint256


struct ReserveInfo:
    fundsRemaining: uint256
    claimedInCurrentRound: uint256


event DepositFunded:
    sender: indexed(address)
    amount: uint256


event ReserveFunded:
    reserveHolder: indexed(address)
    amount: uint256


event ReserveClaimed:
    reserveHolder: indexed(address)
    claimant: address
    amount: uint256


event WinningTicketRedeemed:
    sender: indexed(address)
    recipient: indexed(address)
    faceValue: uint256
    winProb: uint256
    senderNonce: uint256
    recipientRand: uint256
    auxData: Bytes[MAX_BYTES]


event WinningTicketTransfer:
    sender: indexed(address)
    recipient: indexed(address)
    amount: uint256


event Unlock:
    sender: indexed(address)
    startRound: uint256
    endRound: uint256


event UnlockCancelled:
    sender: indexed(address)


event Withdrawal:
    sender: indexed(address)
    deposit: uint256
    reserve: uint256


event ParameterUpdate:
    param: String[32]


controller: public(address)
unlockPeriod: public(uint256)
ticketValidityPeriod: public(uint256)
usedTickets: public(HashMap[bytes32, bool])

senders: HashMap[address, Sender]
reserveFunds: HashMap[address, uint256]
claimedForRound: HashMap[address, HashMap[uint256, uint256]]
claimedByAddress: HashMap[address, HashMap[uint256, HashMap[address, uint256]]]


@deploy
def __init__(_controller: address, _unlockPeriod: uint256, _ticketValidityPeriod: uint256):
    assert _unlockPeriod > 0, "unlockPeriod must be greater than 0"
    assert _ticketValidityPeriod > 0, "ticketValidityPeriod must be greater than 0"
    self.controller = _controller
    self.unlockPeriod = _unlockPeriod
    self.ticketValidityPeriod = _ticketValidityPeriod


# Parameters


@internal
@view
def _requireControllerOwner():
    owner: address = staticcall IController(self.controller).owner()
    assert msg.sender == owner, "caller must be Controller owner"


@external
def setUnlockPeriod(_unlockPeriod: uint256):
    self._requireControllerOwner()
    assert _unlockPeriod > 0, "unlockPeriod must be greater than 0"
    self.unlockPeriod = _unlockPeriod
    log ParameterUpdate(param="unlockPeriod")


@external
def setTicketValidityPeriod(_ticketValidityPeriod: uint256):
    self._requireControllerOwner()
    assert _ticketValidityPeriod > 0, "ticketValidityPeriod must be greater than 0"
    self.ticketValidityPeriod = _ticketValidityPeriod
    log ParameterUpdate(param="ticketValidityPeriod")


# The other contracts


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
def _requireCurrentRoundInitialized():
    rounds: IRoundsManager = IRoundsManager(self._contract(ROUNDS_MANAGER))
    assert staticcall rounds.currentRoundInitialized(), "current round is not initialized"


# Funding


@internal
def _cancelUnlock(_sender: address):
    assert self.senders[_sender].withdrawRound > 0, "no unlock request in progress"
    self.senders[_sender].withdrawRound = 0
    log UnlockCancelled(sender=_sender)


@internal
def _addDeposit(_sender: address, _amount: uint256):
    self.senders[_sender].deposit += _amount
    log DepositFunded(sender=_sender, amount=_amount)


@internal
def _addReserve(_sender: address, _amount: uint256):
    self.reserveFunds[_sender] += _amount
    log ReserveFunded(reserveHolder=_sender, amount=_amount)


@internal
def _afterFunding(_sender: address, _amount: uint256):
    # Funding again means the sender stays: it cancels a pending unlock.
    if self.senders[_sender].withdrawRound > 0:
        self._cancelUnlock(_sender)
    if _amount > 0:
        extcall IMinter(self._contract(MINTER)).trustedDepositETH(value=_amount)


@external
@payable
def fundDeposit():
    """
    @notice Adds the value sent to the caller's deposit.
    """
    self._addDeposit(msg.sender, msg.value)
    self._afterFunding(msg.sender, msg.value)


@external
@payable
def fundReserve():
    """
    @notice Adds the value sent to the caller's reserve.
    """
    self._addReserve(msg.sender, msg.value)
    self._afterFunding(msg.sender, msg.value)


@external
@payable
def fundDepositAndReserve(_depositAmount: uint256, _reserveAmount: uint256):
    """
    @notice Splits the value sent between the caller's deposit and reserve.
    """
    assert msg.value == _depositAmount + _reserveAmount, (
        "msg.value does not equal sum of deposit amount and reserve amount"
    )
    self._addDeposit(msg.sender, _depositAmount)
    self._addReserve(msg.sender, _reserveAmount)
    self._afterFunding(msg.sender, msg.value)


@external
@payable
def fundDepositAndReserveFor(_addr: address, _depositAmount: uint256, _reserveAmount: uint256):
    """
    @notice Splits the value sent between `_addr`'s deposit and reserve.
    """
    assert msg.value == _depositAmount + _reserveAmount, (
        "msg.value does not equal sum of deposit amount and reserve amount"
    )
    self._addDeposit(_addr, _depositAmount)
    self._addReserve(_addr, _reserveAmount)
    self._afterFunding(_addr, msg.value)


# Unlock and withdraw


@internal
@view
def _isLocked(_withdrawRound: uint256) -> bool:
    return _withdrawRound == 0 or self._currentRound() < _withdrawRound


@external
def unlock():
    """
    @notice Starts the caller's unlock period: it may withdraw `unlockPeriod` rounds from now.
    """
    assert (
        self.senders[msg.sender].deposit > 0 or self.reserveFunds[msg.sender] > 0
    ), "sender deposit and reserve are zero"
    assert self.senders[msg.sender].withdrawRound == 0, "unlock already initiated"
    current_round: uint256 = self._currentRound()
    withdraw_round: uint256 = current_round + self.unlockPeriod
    self.senders[msg.sender].withdrawRound = withdraw_round
    log Unlock(sender=msg.sender, startRound=current_round, endRound=withdraw_round)


@external
def cancelUnlock():
    self._cancelUnlock(msg.sender)


@external
def withdraw():
    """
    @notice Pays the caller its deposit and reserve once its unlock period is over.
    """
    deposit: uint256 = self.senders[msg.sender].deposit
    reserve: uint256 = self.reserveFunds[msg.sender]
    assert deposit > 0 or reserve > 0, "sender deposit and reserve are zero"
    withdraw_round: uint256 = self.senders[msg.sender].withdrawRound
    assert withdraw_round > 0, "no unlock request in progress"
    assert not self._isLocked(withdraw_round), "account is locked"
    self.senders[msg.sender].deposit = 0
    self.reserveFunds[msg.sender] = 0
    extcall IMinter(self._contract(MINTER)).trustedWithdrawETH(msg.sender, deposit + reserve)
    log Withdrawal(sender=msg.sender, deposit=deposit, reserve=reserve)


@view
@external
def isUnlockInProgress(_sender: address) -> bool:
    return self.senders[_sender].withdrawRound > 0


# Reserve


@internal
@view
def _claimableReserve(_reserveHolder: address, _claimant: address, _round: uint256) -> uint256:
    bonding_manager: IBondingManager = IBondingManager(self._contract(BONDING_MANAGER))
    if not staticcall bonding_manager.isActiveTranscoder(_claimant):
        return 0
    pool_size: uint256 = staticcall bonding_manager.getTranscoderPoolSize()
    if pool_size == 0:
        return 0
    allocation: uint256 = (
        self.reserveFunds[_reserveHolder] + self.claimedForRound[_reserveHolder][_round]
    ) // pool_size
    claimed: uint256 = self.claimedByAddress[_reserveHolder][_round][_claimant]
    # The pool size and (funds + claimed) are fixed for a round, save for new funding, which
    # only raises the allocation; so claimed never exceeds it. Saturate all the same.
    if claimed >= allocation:
        return 0
    return allocation - claimed


@internal
def _claimFromReserve(
    _reserveHolder: address, _claimant: address, _amount: uint256, _round: uint256
) -> uint256:
    claim: uint256 = min(_amount, self._claimableReserve(_reserveHolder, _claimant, _round))
    if claim > 0:
        self.claimedForRound[_reserveHolder][_round] += claim
        self.claimedByAddress[_reserveHolder][_round][_claimant] += claim
        self.reserveFunds[_reserveHolder] -= claim
        log ReserveClaimed(reserveHolder=_reserveHolder, claimant=_claimant, amount=claim)
    return claim


@view
@external
def claimableReserve(_reserveHolder: address, _claimant: address) -> uint256:
    """
    @notice What `_claimant` may still take from `_reserveHolder`'s reserve this round.
    """
    return self._claimableReserve(_reserveHolder, _claimant, self._currentRound())


@view
@external
def claimedReserve(_reserveHolder: address, _claimant: address) -> uint256:
    return self.claimedByAddress[_reserveHolder][self._currentRound()][_claimant]


@internal
@view
def _reserveInfo(_reserveHolder: address) -> ReserveInfo:
    return ReserveInfo(
        fundsRemaining=self.reserveFunds[_reserveHolder],
        claimedInCurrentRound=self.claimedForRound[_reserveHolder][self._currentRound()],
    )


@view
@external
def getReserveInfo(_reserveHolder: address) -> ReserveInfo:
    return self._reserveInfo(_reserveHolder)


@view
@external
def getSenderInfo(_sender: address) -> (Sender, ReserveInfo):
    """
    @notice The sender's (deposit, withdrawRound) and its reserve's (fundsRemaining,
            claimedInCurrentRound).
    """
    return self.senders[_sender], self._reserveInfo(_sender)


# Tickets


@internal
@pure
def _ticketHash(_ticket: Ticket) -> bytes32:
    return keccak256(
        concat(
            convert(_ticket.recipient, bytes20),
            convert(_ticket.sender, bytes20),
            convert(_ticket.faceValue, bytes32),
            convert(_ticket.winProb, bytes32),
            convert(_ticket.senderNonce, bytes32),
            _ticket.recipientRandHash,
            _ticket.auxData,
        )
    )


@view
@external
def getTicketHash(_ticket: Ticket) -> bytes32:
    return self._ticketHash(_ticket)


@internal
@pure
def _requireValidSignature(_sender: address, _sig: Bytes[MAX_BYTES], _ticketHash: bytes32):
    assert len(_sig) == 65, "INVALID_SIGNATURE_LENGTH"
    r: uint256 = extract32(_sig, 0, output_type=uint256)
    s: uint256 = extract32(_sig, 32, output_type=uint256)
    v: uint256 = convert(slice(_sig, 64, 1), uint256)
    assert s <= SECP256K1_HALF_N, "ECDSA: invalid signature 's' value"
    assert v == 27 or v == 28, "ECDSA: invalid signature 'v' value"
    message: bytes32 = keccak256(concat(b"\x19Ethereum Signed Message:\n32", _ticketHash))
    signer: address = ecrecover(message, v, r, s)
    assert signer != empty(address), "ECDSA: invalid signature"
    assert signer == _sender, "invalid signature over ticket hash"


@external
def redeemWinningTicket(_ticket: Ticket, _sig: Bytes[MAX_BYTES], _recipientRand: uint256):
    """
    @notice Pays a winning ticket to its recipient, or reverts with the first check it fails
            (see the contract's notice for the checks and their order).
    """
    self._requireCurrentRoundInitialized()
    ticket_hash: bytes32 = self._ticketHash(_ticket)

    assert _ticket.recipient != empty(address), "ticket recipient is null address"
    assert _ticket.sender != empty(address), "ticket sender is null address"

    assert len(_ticket.auxData) == 64, "invalid length for ticket auxData: must be 64 bytes"
    creation_round: uint256 = extract32(_ticket.auxData, 0, output_type=uint256)
    creation_round_block_hash: bytes32 = extract32(_ticket.auxData, 32)
    rounds: IRoundsManager = IRoundsManager(self._contract(ROUNDS_MANAGER))
    block_hash: bytes32 = staticcall rounds.blockHashForRound(creation_round)
    assert block_hash != empty(bytes32), "ticket creationRound does not have a block hash"
    assert creation_round_block_hash == block_hash, (
        "ticket creationRoundBlockHash invalid for creationRound"
    )
    current_round: uint256 = staticcall rounds.currentRound()
    assert creation_round + self.ticketValidityPeriod > current_round, "ticket is expired"

    rand: bytes32 = convert(_recipientRand, bytes32)
    assert keccak256(rand) == _ticket.recipientRandHash, (
        "recipientRand does not match recipientRandHash"
    )
    assert not self.usedTickets[ticket_hash], "ticket is used"
    self._requireValidSignature(_ticket.sender, _sig, ticket_hash)
    assert convert(keccak256(concat(_sig, rand)), uint256) < _ticket.winProb, "ticket did not win"

    sender: Sender = self.senders[_ticket.sender]
    assert self._isLocked(sender.withdrawRound), "sender is unlocked"
    assert sender.deposit > 0 or self.reserveFunds[_ticket.sender] > 0, (
        "sender deposit and reserve are zero"
    )

    self.usedTickets[ticket_hash] = True

    amount: uint256 = 0
    if _ticket.faceValue > sender.deposit:
        shortfall: uint256 = _ticket.faceValue - sender.deposit
        amount = sender.deposit + self._claimFromReserve(
            _ticket.sender, _ticket.recipient, shortfall, current_round
        )
        self.senders[_ticket.sender].deposit = 0
    else:
        amount = _ticket.faceValue
        self.senders[_ticket.sender].deposit = sender.deposit - _ticket.faceValue

    if amount > 0:
        bonding_manager: IBondingManager = IBondingManager(self._contract(BONDING_MANAGER))
        extcall bonding_manager.updateTranscoderWithFees(_ticket.recipient, amount, creation_round)
        log WinningTicketTransfer(sender=_ticket.sender, recipient=_ticket.recipient, amount=amount)

    log WinningTicketRedeemed(
        sender=_ticket.sender,
        recipient=_ticket.recipient,
        faceValue=_ticket.faceValue,
        winProb=_ticket.winProb,
        senderNonce=_ticket.senderNonce,
        recipientRand=_recipientRand,
        auxData=_ticket.auxData,
    )


@external
def batchRedeemWinningTickets(
    _tickets: DynArray[Ticket, MAX_BATCH],
    _sigs: DynArray[Bytes[MAX_BYTES], MAX_BATCH],
    _recipientRands: DynArray[uint256, MAX_BATCH],
):
    """
    @notice Redeems each ticket as redeemWinningTicket would, in its own call frame: a ticket
            that fails is skipped (its effects undone) and the rest still redeem, as in
            Livepeer. Nothing reports which failed; check usedTickets afterwards.
    """
    self._requireCurrentRoundInitialized()
    assert len(_sigs) == len(_tickets) and len(_recipientRands) == len(_tickets), (
        "tickets, sigs and recipientRands differ in length"
    )
    for i: uint256 in range(len(_tickets), bound=MAX_BATCH):
        calldata: Bytes[BATCH_CALL_SIZE] = abi_encode(
            _tickets[i], _sigs[i], _recipientRands[i], method_id=REDEEM_WINNING_TICKET
        )
        success: bool = raw_call(self, calldata, revert_on_failure=False)
