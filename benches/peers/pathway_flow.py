"""The peers' workload in Pathway (benches/peers/README.md): run by
`PATHWAY_THREADS=2 python benches/peers/pathway_flow.py`.

Written as Pathway's documentation recommends: `pw.io.jsonlines.read` with
a schema (nested fields by JSON pointer, parsed in Pathway's Rust reader),
`windowby` with `pw.temporal.sliding` (1 h every 5 min) and
`pw.temporal.tumbling` (5 min) per device, reducers for the sums. Pathway
has no per-key state operator that runs in event-time order: a subject's
level series is its rows gathered in time order by the `sorted_tuple`
reducer and stepped through by a UDF, then flattened back into rows (in
static mode the file is one batch, so each subject's tuple is built once)."""

import os
import sys

import pathway as pw

sys.path.insert(0, os.path.dirname(__file__))
import common as c  # noqa: E402


class Reading(pw.Schema):
    device: str
    ts: str
    water_level_m: float | None = pw.column_definition(default_value=None)
    rainfall_mm: float | None = pw.column_definition(default_value=None)
    speed_kmh: float | None = pw.column_definition(default_value=None)
    motorbike: int | None = pw.column_definition(default_value=None)
    car: int | None = pw.column_definition(default_value=None)
    truck: int | None = pw.column_definition(default_value=None)
    bus: int | None = pw.column_definition(default_value=None)


readings = pw.io.jsonlines.read(
    c.READINGS,
    schema=Reading,
    mode="static",
    json_field_paths={
        "water_level_m": "/hydrology/water_level_m",
        "rainfall_mm": "/hydrology/rainfall_mm",
        "speed_kmh": "/traffic/speed_kmh",
        "motorbike": "/traffic/counts/motorbike",
        "car": "/traffic/counts/car",
        "truck": "/traffic/counts/truck",
        "bus": "/traffic/counts/bus",
    },
)
readings = readings.with_columns(
    # The float of milliseconds, rounded (a plain cast can land 1 ms short).
    ms=pw.cast(
        int, pw.this.ts.dt.strptime("%Y-%m-%dT%H:%M:%S.%fZ").dt.timestamp(unit="ms") + 0.5
    )
)

levels = pw.debug.table_from_rows(
    pw.schema_from_types(device=str, bd1=float, bd2=float, bd3=float),
    [(d, *l) for d, l in c.RIVER_LEVELS.items()],
)


def stepped(rule, level_of):
    """A UDF stepping one subject's `(ts, value)` series through its
    level machine: the `(ts, level)` changes."""

    @pw.udf
    def step(series: tuple, *params) -> list[tuple[int, int]]:
        level, changes = 0, []
        for ts, value in series:
            new = level_of(level, value, *params)
            if new != level:
                changes.append((ts, new))
                level = new
        return changes

    return step


def transitions(table, rule, step, *params):
    """Rows `(rule, device, ts, level)` from one subject per row of `table`
    (columns `device`, `series`)."""
    flat = table.select(
        pw.this.device, change=step(pw.this.series, *params)
    ).flatten(pw.this.change)
    return flat.select(
        rule=rule,
        device=pw.this.device,
        ts=pw.this.change[0],
        level=pw.this.change[1],
    )


# BĐ levels, per reading.
river = readings.filter(pw.this.water_level_m.is_not_none()).join(
    levels, pw.left.device == pw.right.device
).select(
    pw.left.device,
    pw.left.ms,
    level_m=pw.unwrap(pw.left.water_level_m),
    bd1=pw.right.bd1,
    bd2=pw.right.bd2,
    bd3=pw.right.bd3,
)
river_series = river.groupby(pw.this.device).reduce(
    pw.this.device,
    series=pw.reducers.sorted_tuple(pw.make_tuple(pw.this.ms, pw.this.level_m)),
    bd1=pw.reducers.any(pw.this.bd1),
    bd2=pw.reducers.any(pw.this.bd2),
    bd3=pw.reducers.any(pw.this.bd3),
)
river_changes = transitions(
    river_series,
    "river_level",
    stepped("river_level", lambda cur, v, b1, b2, b3: c.river_level(cur, v, (b1, b2, b3))),
    pw.this.bd1,
    pw.this.bd2,
    pw.this.bd3,
)

# Rolling 1-hour rainfall, every 5 minutes.
rain = readings.filter(pw.this.rainfall_mm.is_not_none()).select(
    pw.this.device, pw.this.ms, mm=pw.unwrap(pw.this.rainfall_mm)
)
rain_windows = rain.windowby(
    pw.this.ms,
    # Windows start at `origin`: the first ones to hold the first readings
    # started 55 minutes before them (as in the other systems).
    window=pw.temporal.sliding(
        hop=c.RAIN_HOP_MS,
        duration=c.RAIN_WINDOW_MS,
        origin=c.T0_MS - c.RAIN_WINDOW_MS + c.RAIN_HOP_MS,
    ),
    instance=pw.this.device,
).reduce(
    device=pw.this._pw_instance,
    end=pw.this._pw_window_end,
    total=pw.reducers.sum(pw.this.mm),
)
rain_series = rain_windows.groupby(pw.this.device).reduce(
    pw.this.device,
    series=pw.reducers.sorted_tuple(pw.make_tuple(pw.this.end, pw.this.total)),
)
rain_changes = transitions(
    rain_series,
    "rain_1h",
    stepped("rain_1h", lambda cur, v: c.rain_level(cur, c.rain_total(v))),
)

# 5-minute mean speed per counter, weighted by vehicles.
traffic = readings.filter(pw.this.speed_kmh.is_not_none()).select(
    pw.this.device,
    pw.this.ms,
    vehicles=pw.coalesce(pw.this.motorbike, 0)
    + pw.coalesce(pw.this.car, 0)
    + pw.coalesce(pw.this.truck, 0)
    + pw.coalesce(pw.this.bus, 0),
    tenths=pw.apply_with_type(lambda s: round(s * 10), int, pw.unwrap(pw.this.speed_kmh)),
)
traffic_windows = traffic.windowby(
    pw.this.ms,
    window=pw.temporal.tumbling(duration=c.TRAFFIC_WINDOW_MS, origin=c.T0_MS),
    instance=pw.this.device,
).reduce(
    device=pw.this._pw_instance,
    end=pw.this._pw_window_end,
    tenths_vehicles=pw.reducers.sum(pw.this.tenths * pw.this.vehicles),
    vehicles=pw.reducers.sum(pw.this.vehicles),
)
traffic_series = traffic_windows.filter(pw.this.vehicles > 0).groupby(pw.this.device).reduce(
    pw.this.device,
    series=pw.reducers.sorted_tuple(
        pw.make_tuple(pw.this.end, pw.make_tuple(pw.this.tenths_vehicles, pw.this.vehicles))
    ),
)
slow_changes = transitions(
    traffic_series,
    "traffic_slow",
    stepped("traffic_slow", lambda cur, v: c.slow_level(cur, c.mean_speed(*v))),
)

pw.io.jsonlines.write(
    pw.Table.concat_reindex(river_changes, rain_changes, slow_changes), c.OUT
)
pw.run(monitoring_level=pw.MonitoringLevel.NONE)
