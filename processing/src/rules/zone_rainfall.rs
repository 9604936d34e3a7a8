//! `zone_rainfall`: heavy rain at several gauges of one zone (a landslide
//! slope, a flood plain) raises one alert for the zone, listing the gauges.
//!
//! ```toml
//! [[rule]]
//! id = "landslide_rain"
//! kind = "zone_rainfall"
//! zone_kinds = ["landslide_risk"]   # and/or zones = [...]
//! within_m = 3000                   # gauges this near a zone count for it too
//! window = "3h"                     # 1h | 3h | 6h | 24h
//! levels = [{ name = "Mưa lớn diện rộng", value = 50, severity = "severe" }]
//! min_gauges = 2                    # how many gauges must reach a level
//! ```
//!
//! Each gauge's rolling total goes to the zones around it
//! ([`RuleKind::zone_totals`], on the gauge's worker): the totals of
//! windows as they close, and with each reading that adds rain the
//! running totals of the windows closing at the end of its bucket (lower
//! bounds). The geo operator exchanges them by zone and applies them in
//! event-time order once every gauge is known up to their time
//! ([`RuleKind::on_zone_total`]): a running total raises the zone's level
//! as soon as enough gauges pass it; lowering and resolving follow the
//! closes, with hysteresis. Each gauge counts with its latest total: the
//! running one of a window not yet closed, else its last close.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ioc_devices::Zones;
use ioc_schemas::{Alert, DeviceKind, Evidence, Timestamp, ZoneKind};
use serde::{Deserialize, Serialize};

use super::alert::{self, Tracker, subject_alert};
use super::kind::{Check, DeviceCx, GaugeTotal, LevelSpec, RuleKind, States, ZoneCx, ZoneTotal};
use super::rainfall::Rainfall;
use super::{Level, Rule, ZoneFilter};

/// A `zone_rainfall` rule's parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct ZoneRainfall {
    /// The zones it watches.
    pub zones: ZoneFilter,
    /// Gauges this far outside a zone count for it too, metres.
    pub within_m: f64,
    /// The rolling window, its levels (increasing) and how far below a
    /// level a total must fall to stop counting for it.
    pub rain: Rainfall,
    /// How many gauges must reach a level.
    pub min_gauges: usize,
}

/// A zone's state under one rule: every gauge's latest total, and the
/// zone's episode.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ZoneRainState {
    /// `(window end ms, total mm)` by gauge, of the windows that closed.
    totals: HashMap<Arc<str>, (i64, f64), foldhash::fast::RandomState>,
    /// `(window end ms, total mm)` by gauge, running: windows not closed
    /// yet, as readings made them.
    running: HashMap<Arc<str>, (i64, f64), foldhash::fast::RandomState>,
    /// The zone's level (with hysteresis) and episode.
    tracker: Tracker,
}

super::alert::episode_in!(ZoneRainState, tracker);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    #[serde(default)]
    zone_kinds: Vec<ZoneKind>,
    #[serde(default)]
    zones: Vec<String>,
    #[serde(default)]
    within_m: f64,
    #[serde(with = "humantime_serde")]
    window: Duration,
    levels: Vec<LevelSpec>,
    #[serde(default)]
    hysteresis: Option<f64>,
    #[serde(default = "two")]
    min_gauges: usize,
}

fn two() -> usize {
    2
}

impl RuleKind for ZoneRainfall {
    const NAME: &'static str = "zone_rainfall";
    const TITLE: (&'static str, &'static str) = ("Mưa lớn diện rộng", "Widespread heavy rain");
    type State = ZoneRainState;

    fn parse(check: &mut Check<'_>, at: &str, table: toml::Table) -> Option<Self> {
        let s: Spec = check.spec(at, table)?;
        let rain = Rainfall::checked(check, at, s.window, s.levels, s.hysteresis);
        check.non_negative(at, "within_m", s.within_m);
        if s.min_gauges == 0 {
            check.problem(at, "min_gauges must be at least 1");
        }
        Some(ZoneRainfall {
            zones: ZoneFilter {
                kinds: s.zone_kinds,
                ids: s.zones,
            },
            within_m: s.within_m,
            rain,
            min_gauges: s.min_gauges,
        })
    }

    fn default_devices(&self) -> Vec<DeviceKind> {
        vec![DeviceKind::RainGauge]
    }

    fn heap_bytes(state: &ZoneRainState) -> usize {
        (state.totals.capacity() + state.running.capacity())
            * std::mem::size_of::<(Arc<str>, (i64, f64))>()
    }

    fn feeds_zones(&self) -> bool {
        true
    }

    fn zone_totals(
        &self,
        rule: &Rule,
        cx: &DeviceCx<'_>,
        total: &GaugeTotal<'_>,
        zones: &Zones,
        out: &mut Vec<ZoneTotal>,
    ) {
        if total.window_ms != self.rain.window_ms || !rule.applies(cx.index, cx.device) {
            return;
        }
        // A running total only raises, and only a level the gauge passes
        // with this reading can raise the zone's: the rest are not sent
        // (the gauge counts with the total that passed, or its last close).
        let passes = |l: &Level| total.before_mm < l.value && l.value <= total.total_mm;
        if total.running && !self.rain.levels.iter().any(passes) {
            return;
        }
        let mut near = Vec::new();
        zones.indices_near(cx.device.pos, self.within_m, &mut near);
        for &zi in &near {
            let zone = zones.zone(zi);
            if self.zones.takes(zone) {
                out.push(ZoneTotal {
                    rule: rule.id.clone(),
                    zone: zone.reference.id.as_str().into(),
                    gauge: total.gauge.clone(),
                    end_ms: total.end_ms,
                    at_ms: total.at_ms,
                    total_mm: total.total_mm,
                    running: total.running,
                });
            }
        }
    }

    fn on_zone_total(
        &self,
        rule: &Rule,
        states: &mut States<Arc<str>>,
        cx: &ZoneCx<'_>,
    ) -> Option<Alert> {
        let (end_ms, rain) = (cx.end_ms, &self.rain);
        let state = states.get::<Self>(rule);
        let closed = state.totals.get(cx.gauge).map(|c| c.0);
        if cx.running {
            // Older than what the gauge already counts with: nothing new.
            let known = state.running.get(cx.gauge).map(|r| r.0).max(closed);
            if known.is_some_and(|k| k > end_ms) || closed.is_some_and(|c| c >= end_ms) {
                return None;
            }
            state
                .running
                .insert(cx.gauge.clone(), (end_ms, cx.total_mm));
        } else {
            if closed.is_some_and(|c| c > end_ms) {
                return None;
            }
            state.totals.insert(cx.gauge.clone(), (end_ms, cx.total_mm));
            // The close replaces the running total of its window.
            if state.running.get(cx.gauge).is_some_and(|r| r.0 <= end_ms) {
                state.running.remove(cx.gauge);
            }
        }
        // Totals of gauges that stopped reporting a window ago no longer count.
        let horizon = end_ms - rain.window_ms;
        state.totals.retain(|_, (end, _)| *end > horizon);
        state.running.retain(|_, (end, _)| *end > horizon);
        // Each gauge's latest: its running total of a window not closed
        // yet, else its last close. (Running totals are few: a gauge has
        // one only between passing a level and its window's close.)
        let (totals, running) = (&state.totals, &state.running);
        let latest = || -> Box<dyn Iterator<Item = (&Arc<str>, f64)> + '_> {
            let closes = totals.iter().map(|(g, (end, t))| (g, *end, *t));
            if running.is_empty() {
                return Box::new(closes.map(|(g, _, t)| (g, t)));
            }
            Box::new(
                closes
                    .filter(|(g, end, _)| running.get(*g).is_none_or(|r| r.0 <= *end))
                    .map(|(g, _, t)| (g, t))
                    .chain(
                        running
                            .iter()
                            .filter(|(g, (end, _))| totals.get(*g).is_none_or(|c| c.0 < *end))
                            .map(|(g, (_, t))| (g, *t)),
                    ),
            )
        };
        let current = state.tracker.level();
        let counted = |level: &Level, index: usize| {
            // Staying at a level takes a total above it minus the hysteresis.
            let floor = if index < usize::from(current) {
                level.value - rain.hysteresis
            } else {
                level.value
            };
            let mut over: Vec<(&Arc<str>, f64)> = latest().filter(|(_, t)| *t >= floor).collect();
            over.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
            over
        };
        let mut level = 0u8;
        let mut gauges = Vec::new();
        for (i, l) in rain.levels.iter().enumerate() {
            let over = counted(l, i);
            if over.len() >= self.min_gauges {
                level = (i + 1) as u8;
                gauges = over;
            }
        }
        if level == 0 {
            gauges = counted(&rain.levels[0], 0);
        }
        // A running total is a lower bound: it raises, never lowers.
        if cx.running && level <= current {
            return None;
        }
        let value = gauges
            .get(self.min_gauges.saturating_sub(1))
            .map_or(0.0, |g| g.1);
        let related: Vec<String> = gauges.iter().map(|g| g.0.to_string()).collect();
        let step = state.tracker.step(level, cx.at_ms)?;
        let mut ev = Evidence::new(
            value,
            "mm",
            alert::level_value(&rain.levels, step),
            Timestamp(cx.at_ms),
            0,
        );
        ev.window_s = Some((rain.window_ms / 1000) as u32);
        ev.related = related;
        let n = ev.related.len();
        let what_vi = format!("{n} trạm đo mưa");
        let what_en = format!("{n} rain gauges");
        let zone = cx.zone;
        Some(subject_alert(
            rule,
            &zone.reference.id,
            &zone.reference.name,
            zone.centre,
            cx.registry.areas().chain_at(zone.centre),
            step,
            &rain.levels,
            ev,
            (&what_vi, &what_en),
        ))
    }
}
