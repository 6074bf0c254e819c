# pragma version 0.4.3
# @license MIT
"""
@title ServiceRegistry
@notice Where an orchestrator publishes the URI gateways reach it at, as in Livepeer.
        Anyone may set their own URI; it is up to readers to look only at registered
        orchestrators. URIs are at most 256 bytes (Livepeer's are unbounded; a longer one
        fails to decode and the call reverts without a reason).
"""

MAX_URI_LENGTH: constant(uint256) = 256


event ServiceURIUpdate:
    addr: indexed(address)
    serviceURI: String[MAX_URI_LENGTH]


controller: public(address)
serviceURIs: HashMap[address, String[MAX_URI_LENGTH]]


@deploy
def __init__(_controller: address):
    self.controller = _controller


@external
def setServiceURI(_serviceURI: String[MAX_URI_LENGTH]):
    self.serviceURIs[msg.sender] = _serviceURI
    log ServiceURIUpdate(addr=msg.sender, serviceURI=_serviceURI)


@view
@external
def getServiceURI(_addr: address) -> String[MAX_URI_LENGTH]:
    return self.serviceURIs[_addr]
