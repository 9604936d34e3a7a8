"""The peers' workload in Bytewax (benches/peers/README.md): run by
`python -m bytewax.testing -w 1 -p 2 benches/peers/bytewax_flow.py:flow`
(two processes of one worker: Python holds one core per process).

Written as Bytewax's documentation recommends: a FileSource, `key_on` per
device, `stateful_map` for the BĐ levels, `fold_window` over an EventClock
with a SlidingWindower (1 h every 5 min) and a TumblingWindower (5 min),
and `stateful_map` again for each window series' level."""

import os
import sys
from datetime import timedelta

import bytewax.operators as op
from bytewax.connectors.files import FileSink, FileSource
from bytewax.dataflow import Dataflow
from bytewax.operators.windowing import (
    EventClock,
    SlidingWindower,
    TumblingWindower,
    fold_window,
)

sys.path.insert(0, os.path.dirname(__file__))
import common as c  # noqa: E402


def clock():
    # Event time from the readings only: the file is replayed far from
    # its time, so the system clock must not move the watermark.
    return EventClock(
        ts_getter=lambda r: c.T0 + timedelta(milliseconds=r[2] - c.T0_MS),
        wait_for_system_duration=timedelta(0),
        to_system_utc=lambda _t: None,
    )


def leveller(rule, level_of):
    """A per-subject state machine: emits `(ts, level)` on a change."""

    def step(state, item):
        ts, value = item
        current = state or 0
        new = level_of(current, value)
        return new, ((ts, new) if new != current else None)

    return step


def output(step_id, stream, rule):
    changes = op.filter_map(step_id + "_changed", stream, lambda kv: kv if kv[1] else None)
    return op.map(
        step_id + "_json", changes, lambda kv: c.transition(rule, kv[0], kv[1][0], kv[1][1])
    )


flow = Dataflow("peers")
lines = op.input("readings", flow, FileSource(c.READINGS, batch_size=2000))
# One worker reads the file. Each line goes to its device's worker before
# it is parsed, so a device's readings stay in order (spreading the lines
# first and keying after parsing lets two workers reorder a device's
# readings, and the windows then drop some as late); the worker that reads
# takes only the device id from the line.
keyed_lines = op.key_on("device", lines, c.device_of)
by_device = op.filter_map_value("parse", keyed_lines, c.parse)
river_or_not = op.branch("is_river", by_device, lambda kv: kv[1][0] == "river")
rain_or_traffic = op.branch("is_rain", river_or_not.falses, lambda kv: kv[1][0] == "rain")

# BĐ levels, per reading.
river = op.map_value("river_value", river_or_not.trues, lambda r: (r[2], (r[3], r[1])))
river_levels = op.stateful_map(
    "river_level",
    river,
    leveller("river_level", lambda cur, v: c.river_level(cur, v[0], c.RIVER_LEVELS[v[1]])),
)

# Rolling 1-hour rainfall, every 5 minutes.
rain = fold_window(
    "rain_1h_window",
    rain_or_traffic.trues,
    clock(),
    SlidingWindower(
        length=timedelta(milliseconds=c.RAIN_WINDOW_MS),
        offset=timedelta(milliseconds=c.RAIN_HOP_MS),
        align_to=c.T0,
    ),
    builder=lambda: 0.0,
    folder=lambda acc, r: acc + r[3],
    merger=lambda a, b: a + b,
)
rain_totals = op.map_value(
    "rain_1h_end",
    rain.down,
    lambda w: (c.T0_MS + w[0] * c.RAIN_HOP_MS + c.RAIN_WINDOW_MS, c.rain_total(w[1])),
)
rain_levels = op.stateful_map("rain_1h", rain_totals, leveller("rain_1h", c.rain_level))

# 5-minute mean speed per counter.
traffic = fold_window(
    "traffic_window",
    rain_or_traffic.falses,
    clock(),
    TumblingWindower(length=timedelta(milliseconds=c.TRAFFIC_WINDOW_MS), align_to=c.T0),
    builder=lambda: (0, 0),
    folder=lambda acc, r: (acc[0] + r[3][0], acc[1] + r[3][1]),
    merger=lambda a, b: (a[0] + b[0], a[1] + b[1]),
)
speeds = op.filter_map_value(
    "traffic_mean",
    traffic.down,
    lambda w: (
        (c.T0_MS + (w[0] + 1) * c.TRAFFIC_WINDOW_MS, c.mean_speed(*w[1])) if w[1][1] > 0 else None
    ),
)
slow_levels = op.stateful_map("traffic_slow", speeds, leveller("traffic_slow", c.slow_level))

open(c.OUT, "w").close()
merged = op.merge(
    "transitions",
    output("river", river_levels, "river_level"),
    output("rain", rain_levels, "rain_1h"),
    output("slow", slow_levels, "traffic_slow"),
)
# FileSink is one partition: every line goes to it under one key.
op.output("out", op.key_on("one_file", merged, lambda _line: "out"), FileSink(c.OUT))
