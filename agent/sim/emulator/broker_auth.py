"""Device passwords checked at CONNECT, for a broker the emulator runs (the embedded one).

The broker asks :class:`ConnectCheck` about every CONNECT. A client id that belongs to a
Tencent IoT Hub product in the registry (``{ProductId}{DeviceName}``) must be one of its
devices and sign its username as
the platform checks it (:func:`agent.profiles.tencent_iothub.auth.connect_problem`). Every
other client (the task service's own link, devices of the other platforms) is not judged
here. The embedded broker listens on plain TCP, where IoT Hub takes key devices only
(certificate devices connect over TLS on 8883, and their password is ignored), so every
Tencent device is checked as a key device.
"""

from __future__ import annotations

from collections.abc import Callable

from agent.profiles.tencent_iothub import auth as tencent_auth
from agent.sim.emulator.records import TENCENT_IOTHUB
from agent.sim.emulator.registry import Registry


class ConnectCheck:
    """Judges CONNECTs against the emulator's registry."""

    def __init__(self, registry: Registry, clock: Callable[[], float]) -> None:
        self._registry = registry
        self._clock = clock
        self.refused = 0

    def __call__(self, client: str, user: str | None, given: str | None) -> str | None:
        """Why the platform would refuse this CONNECT (None: accepted or not ours to judge)."""
        unknown = None
        for product_id, product in self._registry.products.items():
            if product.get("platform") != TENCENT_IOTHUB or not client.startswith(product_id):
                continue
            name = client[len(product_id) :]
            device = self._registry.by_name(product_id, name)
            if device is None:
                # Another product's id may share this prefix: look on before refusing.
                unknown = f"product {product_id} has no device {name!r}"
                continue
            if not device.secret:
                return None  # nothing to check against
            problem = tencent_auth.connect_problem(
                client=client,
                user=user,
                given_password=given,
                product_id=product_id,
                device_name=name,
                secret=device.secret,
                now=int(self._clock()),
            )
            if problem is not None:
                self.refused += 1
            return problem
        if unknown is not None:
            self.refused += 1
        return unknown
