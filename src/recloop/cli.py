"""The ``recloop`` command."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
from pathlib import Path
from typing import Annotated

import typer

from recloop.config import Settings, load_settings
from recloop.core.errors import ConfigError
from recloop.logs import configure_logging

app = typer.Typer(
    help="recloop: the real-time learning loop beside a recommender.", no_args_is_help=True
)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML config file (RECLOOP_* env overrides it)."),
]


def _settings(config: Path | None, **overrides: object):  # type: ignore[no-untyped-def]
    try:
        return load_settings(config, **overrides)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _preflight(settings: Settings) -> None:
    from recloop.container import preflight

    try:
        asyncio.run(preflight(settings))
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def serve(
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="Overrides server.host.")] = None,
    port: Annotated[int | None, typer.Option(help="Overrides server.port.")] = None,
) -> None:
    """Run the HTTP API and the processors in one process (embedded by default)."""
    import uvicorn

    from recloop.adapters.sql.writer_lock import WriterBusy, WriterLock
    from recloop.api.app import create_app
    from recloop.serving import AnnouncingServer, OneWriteProtocol

    settings = _settings(config)
    server = settings.server.model_copy(
        update={k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    )
    settings = settings.model_copy(update={"server": server})
    if not settings.auth.keys and not _is_loopback(server.host):
        typer.echo(
            f"error: refusing to serve on {server.host!r} without authentication: configure "
            "auth.keys (recloop keys new) or bind to 127.0.0.1",
            err=True,
        )
        raise typer.Exit(2)
    configure_logging(settings.logging.format, settings.logging.level)
    # Embedded, this process writes the database: one writer (adapters.sql.writer_lock),
    # held until the process exits.
    lock = WriterLock.of(settings.storage.url, "recloop serve")
    if lock is not None and settings.event_log.kind != "kafka":
        try:
            lock.acquire()
        except WriterBusy as exc:
            typer.echo(f"error: {exc}: let it finish (or stop it) first", err=True)
            raise typer.Exit(3) from None
    _preflight(settings)
    # Per-user state makes a large, long-lived heap: collect the young generation less
    # often (the default of 700 allocations runs full passes every fraction of a second).
    gc.set_threshold(50_000, 20, 20)
    config_ = uvicorn.Config(
        create_app(settings),
        host=server.host,
        port=server.port,
        http=OneWriteProtocol,  # httptools, each response in one write
        log_level="warning",
        log_config=None,  # uvicorn's records go through configure_logging's handler
        access_log=False,
        timeout_graceful_shutdown=30,
    )
    announcing = AnnouncingServer(config_, typer.echo)
    with contextlib.suppress(KeyboardInterrupt):  # as uvicorn.run
        announcing.run()
    if not announcing.started:
        raise typer.Exit(3)  # as uvicorn.run: the server did not start


@app.command()
def worker(config: ConfigOpt = None) -> None:
    """Apply events from Kafka (distributed deployment: ``event_log.kind: kafka``).

    Joins the consumer group, takes a share of the topic's partitions, and
    stops gracefully on SIGTERM or SIGINT (applies and commits what it took).
    A second signal, or ``event_log.worker_shutdown_seconds`` after the first,
    exits at once (status 128 + the signal's number, or 124): nothing is lost,
    what was not committed is fetched again by the partitions' next owner.
    With ``event_log.worker_metrics_port`` set, serves ``/metrics`` and
    ``/health/live`` there.
    """
    import logging

    from recloop.container import build_worker
    from recloop.metrics import WorkerMetrics
    from recloop.services.worker import Shutdown

    settings = _settings(config)
    configure_logging(settings.logging.format, settings.logging.level)
    gc.set_threshold(50_000, 20, 20)
    _preflight(settings)
    try:
        process, container = build_worker(settings)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    log = logging.getLogger("recloop.worker")
    ev = settings.event_log
    shutdown = Shutdown(process, ev.worker_shutdown_seconds)

    async def run() -> None:
        shutdown.attach(asyncio.get_running_loop())
        metrics: WorkerMetrics | None = None
        if ev.worker_metrics_port:
            try:
                metrics = WorkerMetrics(
                    process, container, ev.worker_metrics_host, ev.worker_metrics_port
                )
            except OSError as exc:
                typer.echo(
                    f"error: event_log.worker_metrics_port: cannot listen on "
                    f"{ev.worker_metrics_host}:{ev.worker_metrics_port}: {exc}",
                    err=True,
                )
                raise typer.Exit(2) from None
            log.info("metrics at http://%s:%d/metrics", ev.worker_metrics_host, metrics.port)
            metrics.loop_lag.start()
        try:
            await work()
        finally:
            if metrics is not None:  # served until the stop is done: a slow one shows
                await metrics.loop_lag.stop()
                await asyncio.to_thread(metrics.close)

    async def work() -> None:
        await container.start()
        try:
            await process.run()
        finally:
            # After a signal: already begun. Else (run() failed) the deadline starts here.
            shutdown.begin("the worker stopped running")
            await container.stop()
            log.info("stopped: everything taken is applied and committed")

    # From here on a first signal stops gracefully; a second one, or the deadline, at once.
    shutdown.install()
    try:
        asyncio.run(run())
    finally:
        shutdown.uninstall()  # and the deadline is off: the loop is closed, all is done


@app.command()
def train(config: ConfigOpt = None) -> None:
    """Train a click model now from the logged impressions, validate it, register it.

    The same run as ``POST /models/retrain``; a validated candidate is deployed
    only if ``learning.auto_deploy`` is on (else: ``POST /models/{version}/deploy``).
    """
    from recloop.container import build_trainer

    settings = _settings(config)
    try:
        trainer = build_trainer(settings)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    stages = 4

    async def run() -> None:
        await trainer.start()
        try:
            with typer.progressbar(length=stages, label="training") as bar:

                def advance(stage: str) -> None:
                    bar.label = stage
                    bar.update(1)

                job = await trainer.learning.train_now("cli", advance)
        finally:
            await trainer.stop()
        typer.echo(f"{job.status}: {job.version or '-'} {job.message}")
        if job.status == "failed":
            raise typer.Exit(1)

    asyncio.run(run())


@app.command()
def migrate(config: ConfigOpt = None) -> None:
    """Bring the database schema up to date (Alembic)."""
    from recloop.adapters.sql import SqlDatabase

    settings = _settings(config)

    async def run() -> None:
        db = SqlDatabase(settings.storage.url, settings.storage.sqlite_synchronous)
        try:
            await db.migrate()
        finally:
            await db.dispose()

    asyncio.run(run())
    typer.echo(f"schema up to date: {settings.storage.url}")


@app.command("config")
def show_config(config: ConfigOpt = None) -> None:
    """Print the effective configuration (file + environment + defaults) as YAML."""
    import yaml

    typer.echo(yaml.safe_dump(_settings(config).model_dump(mode="json"), sort_keys=False))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("new")
def keys_new(
    name: Annotated[str, typer.Option(help="A name for the key's holder, e.g. orchestrator.")],
    roles: Annotated[
        str, typer.Option(help="Comma-separated roles: ingest, read, admin.")
    ] = "ingest,read",
) -> None:
    """Print a new API key (give it to the client) and its line for auth.keys (keep that)."""
    from recloop.core.auth import ROLES, new_key

    wanted = [r.strip() for r in roles.split(",") if r.strip()]
    unknown = sorted(set(wanted) - set(ROLES))
    if unknown or not wanted:
        typer.echo(f"error: roles must be among {list(ROLES)}, got {wanted}", err=True)
        raise typer.Exit(2)
    key, sha = new_key()
    typer.echo(f"key (shown once): {key}")
    typer.echo("config line for auth.keys:")
    typer.echo(f"  - {{name: {name}, sha256: {sha}, roles: [{', '.join(wanted)}]}}")


@app.command("import")
def import_history(
    files: Annotated[
        list[Path], typer.Argument(help="History files: .jsonl/.ndjson, .csv or .parquet.")
    ],
    config: ConfigOpt = None,
    mapping: Annotated[
        list[str] | None,
        typer.Option("--map", help="OLD=NEW: read column OLD as the API field NEW (repeatable)."),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=20_000, help="Events per batch.")] = 5_000,
    sort_buffer: Annotated[
        int,
        typer.Option(min=1, help="Rows held in memory to sort; more are sorted on disk (TMPDIR)."),
    ] = 100_000,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Load history files through the API's validation, dedupe and learning.

    One feedback event per row, with the API's fields, applied in timestamp order.
    Rejected rows go to NAME.rejected.jsonl beside each input, with their reasons;
    importing the same files again applies nothing twice. Embedded: stop the server
    first (the import refuses while it runs). Distributed (--config with
    event_log.kind: kafka): the events go to the topic and the workers apply them.
    """
    from recloop.cli_import import run_import_command

    settings = _settings(config)
    configure_logging(settings.logging.format, "WARNING")
    run_import_command(settings, files, mapping or [], batch_size, as_json, progress, sort_buffer)


def _register_client_commands() -> None:
    from recloop.cli_client import register

    register(app)


_register_client_commands()
