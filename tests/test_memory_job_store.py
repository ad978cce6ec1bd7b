"""A second job store, installed as a plugin distribution: it passes the contract and runs a node.

tests/plugins/memory_store is the distribution ``infsched-memory-store``.  It
is installed here as pip would leave it: its package's directory and a
``dist-info`` (METADATA and the entry points its pyproject.toml declares) on
sys.path, so importlib.metadata finds its entry point and the plugin loader
loads it like any installed plugin.  ``job_store = "memory"`` selects it.
"""

from __future__ import annotations

import sys
import tomllib
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from infsched.config import SchedulerConfig
from infsched.database import database_of
from infsched.dburl import DatabaseUrl
from infsched.engine.binding import RepositoryBinding
from infsched.errors import PluginError
from infsched.jobstore.base import JobStore
from infsched.management.scheduler import InfiniteScheduler
from infsched.plugins import PluginRegistry, load_plugins
from infsched.testing.jobstore import JobStoreContract
from tests.engine_support import RecordingExecutor, Reminder, repository_for, wait_until

DISTRIBUTION = Path(__file__).parent / "plugins" / "memory_store"


def install(site: Path) -> None:
    """Install the distribution into `site` (on sys.path) as its pyproject.toml describes it."""
    project = tomllib.loads((DISTRIBUTION / "pyproject.toml").read_text())["project"]
    info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    points = project["entry-points"]["infsched"]
    (info / "entry_points.txt").write_text(
        "[infsched]\n" + "".join(f"{name} = {target}\n" for name, target in points.items())
    )


@pytest.fixture(scope="module")
def plugins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PluginRegistry]:
    """The plugins with the memory store installed: loaded through its entry point."""
    site = tmp_path_factory.mktemp("site")
    install(site)
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(DISTRIBUTION))
        patch.syspath_prepend(str(site))
        registry = load_plugins(env={"INFSCHED_LOAD_PLUGINS": "memory_store"})
        registry.require_healthy()
        yield registry
    for name in [m for m in sys.modules if m.startswith("infsched_memory_store")]:
        del sys.modules[name]


def test_the_memory_store_is_registered_through_its_entry_point(plugins: PluginRegistry) -> None:
    registered = plugins.job_stores()
    assert registered["memory"].plugin == "memory_store"
    assert registered["sql"].plugin == "sql_store"
    [info] = [i for i in plugins.listing() if i.name == "memory_store"]
    assert (info.distribution, info.status) == ("infsched-memory-store", "ok")
    assert info.registers == ["job store: memory"]
    with pytest.raises(PluginError, match=r"known: memory, sql\)"):
        plugins.open_job_store("memroy", database_of(sa.create_engine("sqlite://")))


class TestMemoryJobStore(JobStoreContract):
    @pytest.fixture
    def store(
        self,
        plugins: PluginRegistry,
        every_url: DatabaseUrl,
        engine_for: Callable[[DatabaseUrl], sa.Engine],
    ) -> JobStore:
        # Its jobs are in memory, but history and the limits table are in the
        # configured database: the claims' limits transactions run on each kind.
        return plugins.open_job_store("memory", database_of(engine_for(every_url)))


def test_a_node_runs_jobs_through_the_memory_store(
    plugins: PluginRegistry, every_url: DatabaseUrl
) -> None:
    repo = repository_for(every_url)
    repo.maintain()
    due = datetime.now(UTC) - timedelta(seconds=30)
    texts = ["hello"] * 20 + ["flaky", "rejected"]
    repo.insert_many(
        [Reminder(due=due + timedelta(milliseconds=i), text=t) for i, t in enumerate(texts)]
    )
    executor = RecordingExecutor()
    executor.fail_times["flaky"] = 1
    executor.permanent.add("rejected")
    config = SchedulerConfig(
        database_url=every_url,
        node_id="memory-node",
        job_store="memory",
        fetch_interval=0.2,
        lookahead_window=1.0,
        heartbeat_interval=0.5,
        job_lease=5.0,
        retry_base_delay=0.05,
        retry_max_delay=0.2,
        thread_pool_size=4,
    )
    node = InfiniteScheduler(
        [RepositoryBinding(repo, executor="remind")],
        config,
        executors={"remind": executor},
        plugins=plugins,
    )
    assert type(node.store).__module__ == "infsched_memory_store.store"
    assert node.admin.store is node.store

    def outcomes() -> Counter[str]:
        start = due - timedelta(days=1)
        found = node.history.repository.find_all_by_date_range(start, start + timedelta(days=3))
        return Counter(o.state.value for o in found)

    with node:
        wait_until(lambda: outcomes()["dead"] == 1 and outcomes()["succeeded"] == 21, 30)
    # Fetched from the repository, run, and every outcome recorded in history.
    assert outcomes() == {"succeeded": 21, "failed": 1, "dead": 1}
    assert sorted(Counter(executor.keys()).values()) == [1] * 20 + [1, 2]
    # The dead letter waits in the memory store, as `jobs list --state dead` shows it.
    [letter] = node.list_jobs(state="dead")
    assert "rejected for good" in str(letter.last_error)
    # No job ever went through the SQL store's table.
    assert not sa.inspect(node.engine).has_table("infsched_jobs")
