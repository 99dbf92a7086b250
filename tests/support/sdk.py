"""The platforms' official SDK clients pointed at an emulator: the set-ups docs/simulator.md shows.

The SDKs are synchronous (``requests``/``urllib3``): tests call them on a worker thread with
:func:`run` while the emulator serves on the test's event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkcore.http.http_handler import HttpHandler
from huaweicloudsdkiotda.v5 import IoTDAClient
from tencentcloud.common.credential import Credential
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.iotcloud.v20180614.iotcloud_client import IotcloudClient
from tencentcloud.wedata.v20210820.wedata_client import WedataClient

from agent.sim.emulator.service import Emulator

T = TypeVar("T")
HUAWEI_AK = "SIMULATORACCESSKEY01"
HUAWEI_SK = "simulator-secret-key-0123456789abcdef"
TENCENT_ID = "AKIDsimulator0000000000000000000000"
TENCENT_KEY = "simulator-secret-key-0000000000000"
PROJECT = "sim-project"


async def run(call: Callable[..., T], *args: Any) -> T:
    """One SDK call on a worker thread."""
    return await asyncio.to_thread(call, *args)


def iotda_client(
    emu: Emulator,
    *,
    ak: str = HUAWEI_AK,
    sk: str = HUAWEI_SK,
    project_id: str = PROJECT,
    token: str | None = None,
) -> Any:
    """``IoTDAClient`` with the emulator's URL as its endpoint, AK/SK and the project id.

    The project id must be given: without it the SDK asks the cloud's IAM for one. ``token``
    adds ``X-Auth-Token`` through the SDK's request hook (the SDK has no token credential).
    """
    config = HttpConfig.get_default_config()
    config.retry_times = 0
    config.timeout = (5, 30)
    builder = (
        IoTDAClient.new_builder()
        .with_credentials(BasicCredentials(ak, sk, project_id))
        .with_endpoints([emu.url])
        .with_http_config(config)
    )
    if token is not None:

        def add_token(request: Any, **_: Any) -> None:
            request.header_params["X-Auth-Token"] = token

        builder = builder.with_http_handler(HttpHandler().add_request_handler(add_token))
    return builder.build()


def _profile(emu: Emulator, method: str, sign_method: str) -> ClientProfile:
    host_port = emu.url.removeprefix("http://")
    http = HttpProfile(protocol="http", endpoint=host_port, reqMethod=method, reqTimeout=30)
    return ClientProfile(signMethod=sign_method, httpProfile=http)


def iotcloud_client(
    emu: Emulator,
    *,
    secret_id: str = TENCENT_ID,
    secret_key: str = TENCENT_KEY,
    method: str = "POST",
    sign_method: str = "TC3-HMAC-SHA256",
) -> IotcloudClient:
    """``IotcloudClient`` (IoT Hub, 2018-06-14) with the emulator as its endpoint, over http."""
    return IotcloudClient(
        Credential(secret_id, secret_key), "ap-guangzhou", _profile(emu, method, sign_method)
    )


def wedata_client(
    emu: Emulator,
    *,
    secret_id: str = TENCENT_ID,
    secret_key: str = TENCENT_KEY,
    method: str = "POST",
    sign_method: str = "TC3-HMAC-SHA256",
) -> WedataClient:
    """``WedataClient`` (2021-08-20) with the emulator as its endpoint, over http."""
    return WedataClient(
        Credential(secret_id, secret_key), "ap-guangzhou", _profile(emu, method, sign_method)
    )
