# pragma version 0.4.3
# @license MIT
"""
@title Minter
@notice Holds every wei the protocol holds: ticket senders' deposits and reserves (paid in by
        the TicketBroker), stake bonded in the BondingManager, and fees credited to
        orchestrators until they withdraw them. Only the TicketBroker and the BondingManager
        move funds in or out, as in Livepeer, so each keeps its own books and the Minter's
        balance is their sum. Livepeer's Minter also mints LPT rewards; lpstream's has no
        token and no inflation.
"""

interface IController:
    def getContract(_id: bytes32) -> address: view


TICKET_BROKER: constant(bytes32) = keccak256("TicketBroker")
BONDING_MANAGER: constant(bytes32) = keccak256("BondingManager")


event DepositETH:
    source: indexed(address)
    amount: uint256


event WithdrawETH:
    to: indexed(address)
    amount: uint256


controller: public(address)


@deploy
def __init__(_controller: address):
    self.controller = _controller


@internal
@view
def _requireTrustedCaller():
    c: IController = IController(self.controller)
    assert (
        msg.sender == staticcall c.getContract(TICKET_BROKER)
        or msg.sender == staticcall c.getContract(BONDING_MANAGER)
    ), "caller must be TicketBroker or BondingManager"


@external
@payable
def trustedDepositETH():
    """
    @notice Takes in funds on behalf of the TicketBroker or the BondingManager.
    """
    self._requireTrustedCaller()
    log DepositETH(source=msg.sender, amount=msg.value)


@external
def trustedWithdrawETH(_to: address, _amount: uint256):
    """
    @notice Pays `_amount` wei to `_to` on behalf of the TicketBroker or the BondingManager.
    """
    self._requireTrustedCaller()
    log WithdrawETH(to=_to, amount=_amount)
    raw_call(_to, b"", value=_amount)


@view
@external
def getBalance() -> uint256:
    return self.balance
