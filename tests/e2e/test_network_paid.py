"""A paying network of separate processes: ``lpstream chain``, orchestrators bonded and
registered with ``lpstream account``, remote workers, and a gateway that finds its
orchestrators in the chain's active set.

The first test runs on loopback: three orchestrators with different stakes and prices, one of
them above the gateway's ``--max-price-per-unit``, and two streams at once. The money must add
up across the processes: every ticket the gateway sent was received by an orchestrator, both
sides agree on each orchestrator's credit, the orchestrators billed exactly the pixels the
viewers got, and the winning tickets moved exactly their face value from the gateway's deposit
and reserve to the orchestrators' fees on chain. The expensive orchestrator, though active and
discovered, never gets work.

The second test runs a paid network across network namespaces joined by veth pairs: the
gateway in one, the chain and the orchestrator in another, its worker in a third. The test
reaches into a namespace from a thread that has joined it (``call_in_netns``).

Waiting for the chain is cut short with ``evm_mine``, which ``lpstream chain`` serves for such
scripts: to the next round once the orchestrators are registered, and past the ticket
parameters' expiry once the streams are over, so the winning tickets are redeemed at once.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

import attrs
import pytest

from payments.chain.client import ChainClient
from payments.pm import PARAMS_EXPIRATION_BLOCKS
from tests.e2e.hls_check import HlsRecorder, check_recording
from tests.e2e.money import wei
from tests.e2e.nodes import LPSTREAM, NodeProcess, http_json, push_command, wait_for
from tests.mediatools import probe_streams

pytestmark = pytest.mark.slow

T = TypeVar("T")

ETH = 10**18
SECRET = "paid-network-secret"
TICKET_EV = 10**12
MAX_FACE_VALUE = 2 * TICKET_EV  # win probability 1/2: several winning tickets per orchestrator
MAX_PRICE = 400_000
"""The gateway's --max-price-per-unit (wei per pixel)."""
FUNDS = 1 * ETH
"""The gateway's deposit, and again its reserve."""
SIZES_720P = {"source": (1280, 720), "360p": (640, 360), "240p": (426, 240)}
SIZES_360P = {"source": (640, 360), "360p": (640, 360), "240p": (426, 240)}
BLOCK_TIME = 1.0
"""Seconds per block of the dev chain (its default). Ticket parameters live 40 blocks: 40 s,
far more than the gateway's info refresh every 5 s, even when a loaded node's view of the
chain lags or a refresh misses its deadline."""
ROUND_LENGTH = 200
"""Blocks per round. The test never waits for one to pass (``start_next_round``), and a long
round leaves the redeemers time to work through their winners (a ticket is redeemable only
until the round after its creation round ends)."""
SELECTION_SEED = 1
"""Its first two draws are 0.13 and 0.85: with two candidates whose chances lie between those
(stakes 3:2 give 0.57 and 0.43, in either order), the two streams go to different ones."""


@attrs.frozen(kw_only=True)
class DevAccount:
    """A funded dev account written by ``lpstream chain --keystore-dir``."""

    address: str
    keystore: Path
    passphrase_file: Path

    def flags(self) -> list[str]:
        return [f"--keystore={self.keystore}", f"--passphrase-file={self.passphrase_file}"]


@attrs.frozen(kw_only=True)
class Chain:
    """A running ``lpstream chain`` and what it announced."""

    node: NodeProcess
    url: str
    controller: str
    accounts: list[DevAccount]

    def flags(self) -> list[str]:
        return [f"--eth-url={self.url}", f"--controller={self.controller}"]


def start_chain(
    log_dir: Path,
    started: list[NodeProcess],
    *,
    rpc_addr: str = "127.0.0.1:0",
    program: Sequence[str] = tuple(LPSTREAM),
) -> Chain:
    """Starts ``lpstream chain`` (added to ``started``, to be stopped) and waits for it."""
    args = ["chain", f"--rpc-addr={rpc_addr}", f"--block-time={BLOCK_TIME}"]
    args.append(f"--round-length={ROUND_LENGTH}")
    args.append(f"--keystore-dir={log_dir / 'keys'}")
    if not rpc_addr.startswith("127."):
        args.append("--allow-remote")
    node = NodeProcess(args, name="chain", log_dir=log_dir, program=program)
    started.append(node)
    node.wait_ready(timeout=60)
    text = "\n".join(node.lines)
    controller = re.search(r"^controller: (0x[0-9a-fA-F]{40})$", text, re.M)
    assert controller, text
    accounts = [
        DevAccount(address=address, keystore=Path(keystore), passphrase_file=Path(passphrase))
        for address, keystore, passphrase in re.findall(
            r"^account \d+: (0x[0-9a-fA-F]{40}) keystore (\S+) passphrase (\S+)$", text, re.M
        )
    ]
    assert len(accounts) == 4, text
    return Chain(node=node, url=node.url("http"), controller=controller.group(1), accounts=accounts)


def chain_rpc(url: str, method: str, *params: object) -> Any:
    """One JSON-RPC call to the chain; its result."""
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
    request = urllib.request.Request(
        url, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        answer: dict[str, Any] = json.loads(response.read())
    assert "result" in answer, (method, answer)
    return answer["result"]


def mine(url: str, blocks: int) -> None:
    """Has the chain mine ``blocks`` blocks at once (``evm_mine``, there for such scripts)."""
    chain_rpc(url, "evm_mine", blocks)


def start_next_round(url: str) -> None:
    """Mines up to the next round's first block; the chain initializes that round on its next
    tick, and with it the active set of those registered until now."""
    block = int(chain_rpc(url, "eth_blockNumber"), 16)
    mine(url, ROUND_LENGTH - block % ROUND_LENGTH)


def run_cli(args: Sequence[str], program: Sequence[str] = tuple(LPSTREAM)) -> str:
    """Runs one ``lpstream`` command to its end; returns its stdout."""
    result = subprocess.run(
        [*program, *args], capture_output=True, text=True, timeout=90, check=False
    )
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout


Script = tuple[Sequence[str], list[list[str]]]
"""How to run ``lpstream`` (e.g. inside a namespace), and the commands to run in order."""


def run_scripts(scripts: Sequence[Script]) -> None:
    """Runs each script's commands in order, the scripts side by side."""

    def run_script(script: Script) -> None:
        program, commands = script
        for args in commands:
            run_cli(args, program)

    with ThreadPoolExecutor(len(scripts)) as pool:
        for future in [pool.submit(run_script, script) for script in scripts]:
            future.result()


def fund_gateway(chain: Chain, account: DevAccount) -> list[list[str]]:
    """The commands that fund a gateway's deposit and reserve."""
    common = [*chain.flags(), *account.flags()]
    return [
        ["account", "deposit", str(FUNDS), *common],
        ["account", "reserve", str(FUNDS), *common],
    ]


def bond_and_register(
    chain: Chain, account: DevAccount, stake: int, service_uri: str
) -> list[list[str]]:
    """The commands that make an orchestrator: bond to itself, register, publish its URI."""
    common = [*chain.flags(), *account.flags()]
    return [
        ["account", "bond", str(stake), *common],
        ["account", "register", f"--service-uri={service_uri}", *common],
    ]


def free_udp_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 now: bound at once (so they differ), then released."""
    with contextlib.ExitStack() as stack:
        sockets = [
            stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            for _ in range(count)
        ]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]


def paid_orchestrator_args(
    chain: Chain,
    account: DevAccount,
    *,
    service_addr: str,
    http_addr: str,
    price: int,
    capacity: int,
    data_dir: Path,
) -> list[str]:
    """``lpstream orchestrator`` paid on ``chain`` with ``account``'s key."""
    return [
        "orchestrator",
        f"--service-addr={service_addr}",
        f"--http-addr={http_addr}",
        f"--orch-secret={SECRET}",
        f"--capacity={capacity}",
        f"--price-per-unit={price}",
        f"--ticket-ev={TICKET_EV}",
        f"--max-face-value={MAX_FACE_VALUE}",
        f"--data-dir={data_dir}",
        *chain.flags(),
        *account.flags(),
    ]


def payments_of(node: NodeProcess, *, get: Callable[[str], Any] = http_json) -> dict[str, Any]:
    """The ``payments`` section of a node's /api/status (read with ``get``)."""
    status: dict[str, Any] = get(f"{node.url('http')}/api/status")
    facts: dict[str, Any] = status["payments"]
    return facts


def billed_pixels(recorder: HlsRecorder) -> int:
    """What the renditions a viewer got cost in pixels: frames x width x height, source aside."""
    total = 0
    for (name, _), path in recorder.segments.items():
        if name == "source":
            continue
        (video,) = [f for f in probe_streams(path) if f["type"] == "video"]
        frames, size = video["frames"], video["size"]
        assert isinstance(frames, int) and isinstance(size, tuple)
        total += frames * size[0] * size[1]
    return total


# Three orchestrators on loopback, one too expensive


@attrs.frozen(kw_only=True)
class Seller:
    """An orchestrator of the loopback network and what it was set up with."""

    node: NodeProcess
    account: DevAccount
    service: str
    """``host:port`` of its QUIC service, as registered on chain."""
    stake: int
    price: int
    """Wei per pixel."""


@attrs.frozen(kw_only=True)
class PaidNetwork:
    chain: Chain
    sellers: list[Seller]
    workers: list[NodeProcess]
    gateway: NodeProcess


@pytest.fixture
def paid_network(tmp_path: Path) -> Iterator[PaidNetwork]:
    started: list[NodeProcess] = []
    try:
        chain = start_chain(tmp_path, started)
        gateway_account, *seller_accounts = chain.accounts
        # The service URI is registered before the orchestrator listens, so pick its port now.
        ports = free_udp_ports(3)
        plans = [  # (stake, price, in-process capacity): the last one asks too much
            (3 * ETH, 150_000, 0),
            (2 * ETH, 200_000, 2),
            (1 * ETH, 3 * MAX_PRICE, 2),
        ]
        sellers = []
        for i, (account, port, (stake, price, capacity)) in enumerate(
            zip(seller_accounts, ports, plans, strict=True)
        ):
            service = f"127.0.0.1:{port}"
            args = paid_orchestrator_args(
                chain,
                account,
                service_addr=service,
                http_addr="127.0.0.1:0",
                price=price,
                capacity=capacity,
                data_dir=tmp_path / f"orch{i}",
            )
            node = NodeProcess(args, name=f"orch{i}", log_dir=tmp_path)
            started.append(node)
            sellers.append(
                Seller(node=node, account=account, service=service, stake=stake, price=price)
            )
        gateway = NodeProcess(
            [
                "gateway",
                "--rtmp-addr=127.0.0.1:0",
                "--http-addr=127.0.0.1:0",
                f"--max-price-per-unit={MAX_PRICE}",
                f"--selection-seed={SELECTION_SEED}",
                *chain.flags(),
                *gateway_account.flags(),
            ],
            name="gateway",
            log_dir=tmp_path,
        )
        started.append(gateway)
        for node in [*(s.node for s in sellers), gateway]:
            node.wait_ready(timeout=60)
        # The first orchestrator has no worker of its own: two remote ones do its work.
        workers = []
        for i in range(2):
            worker = NodeProcess(
                [
                    "worker",
                    f"--orch-addr={sellers[0].service}",
                    f"--orch-secret={SECRET}",
                    "--capacity=2",
                ],
                name=f"worker{i}",
                log_dir=tmp_path,
            )
            started.append(worker)
            workers.append(worker)
        # Funded and registered only now: the gateway, already up, sees the orchestrators
        # join the active set (the test's timing hangs on that moment).
        run_scripts(
            [
                (LPSTREAM, fund_gateway(chain, gateway_account)),
                *(
                    (LPSTREAM, bond_and_register(chain, s.account, s.stake, f"quic://{s.service}"))
                    for s in sellers
                ),
            ]
        )
        start_next_round(chain.url)  # rather than wait up to a round for it
        for worker in workers:
            worker.wait_ready(timeout=60)
        yield PaidNetwork(chain=chain, sellers=sellers, workers=workers, gateway=gateway)
    finally:
        for node in reversed(started):
            node.stop()


def test_three_paid_orchestrators_split_the_work_and_the_money_adds_up(
    paid_network: PaidNetwork, tmp_path: Path
) -> None:
    net = paid_network
    gateway_http = net.gateway.url("http")
    cheapest, cheap, dear = sorted(net.sellers, key=lambda s: s.price)
    workers = http_json(f"{net.sellers[0].node.url('http')}/api/status")["workers"]
    assert len(workers) == 2

    def discovered() -> dict[str, dict[str, Any]] | None:
        # Active from the round after their registration; the gateway re-reads the active set
        # every few seconds and asks each orchestrator for its price and ticket parameters.
        pool = {o["address"]: o for o in http_json(f"{gateway_http}/api/status")["orchestrators"]}
        if set(pool) != {s.service for s in net.sellers}:
            return None
        heard = all(
            pool[s.service]["connected"] and pool[s.service]["answered"] for s in net.sellers
        )
        offered = pool[cheapest.service]["refused"] == pool[cheap.service]["refused"] == ""
        too_dear = "above the maximum" in pool[dear.service]["refused"]
        return pool if heard and offered and too_dear else None

    # The gateway was up before the orchestrators registered, so this turns true just after
    # the info check that follows their discovery, with about 5 s to the next one: the two
    # streams' first draws fall in between, among candidates that all answered. (A new one
    # counts as answering until its first check is over, at most 0.5 s later: ask again.)
    what = "the gateway to find the three orchestrators on chain and offer work to two"
    wait_for(discovered, 45, what)
    time.sleep(1.0)
    wait_for(discovered, 1, what)

    # Two streams at once (360p sources keep two cores from falling behind): the seeded draws
    # give each its own orchestrator.
    seconds = 12.0
    rtmp = net.gateway.url("rtmp")
    streams = ("one", "two")
    publishers: dict[str, subprocess.Popen[bytes]] = {}
    recorders: dict[str, HlsRecorder] = {}
    try:
        for name in streams:
            publishers[name] = subprocess.Popen(
                push_command(f"{rtmp}/live/{name}", seconds=seconds, size="640x360"),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        for name in streams:
            recorders[name] = HlsRecorder(base=gateway_http, stream=name, out_dir=tmp_path)
            recorders[name].start()
        for name, publisher in publishers.items():
            _, err = publisher.communicate(timeout=seconds + 40)
            assert publisher.returncode == 0, (name, err.decode())
    finally:
        for publisher in publishers.values():
            if publisher.poll() is None:
                publisher.kill()
                publisher.communicate()
    for recorder in recorders.values():
        recorder.wait(timeout=40)
        check_recording(
            recorder, expected_sizes=SIZES_360P, audio=True, gop_seconds=2, seconds=seconds
        )

    # Each stream went to its own orchestrator; the one above the maximum price got nothing.
    pool = {o["address"]: o for o in http_json(f"{gateway_http}/api/status")["orchestrators"]}
    assert pool[cheap.service]["jobs"] > 0 and pool[cheapest.service]["jobs"] > 0, pool
    assert pool[dear.service]["jobs"] == 0, pool

    # Winning tickets wait for their parameters to expire, then are redeemed. The streams are
    # over, no payment is in flight: move the chain past the expiry of the last parameters.
    mine(net.chain.url, PARAMS_EXPIRATION_BLOCKS)

    def settled() -> dict[str, dict[str, Any]] | None:
        facts = {s.service: payments_of(s.node) for s in net.sellers}
        done = all(f["tickets_pending"] == 0 for f in facts.values()) and all(
            facts[s.service]["tickets_won"] > 0 for s in (cheap, cheapest)
        )
        return facts if done else None

    paid = wait_for(settled, 45, "every winning ticket redeemed")
    sent = payments_of(net.gateway)["gateway"]
    for seller in net.sellers:
        facts = paid[seller.service]
        print(
            f"\norchestrator at {seller.price} wei/pixel, {seller.stake // ETH} ETH staked: "
            f"{pool[seller.service]['jobs']} segments, {facts['tickets_received']} tickets, "
            f"{facts['tickets_won']} won, {wei(facts['face_value_redeemed'])} wei redeemed"
        )

    # Off chain: every ticket the gateway sent was received by one of the orchestrators ...
    assert sent["tickets_sent"] == sum(f["tickets_received"] for f in paid.values()) > 0
    # (Each figure is whole wei rounded down: a sum of n of them is at most n - 1 wei below the
    # rounded exact sum.)
    received = [wei(f["ev_received"]) for f in paid.values()]
    assert 0 <= wei(sent["ev_sent"]) - sum(received) <= len(received) - 1
    # ... the expensive one received none and billed nothing ...
    assert paid[dear.service]["tickets_received"] == 0 and wei(paid[dear.service]["billed"]) == 0
    # ... and for each orchestrator both sides agree on the credit left: EV paid minus billed.
    for seller in net.sellers:
        facts = paid[seller.service]
        price = facts["price_per_pixel"]
        assert (price["wei"], price["pixels"]) == (str(seller.price), 1)
        assert facts["payments_refused"] == 0 and facts["tickets_dropped"] == 0
        credits = [wei(c) for k, c in sent["credit"].items() if k.startswith(f"{seller.service}/")]
        assert 0 <= wei(facts["balance"]) - sum(credits) <= max(len(credits) - 1, 0)
        assert wei(facts["ev_received"]) - wei(facts["billed"]) - wei(facts["balance"]) in (0, 1)
    for seller in (cheap, cheapest):
        assert wei(paid[seller.service]["billed"]) > 0
        assert paid[seller.service]["tickets_redeemed"] == paid[seller.service]["tickets_won"]
    # The orchestrators billed, at their own prices (whole wei per pixel, so whole wei billed),
    # exactly the pixels the viewers got.
    pixels = sum(
        Fraction(wei(f["billed"]) * price["pixels"], int(price["wei"]))
        for f in paid.values()
        for price in [f["price_per_pixel"]]
    )
    assert pixels == sum(billed_pixels(r) for r in recorders.values())

    # On chain: each orchestrator's fees are the face values it redeemed, and the gateway's
    # deposit and reserve fell by their sum.
    on_chain = ChainClient.connect(net.chain.url, controller=net.chain.controller)
    for seller in net.sellers:
        address = seller.account.address
        assert on_chain.is_active_transcoder(address)
        assert on_chain.transcoder_stake(address) == seller.stake
        assert on_chain.service_uri(address) == f"quic://{seller.service}"
        assert on_chain.pending_fees(address) == wei(paid[seller.service]["face_value_redeemed"])
    redeemed = sum(wei(f["face_value_redeemed"]) for f in paid.values())
    assert redeemed > 0 and on_chain.pending_fees(dear.account.address) == 0
    funds = on_chain.sender_info(net.chain.accounts[0].address)
    assert 2 * FUNDS - (funds.deposit + funds.reserve) == redeemed


# The same across network namespaces


_CLONE_NEWNET = 0x40000000


def call_in_netns(netns: str, fn: Callable[[], T]) -> T:
    """Runs ``fn`` on a new thread that has joined the network namespace ``netns``.

    A network namespace is a property of a thread, and threads inherit it: what ``fn``
    starts (an ``HlsRecorder``'s polling thread) stays in ``netns``. This thread, and the
    process's other threads, never leave the host's namespace.
    """
    results: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
            try:
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    errno = ctypes.get_errno()
                    raise OSError(errno, f"setns({netns}): {os.strerror(errno)}")
            finally:
                os.close(fd)
            results.append(fn())
        except BaseException as exc:  # handed to the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=run, name=f"in-{netns}")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return results[0]


@attrs.define
class Namespaces:
    """Network namespaces made for one test, deleted by ``delete``."""

    prefix: str
    made: list[str] = attrs.Factory(list)

    def ip(self, *args: str) -> None:
        """Runs ``ip ARGS``; skips the test when the machine does not allow it."""
        command = ["ip", *args]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            pytest.skip(
                f"network namespaces unavailable: `{' '.join(command)}` exited "
                f"{result.returncode}: {result.stderr.strip()}"
            )

    def add(self, role: str) -> str:
        name = f"{self.prefix}-{role}"
        self.ip("netns", "add", name)
        self.made.append(name)
        self.ip("-n", name, "link", "set", "lo", "up")
        return name

    def link(self, a: str, a_addr: str, b: str, b_addr: str) -> None:
        """A veth pair between namespaces ``a`` and ``b``, with these addresses (/24).

        Both ends are made inside their namespaces: the host's interfaces are not touched.
        """
        a_dev, b_dev = f"to-{b.rsplit('-', 1)[1]}", f"to-{a.rsplit('-', 1)[1]}"
        self.ip("link", "add", a_dev, "netns", a, "type", "veth", "peer", "name", b_dev, "netns", b)
        for netns, dev, addr in ((a, a_dev, a_addr), (b, b_dev, b_addr)):
            self.ip("-n", netns, "addr", "add", f"{addr}/24", "dev", dev)
            self.ip("-n", netns, "link", "set", dev, "up")

    def delete(self) -> None:
        for name in reversed(self.made):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        self.made.clear()


GW_ADDR, ORCH_GW_SIDE = "10.91.1.1", "10.91.1.2"
"""The gateway's namespace and the orchestrator's, one veth pair between them."""
ORCH_WORKER_SIDE, WORKER_ADDR = "10.91.2.1", "10.91.2.2"
"""The orchestrator's namespace and its worker's, another veth pair."""
NETNS_PRICE = 100_000


def in_netns(netns: str) -> list[str]:
    """The ``lpstream`` program run inside ``netns``."""
    return ["ip", "netns", "exec", netns, *LPSTREAM]


@attrs.frozen(kw_only=True)
class NetnsNetwork:
    gateway_ns: str
    orchestrator_ns: str
    chain: Chain
    orchestrator: NodeProcess
    service: str
    """The orchestrator's QUIC service as registered on chain (its gateway-side address)."""
    worker: NodeProcess
    gateway: NodeProcess


@pytest.fixture
def netns_network(tmp_path: Path) -> Iterator[NetnsNetwork]:
    if shutil.which("ip") is None:
        pytest.skip("network namespaces unavailable: no `ip` binary (iproute2) on PATH")
    if os.geteuid() != 0:
        pytest.skip(f"network namespaces need root: running as uid {os.geteuid()}")
    namespaces = Namespaces(prefix=f"lps{secrets.token_hex(4)}")
    started: list[NodeProcess] = []
    try:
        gw, orch, wk = namespaces.add("gw"), namespaces.add("orch"), namespaces.add("wk")
        namespaces.link(gw, GW_ADDR, orch, ORCH_GW_SIDE)
        namespaces.link(orch, ORCH_WORKER_SIDE, wk, WORKER_ADDR)
        # The chain lives with the orchestrator; the gateway reaches it over the veth.
        chain = start_chain(
            tmp_path, started, rpc_addr=f"{ORCH_GW_SIDE}:8545", program=in_netns(orch)
        )
        gateway_account, orchestrator_account = chain.accounts[:2]
        service = f"{ORCH_GW_SIDE}:8936"
        orchestrator = NodeProcess(
            paid_orchestrator_args(
                chain,
                orchestrator_account,
                service_addr="0.0.0.0:8936",  # the gateway's side and the worker's
                http_addr="127.0.0.1:7935",
                price=NETNS_PRICE,
                capacity=0,
                data_dir=tmp_path / "orch",
            ),
            name="orchestrator",
            log_dir=tmp_path,
            program=in_netns(orch),
        )
        started.append(orchestrator)
        gateway = NodeProcess(
            [
                "gateway",
                "--rtmp-addr=127.0.0.1:1935",
                "--http-addr=127.0.0.1:8935",
                f"--max-price-per-unit={MAX_PRICE}",
                *chain.flags(),
                *gateway_account.flags(),
            ],
            name="gateway",
            log_dir=tmp_path,
            program=in_netns(gw),
        )
        started.append(gateway)
        for node in (orchestrator, gateway):
            node.wait_ready(timeout=60)
        worker = NodeProcess(
            [
                "worker",
                f"--orch-addr={ORCH_WORKER_SIDE}:8936",
                f"--orch-secret={SECRET}",
                "--capacity=2",
            ],
            name="worker",
            log_dir=tmp_path,
            program=in_netns(wk),
        )
        started.append(worker)
        run_scripts(
            [
                (in_netns(gw), fund_gateway(chain, gateway_account)),
                (
                    in_netns(orch),
                    bond_and_register(chain, orchestrator_account, ETH, f"quic://{service}"),
                ),
            ]
        )
        call_in_netns(orch, lambda: start_next_round(chain.url))
        worker.wait_ready(timeout=60)
        yield NetnsNetwork(
            gateway_ns=gw,
            orchestrator_ns=orch,
            chain=chain,
            orchestrator=orchestrator,
            service=service,
            worker=worker,
            gateway=gateway,
        )
    finally:
        for node in reversed(started):
            node.stop()
        namespaces.delete()


def test_a_paid_stream_flows_across_network_namespaces(
    netns_network: NetnsNetwork, tmp_path: Path
) -> None:
    net = netns_network

    def in_gateway_ns(url: str) -> Any:
        return call_in_netns(net.gateway_ns, lambda: http_json(url))

    def in_orchestrator_ns(url: str) -> Any:
        return call_in_netns(net.orchestrator_ns, lambda: http_json(url))

    gateway_http = net.gateway.url("http")
    orch_status = in_orchestrator_ns(f"{net.orchestrator.url('http')}/api/status")
    assert len(orch_status["workers"]) == 1 and orch_status["capacity"] == 2
    # The worker dialled in from its own namespace, over the second veth pair.
    assert f"registered from ('{WORKER_ADDR}'" in net.orchestrator.log_path.read_text()

    def offered() -> bool:
        pool = in_gateway_ns(f"{gateway_http}/api/status")["orchestrators"]
        return [(o["address"], o["answered"], o["refused"]) for o in pool] == [
            (net.service, True, "")
        ]

    wait_for(offered, 45, "the gateway to find the orchestrator on chain and offer it work")

    seconds = 10.0
    rtmp = f"{net.gateway.url('rtmp')}/live/ns"
    publisher = subprocess.Popen(
        ["ip", "netns", "exec", net.gateway_ns, *push_command(rtmp, seconds=seconds)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        recorder = HlsRecorder(base=gateway_http, stream="ns", out_dir=tmp_path)
        call_in_netns(net.gateway_ns, recorder.start)  # its polling thread stays there
        _, err = publisher.communicate(timeout=seconds + 40)
        assert publisher.returncode == 0, err.decode()
    finally:
        if publisher.poll() is None:
            publisher.kill()
            publisher.communicate()
    recorder.wait(timeout=40)
    check_recording(recorder, expected_sizes=SIZES_720P, audio=True, gop_seconds=2, seconds=seconds)

    gateway_status = in_gateway_ns(f"{gateway_http}/api/status")
    (used,) = gateway_status["orchestrators"]
    assert used["address"] == net.service and used["jobs"] > 0 and used["failures"] == 0
    sent = gateway_status["payments"]["gateway"]
    got = payments_of(net.orchestrator, get=in_orchestrator_ns)
    assert sent["tickets_sent"] == got["tickets_received"] > 0
    assert sent["ev_sent"] == got["ev_received"]
    assert got["active"] is True and got["payments_refused"] == 0
    # Whole wei, rounded down: a sum of n figures is at most n - 1 wei below the rounded sum.
    credits = [wei(c) for c in sent["credit"].values()]
    assert 0 <= wei(got["balance"]) - sum(credits) <= max(len(credits) - 1, 0)
    assert wei(got["ev_received"]) - wei(got["billed"]) - wei(got["balance"]) in (0, 1)
    assert wei(got["billed"]) == NETNS_PRICE * billed_pixels(recorder) > 0
