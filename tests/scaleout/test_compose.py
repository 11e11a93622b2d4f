"""docker-compose.yml, .env.example and the Dockerfile, checked by reading them (no Docker engine on these machines):
the services and their health checks, the order they start in, that every command the stack runs parses with the
CLI's own parser, that every variable is in .env.example and that no secret is written down."""

import re
import uuid

import pytest
import yaml

from mta_ablate.cli import build_parser
from tests.scaleout import compose

RAW = compose.COMPOSE_FILE.read_text()
ENV = compose.read_env()
STACK = compose.load()
SERVICES = STACK["services"]


def test_the_stack_has_every_service():
    assert {
        "postgres",
        "storage",
        "create-bucket",
        "mlflow",
        "optuna-dashboard",
        "sweep",
        "worker",
        "worker-gpu",
    } <= set(SERVICES)
    assert "rustfs/rustfs:" in SERVICES["storage"]["image"]


def test_postgres_is_health_checked_over_tcp_and_creates_both_databases():
    pg = SERVICES["postgres"]
    test = pg["healthcheck"]["test"]
    assert "pg_isready" in test and "127.0.0.1" in test  # TCP: the socket answers while init scripts still run
    (init,) = pg["configs"]
    assert init["target"].startswith("/docker-entrypoint-initdb.d/")
    sql = STACK["configs"][init["source"]]["content"]
    assert f"CREATE DATABASE {ENV['OPTUNA_DB']};" in sql and f"CREATE DATABASE {ENV['MLFLOW_DB']};" in sql


def test_the_init_script_runs_on_postgres(postgres):
    """The init SQL, with this test's database names, on the real server: both databases appear."""
    tag = uuid.uuid4().hex[:8]
    names = {"OPTUNA_DB": f"mta_test_initopt_{tag}", "MLFLOW_DB": f"mta_test_initml_{tag}"}
    stack = compose.load({**{k: (v or "x") for k, v in ENV.items()}, **names})
    sql = stack["configs"]["postgres-init"]["content"]
    postgres.created += list(names.values())  # dropped at teardown
    with postgres.admin() as conn:
        for statement in filter(str.strip, sql.split(";")):
            conn.execute(statement)
        found = {r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()}
    assert set(names.values()) <= found


def test_mlflow_serves_artifacts_from_postgres_and_s3_behind_allowed_hosts():
    mlflow = SERVICES["mlflow"]
    assert mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg://")
    assert mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"].endswith(f"@postgres:5432/{ENV['MLFLOW_DB']}")
    command = mlflow["command"]
    assert command[:2] == ["mlflow", "server"] and "--serve-artifacts" in command
    assert command[command.index("--artifacts-destination") + 1] == f"s3://{ENV['S3_BUCKET']}/"
    assert mlflow["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://storage:9000"
    hosts = compose.mlflow_allowed_hosts(STACK).split(",")
    assert "mlflow:5000" in hosts and f"localhost:{ENV['MLFLOW_PORT']}" in hosts
    assert "--disable-security-middleware" not in command and "*" not in hosts
    assert "/health" in " ".join(mlflow["healthcheck"]["test"])
    assert mlflow["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "create-bucket": {"condition": "service_completed_successfully"},
    }


def test_bucket_job_runs_once_after_the_store_is_healthy():
    job = SERVICES["create-bucket"]
    assert job["restart"] == "no" and job["depends_on"]["storage"]["condition"] == "service_healthy"
    script = " ".join(job["command"])
    assert (
        f"head-bucket --bucket {ENV['S3_BUCKET']}" in script and f"create-bucket --bucket {ENV['S3_BUCKET']}" in script
    )
    assert job["environment"]["AWS_ENDPOINT_URL_S3"] == "http://storage:9000"


def test_dashboard_reads_the_optuna_database():
    dash = SERVICES["optuna-dashboard"]
    assert dash["build"]["target"] == "dashboard"
    assert dash["command"][0].startswith("postgresql+psycopg://") and dash["command"][0].endswith(
        f"/{ENV['OPTUNA_DB']}"
    )
    assert dash["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_workers_are_built_from_the_project_and_scale():
    for name in ("worker", "sweep", "worker-gpu"):
        service = SERVICES[name]
        assert service["build"]["context"] == "." and service["build"]["target"] == "worker"
        assert service["environment"]["MTA_OPTUNA_STORAGE"].startswith("postgresql+psycopg://")
        assert service["environment"]["MLFLOW_TRACKING_URI"] == ENV["TRACKING_URI"]
    worker = SERVICES["worker"]
    # --scale worker=N needs no fixed name and no published host port
    assert "container_name" not in worker and "ports" not in worker
    assert worker["depends_on"] == {"sweep": {"condition": "service_healthy"}}
    gpu = SERVICES["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]  # optional: only with --profile gpu
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert gpu["build"]["args"]["TORCH_INDEX_URL"] == ENV["TORCH_INDEX_URL_GPU"]
    dockerfile = (compose.ROOT / "Dockerfile").read_text()
    for stage in ("mlflow", "dashboard", "worker"):
        assert re.search(rf"^FROM \S+ AS {stage}$", dockerfile, re.M), stage
    declared = set(re.findall(r"^ARG (\w+)", dockerfile, re.M))
    for service in SERVICES.values():
        assert set(service.get("build", {}).get("args", {})) <= declared


def test_every_dependency_waits_for_a_condition_its_target_can_meet():
    for name, service in SERVICES.items():
        for target, dep in service.get("depends_on", {}).items():
            assert target in SERVICES, f"{name} depends on unknown {target}"
            condition = dep["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in SERVICES[target], f"{name} waits for {target} to be healthy: no healthcheck"
            else:
                assert condition == "service_completed_successfully" and SERVICES[target]["restart"] == "no"
    for name in ("postgres", "storage", "mlflow", "optuna-dashboard", "sweep"):
        assert SERVICES[name]["healthcheck"]["test"], name


def commands():
    """Every `mta-ablate ...` the stack runs: service commands and health checks."""
    for name, service in SERVICES.items():
        for argv in (service.get("command"), service.get("healthcheck", {}).get("test")):
            if isinstance(argv, list) and argv and argv[0] == "CMD":
                argv = argv[1:]
            if isinstance(argv, list) and argv and argv[0] == "mta-ablate":
                yield name, argv[1:]


@pytest.mark.parametrize("service,argv", list(commands()), ids=lambda v: v if isinstance(v, str) else " ".join(v))
def test_every_mta_ablate_command_parses(service, argv):
    args = build_parser().parse_args(argv)
    if args.command in ("worker", "status"):
        assert args.name == ENV["SWEEP_NAME"]
    if args.command == "sweep":  # the default sweep file is in the image (/app mirrors the repo) and named alike
        spec = yaml.safe_load((compose.ROOT / args.file).read_text())
        assert spec["name"] == ENV["SWEEP_NAME"]


def test_the_stack_runs_the_sweep_its_workers_and_its_health_check():
    found = {(service, argv[0]) for service, argv in commands()}
    assert {("sweep", "sweep"), ("sweep", "status"), ("worker", "worker"), ("worker-gpu", "worker")} <= found


def test_every_variable_is_in_env_example_and_every_setting_is_used():
    used = compose.variables(RAW)
    assert used <= set(ENV), f"missing from .env.example: {sorted(used - set(ENV))}"
    assert set(ENV) - used == set(), f"unused in docker-compose.yml: {sorted(set(ENV) - used)}"


def test_no_secret_is_written_down():
    assert ENV["POSTGRES_PASSWORD"] == "" and ENV["S3_SECRET_KEY"] == ""
    raw = yaml.safe_load(RAW)
    for name, service in raw["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|ACCESS_KEY", key):
                assert re.fullmatch(r"\$\{\w+(:\?[^}]*)?\}", str(value)), f"{name}.{key} is hard-coded"
    for user, password in re.findall(r"://([^:/@\s]+):(\$\{[^}]*\}|[^@\s]+)@", RAW):
        assert password.startswith("${POSTGRES_PASSWORD"), f"credentials in a URL: {user}:{password}"
    # without the secrets compose refuses to start, instead of starting with empty passwords
    with pytest.raises(KeyError, match="POSTGRES_PASSWORD|S3_SECRET_KEY"):
        compose.load(ENV)


def test_ports_are_published_on_the_chosen_address_only():
    raw = yaml.safe_load(RAW)
    for name, service in raw["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("${PUBLISH_ADDRESS}:"), f"{name} publishes {port} on every interface"
    assert ENV["PUBLISH_ADDRESS"] == "127.0.0.1"


def test_docker_context_leaves_out_secrets_and_environments():
    ignored = (compose.ROOT / ".dockerignore").read_text().split()
    assert {".env", ".venv", ".git", "mta-runs"} <= set(ignored)
