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
//! ([`RuleKind::zone_totals`], on the gauge's worker); the geo operator
//! exchanges it by zone and applies it in event-time order
//! ([`RuleKind::on_zone_total`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ioc_devices::Zones;
use ioc_schemas::{Alert, DeviceKind, Evidence, Timestamp, WindowResult, ZoneKind};
use serde::{Deserialize, Serialize};

use super::alert::{self, Tracker, subject_alert};
use super::kind::{Check, DeviceCx, LevelSpec, RuleKind, States, ZoneCx, ZoneTotal};
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
    /// `(window end ms, total mm)` by gauge.
    totals: HashMap<Arc<str>, (i64, f64), foldhash::fast::RandomState>,
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
        state.totals.capacity() * std::mem::size_of::<(Arc<str>, (i64, f64))>()
    }

    fn feeds_zones(&self) -> bool {
        true
    }

    fn zone_totals(
        &self,
        rule: &Rule,
        cx: &DeviceCx<'_>,
        window: &WindowResult,
        total_mm: f64,
        zones: &Zones,
        out: &mut Vec<ZoneTotal>,
    ) {
        if i64::from(window.window_s()) * 1000 != self.rain.window_ms
            || !rule.applies(cx.index, cx.device)
        {
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
                    gauge: window.device.clone(),
                    end_ms: window.end.millis(),
                    total_mm,
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
        match state.totals.get(cx.gauge) {
            Some((end, _)) if *end > end_ms => return None,
            _ => {
                state.totals.insert(cx.gauge.clone(), (end_ms, cx.total_mm));
            }
        }
        // Totals of gauges that stopped reporting a window ago no longer count.
        state
            .totals
            .retain(|_, (end, _)| *end > end_ms - rain.window_ms);
        let current = state.tracker.level();
        let counted = |level: &Level, index: usize| {
            // Staying at a level takes a total above it minus the hysteresis.
            let floor = if index < usize::from(current) {
                level.value - rain.hysteresis
            } else {
                level.value
            };
            let mut over: Vec<(&Arc<str>, f64)> = state
                .totals
                .iter()
                .filter(|(_, (_, t))| *t >= floor)
                .map(|(g, (_, t))| (g, *t))
                .collect();
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
        let value = gauges
            .get(self.min_gauges.saturating_sub(1))
            .map_or(0.0, |g| g.1);
        let related: Vec<String> = gauges.iter().map(|g| g.0.to_string()).collect();
        let step = state.tracker.step(level, end_ms)?;
        let mut ev = Evidence::new(
            value,
            "mm",
            alert::level_value(&rain.levels, step),
            Timestamp(end_ms),
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
