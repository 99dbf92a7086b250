"""Submits a scenario's tasks to the task service in each API's own request shape."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from agent.sim.emulator.auth import sign_headers
from agent.sim.fleet.spec import TaskSpec


@dataclass(frozen=True, slots=True)
class Submitted:
    """What the API answered: the task id, or the error it gave."""

    task_id: str | None
    error: str | None
    response: Any


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the client presents when the service checks credentials."""

    huawei_token: str | None = None
    tencent_secret_id: str | None = None
    tencent_secret_key: str | None = None
    oceanconnect_app_id: str | None = None
    oceanconnect_secret: str | None = None


class TaskClient:
    """An HTTP client for the emulated APIs."""

    def __init__(self, base_url: str, credentials: Credentials | None = None) -> None:
        self.base = base_url.rstrip("/")
        self.credentials = credentials or Credentials()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        self._oceanconnect_token: str | None = None

    async def close(self) -> None:
        """Release the connection pool."""
        await self._session.close()

    async def submit(self, task: TaskSpec) -> Submitted:
        """Create one task (no answer, or one that is not the API's JSON, becomes an error)."""
        submit = {
            "huawei-iotda": self._huawei,
            "tencent-iothub": self._tencent,
            "tencent-iothub-v2": self._tencent_v2,
            "oceanconnect": self._oceanconnect,
            "tencent-wedata": self._wedata,
        }[task.api]
        try:
            return await submit(task)
        except (aiohttp.ContentTypeError, KeyError, ValueError) as exc:
            return Submitted(None, f"unexpected answer: {exc!r}", None)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return Submitted(None, f"the API did not answer: {exc!r}", None)

    async def _huawei(self, task: TaskSpec) -> Submitted:
        headers = {}
        if self.credentials.huawei_token:
            headers["X-Auth-Token"] = self.credentials.huawei_token
        url = f"{self.base}/v5/iot/{task.project_id}/batchtasks"
        async with self._session.post(url, json=task.body, headers=headers) as response:
            body = await response.json()
        if response.status == 201:
            return Submitted(body["task_id"], None, body)
        return Submitted(None, f"{body.get('error_code')}: {body.get('error_msg')}", body)

    async def api3(self, action: str, version: str, service: str, body: dict[str, Any]) -> Any:
        """One API 3.0 call (signed when credentials are configured); the ``Response`` object."""
        data = json.dumps(body).encode()
        host = urlsplit(self.base).netloc
        creds = self.credentials
        if creds.tencent_secret_id and creds.tencent_secret_key:
            headers = sign_headers(
                secret_id=creds.tencent_secret_id,
                secret_key=creds.tencent_secret_key,
                service=service,
                action=action,
                version=version,
                host=host,
                body=data,
                timestamp=int(time.time()),
            )
        else:
            headers = {
                "Content-Type": "application/json; charset=utf-8",
                "X-TC-Action": action,
                "X-TC-Version": version,
            }
        async with self._session.post(self.base + "/", data=data, headers=headers) as response:
            return (await response.json())["Response"]

    async def _tencent(self, task: TaskSpec) -> Submitted:
        answer = await self.api3("CreateTask", "2018-06-14", "iotcloud", task.body)
        if "Error" in answer:
            return Submitted(
                None, f"{answer['Error']['Code']}: {answer['Error']['Message']}", answer
            )
        return Submitted(answer["TaskId"], None, answer)

    async def _wedata(self, task: TaskSpec) -> Submitted:
        answer = await self.api3("CreateTask", "2021-08-20", "wedata", task.body)
        if "Error" in answer:
            return Submitted(
                None, f"{answer['Error']['Code']}: {answer['Error']['Message']}", answer
            )
        return Submitted(answer["Data"]["Id"], None, answer)

    async def _tencent_v2(self, task: TaskSpec) -> Submitted:
        form = {
            k: json.dumps(val) if isinstance(val, dict | list) else str(val)
            for k, val in task.form.items()
        }
        form.setdefault("Action", "CreateTask")
        async with self._session.post(f"{self.base}/v2/index.php", data=form) as response:
            body = await response.json()
        if body.get("code") == 0:
            return Submitted(body["taskId"], None, body)
        return Submitted(None, f"{body.get('codeDesc')}: {body.get('message')}", body)

    async def _oceanconnect(self, task: TaskSpec) -> Submitted:
        headers = {"app_key": self.credentials.oceanconnect_app_id or "sim-app"}
        if self.credentials.oceanconnect_app_id and self.credentials.oceanconnect_secret:
            if self._oceanconnect_token is None:
                form = {
                    "appId": self.credentials.oceanconnect_app_id,
                    "secret": self.credentials.oceanconnect_secret,
                }
                async with self._session.post(
                    f"{self.base}/iocm/app/sec/v1.1.0/login", data=form
                ) as response:
                    self._oceanconnect_token = (await response.json())["accessToken"]
            headers["Authorization"] = f"Bearer {self._oceanconnect_token}"
        url = f"{self.base}/iocm/app/batchtask/v1.1.0/tasks"
        async with self._session.post(url, json=task.body, headers=headers) as response:
            body = await response.json()
        if "taskID" in body:
            return Submitted(body["taskID"], None, body)
        return Submitted(None, f"{body.get('error_code')}: {body.get('error_desc')}", body)

    async def overview(self) -> list[dict[str, Any]]:
        """Every task's status and progress (``GET /sim/v1/tasks``)."""
        async with self._session.get(f"{self.base}/sim/v1/tasks") as response:
            return list((await response.json())["tasks"])

    async def register_fleet(self, document: dict[str, Any]) -> dict[str, Any]:
        """``POST /sim/v1/fleet``."""
        async with self._session.post(f"{self.base}/sim/v1/fleet", json=document) as response:
            body = await response.json()
            if response.status != 201:
                msg = f"fleet registration refused: {body}"
                raise RuntimeError(msg)
            return dict(body)
