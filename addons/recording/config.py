"""The policy's ``[recording]`` section.

[recording]
store = "recordings"                  # a directory (relative to the policy file) or s3://bucket/prefix
s3_endpoint_url = "https://..."       # S3 only; default: AWS_ENDPOINT_URL_S3 or AWS
object_lock_mode = "COMPLIANCE"       # S3 only: COMPLIANCE or GOVERNANCE (needs retention_days)
retention_days = 365                  # Object Lock retention; also the floor for `gatehouse prune`
kms_key_id = "arn:aws:kms:..."        # S3 only: SSE-KMS
signing_key_file = "/etc/gatehouse/recording.pem"   # or signing_key_env; default: generated in state_dir
signing_key_env = "GATEHOUSE_RECORDING_KEY"
public_keys = ["keys/recording.pub"]  # trusted keys for `gatehouse verify --policy`
on_record_failure = "refuse"          # or "continue"
spool_dir = "/var/spool/gatehouse"    # default: <state_dir>/spool
checkpoint_interval_seconds = 60
upload_concurrency = 16               # S3 puts in flight at once
drain_seconds = 60                    # a graceful stop (SIGTERM) uploads the spool this long
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from gatehouse.common.urls import http_url_problem
from gatehouse.policy.reader import Section
from gatehouse.recording.stores import LOCK_MODES
from gatehouse.recording.uploader import UPLOAD_CONCURRENCY

DEFAULT_STORE = "recordings"
FAILURE_MODES = ("refuse", "continue")


@dataclass(frozen=True)
class RecordingPolicy:
    # An absolute directory path, or ``s3://bucket/prefix``.
    store: str = DEFAULT_STORE
    s3_endpoint_url: str | None = None
    object_lock_mode: str | None = None
    retention_days: int | None = None
    kms_key_id: str | None = None
    signing_key_file: Path | None = None
    signing_key_env: str | None = None
    public_keys: tuple[Path, ...] = ()
    on_record_failure: str = "refuse"
    spool_dir: Path | None = None  # None: <state_dir>/spool
    checkpoint_interval_seconds: int = 60
    upload_concurrency: int = UPLOAD_CONCURRENCY
    drain_seconds: int = 60

    @property
    def is_s3(self) -> bool:
        return self.store.startswith("s3://")

    @property
    def refuse_on_failure(self) -> bool:
        return self.on_record_failure == "refuse"

    def spool_path(self, state_dir: Path) -> Path:
        return self.spool_dir if self.spool_dir is not None else Path(state_dir) / "spool"


def parse_recording(sec: Section | None, *, base_dir: Path | None = None) -> RecordingPolicy:
    """Validate ``[recording]``. Without the section, the defaults apply; `base_dir` (the
    policy file's folder) anchors the default store then, else the current directory."""
    if sec is None:
        base = base_dir if base_dir is not None else Path.cwd()
        return RecordingPolicy(store=str(base / DEFAULT_STORE))

    raw_store = sec.str("store", DEFAULT_STORE)
    if raw_store.startswith("s3://"):
        parts = urlsplit(raw_store)
        if not parts.netloc:
            raise sec.error("store", f"an S3 store is s3://bucket or s3://bucket/prefix; got {raw_store!r}")
        if parts.query or parts.fragment:
            raise sec.error("store", "must not have a query or fragment")
        store = raw_store.rstrip("/")
    elif "://" in raw_store:
        raise sec.error("store", f"must be a directory or s3://bucket/prefix; got {raw_store!r}")
    else:
        store = str(sec.path_value("store", DEFAULT_STORE))
    is_s3 = store.startswith("s3://")

    endpoint = sec.str("s3_endpoint_url", None)
    if endpoint is not None and (problem := http_url_problem(endpoint)) is not None:
        raise sec.error("s3_endpoint_url", problem)
    mode = sec.str("object_lock_mode", None, choices=LOCK_MODES)
    retention = sec.int("retention_days", None, min=1, max=36500)
    kms = sec.str("kms_key_id", None)
    for key, value in (("s3_endpoint_url", endpoint), ("object_lock_mode", mode), ("kms_key_id", kms)):
        if value is not None and not is_s3:
            raise sec.error(key, 'applies to an S3 store only (store = "s3://bucket/prefix")')
    if mode is not None and retention is None:
        raise sec.error("object_lock_mode", "needs retention_days (how long each object stays locked)")

    key_file = sec.path_value("signing_key_file", None)
    key_env = sec.str("signing_key_env", None)
    if key_file is not None and key_env is not None:
        raise sec.error("signing_key_env", "set either signing_key_file or signing_key_env, not both")
    public_keys = tuple(
        p if p.is_absolute() else sec.base_dir / p
        for p in (Path(s).expanduser() for s in sec.str_list("public_keys", ()))
    )
    policy = RecordingPolicy(
        store=store,
        s3_endpoint_url=endpoint,
        object_lock_mode=mode,
        retention_days=retention,
        kms_key_id=kms,
        signing_key_file=key_file,
        signing_key_env=key_env,
        public_keys=public_keys,
        on_record_failure=sec.str("on_record_failure", "refuse", choices=FAILURE_MODES),
        spool_dir=sec.path_value("spool_dir", None),
        checkpoint_interval_seconds=sec.int("checkpoint_interval_seconds", 60, min=1, max=86400),
        upload_concurrency=sec.int("upload_concurrency", UPLOAD_CONCURRENCY, min=1, max=64),
        drain_seconds=sec.int("drain_seconds", 60, min=0, max=3600),
    )
    sec.done()
    return policy
