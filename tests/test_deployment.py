"""docker-compose.yml describes the production topology that tests/integration runs on loopback."""

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def _queue(command: list[str]) -> str:
    return command[command.index("-Q") + 1]


def test_it_runs_postgres_redis_web_and_two_kinds_of_worker():
    assert {"postgres", "redis", "web", "worker-gpu", "worker-cpu"} <= set(SERVICES)


def test_it_routes_each_worker_to_its_queue():
    assert _queue(SERVICES["worker-gpu"]["command"]) == "gpu"
    assert _queue(SERVICES["worker-cpu"]["command"]) == "cpu"


def test_it_reserves_an_nvidia_device_for_the_gpu_worker_only():
    devices = SERVICES["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "deploy" not in SERVICES["worker-cpu"]


def test_it_gives_every_long_running_service_a_healthcheck():
    for name in ("postgres", "redis", "web", "worker-gpu", "worker-cpu"):
        assert "test" in SERVICES[name]["healthcheck"], name


def test_it_shares_one_media_volume_between_web_and_workers():
    for name in ("web", "worker-gpu", "worker-cpu"):
        assert "media:/data/media" in SERVICES[name]["volumes"], name
        assert SERVICES[name]["environment"]["SYNCMOS_MEDIA_ROOT"] == "/data/media"


def test_it_points_the_app_at_postgres_and_redis():
    env = SERVICES["web"]["environment"]
    assert env["DATABASE_URL"].startswith("postgres://") and "@postgres:5432/" in env["DATABASE_URL"]
    assert env["CELERY_BROKER_URL"] == "redis://redis:6379/0"


def test_its_task_routes_match_the_worker_queues():
    from django.conf import settings

    queues = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()}
    assert queues == {_queue(SERVICES["worker-gpu"]["command"]), _queue(SERVICES["worker-cpu"]["command"])}
    assert settings.CELERY_TASK_ROUTES["generation.render_raw_clip"]["queue"] == "gpu"
    assert settings.CELERY_TASK_ROUTES["generation.normalize_clip"]["queue"] == "cpu"


def test_its_queues_each_have_their_own_routing_key():
    """A message routed to one queue must never be copied into the other."""
    from django.conf import settings

    keys = {queue.name: queue.routing_key for queue in settings.CELERY_TASK_QUEUES}
    assert keys == {"gpu": "gpu", "cpu": "cpu"}
