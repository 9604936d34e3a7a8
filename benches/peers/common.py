"""What the Python peers share: the workload's files, its parsing and the
rules' level logic, written once so that every peer computes the same thing
(benches/peers/rules.toml is ioc's copy of the same rules)."""

import json
import math
import os
from datetime import datetime, timezone

READINGS = os.environ["PEERS_READINGS"]
DEVICES = os.environ["PEERS_DEVICES"]
OUT = os.environ["PEERS_OUT"]
PARALLELISM = int(os.environ.get("PEERS_PARALLELISM", "2"))

# BĐ1–BĐ3 of every river gauge, as the registry has them.
with open(DEVICES) as f:
    RIVER_LEVELS = json.load(f)["river_levels"]

# The workload's first event time (2026-01-01T00:00Z): windows align to it.
T0_MS = 1_767_225_600_000
T0 = datetime.fromtimestamp(T0_MS / 1000, tz=timezone.utc)
RAIN_WINDOW_MS = 3_600_000
RAIN_HOP_MS = 300_000
TRAFFIC_WINDOW_MS = 300_000

RIVER_HYSTERESIS = 0.2
RAIN_LEVEL, RAIN_HYSTERESIS = 10.0, 2.0
SLOW_BELOW, SLOW_MARGIN = 40.0, 3.0


def parse(line):
    """A line of the file: `(kind, device, ts_ms, value)` for the readings
    the rules watch, None for the others (reservoirs, cameras, ...). The
    traffic value is `(speed in tenths of km/h × vehicles, vehicles)`."""
    r = json.loads(line)
    ts = datetime.fromisoformat(r["ts"])
    ms = int(ts.timestamp() * 1000 + 0.5)
    h = r.get("hydrology")
    if h is not None:
        level = h.get("water_level_m")
        if level is not None and r["device"] in RIVER_LEVELS:
            return ("river", r["device"], ms, level)
        mm = h.get("rainfall_mm")
        if mm is not None:
            return ("rain", r["device"], ms, mm)
        return None
    t = r.get("traffic")
    if t is not None and t.get("speed_kmh") is not None:
        vehicles = sum(t["counts"].values())
        return ("traffic", r["device"], ms, (round(t["speed_kmh"] * 10) * vehicles, vehicles))
    return None


def device_of(line):
    """The device id of a line, without parsing the rest (for routing)."""
    return line.split('"device":"', 1)[1].split('"', 1)[0]


def river_level(current, value, levels):
    """The BĐ level after `value`: raised as soon as reached, left only
    0.2 m below it."""
    reached = 0
    while reached < len(levels) and value >= levels[reached]:
        reached += 1
    if reached >= current:
        return reached
    k = current
    while k > reached and value < levels[k - 1] - RIVER_HYSTERESIS:
        k -= 1
    return k


def rain_level(current, total_mm):
    """The rainfall level after a window's total (one level, 10 mm)."""
    if total_mm >= RAIN_LEVEL:
        return 1
    if current == 1 and total_mm >= RAIN_LEVEL - RAIN_HYSTERESIS:
        return 1
    return 0


def slow_level(current, mean_kmh):
    """The congestion level after a window's mean speed."""
    if current == 0:
        return 1 if mean_kmh < SLOW_BELOW else 0
    return 0 if mean_kmh >= SLOW_BELOW + SLOW_MARGIN else 1


def mean_speed(tenths_vehicles, vehicles):
    """Mean speed weighted by vehicles, to 0.1 km/h, rounded as ioc
    rounds it (the same float operations, half away from zero)."""
    return math.floor(tenths_vehicles / 10 / vehicles * 10 + 0.5) / 10


def rain_total(mm):
    """A window's total to 0.01 mm (the readings have 0.1 mm)."""
    return round(mm, 2)


def transition(rule, device, ts_ms, level):
    return json.dumps({"rule": rule, "device": device, "ts": ts_ms, "level": level})
