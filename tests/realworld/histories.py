"""The real Alembic histories the suite runs Revisor on: the one place that lists them.

Each :class:`History` says where its revision files are inside the installed
package (read from there, never copied), which drivers its project uses, how
the project itself builds a fresh database (the reference schema), and how a
user would point Revisor at it. The tests in ``test_histories.py`` are
parametrised over :data:`HISTORIES`; ``README.md`` beside this file is the
recipe for adding one.
"""

from __future__ import annotations

import functools
import importlib.util
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import make_url

from tests.realworld.venvs import HERE, ensure_target, ensure_venv, revisor_argv, revisor_env

Backend = str  # "postgresql" | "sqlite" | "mariadb"


@dataclass(frozen=True)
class Installed:
    """A history's project as installed: its virtualenv (None: ours) and package directory."""

    venv: Path | None
    package_dir: Path

    @property
    def bin(self) -> Path:
        return (self.venv / "bin") if self.venv else Path(sys.executable).parent

    @property
    def python(self) -> str:
        return str(self.bin / "python")

    def revisor(self) -> list[str]:
        return revisor_argv(self.venv)

    def revisor_env(self, env: Mapping[str, str]) -> dict[str, str]:
        return revisor_env(self.venv, dict(env))


@dataclass(frozen=True)
class Command:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None


@dataclass(frozen=True, eq=False)
class History:
    """One project's migration history and everything the tests need to run it."""

    name: str
    #: The distribution and version whose wheel ships the history (pinned in constraints.txt
    #: or in ``requirements``).
    dist: str
    #: The import name of the package that holds the revision files.
    package: str
    #: Per backend: the SQLAlchemy driver the project uses there.
    drivers: Mapping[Backend, str]
    #: Per backend: the script directory inside the package (hermetic --scripts).
    scripts: Mapping[Backend, str]
    #: The project's own way to build a fresh database at ``url``: what Revisor must match.
    own: Callable[[Installed, str, Path], Command]
    #: A requirements file under tests/realworld/ for a virtualenv of its own, when the
    #: project's pins conflict with constraints.txt.
    requirements: str | None = None
    #: ``MOD:ATTR`` of the MetaData whose naming convention env.py gives Alembic.
    metadata: str | None = None
    #: Arguments for ``--env-py`` mode (and its working directory, under the run's fresh
    #: home directory), or None when the project's env.py cannot run on a connection it
    #: is handed.
    env_py: Callable[[Installed, Path], Command] | None = None
    #: Environment variables the project's code needs (its tool, and env.py or revisions).
    environment: Callable[[str, Path], dict[str, str]] = lambda url, home: {}
    #: How a user runs it day to day: the mode the down-and-back and concurrency tests use.
    user_mode: str = "hermetic"
    #: Per backend: where its revision files are, when not under ``scripts`` (--version-locations).
    versions: Mapping[Backend, str] = field(default_factory=dict)
    #: Where the down-and-back test goes down to: base, unless the project stops earlier.
    down_to: str = "base"
    #: Per backend: where it goes down to there, when not ``down_to`` (the reason beside it).
    down_to_on: Mapping[Backend, str] = field(default_factory=dict)
    #: Per backend: where the upgrade goes, when not to head (the project's own migrations
    #: fail on that backend past it; the reason beside it).
    up_to: Mapping[Backend, str] = field(default_factory=dict)
    #: Per backend: a requirements file under tests/realworld/ installed into a directory
    #: put on PYTHONPATH for that backend's processes (venvs.ensure_target), for a package
    #: the project needs there and nowhere else (Airflow's mysqlclient).
    targets: Mapping[Backend, str] = field(default_factory=dict)
    #: The backends the six-runner test covers (the slowest test; see README.md).
    concurrency: tuple[Backend, ...] = ()
    #: Known differences and failures, (test, backend) -> the exact cause. Each becomes a
    #: strict xfail, so the test turns red the day the cause is fixed.
    known: Mapping[tuple[str, Backend], str] = field(default_factory=dict)

    def installed(self) -> Installed:
        if self.name in _FAILED:
            raise RuntimeError(f"{self.name}'s virtualenv could not be built") from _FAILED[
                self.name
            ]
        return _installed(self.package, self.requirements)

    def top(self, backend: Backend) -> str:
        """The revision the upgrades go to on ``backend``."""
        return self.up_to.get(backend, "head")

    def bottom(self, backend: Backend) -> str:
        """The revision the down-and-back test goes down to on ``backend``."""
        return self.down_to_on.get(backend, self.down_to)

    def build_target(self, backend: Backend) -> None:
        """Build ``backend``'s target directory now; a failure is kept for its tests."""
        if backend not in self.targets or (self.name, backend) in _FAILED_TARGETS:
            return
        try:
            ensure_target(HERE / self.targets[backend])
        except Exception as exc:
            _FAILED_TARGETS[self.name, backend] = exc

    def python_path(self, url: str) -> Path | None:
        """The directory to put on PYTHONPATH for a process working on ``url``, if any."""
        drivername = make_url(url).drivername
        backend = next((b for b, d in self.drivers.items() if d == drivername), None)
        if backend is None or backend not in self.targets:
            return None
        failed = _FAILED_TARGETS.get((self.name, backend))
        if failed is not None:
            raise RuntimeError(f"{self.targets[backend]} could not be installed") from failed
        return ensure_target(HERE / self.targets[backend])

    def scripts_dir(self, installed: Installed, backend: Backend) -> Path:
        return installed.package_dir / self.scripts[backend]

    def revisions_dir(self, installed: Installed, backend: Backend) -> Path:
        """The directory holding this backend's revision files (and nothing else's)."""
        if backend in self.versions:
            return installed.package_dir / self.versions[backend]
        return self.scripts_dir(installed, backend)

    def modes(self) -> list[str]:
        """The ways to run Revisor on it that test (1) compares with the project's own."""
        return (
            ["hermetic"]
            + (["metadata"] if self.metadata else [])
            + (["env-py"] if self.env_py else [])
        )

    def revisor_args(
        self, installed: Installed, backend: Backend, mode: str, home: Path
    ) -> Command:
        """Revisor's arguments for ``mode`` (before --database-url and the command)."""
        if mode == "env-py":
            assert self.env_py is not None
            return self.env_py(installed, home)
        args = ["--scripts", str(self.scripts_dir(installed, backend))]
        if backend in self.versions:
            args += ["--version-locations", str(self.revisions_dir(installed, backend))]
        if mode == "metadata":
            assert self.metadata is not None
            args += ["--metadata", self.metadata]
        return Command(args)


_FAILED: dict[str, BaseException] = {}
_FAILED_TARGETS: dict[tuple[str, Backend], BaseException] = {}


def remember_failure(history: History, exc: BaseException) -> None:
    """A virtualenv build failed: each test that needs it fails with this, at once."""
    _FAILED[history.name] = exc


@functools.cache
def _installed(package: str, requirements: str | None) -> Installed:
    if requirements is None:
        spec = importlib.util.find_spec(package)  # finds without importing it
        assert spec is not None and spec.submodule_search_locations, f"{package} is not installed"
        return Installed(None, Path(next(iter(spec.submodule_search_locations))))
    venv = ensure_venv(HERE / requirements)
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import importlib.util, sys; "
         "print(next(iter(importlib.util.find_spec(sys.argv[1]).submodule_search_locations)))",
         package],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    return Installed(venv, Path(where))


# --- Optuna -----------------------------------------------------------------------------

# What `optuna storage upgrade` runs (RDBStorage.upgrade -> _VersionManager.upgrade): Alembic's
# upgrade with Optuna's alembic.ini and env.py. The command itself needs Optuna's version_info
# table, which only create_all makes, so on a fresh database it is called below it.
OPTUNA_UPGRADE = """
import sys
from alembic import command
from optuna.storages._rdb.storage import _VersionManager
manager = _VersionManager.__new__(_VersionManager)
manager.url = sys.argv[1]
command.upgrade(manager._create_alembic_config(), "head")
"""


def _optuna_env_py(installed: Installed, home: Path) -> Command:
    # Optuna's alembic.ini says `script_location = alembic` (relative to the working
    # directory) and `sqlalchemy.url = sqlite:///alembic.db`; its env.py builds its own
    # engine from the ini (engine_from_config). Revisor sets the ini's URL to its own while
    # env.py runs, so that engine reaches the database Revisor was given, and swaps in its
    # locked connection. The working directory is a fresh one where `alembic` is Optuna's
    # script directory (and where a stray alembic.db would show up).
    rdb = installed.package_dir / "storages" / "_rdb"
    (home / "alembic").symlink_to(rdb / "alembic", target_is_directory=True)
    return Command(["--config", str(rdb / "alembic.ini"), "--env-py"], cwd=home)


OPTUNA = History(
    name="optuna",
    dist="optuna==5.1.0",
    package="optuna",
    drivers={"postgresql": "postgresql+psycopg", "sqlite": "sqlite"},
    scripts=dict.fromkeys(("postgresql", "sqlite"), "storages/_rdb/alembic"),
    own=lambda inst, url, home: Command([inst.python, "-c", OPTUNA_UPGRADE, url]),
    env_py=_optuna_env_py,
    concurrency=("sqlite",),
    known={
        **{
            ("down-and-back", b): "Optuna's own bug: v3.0.0.c's downgrade() uses "
            "IntermediateValueModel.FloatTypeEnum, which optuna 5.1.0's models no longer have "
            "(AttributeError; Optuna's own alembic downgrade fails the same way)"
            for b in ("postgresql", "sqlite")
        },
    },
)


# --- Apache Airflow -----------------------------------------------------------------------


def _airflow_environment(url: str, home: Path) -> dict[str, str]:
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    }


#: Airflow's own migrations stop working on MariaDB at eed27faa34e3 (0049, "Remove pickled
#: data from xcom table"): its MySQL branch calls REGEXP_REPLACE with six arguments, MySQL 8's
#: form; MariaDB's takes three ("Incorrect parameter count in the call to native function
#: 'REGEXP_REPLACE'", `airflow db migrate` fails the same). Airflow supports MySQL 8, not
#: MariaDB. The 49 revisions before it (the squashed 2.6.2 base, 2.7 to 2.10, the first 3.0
#: ones) are compared.
AIRFLOW_MARIADB_TOP = "9fc3fc5de720"


def _airflow_own(inst: Installed, url: str, home: Path) -> Command:
    """Airflow's way to build a database from its migration files.

    `airflow db migrate` on an empty database builds it from the ORM and stamps head, so
    `db reset --use-migration-files`; on MariaDB, `db migrate --use-migration-files` to the
    last revision Airflow's own migrations reach there, with mysqlclient, Airflow's MySQL
    driver (Revisor's runs use PyMySQL, the one Revisor supports).
    """
    airflow = str(inst.bin / "airflow")
    parsed = make_url(url)
    if parsed.get_backend_name() != "mysql":
        return Command([airflow, "db", "reset", "--use-migration-files", "-y"])
    mysqldb = parsed.set(drivername="mysql+mysqldb").render_as_string(hide_password=False)
    return Command(
        [airflow, "db", "migrate", "--use-migration-files", "--to-revision", AIRFLOW_MARIADB_TOP],
        env={"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": mysqldb},
    )


AIRFLOW = History(
    name="airflow",
    dist="apache-airflow-core==3.3.2",
    package="airflow",
    # Airflow's PostgreSQL driver is psycopg2: revision 686269002441 (0017) updates an integer
    # column with a string literal, which psycopg 3 and asyncpg send typed (::VARCHAR).
    drivers={"postgresql": "postgresql+psycopg2", "sqlite": "sqlite", "mariadb": "mysql+pymysql"},
    scripts=dict.fromkeys(("postgresql", "sqlite", "mariadb"), "migrations"),
    own=_airflow_own,
    up_to={"mariadb": AIRFLOW_MARIADB_TOP},
    # Airflow's settings refuse a mysql:// URL unless mysqlclient imports, whatever the driver.
    targets={"mariadb": "requirements-mysqlclient.txt"},
    metadata="airflow.models.base:metadata",
    env_py=lambda inst, home: Command(
        ["--config", str(inst.package_dir / "alembic.ini"), "--env-py"]
    ),
    environment=_airflow_environment,
    user_mode="metadata",
    # The squashed base's downgrade() drops index sm_dag, which the downgrade of the revision
    # that dropped sla_miss never recreates ("index sm_dag does not exist", Airflow's own
    # alembic the same): Airflow goes down as far as its 2.6.2 state, not to base.
    down_to="4bc4d934e2bc",
    # On MariaDB, 0d9e73a75ee4's downgrade() runs WITH ... DELETE, which MySQL 8 has and
    # MariaDB does not (1064 near 'delete from dataset'; `airflow db downgrade` fails the
    # same): down from AIRFLOW_MARIADB_TOP to it, 12 revisions.
    down_to_on={"mariadb": "0d9e73a75ee4"},
    known={
        ("hermetic", "postgresql"): "by design: a hermetic run has no target_metadata, and "
        "Airflow's naming convention (airflow.models.base.metadata) names what its revisions "
        "leave unnamed: index ix_revoked_token_exp instead of idx_revoked_token_exp, check "
        "task_map_length_not_negative instead of ck_task_map_task_map_length_not_negative "
        "(Revisor warns and says --metadata; the metadata mode matches)",
        ("down-and-back", "sqlite"): "Airflow's own: its SQLite downgrades are not exact "
        "inverses (batch mode rebuilds tables such as callback_request with their columns in "
        "another order), so after down to 4bc4d934e2bc and up again the callback table's "
        "columns are (created_at, id, priority_weight, type, ...) instead of (created_at, "
        "type, ..., id, priority_weight, bundle_name); `airflow db downgrade -r 4bc4d934e2bc` "
        "then `airflow db migrate` gives the same",
        ("hermetic", "mariadb"): "by design: a hermetic run has no target_metadata, and "
        "Airflow's naming convention names what its revisions leave unnamed: asset_trigger's "
        "foreign keys asset_trigger_asset_id_fkey and asset_trigger_trigger_id_fkey (MariaDB "
        "names them asset_trigger_ibfk_1 and _2), check ck_task_map_task_map_length_not_negative "
        "(task_map_length_not_negative) (Revisor warns and says --metadata; the metadata mode "
        "matches)",
        ("hermetic", "sqlite"): "by design: a hermetic run has no target_metadata, so "
        "Airflow's naming convention never names deadline's foreign key, and revision "
        "a169942745c2 fails: \"No such constraint: 'deadline_dag_id_fkey'\" (exit 4; Revisor "
        "warns and says --metadata; the metadata mode matches)",
    },
)


# --- Prefect --------------------------------------------------------------------------------


def _prefect_environment(url: str, home: Path) -> dict[str, str]:
    return {
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_API_DATABASE_CONNECTION_URL": url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }


PREFECT = History(
    name="prefect",
    dist="prefect==3.9.1",
    package="prefect",
    drivers={"postgresql": "postgresql+asyncpg", "sqlite": "sqlite+aiosqlite"},
    scripts=dict.fromkeys(("postgresql", "sqlite"), "server/database/_migrations"),
    # Prefect's env.py sets version_locations to the dialect's directory (ORM.versions_dir).
    versions={
        "postgresql": "server/database/_migrations/versions/postgresql",
        "sqlite": "server/database/_migrations/versions/sqlite",
    },
    # Prefect's command; the URL comes from PREFECT_API_DATABASE_CONNECTION_URL.
    own=lambda inst, url, home: Command(
        [str(inst.bin / "prefect"), "server", "database", "upgrade", "-y"]
    ),
    requirements="requirements-prefect.txt",
    metadata="prefect.server.database.orm_models:Base.metadata",
    environment=_prefect_environment,
    user_mode="metadata",
    concurrency=("postgresql",),
    known={
        ("hermetic", b): "by design: a hermetic run has no target_metadata; with it, Prefect's "
        "naming convention (ck_%(table_name)s__%(constraint_name)s) renames the check that "
        "revision 4ff2f2bf81f4 already named ck_block_document_reference__no_self_reference to "
        "ck_block_document_reference__ck_block_document_reference__no_self_reference (PostgreSQL "
        "truncates it to ck_block_document_reference__ck_block_docum_824f); hermetic keeps the "
        "single prefix (Revisor warns and says --metadata; the metadata mode matches)"
        for b in ("postgresql", "sqlite")
    },
)


# --- Langflow -------------------------------------------------------------------------------

# DatabaseService.init_alembic, as Langflow runs it on a database without alembic_version:
# Alembic's ensure_version then upgrade head, with Langflow's (async) env.py.
LANGFLOW_UPGRADE = """
import sys
from alembic.config import Config
from langflow.services.database.service import DatabaseService
import langflow
from pathlib import Path
config = Config()
config.set_main_option("script_location", str(Path(langflow.__file__).parent / "alembic"))
config.set_main_option("sqlalchemy.url", sys.argv[1].replace("%", "%%"))
DatabaseService.init_alembic(config)
"""


def _langflow_environment(url: str, home: Path) -> dict[str, str]:
    return {
        "LANGFLOW_CONFIG_DIR": str(home / "langflow"),
        "LANGFLOW_DATABASE_URL": url,
        "DO_NOT_TRACK": "true",
    }


LANGFLOW = History(
    name="langflow",
    dist="langflow-base==1.13.0",
    package="langflow",
    drivers={"postgresql": "postgresql+psycopg", "sqlite": "sqlite+aiosqlite"},
    scripts=dict.fromkeys(("postgresql", "sqlite"), "alembic"),
    own=lambda inst, url, home: Command([inst.python, "-c", LANGFLOW_UPGRADE, url]),
    requirements="requirements-langflow.txt",
    environment=_langflow_environment,
    # Not base: on PostgreSQL 012fb73ac359's downgrade() drops flow_folder_id_fkey, which no
    # longer exists by then (Langflow's own alembic fails the same way), and on SQLite, without
    # env.py's naming convention, e1705947c729's downgrade() batch-drops span.trace_id's foreign
    # key by a name it never got ("Constraint must have a name"; Langflow's own alembic, with
    # the convention, gets to base). Down to e1705947c729 undoes 84 revisions and 27 merges.
    down_to="e1705947c729",
    known={
        **{
            ("hermetic", b): "by design: Langflow sets its naming convention on "
            "SQLModel.metadata inside env.py only (NAMING_CONVENTION), so a hermetic run "
            "leaves pk/fk/uq/ck to the backend: a2a_checkpoints_pkey, "
            "flow_version_flow_id_fkey, connection_oauth_state_digest_key... on PostgreSQL "
            "where Langflow's own has pk_a2a_checkpoints, fk_flow_version_flow_id_flow, "
            "uq_connection_oauth_state_digest (nothing else differs), and unnamed ones on "
            "SQLite, where revision 59a272d6669a then finds no name for trace.flow_id's "
            "foreign key and adds a second one (fk_trace_flow_id_flow); --metadata has no "
            "MOD:ATTR to name and --env-py is refused (env.py opens its own async engine)"
            for b in ("postgresql", "sqlite")
        },
    },
)

HISTORIES: tuple[History, ...] = (OPTUNA, AIRFLOW, PREFECT, LANGFLOW)
