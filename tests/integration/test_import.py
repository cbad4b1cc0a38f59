"""``recloop import``: history files through the API's validation, dedupe and learning.

The recipe of docs/operations.md ("Importing history") runs end to end on SQLite:
import the example history, import it again (nothing applied twice), ``recloop
train`` fits a first model from it alone.
"""

from __future__ import annotations

import asyncio
import csv
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from benchmarks.history import write_history
from typer.testing import CliRunner

from recloop.cli import app as cli
from recloop.config import Settings, load_settings
from tests.conftest import start_app

NOW = time.time()
DAY = 86400.0


def _config(tmp_path: Path, **sections: Any) -> Path:
    config: dict[str, Any] = {
        "storage": {"url": f"sqlite+aiosqlite:///{tmp_path / 'recloop.db'}"},
        "vectors": {"dim": 8},
        **sections,
    }
    path = tmp_path / "recloop.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _import(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["import", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


async def _get(settings: Settings, path: str) -> Any:
    running, close = await start_app(settings)
    try:
        response = await running.client.get(path)
        assert response.status_code == 200, response.text
        return response.json()
    finally:
        await close()


async def _running_experiment(settings: Settings) -> None:
    running, close = await start_app(settings)
    try:
        body = {
            "experiment_id": "xp-now",
            "name": "running while history is imported",
            "variants": [{"key": "control", "weight": 0.5}, {"key": "treatment", "weight": 0.5}],
            "metrics": [{"name": "clicks", "type": "binomial", "event": "click"}],
        }
        created = await running.client.post("/experiments", json=body)
        assert created.status_code == 201, created.text
        started = await running.client.post("/experiments/xp-now/start")
        assert started.status_code == 200, started.text
    finally:
        await close()


def test_recipe_import_twice_then_train_gives_a_first_model(tmp_path: Path) -> None:
    history = tmp_path / "history.jsonl"
    rows = write_history(history, NOW - 3600.0, users=60)
    config = _config(tmp_path)
    asyncio.run(_running_experiment(load_settings(config)))

    first = _import(str(history), "--config", str(config))
    assert first["rows"] == rows
    assert first["accepted"] == rows
    assert first["duplicates"] == 0
    assert first["rejected"] == 0
    assert first["slates"] == 60 * 12
    assert first["first_timestamp"] < first["last_timestamp"]

    again = _import(str(history), "--config", str(config))
    assert again["accepted"] == 0
    assert again["duplicates"] == rows
    assert again["slates"] == 0  # the slates are not logged twice either

    trained = CliRunner().invoke(cli, ["train", "--config", str(config)])
    assert trained.exit_code == 0, trained.output
    assert "accepted: AUC" in trained.output, trained.output
    # Ranking the history's slates exposed nobody to the experiment running today.
    results = asyncio.run(_get(load_settings(config), "/experiments/xp-now/results"))
    assert sum(results["srm"]["observed"].values()) == 0
    models = asyncio.run(_get(load_settings(config), "/models"))
    listed = models["models"] if isinstance(models, dict) else models
    assert [m["status"] for m in listed] == ["candidate"]


def test_csv_with_mapping_rejects_rows_with_their_reasons_and_learns(tmp_path: Path) -> None:
    path = tmp_path / "ratings.csv"
    header = ["uid", "movie", "kind", "stars", "when", "attribution.algorithm", "title"]
    t = NOW - 10 * DAY
    rows = [
        ["u1", "m1", "rating", "5", str(t), "collaborative", "Heat"],
        ["u1", "m2", "like", "", f"{t + 60:.0f}", "", "Alien"],
        ["u1", "m3", "rating", "9", str(t + 120), "", "Ran"],  # value out of range
        ["u1", "m4", "rating", "4", "", "", "Up"],  # no timestamp
        ["u1", "m5", "rating", "4", str(NOW + 86400), "", "Her"],  # in the future
        ["u1", "m6", "poke", "", str(t + 180), "", "Big"],  # no such type
        ["u1", "m7", "click", "", str(t + 240), "nobody", "Jaws"],  # unknown algorithm
    ]
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(rows)
    config = _config(tmp_path)
    maps = ["uid=user_id", "movie=item_id", "kind=type", "stars=value", "when=timestamp"]
    args = [str(path), "--config", str(config)]
    for m in maps:
        args += ["--map", m]

    summary = _import(*args)
    assert summary["accepted"] == 2
    assert summary["rejected_by_reason"] == {
        "attribution.algorithm": 1,
        "timestamp": 2,
        "type": 1,
        "value": 1,
    }
    assert summary["ignored_columns"] == ["title"]
    rejected = (tmp_path / "ratings.csv.rejected.jsonl").read_text().splitlines()
    rejects = [json.loads(line) for line in rejected]
    assert [r["row"] for r in rejects] == [3, 4, 5, 6, 7]
    assert rejects[0]["field"] == "value"
    assert "between 1 and 5" in rejects[0]["message"]
    assert rejects[0]["record"]["title"] == "Ran"
    assert "future" in rejects[2]["message"]

    prefs = asyncio.run(_get(load_settings(config), "/users/u1/preferences"))
    assert prefs["interactions"] == 2
    assert prefs["last_event_at"] == pytest.approx(t + 60, abs=1)

    # Fixed rows imported again: the good ones are duplicates, no rejects file is left.
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows(rows[:2])
    fixed = _import(*args)
    assert (fixed["accepted"], fixed["duplicates"], fixed["rejected"]) == (0, 2, 0)
    assert not (tmp_path / "ratings.csv.rejected.jsonl").exists()


def test_parquet_rows_with_zoneless_timestamps_are_utc(tmp_path: Path) -> None:
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    when = dt.datetime.fromtimestamp(NOW - DAY, dt.UTC).replace(tzinfo=None, microsecond=0)
    table = pa.table(
        {
            "user_id": ["p1", "p1"],
            "item_id": ["a", "b"],
            "type": ["rating", "dwell"],
            "value": [4.0, 30.0],
            "timestamp": pa.array([when, when + dt.timedelta(seconds=5)], pa.timestamp("s")),
        }
    )
    path = tmp_path / "history.parquet"
    pq.write_table(table, path)
    config = _config(tmp_path)
    summary = _import(str(path), "--config", str(config))
    assert (summary["accepted"], summary["rejected"]) == (2, 0)
    assert summary["first_timestamp"] == when.replace(tzinfo=dt.UTC).isoformat()


def test_history_is_judged_by_its_own_timestamps_not_as_a_burst(tmp_path: Path) -> None:
    """A human history (evenings of browsing and rating over two weeks) is imported whole:
    far over the per-minute rate limit had it arrived now, and judged trusted. A flood
    in the history (40 likes within one second of their timestamps) blocks its user."""
    import random

    rng = random.Random(5)
    path = tmp_path / "history.jsonl"
    start = (NOW - 15 * DAY) // DAY * DAY
    n = 0
    with path.open("w") as out:
        for day in range(14):
            at = start + day * DAY + 18 * 3600 + rng.random() * 3600
            for _ in range(rng.randint(6, 14)):
                at += rng.expovariate(1 / 90)
                n += 1
                item = f"film-{rng.randrange(5000)}"
                for kind, value in (("view", None), ("rating", rng.choice([2, 3, 4, 4, 5]))):
                    row = {"user_id": "human", "item_id": item, "type": kind,
                           "timestamp": at + (30 if kind == "rating" else 0)}  # fmt: skip
                    if value is not None:
                        row["value"] = value
                    out.write(json.dumps(row) + "\n")
        for i in range(40):
            row = {"user_id": "flood", "item_id": f"f{i}", "type": "like",
                   "timestamp": start + 5 * DAY + i * 0.02}  # fmt: skip
            out.write(json.dumps(row) + "\n")
    config = _config(tmp_path, rate_limits={"explicit": "5/minute"})
    summary = _import(str(path), "--config", str(config))
    assert summary["accepted"] + summary["rejected_by_reason"].get("blocked", 0) == 2 * n + 40
    assert n > 5  # sent now, at once, rate_limits.explicit (5/minute) would refuse most
    assert summary["rejected_by_reason"].keys() <= {"blocked"}
    settings = load_settings(config)
    human = asyncio.run(_get(settings, "/users/human/reliability"))
    flood = asyncio.run(_get(settings, "/users/flood/reliability"))
    assert human["status"] == "trusted", human
    assert flood["status"] == "blocked", flood
    assert "1 s" in flood["reason"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--map", "rating"], "--map 'rating': expected OLD=NEW"),
        (["--map", "=value"], "expected OLD=NEW"),
    ],
)
def test_a_bad_mapping_is_refused_before_anything_is_read(
    tmp_path: Path, args: list[str], message: str
) -> None:
    path = tmp_path / "h.jsonl"
    path.write_text('{"user_id": "u", "item_id": "i", "type": "like", "timestamp": 1}\n')
    config = _config(tmp_path)
    result = CliRunner().invoke(cli, ["import", str(path), "--config", str(config), *args])
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "recloop.db").exists()  # nothing was opened, nothing changed


def test_unknown_formats_and_missing_files_are_refused(tmp_path: Path) -> None:
    config = _config(tmp_path)
    other = tmp_path / "h.xlsx"
    other.write_text("")
    result = CliRunner().invoke(cli, ["import", str(other), "--config", str(config)])
    assert result.exit_code == 2
    assert "unknown format '.xlsx'" in result.output
    result = CliRunner().invoke(
        cli, ["import", str(tmp_path / "none.csv"), "--config", str(config)]
    )
    assert result.exit_code == 2
    assert "no such file" in result.output


def _events_in_log_order(database: Path) -> list[float]:
    import sqlite3

    with sqlite3.connect(database) as conn:
        return [t for (t,) in conn.execute('SELECT "timestamp" FROM events ORDER BY "offset"')]


def test_a_file_bigger_than_the_sort_buffer_is_sorted_on_disk_to_the_same_result(
    tmp_path: Path,
) -> None:
    """600 shuffled rows through a sort buffer of 64 (sorted runs on disk, merged) and
    batches of 50 give what the same file gives sorted in memory: the log in timestamp
    order, the same counts, rejected rows and learnt preferences."""
    import random

    rng = random.Random(11)
    start = NOW - 20 * DAY
    rows: list[dict[str, Any]] = []
    for i in range(600):
        row: dict[str, Any] = {
            "user_id": f"u{i % 30}",
            "item_id": f"m{rng.randrange(80)}",
            "type": "rating" if i % 3 else "click",
            "timestamp": start + rng.random() * 19 * DAY,
        }
        if row["type"] == "rating":
            row["value"] = 9 if i % 97 == 0 else rng.randint(1, 5)  # 9: refused by ingestion
        if i % 89 == 0:
            del row["timestamp"]  # refused by decoding
        rows.append(row)
    rng.shuffle(rows)
    history = tmp_path / "big.jsonl"
    history.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rejected = tmp_path / "big.jsonl.rejected.jsonl"

    results = []
    for name, extra in (("disk", ["--sort-buffer", "64", "--batch-size", "50"]), ("memory", [])):
        work = tmp_path / name
        work.mkdir()
        config = _config(work)
        summary = _import(str(history), "--config", str(config), *extra)
        rejects = [json.loads(line) for line in rejected.read_text().splitlines()]
        prefs = asyncio.run(_get(load_settings(config), "/users/u7/preferences"))
        results.append((summary, rejects, prefs, _events_in_log_order(work / "recloop.db")))
    (disk, disk_rejects, disk_prefs, disk_log), (memory, memory_rejects, memory_prefs, _) = results

    assert disk["sorted_runs"] == 600 // 64 and memory["sorted_runs"] == 0
    assert disk["rows"] == 600
    assert disk_log == sorted(disk_log) and len(disk_log) == disk["accepted"]
    ignore = {"seconds", "cpu_seconds", "rows_per_second", "sorted_runs"}
    assert {k: v for k, v in disk.items() if k not in ignore} == {
        k: v for k, v in memory.items() if k not in ignore
    }
    assert set(disk["rejected_by_reason"]) == {"timestamp", "value"}
    assert [r["row"] for r in disk_rejects] == sorted(r["row"] for r in disk_rejects)
    assert len(disk_rejects) == disk["rejected"] and disk_rejects == memory_rejects
    disk_prefs.pop("updated_at"), memory_prefs.pop("updated_at")  # the wall clock's
    assert disk_prefs == memory_prefs


def test_a_parquet_file_is_read_in_record_batches(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from recloop.importing.rows import PARQUET_BATCH

    n = PARQUET_BATCH + 1_500
    start = NOW - 5 * DAY
    table = pa.table(
        {
            "user_id": [f"p{i % 50}" for i in range(n)],
            "item_id": [f"i{(i * 31) % 997}" for i in range(n)],
            "type": ["view"] * n,
            "timestamp": [start + (n - i) * 10.0 for i in range(n)],  # newest first
        }
    )
    path = tmp_path / "views.parquet"
    pq.write_table(table, path, row_group_size=n)
    config = _config(tmp_path)
    summary = _import(str(path), "--config", str(config), "--sort-buffer", "4000")
    assert (summary["rows"], summary["accepted"], summary["rejected"]) == (n, n, 0)
    assert summary["sorted_runs"] == n // 4000
    log = _events_in_log_order(tmp_path / "recloop.db")
    assert log == sorted(log) and len(log) == n


def test_the_collector_is_spaced_during_an_import_and_restored_after(tmp_path: Path) -> None:
    """An import collects garbage less often (``runner._spaced_collections``); after
    it, even a failed one, the process's collector is as it was."""
    import gc

    from recloop.importing import runner

    before = gc.get_threshold()
    with runner._spaced_collections() as freeze:
        assert gc.get_threshold()[0] == runner.GC_YOUNG != before[0]
        freeze()
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
    with pytest.raises(RuntimeError), runner._spaced_collections() as freeze:
        freeze()
        raise RuntimeError("the import failed")
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0

    path = tmp_path / "h.jsonl"
    path.write_text('{"user_id": "u", "item_id": "i", "type": "like", "timestamp": 1.7e9}\n')
    summary = _import(str(path), "--config", str(_config(tmp_path)))
    assert summary["accepted"] == 1
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_a_historical_slate_is_ranked_as_of_its_own_time(tmp_path: Path) -> None:
    """The features logged with an imported slate are those of the slate's time (its hour
    of day), not of the import's, for each of several slates ranked together."""
    import math

    midnight = (NOW - 3 * DAY) // DAY * DAY
    hours = {"s-early": 6.25, "s-late": 18.5, "s-next": 24 + 11.0}
    rows = [
        {"user_id": f"u-{key}", "item_id": f"m{i}", "type": "impression",
         "timestamp": midnight + hour * 3600.0,
         "attribution": {"algorithm": "popularity", "impression_id": key}}
        for key, hour in hours.items()
        for i in range(3)
    ]  # fmt: skip
    path = tmp_path / "slates.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = _config(tmp_path)
    summary = _import(str(path), "--config", str(config))
    assert summary["slates"] == len(hours)
    settings = load_settings(config)
    for key, hour in hours.items():
        logged = asyncio.run(_get(settings, f"/impressions/{key}"))
        assert logged["created_at"] == midnight + hour * 3600.0
        for shown in logged["slate"]:
            features = shown["features"]
            angle = 2 * math.pi * (hour % 24) / 24
            assert features["hour_sin"] == pytest.approx(math.sin(angle), abs=1e-6), key
            assert features["hour_cos"] == pytest.approx(math.cos(angle), abs=1e-6), key
