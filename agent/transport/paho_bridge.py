"""MQTT over paho-mqtt 2.x driven by the asyncio event loop: the only module that imports paho.

paho's socket is registered with the loop (``add_reader``/``add_writer``), so thousands of
connections share one thread, and paho's callbacks only settle futures or hand messages on: they
never call into the agent's logic. Only the blocking TCP/TLS connect runs in a worker thread.
A fresh paho client is made for every connection attempt, so each attempt can present new
credentials and no half-torn state carries over; what must survive a reconnect (unacknowledged
results) lives in the journal, not in paho's memory.

Long: the only module allowed to import paho, so all of paho's callbacks live here.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import ssl
import sys
import weakref
from collections.abc import Callable
from typing import Any, cast

if "paho.mqtt.client" in sys.modules or "dns" in sys.modules:
    import paho.mqtt.client as mqtt
else:
    # paho imports dnspython, where it is installed, for SRV lookups (connect_srv) the agent
    # never makes: dnspython and idna are 2 MB of an idle daemon's memory. Hide it while paho
    # loads, as agent/runtime/logging.py hides rich from structlog.
    sys.modules["dns"] = None  # type: ignore[assignment]
    try:
        import paho.mqtt.client as mqtt
    finally:
        del sys.modules["dns"]
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from agent.config import MqttSettings
from agent.core.errors import ConnectRefused, LocalProtocolError, TransportError
from agent.core.model import Subscription
from agent.runtime.logging import get_logger, redactor
from agent.transport.base import Backoff, InboundMessage, Link
from agent.transport.tls import build_tls_context, describe_tls_error

# CONNACK refusals that mean "these credentials will not do": retry slowly, never hammer.
_BAD_CREDENTIALS = {134, 135}  # MQTT 3.1.1 return codes 4 and 5, as paho reports them
# A connection that held this long resets the backoff; shorter ones count as failures.
_STABLE_AFTER_S = 10.0


class _LastError(logging.Logger):
    """Stands in for paho's logger to keep its last error (why a socket read or write failed).

    paho turns a failed read (say, the broker's TLS alert "certificate required") into a bare
    "connection lost"; its own error line is the only place the cause survives. Nothing is
    formatted below error level, so this costs nothing per packet.
    """

    def __init__(self) -> None:
        super().__init__("device_agent.paho", logging.ERROR)
        self.message: str | None = None

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        """Remember error-level lines; drop the rest."""
        if level >= logging.ERROR:
            self.message = str(msg) % args if args else str(msg)


# One read takes whatever the kernel holds, up to this much (many packets at once).
_READ_CHUNK = 64 * 1024
# One write sends the packets queued since the last one, up to this much, in one ``send``.
_WRITE_CHUNK = 64 * 1024
# Packets whose full write paho follows with bookkeeping of its own (on_publish for QoS 0,
# closing after DISCONNECT): they are written on their own, as paho would.
_WRITE_ALONE = (mqtt.PUBLISH, mqtt.DISCONNECT)


class _BufferedClient(mqtt.Client):
    """paho's client, reading the socket in chunks and writing queued packets in one go.

    paho asks for one byte (the packet type), then one per remaining-length byte, then the rest:
    four or more ``recv`` calls per packet, which under load cost more than the agent's own work
    on a command. Here one ``recv`` takes everything the kernel holds and paho's small reads are
    served from that buffer; :meth:`buffered` tells the reader to go on while bytes are left.

    On the way out paho sends each queued packet with a ``send`` of its own: the PUBACKs and
    answers of one loop turn cost one system call (and one TCP segment) each. Here the packets
    queued together leave in one ``send``, in the same order.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._chunk = b""
        self._chunk_at = 0

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._chunk_at >= len(self._chunk):
            data = super()._sock_recv(max(bufsize, _READ_CHUNK))
            if len(data) <= bufsize:  # all of it wanted, or the end of the stream (b"")
                return data
            self._chunk, self._chunk_at = data, 0
        start = self._chunk_at
        end = self._chunk_at = min(start + bufsize, len(self._chunk))
        piece = self._chunk[start:end]
        if end == len(self._chunk):  # hold no bytes while idle (a fleet has thousands of us)
            self._chunk, self._chunk_at = b"", 0
        return piece

    def buffered(self) -> int:
        """Bytes read from the socket that paho has not taken yet."""
        return len(self._chunk) - self._chunk_at

    def _packet_write(self) -> MQTTErrorCode:
        if len(self._out_packet) > 1:
            self._coalesce()
        return super()._packet_write()

    def _coalesce(self) -> None:
        """Join the leading queued packets into one that paho writes as it would any other.

        Only packets paho does nothing with once written are joined: PUBACKs, QoS 1 and 2
        PUBLISHes (their completion is the broker's PUBACK), SUBSCRIBEs, PINGREQs. The joined
        packet keeps the first one's fields, so paho treats it as that kind.
        """
        queue = self._out_packet
        taken: list[Any] = []
        size = 0
        while queue and size < _WRITE_CHUNK:
            packet = queue[0]
            command = packet["command"] & 0xF0
            if command in _WRITE_ALONE and (command != mqtt.PUBLISH or packet["qos"] == 0):
                break
            taken.append(queue.popleft())
            size += packet["to_process"]
        if len(taken) < 2:
            queue.extendleft(taken)
            return
        data = b"".join(packet["packet"][packet["pos"] :] for packet in taken)
        first = taken[0]
        queue.appendleft(
            {
                "command": first["command"],
                "mid": first["mid"],
                "qos": first["qos"],
                "pos": 0,
                "to_process": len(data),
                "packet": data,
                "info": first["info"],
            }
        )


class _Client(_BufferedClient):
    """paho's client, which can be handed a TCP socket the event loop has already connected."""

    preconnected: socket.socket | None = None

    def _create_socket_connection(self) -> socket.socket:
        sock, self.preconnected = self.preconnected, None
        return sock if sock is not None else super()._create_socket_connection()


def _numeric_family(host: str) -> socket.AddressFamily | None:
    """The address family of a literal IP address; None for a host name."""
    try:
        return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return None


def _close_socket(client: mqtt.Client) -> None:
    sock = client.socket()
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()


class _Ticker:
    """Runs paho's keepalive bookkeeping for every live client on a loop, once a second.

    One task for all connections instead of one per connection keeps a simulated fleet cheap.
    """

    def __init__(self) -> None:
        self._clients: set[mqtt.Client] = set()
        self._task: asyncio.Task[None] | None = None

    def add(self, client: mqtt.Client) -> None:
        self._clients.add(client)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="mqtt-keepalive")

    def discard(self, client: mqtt.Client) -> None:
        self._clients.discard(client)

    async def _run(self) -> None:
        while self._clients:
            await asyncio.sleep(1.0)
            for client in list(self._clients):
                client.loop_misc()


_tickers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Ticker] = (
    weakref.WeakKeyDictionary()
)


def _ticker() -> _Ticker:
    loop = asyncio.get_running_loop()
    ticker = _tickers.get(loop)
    if ticker is None:
        ticker = _tickers[loop] = _Ticker()
    return ticker


# The connection states (MqttConnection.state).
CONNECTING = "connecting"
CONNECTED = "connected"
# CONNACK refused the credentials; the next attempt waits auth_retry_s.
AUTH_REFUSED = "auth refused"


class MqttConnection:
    """One device's connection: connect, subscribe, serve, and reconnect with backoff."""

    def __init__(
        self,
        settings: MqttSettings,
        *,
        link: Link | None = None,
        connect_gate: asyncio.Semaphore | None = None,
        subscribe_gate: asyncio.Semaphore | None = None,
        backoff: Backoff | None = None,
        log: Any = None,
    ) -> None:
        self.settings = settings
        self.ready = asyncio.Event()
        # Set once every filter is accepted; a refused one is retried while connected.
        self.subscribed = asyncio.Event()
        # What `systemctl status`, `device-agent status` and the metrics show of the link.
        self.state = CONNECTING
        self.last_error: str | None = None
        # Set at every change of state, so `systemctl status` (and whoever waits on READY's
        # companion STATUS=connected) hears of it at once rather than at the next poll.
        self.state_changed = asyncio.Event()
        self.connects = 0
        self._link = link
        self._gate = connect_gate
        # Shared by a fleet on a clustered broker, where every filter accepted costs the
        # cluster a replicated JetStream consumer (NATS): a bounded number of SUBSCRIBEs in
        # flight are set up in time, thousands at once time out and are refused.
        self._subscribe_gate = subscribe_gate
        self._backoff = backoff or Backoff(settings.backoff_initial_s, settings.backoff_max_s)
        self._log = log or get_logger()
        self._tls = build_tls_context(settings.tls) if settings.tls.enabled else None
        self._client: mqtt.Client | None = None
        self._connected = False
        self._session = 0
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._subacks: dict[int, asyncio.Future[list[ReasonCode]]] = {}
        self._connack: asyncio.Future[ReasonCode] | None = None
        self._lost: asyncio.Future[str] | None = None
        self._stop = asyncio.Event()
        self._unwatch: Callable[[], None] | None = None
        self._resubscribing: asyncio.Task[None] | None = None
        self._paho_errors = _LastError()
        # Endpoints of one (clustered) broker; a failed connect or a lost connection moves on
        # to the next, so a dead node costs one attempt, not a backoff per retry.
        self._endpoints = settings.endpoints
        self._at = 0
        self._failed_in_round = 0
        self._established = False

    @property
    def endpoint(self) -> tuple[str, int]:
        """The endpoint connected to, or the one the next attempt goes to."""
        return self._endpoints[self._at]

    # -- public API -----------------------------------------------------------------------

    def attach(self, link: Link) -> None:
        """Serve ``link`` (see :class:`~agent.transport.base.Transport`)."""
        self._link = link

    async def run(self) -> None:
        """Keep the connection up until :meth:`close`."""
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            started = loop.time()
            delay: float
            try:
                reason = await self._serve_once()
                if self._stop.is_set():
                    self._log.info("mqtt.disconnected")
                    break
                self._log.warning("mqtt.connection.lost", reason=reason, endpoint=self._where())
                self._set_state(CONNECTING, f"connection lost: {reason}")
                delay = self._backoff.next_delay()
            except ConnectRefused as exc:
                refusal = f"CONNACK {exc.rc} ({exc.reason})"
                if exc.bad_credentials:
                    self._set_state(AUTH_REFUSED, refusal)
                    # Jittered downwards, so a fleet refused together does not retry together.
                    delay = self.settings.auth_retry_s * self._backoff.jitter(0.8, 1.0)
                    self._log.error(
                        "mqtt.connect.refused",
                        rc=exc.rc,
                        reason=exc.reason,
                        bad_credentials=True,
                        retry_in_s=round(delay, 2),
                    )
                else:
                    self._set_state(CONNECTING, refusal)
                    delay = self._after_failed_connect()
                    self._log.warning(
                        "mqtt.connect.refused",
                        rc=exc.rc,
                        reason=exc.reason,
                        endpoint=self._where(),
                        retry_in_s=round(delay, 2),
                    )
            except TransportError as exc:
                self._set_state(CONNECTING, str(exc))
                if self._established:  # lost while subscribing: like any lost connection
                    delay = self._backoff.next_delay()
                else:
                    delay = self._after_failed_connect()
                self._log.warning(
                    "mqtt.connect.failed",
                    error=str(exc),
                    endpoint=self._where(),
                    retry_in_s=round(delay, 2),
                )
            finally:
                self._teardown()
            if len(self._endpoints) > 1 and not self._stop.is_set():
                self._at = (self._at + 1) % len(self._endpoints)
            if loop.time() - started >= _STABLE_AFTER_S:
                self._backoff.reset()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)

    def _after_failed_connect(self) -> float:
        """The delay after a failed attempt: none while endpoints of this round remain untried."""
        self._failed_in_round += 1
        if self._failed_in_round < len(self._endpoints):
            return 0.0
        self._failed_in_round = 0
        return self._backoff.next_delay()

    def _where(self) -> str:
        host, port = self.endpoint
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def publish(self, topic: str, payload: bytes, qos: int) -> asyncio.Future[None]:
        """Publish; the future resolves on PUBACK (QoS 1) or once written (QoS 0)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        client = self._client
        if client is None or not self._connected:
            future.set_exception(TransportError("not connected"))
            return future
        try:
            info = client.publish(topic, payload, qos)
        except ValueError as exc:  # wildcards in the topic, payload too large
            future.set_exception(LocalProtocolError(f"cannot publish to {topic!r}: {exc}"))
            return future
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            future.set_exception(TransportError(f"publish failed: {mqtt.error_string(info.rc)}"))
            return future
        self._pending[info.mid] = future
        return future

    def ack(self, message: InboundMessage) -> None:
        """PUBACK a message that arrived on the current connection (others are redelivered)."""
        client = self._client
        if message.qos == 0 or client is None or not self._connected:
            return
        if message.session == self._session:
            client.ack(message.mid, message.qos)

    async def close(self, timeout: float = 2.0) -> None:
        """Send DISCONNECT (so no will is published) and stop reconnecting."""
        self._stop.set()
        client = self._client
        if client is not None and self._connected and self._lost is not None:
            client.disconnect()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._lost), timeout)
        self._teardown()

    # -- one connection -------------------------------------------------------------------

    @property
    def _attached(self) -> Link:
        if self._link is None:
            raise LocalProtocolError("the connection was run before a link was attached")
        return self._link

    async def _serve_once(self) -> str:
        loop = asyncio.get_running_loop()
        identity = self._attached.identity()
        if identity.password:
            redactor.register(identity.password)
        client = self._new_client(identity.client_id)
        if identity.username is not None:
            client.username_pw_set(identity.username, identity.password)
        host, port = self.endpoint
        self._established = False
        client.connect_async(host, port, self.settings.keepalive_s)
        self._session += 1
        self._client = client
        self._connack = loop.create_future()
        self._lost = loop.create_future()
        self._log.debug("mqtt.connect.started", host=host, port=port, client_id=identity.client_id)
        await self._open_socket(client)
        try:
            code = await self._until_lost(self._connack, self.settings.connect_timeout_s, "CONNACK")
        except TransportError as exc:
            raise TransportError(f"{exc}{self._client_cert_hint()}") from exc
        if code.is_failure:
            raise ConnectRefused(
                code.value, code.getName(), bad_credentials=code.value in _BAD_CREDENTIALS
            )
        self._connected = self._established = True
        self._failed_in_round = 0
        _ticker().add(client)
        self._log.info("mqtt.connected", host=host, port=port, client_id=identity.client_id)
        refused = await self._subscribe_all(client)
        await self._attached.on_connected()
        self.connects += 1
        self._set_state(CONNECTED, self.last_error)
        self.ready.set()
        if refused:
            self._resubscribing = loop.create_task(self._resubscribe(client, refused))
        else:
            self.subscribed.set()
        return await self._lost

    def _set_state(self, state: str, error: str | None) -> None:
        if (state, error) != (self.state, self.last_error):
            self.state_changed.set()
        self.state = state
        self.last_error = error

    def _new_client(self, client_id: str) -> _Client:
        client = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=self.settings.clean_session,
            protocol=MQTTProtocolVersion.MQTTv311,
            manual_ack=True,
            reconnect_on_failure=False,
        )
        if self._tls is not None:
            client.tls_set_context(self._tls)
            client.tls_insecure_set(not self.settings.tls.verify_hostname)
        client.max_inflight_messages_set(self.settings.max_inflight)
        self._paho_errors = _LastError()
        client.enable_logger(self._paho_errors)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        client.on_publish = self._handle_publish
        client.on_subscribe = self._handle_subscribe
        return client

    async def _open_socket(self, client: _Client) -> None:
        """TCP (and TLS) connect, then hand the socket to the event loop.

        Plain TCP to an IP address connects on the loop; TLS or a host name to resolve
        connects in a worker thread (paho's handshake blocks). A fleet of thousands on one loop
        connects several times faster without the thread hop per connection.
        """
        loop = asyncio.get_running_loop()
        gate: contextlib.AbstractAsyncContextManager[Any] = self._gate or contextlib.nullcontext()
        host, port = self.endpoint
        # Plain TCP to an IP address connects on the event loop.
        family = None if self._tls is not None else _numeric_family(host)
        try:
            async with gate:
                if family is not None:
                    client.preconnected = await self._connect_on_loop(family, host, port)
                    try:
                        client.reconnect()  # nothing left that blocks: it sends CONNECT
                    finally:
                        if client.preconnected is not None:  # not taken: paho failed first
                            client.preconnected.close()
                            client.preconnected = None
                else:
                    attempt = loop.run_in_executor(None, client.reconnect)
                    try:
                        await asyncio.wait_for(
                            asyncio.shield(attempt), self.settings.connect_timeout_s
                        )
                    except TimeoutError:
                        # The thread cannot be interrupted; close what it opens once it returns.
                        attempt.add_done_callback(lambda _: _close_socket(client))
                        raise
        except TimeoutError as exc:
            raise TransportError("connect timed out") from exc
        except ssl.SSLError as exc:  # also unknown CAs and name mismatches
            raise TransportError(describe_tls_error(exc)) from exc
        except (OSError, ValueError) as exc:
            raise TransportError(f"cannot connect to {self._where()}: {exc}") from exc
        sock = cast(socket.socket | None, client.socket())
        if sock is None:
            cause = self._paho_errors.message or "no reason given"
            raise TransportError(
                f"connection closed during connect ({cause}){self._client_cert_hint()}"
            )
        try:
            # Without TCP_NODELAY every small request/response waits on Nagle + delayed ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._watch(client, sock)
        except (OSError, ValueError) as exc:  # the peer closed it already (a flapping network)
            raise TransportError(f"connection closed during connect: {exc}") from exc

    async def _connect_on_loop(
        self, family: socket.AddressFamily, host: str, port: int
    ) -> socket.socket:
        """A TCP connection to the broker's IP address, made without leaving the loop."""
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            async with asyncio.timeout(self.settings.connect_timeout_s):
                await asyncio.get_running_loop().sock_connect(sock, (host, port))
        except BaseException:
            sock.close()
            raise
        return sock

    def _client_cert_hint(self) -> str:
        """What to check when a TLS connection is dropped before CONNACK.

        A broker that requires a client certificate closes the connection after the handshake;
        its alert saying why is often lost with the connection, so the log line says it instead.
        """
        tls = self.settings.tls
        if tls.enabled and tls.cert_file is None:
            return (
                "; no client certificate is configured (mqtt.tls.cert_file):"
                " does the broker require one?"
            )
        return ""

    def _watch(self, client: mqtt.Client, sock: Any) -> None:
        loop = asyncio.get_running_loop()
        fd = sock.fileno()
        if fd < 0:
            raise TransportError("connection closed during connect")

        buffered = client.buffered if isinstance(client, _BufferedClient) else (lambda: 0)

        def readable() -> None:
            try:
                client.loop_read()
                # Bytes already read (ours, or decrypted ones TLS holds) are not reported as
                # readable by the kernel again: take every packet they hold now.
                while client.socket() is sock and (
                    buffered() > 0 or getattr(sock, "pending", lambda: 0)() > 0
                ):
                    client.loop_read()
            except Exception as exc:
                self._log.exception("mqtt.read.failed")
                self._mark_lost(f"read failed: {exc}")

        def writable() -> None:
            client.loop_write()

        watching = True

        def unwatch(*_: object) -> None:
            # Once only: paho calls this when it closes the socket, and teardown calls it again
            # later, when the descriptor number may already belong to another socket of this
            # loop (an in-process broker, proxy or HTTP server).
            nonlocal watching
            if watching:
                watching = False
                loop.remove_reader(fd)
                loop.remove_writer(fd)

        self._unwatch = unwatch

        def want_write(*_: object) -> None:
            if watching:
                loop.add_writer(fd, writable)

        def written(*_: object) -> None:
            if watching:
                loop.remove_writer(fd)

        loop.add_reader(fd, readable)
        client.on_socket_register_write = want_write
        client.on_socket_unregister_write = written
        client.on_socket_close = unwatch
        if client.want_write():
            loop.add_writer(fd, writable)

    async def _subscribe_all(self, client: mqtt.Client) -> list[Subscription]:
        """Send SUBSCRIBEs of ``filters_per_subscribe`` filters each, then await the SUBACKs.

        Returns the subscriptions the broker refused.
        """
        refused = await self._subscribe(client, self._attached.subscriptions())
        for subscription in refused:
            # A policy problem on the platform, or a clustered broker too busy to set the
            # subscription up (NATS: its JetStream consumer); the rest keeps working meanwhile.
            self._log.error("mqtt.subscribe.refused", topic_filter=subscription.topic_filter)
        return refused

    async def _subscribe(
        self, client: mqtt.Client, subscriptions: list[Subscription]
    ) -> list[Subscription]:
        gate: contextlib.AbstractAsyncContextManager[Any] = (
            self._subscribe_gate or contextlib.nullcontext()
        )
        async with gate:
            return await self._subscribe_now(client, subscriptions)

    async def _subscribe_now(
        self, client: mqtt.Client, subscriptions: list[Subscription]
    ) -> list[Subscription]:
        loop = asyncio.get_running_loop()
        per_packet = self.settings.filters_per_subscribe
        waits: list[tuple[list[Subscription], asyncio.Future[list[ReasonCode]]]] = []
        for start in range(0, len(subscriptions), per_packet):
            batch = subscriptions[start : start + per_packet]
            pairs: list[tuple[str, int]] = [(s.topic_filter, s.qos) for s in batch]
            rc, mid = client.subscribe(pairs)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
                raise TransportError(f"subscribe failed: {mqtt.error_string(rc)}")
            self._subacks[mid] = future = loop.create_future()
            waits.append((batch, future))
        refused = []
        for batch, future in waits:
            codes = await self._until_lost(future, self.settings.connect_timeout_s, "SUBACK")
            refused += [s for s, code in zip(batch, codes, strict=False) if code.is_failure]
        return refused

    async def _resubscribe(self, client: mqtt.Client, refused: list[Subscription]) -> None:
        """Subscribe refused filters again, backing off, until accepted or the connection ends."""
        backoff = Backoff(self.settings.backoff_initial_s, self.settings.backoff_max_s)
        while refused:
            await asyncio.sleep(self.settings.backoff_initial_s + backoff.next_delay())
            try:
                refused = await self._subscribe(client, refused)
            except TransportError:
                if client is not self._client or not self._connected:
                    return  # the connection is gone; the next one subscribes afresh
                # No SUBACK in time (a busy broker answers late): ask again.
        self._log.info("mqtt.subscribe.accepted", after_retries=backoff.attempt)
        self.subscribed.set()

    async def _until_lost(self, future: asyncio.Future[Any], timeout: float, what: str) -> Any:
        lost = self._lost
        assert lost is not None  # noqa: S101 - set before any wait
        done, _ = await asyncio.wait(
            {future, lost}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if future in done:
            return future.result()
        if lost in done:
            raise TransportError(f"connection lost waiting for {what}: {lost.result()}")
        raise TransportError(f"no {what} within {timeout} s")

    def _teardown(self) -> None:
        client = self._client
        self._connected = False
        self.ready.clear()
        self.subscribed.clear()
        if self._resubscribing is not None:
            self._resubscribing.cancel()
            self._resubscribing = None
        if client is not None:
            _ticker().discard(client)
            if self._unwatch is not None:
                self._unwatch()
            _close_socket(client)
        self._client = None
        self._unwatch = None
        self._fail_pending("connection closed")

    def _fail_pending(self, reason: str) -> None:
        futures: list[asyncio.Future[Any]] = [*self._pending.values(), *self._subacks.values()]
        for future in futures:
            if not future.done():
                future.set_exception(TransportError(reason))
                future.exception()  # retrieved: nobody may be waiting any more
        self._pending.clear()
        self._subacks.clear()

    def _mark_lost(self, reason: str) -> None:
        self._connected = False
        self.ready.clear()
        self.subscribed.clear()
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(reason)
        self._fail_pending(reason)

    # -- paho callbacks (loop thread; they only settle futures and hand messages on) -------

    def _handle_connect(
        self, client: mqtt.Client, userdata: object, flags: object, code: ReasonCode, props: object
    ) -> None:
        if client is self._client and self._connack is not None and not self._connack.done():
            self._connack.set_result(code)

    def _handle_disconnect(
        self, client: mqtt.Client, userdata: object, flags: object, code: ReasonCode, props: object
    ) -> None:
        if client is self._client:
            cause = self._paho_errors.message
            self._mark_lost(f"{code} ({cause})" if cause else str(code))

    def _handle_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            self._log.warning("mqtt.message.bad_topic", mid=msg.mid)
            client.ack(msg.mid, msg.qos)
            return
        self._attached.on_message(
            InboundMessage(
                topic, bytes(msg.payload), msg.qos, bool(msg.dup), msg.mid, self._session
            )
        )

    def _handle_publish(
        self, client: mqtt.Client, userdata: object, mid: int, code: ReasonCode, props: object
    ) -> None:
        future = self._pending.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(None)

    def _handle_subscribe(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        codes: list[ReasonCode],
        props: object,
    ) -> None:
        future = self._subacks.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(codes)
