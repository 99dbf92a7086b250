"""The cloud-neutral model: what profiles decode the platform's messages into, and what they encode.

Executors and the journal only ever see these types; every platform difference stays inside its
profile. Models are frozen and reject unknown fields; bytes travel as base64 in their JSON form
(the journal stores subtasks as JSON, and message payloads need not be text).

Long: the whole neutral vocabulary stays in one file, the one every codec and executor reads.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Model(BaseModel):
    """Base for internal models."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        ser_json_bytes="base64",
        val_json_bytes="base64",
        defer_build=True,
    )


class ResultCode:
    """Result codes the agent reports for commands (0 is success, as on every platform)."""

    SUCCESS = 0
    HANDLER_FAILED = 1  # the handler ran and reported failure (or exited non-zero)
    TIMEOUT = 2  # the handler did not finish by its deadline and was killed
    UNKNOWN_COMMAND = 3  # no handler is configured for this service/command
    BAD_REQUEST = 4  # the request was malformed, oversize or of the wrong types
    BAD_HANDLER_OUTPUT = 5  # the handler's stdout was not a JSON object
    INTERRUPTED = 6  # the agent stopped (or died) while the handler ran; it is not re-run
    UNSUPPORTED = 7  # the request kind is understood but this agent does not carry it out
    HANDLER_UNAVAILABLE = 8  # the handler could not be started


# ---------------------------------------------------------------------------------------------
# Subtasks: a device's share of a batch task, as received.


class CommandRequest(Model):
    """Run a command on a device and answer with a result."""

    kind: Literal["command"] = "command"
    key: str
    device_id: str
    correlation: str
    service_id: str | None = None
    command_name: str
    paras: dict[str, Any] = {}


class MessageDelivery(Model):
    """Hand a down-link message to the local sink; the platform expects no answer."""

    kind: Literal["message"] = "message"
    key: str
    device_id: str
    topic: str
    message_id: str | None = None
    name: str | None = None
    content: bytes
    format: Literal["standard", "raw"]
    # "id": the key comes from the platform's message id, so any redelivery is recognised.
    # "content": the message had no id; the key is a hash of topic and content, and only a
    # redelivery the broker marks as such (DUP) may be treated as a repeat of an earlier one.
    dedupe: Literal["id", "content"] = "id"


class UnsupportedRequest(Model):
    """A request the profile understands but this agent does not carry out: answered as such."""

    kind: Literal["unsupported"] = "unsupported"
    key: str
    device_id: str
    correlation: str
    request_kind: str


class DesiredState(Model):
    """Bring the device to a desired state, section by section, and report what was applied.

    A section is what the platform groups properties by (a Huawei ``service_id``, a top-level
    key of a Tencent shadow); its value is what the platform wants applied (any JSON value; an
    object holds only the properties that differ from what was last reported).
    """

    kind: Literal["desired_state"] = "desired_state"
    key: str
    device_id: str
    # "push": the platform sent it (property set, shadow delta); "sync": the agent's own read
    # of the platform's document after a (re)connect.
    source: Literal["push", "sync"]
    # The platform waits for an answer under this id (a Huawei property-set request).
    correlation: str | None = None
    # The document version, on platforms that number them (Tencent shadow).
    version: int | None = None
    sections: dict[str, Any]
    # What the platform holds as reported, when it said so (a sync): the baseline for deciding
    # what needs reporting again.
    reported: dict[str, Any] | None = None


class DesiredStateRefresh(Model):
    """The platform refused a state report (a version conflict): read its document again."""

    kind: Literal["desired_refresh"] = "desired_refresh"
    key: str
    device_id: str
    reason: str


class StateQuery(Model):
    """The platform asks for the device's current state (one section, or all of them)."""

    kind: Literal["state_query"] = "state_query"
    key: str
    device_id: str
    correlation: str
    section: str | None = None


# ---------------------------------------------------------------------------------------------
# Upgrades and child devices (gateway mode).

UpgradeTarget = Literal["firmware", "software"]


class VersionQuery(Model):
    """The platform asks which versions a device (or a gateway's child) runs."""

    kind: Literal["version_query"] = "version_query"
    key: str
    device_id: str
    task_id: str | None = None
    sub_device_count: int | None = None
    # The query carries no id of its own: a repeat is answered again with what is true now.
    dedupe: Literal["id", "content"] = "content"


class UpgradeRequest(Model):
    """Download, verify and install a package on a device or a child, reporting progress."""

    kind: Literal["upgrade"] = "upgrade"
    key: str
    device_id: str
    target: UpgradeTarget = "firmware"
    version: str
    url: str
    file_size: int | None = None
    file_name: str | None = None
    access_token: str | None = None  # secret: sent as a bearer token, never logged
    sha256: str | None = None
    md5: str | None = None
    custom_info: str | None = None
    task_id: str | None = None
    sub_device_count: int | None = None
    task_ext_info: dict[str, Any] | None = None
    # "id": the key comes from a platform id. "work": the offer had no id, so the key names
    # the work (device, version, package, task fields). A repeat while it runs or after it
    # succeeded is the same work; after it failed, a fresh push (not a broker redelivery) is
    # the platform asking again (a retried subtask or a new task) and runs again.
    dedupe: Literal["id", "work"] = "id"


class InvalidUpgrade(Model):
    """An upgrade notification for a known device whose parameters cannot be accepted."""

    kind: Literal["invalid_upgrade"] = "invalid_upgrade"
    key: str
    device_id: str
    target: UpgradeTarget = "firmware"
    reason: str


class ChildInfo(Model):
    """A child device as the platform (or the configuration, or a child adapter) describes it."""

    device_id: str
    node_id: str | None = None
    product_id: str | None = None
    name: str | None = None
    fw_version: str | None = None
    sw_version: str | None = None
    # The adapter type, when the gateway knows it (a child its adapter discovered).
    type: str | None = None


class ChildrenChanged(Model):
    """Children were added to or removed from a gateway (``full``: the list is complete)."""

    kind: Literal["children_changed"] = "children_changed"
    key: str
    device_id: str
    added: list[ChildInfo] = []
    removed: list[str] = []
    version: int | None = None
    full: bool = False
    # Children the platform refused to add or delete at the gateway's request: id -> reason.
    refused: dict[str, str] = {}
    dedupe: Literal["id", "content"] = "content"


class ChildPropertiesSet(Model):
    """A property-set request addressed to a gateway's child (``object_device_id``)."""

    kind: Literal["child_properties_set"] = "child_properties_set"
    key: str
    device_id: str
    correlation: str
    services: list[dict[str, Any]]


Subtask = Annotated[
    CommandRequest
    | MessageDelivery
    | UnsupportedRequest
    | DesiredState
    | DesiredStateRefresh
    | StateQuery
    | VersionQuery
    | UpgradeRequest
    | InvalidUpgrade
    | ChildrenChanged
    | ChildPropertiesSet,
    Field(discriminator="kind"),
]


class Ignored(Model):
    """A well-formed message that needs no work (an event type this agent has no use for)."""

    kind: Literal["ignored"] = "ignored"
    reason: str


class Batch(Model):
    """Several subtasks carried by one publication (an event message with several services)."""

    kind: Literal["batch"] = "batch"
    items: list[Subtask]


Inbound = Annotated[
    CommandRequest
    | MessageDelivery
    | UnsupportedRequest
    | DesiredState
    | DesiredStateRefresh
    | StateQuery
    | VersionQuery
    | UpgradeRequest
    | InvalidUpgrade
    | ChildrenChanged
    | ChildPropertiesSet
    | Ignored
    | Batch,
    Field(discriminator="kind"),
]


# ---------------------------------------------------------------------------------------------
# Results and what goes back to the platform.


class CommandResult(Model):
    """The outcome of a command, as the platform will see it."""

    result_code: int
    response_name: str | None = None
    paras: dict[str, Any] = {}

    @property
    def ok(self) -> bool:
        """Whether the command succeeded."""
        return self.result_code == ResultCode.SUCCESS

    @classmethod
    def failure(cls, code: int, error: str, **detail: Any) -> CommandResult:
        """A failure result carrying a machine-readable error name and details."""
        return cls(result_code=code, response_name="ERROR", paras={"error": error, **detail})


class CommandResponse(Model):
    """Answer to a :class:`CommandRequest` (or to a request that could not be decoded)."""

    kind: Literal["command_response"] = "command_response"
    device_id: str
    correlation: str
    result: CommandResult


class RequestRejected(Model):
    """Answer to an :class:`UnsupportedRequest` or a malformed request that has a reply channel."""

    kind: Literal["request_rejected"] = "request_rejected"
    device_id: str
    correlation: str
    request_kind: str
    result_code: int
    description: str


class UpgradeStatus:
    """Cloud-neutral upgrade outcomes; each profile maps them onto its own result codes."""

    IN_PROGRESS = "in_progress"
    SUCCESS = "success"
    DEVICE_BUSY = "device_busy"  # another upgrade of this device is running
    ALREADY_LATEST = "already_latest"
    LOW_STORAGE = "low_storage"  # not enough space for the package
    DOWNLOAD_FAILED = "download_failed"  # retries or the time/byte budget exhausted
    NOT_FOUND = "not_found"  # the server says the package does not exist (404/410)
    LINK_EXPIRED = "link_expired"  # the server refused the URL or token (401/403)
    VERIFY_FAILED = "verify_failed"  # hash, size or signature mismatch
    UNSUPPORTED = "unsupported"  # the offer itself is unacceptable (URL, name, size, fields)
    INSTALL_FAILED = "install_failed"
    ROLLED_BACK = "rolled_back"  # the new version did not confirm; the old one is back
    NO_EVENT = "no_event"  # a gateway task's child never received its upgrade event
    INTERNAL = "internal"


UpgradePhase = Literal[
    "checking",
    "downloading",
    "verifying",
    "installing",
    "activating",
    "rebooting",
    "confirming",
    "done",
    "failed",
]


class UpgradeProgress(Model):
    """Progress or the final result of an upgrade, for a device or a child."""

    kind: Literal["upgrade_progress"] = "upgrade_progress"
    device_id: str
    phase: UpgradePhase
    status: str = UpgradeStatus.IN_PROGRESS
    progress: int = Field(default=0, ge=0, le=100)  # of the whole upgrade
    phase_progress: int = Field(default=0, ge=0, le=100)  # of the current phase
    version: str  # the version the device runs now (the new one once it succeeded)
    target_version: str | None = None
    description: str = ""


class VersionReport(Model):
    """The versions a device (or child) runs, as answer to a query or after a connect."""

    kind: Literal["version_report"] = "version_report"
    device_id: str
    fw_version: str | None = None
    sw_version: str | None = None


class ChildrenSyncRequest(Model):
    """A gateway asks for the changes to its children since ``version`` (after a reconnect)."""

    kind: Literal["children_sync_request"] = "children_sync_request"
    device_id: str
    version: int | None = None


class ChildStatus(Model):
    """Whether one child is online."""

    device_id: str
    online: bool


class ChildStatusReport(Model):
    """A gateway tells the platform which of its children are online or offline."""

    kind: Literal["child_status_report"] = "child_status_report"
    device_id: str
    report_id: str  # unique per report, for platforms that echo an id back (Huawei event_id)
    statuses: list[ChildStatus]


class ChildrenAddRequest(Model):
    """A gateway asks the platform to add children its adapter discovered."""

    kind: Literal["children_add_request"] = "children_add_request"
    device_id: str
    report_id: str
    children: list[ChildInfo]


class ChildrenDeleteRequest(Model):
    """A gateway asks the platform to delete children its adapter lost."""

    kind: Literal["children_delete_request"] = "children_delete_request"
    device_id: str
    report_id: str
    children: list[str]


class ChildPropertiesReport(Model):
    """Children's current properties, reported by their gateway: child id -> services."""

    kind: Literal["child_properties_report"] = "child_properties_report"
    device_id: str
    children: dict[str, list[dict[str, Any]]]


class PropertiesSetAnswer(Model):
    """Answer to a property-set request (for a child, routed through its adapter)."""

    kind: Literal["properties_set_answer"] = "properties_set_answer"
    device_id: str
    correlation: str
    result_code: int
    description: str


class DesiredStateResult(Model):
    """What became of a :class:`DesiredState`: the answer (if awaited) and the state report.

    ``status`` is "applied" only when every section was applied as desired; "partial" when some
    were (or some only in part); "failed" when none was; "rejected" when the document itself was
    unacceptable. ``reported`` holds the sections whose applied value the platform does not know
    yet; ``cleared`` the sections fully applied, whose desired value may now be dropped.
    """

    kind: Literal["desired_state_result"] = "desired_state_result"
    device_id: str
    report_id: str  # unique per result, for platforms that echo an id back (Tencent clientToken)
    correlation: str | None = None
    version: int | None = None
    status: Literal["applied", "partial", "failed", "rejected"]
    description: str
    reported: dict[str, Any] = {}
    cleared: list[str] = []
    failed: dict[str, str] = {}

    @property
    def ok(self) -> bool:
        """Whether every section was applied."""
        return self.status == "applied"


class DesiredStateQuery(Model):
    """Ask the platform for the device's document (shadow get) to catch up on desired state."""

    kind: Literal["desired_state_query"] = "desired_state_query"
    device_id: str
    correlation: str


class StateReport(Model):
    """Answer to a :class:`StateQuery`: the sections' current (applied) values."""

    kind: Literal["state_report"] = "state_report"
    device_id: str
    correlation: str
    sections: dict[str, Any]


Outbound = Annotated[
    CommandResponse
    | RequestRejected
    | DesiredStateResult
    | DesiredStateQuery
    | StateReport
    | UpgradeProgress
    | VersionReport
    | ChildrenSyncRequest
    | ChildStatusReport
    | ChildrenAddRequest
    | ChildrenDeleteRequest
    | ChildPropertiesReport
    | PropertiesSetAnswer,
    Field(discriminator="kind"),
]


class Publish(Model):
    """One MQTT publication, already encoded by a profile."""

    topic: str
    payload: bytes
    qos: Literal[0, 1] = 1


class Subscription(Model):
    """One topic filter to subscribe to after every connect."""

    topic_filter: str
    qos: Literal[0, 1] = 1


class ConnectIdentity(Model):
    """What the device presents in CONNECT; the password is a secret and never logged."""

    client_id: str
    username: str | None
    password: str | None
