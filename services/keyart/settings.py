"""One typed settings object, read from `KEYART_*` environment variables at start-up.

Settings are built once (`KeyartSettings()`) by an entry point and passed down;
nothing reads the environment at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PolicyName = Literal["epsilon_greedy", "softmax", "thompson", "greedy", "uniform"]


class KeyartSettings(BaseSettings):
    """Everything an operator can set; defaults give the embedded platform."""

    model_config = SettingsConfigDict(env_prefix="KEYART_", extra="forbid", populate_by_name=True)

    data_dir: Path = Field(Path("var"), description="Root of built data: world, feast, models, log.")
    feature_repo_dir: Path = Field(
        Path("features"), description="Feast repository (feature_store.yaml and definitions)."
    )
    grpc_port: int = Field(9000, description="Port of the gRPC ingress (Ray Serve or bare).")
    metrics_port: int = Field(9100, description="Port of the Prometheus metrics endpoint.")
    http_port: int = Field(8000, description="Port of Ray Serve's HTTP ingress (bound by Serve, unused by Keyart).")
    listen_host: str = Field(
        "127.0.0.1", description="Address the gRPC ingress binds (`keyart up`, `keyart serve-bare`): loopback by "
        "default; 0.0.0.0 to serve other machines (the RayService's Serve config binds 0.0.0.0 in its pod)."
    )
    tls_cert_file: Path | None = Field(
        None, description="PEM certificate chain of the gRPC ingress; with tls_key_file, clients must use TLS."
    )
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file.")
    tls_client_ca_file: Path | None = Field(
        None, description="PEM CA bundle; when set (with TLS), every client must present a certificate it "
        "signed (mutual TLS)."
    )

    # Decision policy.
    policy: PolicyName = Field(
        "epsilon_greedy",
        description=(
            "Exploration policy: epsilon_greedy (the model's best image, with epsilon spread uniformly), "
            "softmax (on the predicted quality-play probability), thompson (the best image, with the "
            "epsilon share explored half by bootstrap-ensemble Thompson sampling, half uniformly), "
            "greedy (the best image only: no exploration, for evaluation), "
            "uniform (every image of the title's pool equally likely, propensity 1/k). While no model is "
            "loaded (a newly imported catalog) every member gets uniform, whatever this says."
        ),
    )
    epsilon: float = Field(0.05, ge=0.0, le=1.0, description="Epsilon-greedy exploration share.")
    softmax_temperature: float = Field(
        0.02, gt=0.0, description="Softmax temperature on predicted quality-play probability."
    )
    uniform_explore_share: float = Field(
        0.02, ge=0.0, le=1.0, description="Share of members who get uniform-random images (replay data)."
    )
    stability_window_hours: float = Field(
        24.0, gt=0.0, description="A member sees the same image for a title within this window."
    )
    stability_salt: str = Field("keyart-v1", description="Salt of the stable-choice hash.")
    compiled_trees: bool = Field(
        True, description="Score with the model's forests compiled by lleaves (cached per model and CPU); "
        "a forest that fails to compile or to match LightGBM stays on LightGBM.")
    diversity_strength: float = Field(
        0.0, ge=0.0, description="Penalty on images similar to those already chosen on the page."
    )
    new_image_min_share: float = Field(
        0.1, ge=0.0, le=1.0, description="Choice probability reserved for images short of impressions."
    )
    new_image_impressions: int = Field(
        1000, ge=0, description="Impressions after which an image no longer gets the cold-start share."
    )
    request_budget_ms: float = Field(
        150.0, gt=0.0, description="Server-side time budget per request before falling back."
    )
    feature_timeout_ms: float = Field(
        50.0, gt=0.0, description="Time allowed for the member feature lookup before fallback."
    )
    gc_young_threshold: int = Field(
        20_000, ge=0, description="A serving process freezes what it loaded at start out of the garbage "
        "collector's reach and collects its youngest generation after this many net new objects (Python's "
        "default is 700: a page's own short-lived objects then trigger several collections, and a full "
        "collection over the ~250k startup objects stalls a page for 100+ ms). 0 keeps Python's defaults."
    )
    auth_tokens_file: Path | None = Field(
        None, description="YAML/JSON file of token SHA-256s and the methods each may call; when set, "
        "RankArtwork and ReportOutcome need `authorization: Bearer <token>` (keyart.adapters.grpc.auth)."
    )
    drain_s: float = Field(
        5.0, ge=0.0, le=300.0, description="On SIGTERM or Ctrl-C, `keyart up` reports NOT_SERVING this long "
        "while still answering, so load balancers move away, then finishes in-flight calls and stops."
    )

    # Decision log.
    log_backend: Literal["auto", "sqlite", "cassandra"] = Field(
        "auto", description="auto: Cassandra when contact points are set, else local SQLite."
    )
    cassandra_contact_points: str = Field(
        "",
        description="Comma-separated Cassandra hosts (KEYART_CASSANDRA_CONTACT_POINTS or KEYART_CASSANDRA_HOSTS).",
        validation_alias=AliasChoices(
            "cassandra_contact_points", "keyart_cassandra_contact_points", "keyart_cassandra_hosts"
        ),
    )
    cassandra_port: int = Field(9042, description="Cassandra native protocol port.")
    cassandra_keyspace: str = Field("keyart", description="Keyspace of the decision log.")
    cassandra_local_dc: str = Field("", description="Local datacenter for DC-aware routing.")
    cassandra_username: str = Field("", description="Cassandra user (empty: no auth).")
    cassandra_password: str = Field("", description="Cassandra password.")
    cassandra_consistency: str = Field("LOCAL_QUORUM", description="Write consistency level.")
    cassandra_tls_ca_file: str = Field("", description="CA bundle enabling TLS when set.")
    log_queue_size: int = Field(100_000, gt=0, description="Records held in memory before spooling.")
    # 2,000 (50 pages of 40) rather than 500: a quarter of the commits; measured side by side
    # over gRPC (2 bare servers each, 10 alternated rounds): 0.09 ms less CPU a page, 8 of 10.
    log_batch_size: int = Field(2_000, gt=0, description="Records per write batch.")
    log_spool_max_bytes: int = Field(
        1_000_000_000, gt=0, description="Disk budget of the local spool used when the store is down."
    )
    log_sqlite_file: Path | None = Field(
        None, description="The embedded SQLite decision log (default: log/decisions.sqlite in the data dir)."
    )
    log_spool_dir: Path | None = Field(
        None, description="Root of the decision-log spool and write-ahead journal (default: log/spool in the "
        "data dir). Put it on another disk than the SQLite log, so a full store disk keeps the spool."
    )
    log_member_key: SecretStr = Field(
        SecretStr(""), description="When set (16+ characters), the decision log stores a keyed pseudonym "
        "(HMAC-SHA256) of each member id instead of the id (keyart.core.pseudonym); keep it secret and stable."
    )
    log_journal: bool = Field(
        True, description="Journal every acknowledged record before the reply, so a killed replica loses none."
    )
    log_writer_process: bool = Field(
        True, description="Run the decision-log writer in a child process that reads the journal (needs "
        "log_journal); off: a thread of the serving process (keyart.adapters.decision_log.process)."
    )

    @model_validator(mode="after")
    def _tls_files_together(self) -> KeyartSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file are set together (KEYART_TLS_CERT_FILE, "
                             "KEYART_TLS_KEY_FILE)")
        if 0 < len(self.log_member_key.get_secret_value()) < 16:
            raise ValueError("log_member_key (KEYART_LOG_MEMBER_KEY) needs at least 16 characters")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_client_ca_file (mutual TLS) needs tls_cert_file and tls_key_file")
        return self

    @property
    def world_dir(self) -> Path:
        return self.data_dir / "world"

    @property
    def drain_flag(self) -> Path:
        """Present while `keyart up` drains: every replica's health check says NOT_SERVING."""
        return self.data_dir / "DRAINING"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def feature_spaces_dir(self) -> Path:
        """The feature spaces serving has logged decisions under (keyart.adapters.catalog.spaces)."""
        return self.data_dir / "feature_spaces"

    @property
    def experiments_dir(self) -> Path:
        """Online experiments: one JSON file each, and ACTIVE naming the running one."""
        return self.data_dir / "experiments"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "log"

    @property
    def log_sqlite_path(self) -> Path:
        """The embedded SQLite decision log's file (``log_sqlite_file``)."""
        return self.log_sqlite_file if self.log_sqlite_file is not None else self.log_dir / "decisions.sqlite"

    @property
    def spool_root(self) -> Path:
        """Where every writer's spool and journal directory lives (``log_spool_dir``)."""
        return self.log_spool_dir if self.log_spool_dir is not None else self.log_dir / "spool"
