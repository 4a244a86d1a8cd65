"""Apache Cassandra 5.0 as one local node, assembled from Maven Central.

``packaging/cassandra/pom.xml`` copies cassandra-all and its runtime jars into
``.state/services/cassandra/lib``; this module writes a minimal cassandra.yaml
and logback.xml, and runs ``CassandraDaemon`` on JDK 17 with the flags of
Cassandra's own ``conf/jvm17-server.options``, a small heap, and the
system properties that skip the waits a multi-node cluster needs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

from ._errors import ServicesError
from ._layout import Layout
from ._server import ManagedServer

logger = logging.getLogger(__name__)

_NATIVE_PORT = 9042
_STORAGE_PORT = 7000
_MAIN_CLASS = "org.apache.cassandra.service.CassandraDaemon"
# Cassandra 5.0 runs only on Java 11 or 17 (bin/cassandra.in.sh refuses others).
_SUPPORTED_JAVA_MAJORS = ("17", "11")
_JDK_CANDIDATES = ("/usr/lib/jvm/java-17-openjdk-amd64", "/usr/lib/jvm/java-17-openjdk-arm64")
# Enough for tests and the demo; the machine has 24 GiB and two cores to share.
_HEAP_MIN = "512m"
_HEAP_MAX = "1g"
_PROBE_TIMEOUT_S = 3.0
# Maven's first run downloads ~70 MB of jars.
_MAVEN_TIMEOUT_S = 900.0

# From conf/jvm17-server.options of Cassandra 5.0 (the superset of its revisions).
_JVM17_EXPORTS = (
    "java.base/jdk.internal.misc",
    "java.management.rmi/com.sun.jmx.remote.internal.rmi",
    "java.rmi/sun.rmi.registry",
    "java.rmi/sun.rmi.server",
    "java.sql/java.sql",
    "java.base/java.lang.ref",
    "jdk.unsupported/sun.misc",
    "jdk.compiler/com.sun.tools.javac.file",
    "jdk.attach/sun.tools.attach",
)
_JVM17_OPENS = (
    *(
        f"java.base/{package}"
        for package in (
            "java.lang.module",
            "jdk.internal.loader",
            "jdk.internal.ref",
            "jdk.internal.reflect",
            "jdk.internal.math",
            "jdk.internal.module",
            "jdk.internal.util.jar",
            "sun.nio.ch",
            "java.io",
            "java.lang.reflect",
            "java.lang",
            "java.util",
            "java.nio",
        )
    ),
    "jdk.management/com.sun.management.internal",
    "jdk.compiler/com.sun.tools.javac",
)
_JVM17_PROPERTIES = (
    "-Djdk.attach.allowAttachSelf=true",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dio.netty.allocator.useCacheForAllThreads=true",
    "-Dio.netty.allocator.maxOrder=11",
)
_GC_OPTIONS = ("-XX:+UseG1GC", "-XX:+ParallelRefProcEnabled", "-XX:MaxGCPauseMillis=300")
# C1 only: measured on the 2-core machine under load, a start costs 11 s of CPU
# and 20-25 s instead of 19 s and 34-42 s with C2 also compiling. Peak
# throughput is lower; for benchmarks start the node with
# PULSEGATE_CASSANDRA_JVM_OPTS=-XX:TieredStopAtLevel=4 (the last flag wins).
_JIT_OPTIONS = ("-XX:TieredStopAtLevel=1",)
# After an OutOfMemoryError the node's state is suspect: exit, so tests see it die.
_OOM_OPTIONS = ("-XX:+ExitOnOutOfMemoryError",)
# A single node is its own seed: nothing to gossip with, no ring to wait for.
_FAST_START_PROPERTIES = (
    "-Dcassandra.skip_wait_for_gossip_to_settle=0",
    "-Dcassandra.ring_delay_ms=100",
    "-Dcassandra.superuser_setup_delay_ms=0",
    "-Dcassandra.initial_token=0",
    # A stop announces the shutdown to peers and waits for messages in flight;
    # a lone node has neither, and these waits cost 4 s of every stop.
    "-Dcassandra.shutdown_announce_in_ms=0",
    "-Dcassandra.test.messagingService.nonGracefulShutdown=true",
)

_LOGBACK_XML = """\
<!-- Written by pulsegate-services; edits are overwritten at the next start. -->
<configuration scan="false">
  <appender name="SYSTEMLOG" class="ch.qos.logback.core.rolling.RollingFileAppender">
    <file>${cassandra.logdir}/system.log</file>
    <rollingPolicy class="ch.qos.logback.core.rolling.FixedWindowRollingPolicy">
      <fileNamePattern>${cassandra.logdir}/system.log.%i.zip</fileNamePattern>
      <minIndex>1</minIndex>
      <maxIndex>3</maxIndex>
    </rollingPolicy>
    <triggeringPolicy class="ch.qos.logback.core.rolling.SizeBasedTriggeringPolicy">
      <maxFileSize>20MB</maxFileSize>
    </triggeringPolicy>
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %logger{0} - %msg%n</pattern></encoder>
  </appender>
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <filter class="ch.qos.logback.classic.filter.ThresholdFilter"><level>WARN</level></filter>
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %logger{0} - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO">
    <appender-ref ref="SYSTEMLOG"/>
    <appender-ref ref="STDOUT"/>
  </root>
</configuration>
"""


def _cassandra_yaml(home: Path) -> str:
    return f"""\
# Written by pulsegate-services; edits are overwritten at the next start.
cluster_name: pulsegate-dev
num_tokens: 1
initial_token: 0
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "127.0.0.1:{_STORAGE_PORT}"
listen_address: 127.0.0.1
rpc_address: 127.0.0.1
storage_port: {_STORAGE_PORT}
native_transport_port: {_NATIVE_PORT}
start_native_transport: true
commitlog_sync: periodic
commitlog_sync_period: 10000ms
data_file_directories:
  - {home / "data"}
commitlog_directory: {home / "commitlog"}
saved_caches_directory: {home / "saved_caches"}
hints_directory: {home / "hints"}
cdc_raw_directory: {home / "cdc_raw"}
# A fresh node needs no on-disk compatibility with Cassandra 4.
storage_compatibility_mode: NONE
# Tests drop and truncate tables often; a snapshot each time only fills the disk.
auto_snapshot: false
# Trie memtables (Cassandra 5.0's recommended default, as in its cassandra_latest.yaml)
# take writes with less CPU and garbage than the legacy skip-list memtables.
memtable:
  configurations:
    skiplist:
      class_name: SkipListMemtable
    trie:
      class_name: TrieMemtable
    default:
      inherits: trie
"""


class Cassandra(ManagedServer):
    """The local Cassandra node central's ingest workers write to."""

    name = "cassandra"
    port = _NATIVE_PORT
    # A first start creates the system keyspaces; on two cores that takes 30-60 s.
    start_timeout_s = 240.0
    # SIGTERM drains: memtables are flushed so the next start replays no commit log.
    stop_grace_s = 60.0

    def __init__(self, layout: Layout) -> None:
        super().__init__(layout)
        self.lib_dir = self.home / "lib"
        self.conf_dir = self.home / "conf"

    @property
    def other_ports(self) -> tuple[int, ...]:
        return (_STORAGE_PORT,)

    @property
    def address(self) -> str:
        return f"cql://{self.host}:{self.port}"

    def prepare(self) -> None:
        self.assemble_jars()
        for sub in (
            "data",
            "commitlog",
            "saved_caches",
            "hints",
            "cdc_raw",
            "conf",
            "logs",
            "triggers",
        ):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        (self.conf_dir / "cassandra.yaml").write_text(_cassandra_yaml(self.home), encoding="utf-8")
        (self.conf_dir / "logback.xml").write_text(_LOGBACK_XML, encoding="utf-8")

    def assemble_jars(self) -> None:
        """Copy cassandra-all and its dependencies into ``lib``, unless an identical copy is there.

        Raises:
            ServicesError: Maven is missing or failed.
        """
        stamp = self.lib_dir / ".assembled-from"
        pom_digest = hashlib.sha256(self.layout.cassandra_pom.read_bytes()).hexdigest()
        if stamp.exists() and stamp.read_text(encoding="ascii").strip() == pom_digest:
            return
        maven = shutil.which("mvn")
        if maven is None:
            raise ServicesError(
                "mvn not found; run `pulsegate-services install` as root (it installs maven)"
            )
        partial = self.home / "lib.partial"
        shutil.rmtree(partial, ignore_errors=True)
        maven_log = self.log_dir / "maven.log"
        maven_log.parent.mkdir(parents=True, exist_ok=True)
        logger.info(
            "cassandra: copying its jars from Maven Central (first run: a minute or two; log %s)",
            maven_log,
        )
        started = time.monotonic()
        with open(maven_log, "wb") as log:
            result = subprocess.run(
                [
                    maven,
                    "-B",
                    "-f",
                    str(self.layout.cassandra_pom),
                    "package",
                    f"-Dcassandra.lib.dir={partial}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=_MAVEN_TIMEOUT_S,
                check=False,
            )
        if result.returncode != 0 or not list(partial.glob("cassandra-all-*.jar")):
            raise ServicesError(
                f"Maven could not assemble Cassandra's jars (exit {result.returncode}); see {maven_log}"
            )
        (partial / ".assembled-from").write_text(pom_digest + "\n", encoding="ascii")
        shutil.rmtree(self.lib_dir, ignore_errors=True)
        partial.rename(self.lib_dir)
        logger.info(
            "cassandra: %d jars ready in %.0f s",
            len(list(self.lib_dir.glob("*.jar"))),
            time.monotonic() - started,
        )

    def launch_command(self) -> tuple[list[str], dict[str, str]]:
        jamm = sorted(self.lib_dir.glob("jamm-*.jar"))
        if not jamm:
            raise ServicesError(
                f"no jamm jar in {self.lib_dir}; delete that folder and start again"
            )
        # Jars only: cassandra.yaml and logback.xml are named by system properties.
        class_path = os.pathsep.join(map(str, sorted(self.lib_dir.glob("*.jar"))))
        argv = [
            _find_java(),
            f"-Xms{_HEAP_MIN}",
            f"-Xmx{_HEAP_MAX}",
            "-Xss256k",
            *_GC_OPTIONS,
            *_OOM_OPTIONS,
            *_JIT_OPTIONS,
            "-Djava.net.preferIPv4Stack=true",
            f"-javaagent:{jamm[-1]}",
            *(f"--add-exports={module}=ALL-UNNAMED" for module in _JVM17_EXPORTS),
            *(f"--add-opens={module}=ALL-UNNAMED" for module in _JVM17_OPENS),
            *_JVM17_PROPERTIES,
            # Extra or overriding JVM flags (a bigger heap, say); the last of a flag wins.
            *os.environ.get("PULSEGATE_CASSANDRA_JVM_OPTS", "").split(),
            f"-Dcassandra.storagedir={self.home}",
            f"-Dcassandra.logdir={self.log_dir}",
            f"-Dcassandra.triggers_dir={self.home / 'triggers'}",
            f"-Dlogback.configurationFile={self.conf_dir / 'logback.xml'}",
            f"-Dcassandra.config={(self.conf_dir / 'cassandra.yaml').as_uri()}",
            "-Dcassandra-foreground=yes",
            *_FAST_START_PROPERTIES,
            "-cp",
            class_path,
            _MAIN_CLASS,
        ]
        return argv, {}

    def answers(self) -> bool:
        try:
            from cassandra.cluster import Cluster
            from cassandra.policies import WhiteListRoundRobinPolicy
        except ImportError as error:
            raise ServicesError(
                f"cassandra-driver is not importable ({error}); run `make` to create .venv first"
            ) from error
        # The driver logs each refused connection at WARNING; the probe expects refusals.
        logging.getLogger("cassandra").setLevel(logging.CRITICAL)
        cluster = Cluster(
            [self.host],
            port=self.port,
            connect_timeout=_PROBE_TIMEOUT_S,
            load_balancing_policy=WhiteListRoundRobinPolicy([self.host]),
            protocol_version=5,
            control_connection_timeout=_PROBE_TIMEOUT_S,
        )
        try:
            session = cluster.connect()
            row = session.execute(
                "SELECT release_version FROM system.local", timeout=_PROBE_TIMEOUT_S
            ).one()
            return row is not None
        except Exception:  # noqa: BLE001 - NoHostAvailable, timeouts, bootstrapping: all mean "not yet"
            return False
        finally:
            cluster.shutdown()

    def wipe(self) -> None:
        """Delete the node's data, commit log and caches (the server must be stopped)."""
        for sub in ("data", "commitlog", "saved_caches", "hints", "cdc_raw"):
            shutil.rmtree(self.home / sub, ignore_errors=True)


def _find_java() -> str:
    """A java binary of a version Cassandra 5.0 accepts: JAVA_HOME's, Debian's JDK 17, or the PATH's."""
    homes = [os.environ.get("JAVA_HOME", ""), *_JDK_CANDIDATES]
    on_path = shutil.which("java")
    if on_path:
        homes.append(str(Path(os.path.realpath(on_path)).parent.parent))
    for home in filter(None, homes):
        java = Path(home) / "bin" / "java"
        if java.exists() and _java_major(Path(home)) in _SUPPORTED_JAVA_MAJORS:
            return str(java)
    raise ServicesError(
        "no Java 17 or 11 found for Cassandra 5.0; run `pulsegate-services install` as root "
        "(it installs openjdk-17-jdk-headless) or set JAVA_HOME to a JDK 17"
    )


def _java_major(home: Path) -> str | None:
    try:
        release = (home / "release").read_text(encoding="utf-8")
    except OSError:
        return None
    for line in release.splitlines():
        if line.startswith("JAVA_VERSION="):
            version = line.split("=", 1)[1].strip('"')
            return version.split(".")[0]
    return None
