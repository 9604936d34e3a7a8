//! The closed list of rule kinds: the one place that names them all.
//!
//! [`kinds!`] turns the list into [`Logic`] (a rule's kind and settings),
//! [`RuleState`] (a rule's state for one subject, serializable, tagged by
//! kind) and the dispatch from each engine hook to the kind's
//! [`RuleKind`] implementation. Adding a kind is one line here.

use std::collections::HashSet;
use std::sync::Arc;

use ioc_devices::{DeviceIndex, Zone, Zones};
use ioc_schemas::{Alert, DeviceKind, EngineOutput};
use serde::{Deserialize, Serialize};

use super::alert::{Episode, Tracker};
#[cfg(test)]
use super::example;
use super::kind::{
    Check, DeviceCx, GaugeTotal, Latest, PlateRead, RainTotal, RuleKind, Scan, States, TrackCx,
    TrafficMean, VisitCx, ZoneCx, ZoneTotal,
};
use super::{
    Rule, cloned_plate, congestion, geofence, rainfall, rate_of_change, speed_drop, staleness,
    surge, threshold, watchlist, zone_rainfall,
};
use crate::sample::{Field, Sample};

/// What the list adds to a [`RuleKind`]: its place in [`RuleState`].
pub trait Registered: RuleKind {
    /// The kind's state, as a [`RuleState`].
    fn wrap(state: Self::State) -> RuleState;
    /// The kind's state in a [`RuleState`], if it is of this kind.
    fn project(state: &RuleState) -> Option<&Self::State>;
    /// [`Registered::project`], to change it.
    fn project_mut(state: &mut RuleState) -> Option<&mut Self::State>;
    /// The kind's settings in a [`Logic`], if it is of this kind.
    fn settings(logic: &Logic) -> Option<&Self>;
}

macro_rules! kinds {
    ($($(#[$attr:meta])* $module:ident :: $kind:ident),* $(,)?) => {
        /// A rule's kind and settings.
        #[derive(Clone, Debug, PartialEq)]
        pub enum Logic {
            $(
                #[doc = concat!("See [`", stringify!($module), "`].")]
                $(#[$attr])*
                $kind($module::$kind),
            )*
        }

        /// A rule's state for one subject, of whichever kind. Readable
        /// formats (JSON) tag it `{"kind": …, "state": …}`; compact ones
        /// (the checkpoint's) by the variant's index, as they read no names.
        #[derive(Clone, Debug, PartialEq)]
        pub enum RuleState {
            $(
                #[doc = concat!("See [`", stringify!($module), "`].")]
                $(#[$attr])*
                $kind(<$module::$kind as RuleKind>::State),
            )*
        }

        /// [`RuleState`] as a readable format writes it.
        #[derive(Serialize)]
        #[serde(tag = "kind", content = "state", rename_all = "snake_case")]
        enum TaggedRef<'a> {
            $($(#[$attr])* $kind(&'a <$module::$kind as RuleKind>::State),)*
        }

        /// [`RuleState`] as a readable format reads it.
        #[derive(Deserialize)]
        #[serde(tag = "kind", content = "state", rename_all = "snake_case")]
        enum Tagged {
            $($(#[$attr])* $kind(<$module::$kind as RuleKind>::State),)*
        }

        /// [`RuleState`] as a compact format writes it.
        #[derive(Serialize)]
        enum IndexedRef<'a> {
            $($(#[$attr])* $kind(&'a <$module::$kind as RuleKind>::State),)*
        }

        /// [`RuleState`] as a compact format reads it.
        #[derive(Deserialize)]
        enum Indexed {
            $($(#[$attr])* $kind(<$module::$kind as RuleKind>::State),)*
        }

        impl Serialize for RuleState {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    match self {
                        $($(#[$attr])* RuleState::$kind(x) => TaggedRef::$kind(x).serialize(s),)*
                    }
                } else {
                    match self {
                        $($(#[$attr])* RuleState::$kind(x) => IndexedRef::$kind(x).serialize(s),)*
                    }
                }
            }
        }

        impl<'de> Deserialize<'de> for RuleState {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    Ok(match Tagged::deserialize(d)? {
                        $($(#[$attr])* Tagged::$kind(x) => RuleState::$kind(x),)*
                    })
                } else {
                    Ok(match Indexed::deserialize(d)? {
                        $($(#[$attr])* Indexed::$kind(x) => RuleState::$kind(x),)*
                    })
                }
            }
        }

        $(
            $(#[$attr])*
            impl Registered for $module::$kind {
                fn wrap(state: Self::State) -> RuleState {
                    RuleState::$kind(state)
                }
                fn project(state: &RuleState) -> Option<&Self::State> {
                    match state {
                        RuleState::$kind(s) => Some(s),
                        #[allow(unreachable_patterns)]
                        _ => None,
                    }
                }
                fn project_mut(state: &mut RuleState) -> Option<&mut Self::State> {
                    match state {
                        RuleState::$kind(s) => Some(s),
                        #[allow(unreachable_patterns)]
                        _ => None,
                    }
                }
                fn settings(logic: &Logic) -> Option<&Self> {
                    match logic {
                        Logic::$kind(k) => Some(k),
                        #[allow(unreachable_patterns)]
                        _ => None,
                    }
                }
            }
        )*

        /// The kinds' names in the rules file, in the list's order.
        #[allow(clippy::vec_init_then_push)]
        pub fn names() -> Vec<&'static str> {
            let mut names = Vec::new();
            $(
                $(#[$attr])*
                names.push(<$module::$kind as RuleKind>::NAME);
            )*
            names
        }

        /// Reads the settings of kind `name`; `None` inside when they have
        /// problems (reported), `None` outside for an unknown kind.
        pub(crate) fn parse(
            name: &str,
            check: &mut Check<'_>,
            at: &str,
            table: toml::Table,
        ) -> Option<Option<Logic>> {
            match name {
                $(
                    $(#[$attr])*
                    <$module::$kind as RuleKind>::NAME => {
                        Some(<$module::$kind as RuleKind>::parse(check, at, table).map(Logic::$kind))
                    }
                )*
                _ => None,
            }
        }

        impl RuleState {
            /// The episode in the state, if the kind keeps one.
            pub fn tracker(&self) -> Option<&Tracker> {
                match self {
                    $($(#[$attr])* RuleState::$kind(s) => s.episode(),)*
                }
            }

            /// The episode in the state, to change it.
            pub fn tracker_mut(&mut self) -> Option<&mut Tracker> {
                match self {
                    $($(#[$attr])* RuleState::$kind(s) => s.episode_mut(),)*
                }
            }

            /// Bytes the state holds on the heap.
            pub fn heap_bytes(&self) -> usize {
                match self {
                    $($(#[$attr])* RuleState::$kind(s) => <$module::$kind as RuleKind>::heap_bytes(s),)*
                }
            }

            /// Whether the state belongs to rules of this kind.
            pub fn fits(&self, logic: &Logic) -> bool {
                match (self, logic) {
                    $($(#[$attr])* (RuleState::$kind(_), Logic::$kind(_)) => true,)*
                    #[allow(unreachable_patterns)]
                    _ => false,
                }
            }
        }

        impl Logic {
            /// The kind's name in the rules file.
            pub fn kind(&self) -> &'static str {
                match self {
                    $($(#[$attr])* Logic::$kind(_) => <$module::$kind as RuleKind>::NAME,)*
                }
            }

            /// The settings, if the rule is of kind `K`.
            pub fn get<K: Registered>(&self) -> Option<&K> {
                K::settings(self)
            }

            /// Default titles (Vietnamese, English).
            pub fn title(&self) -> (&'static str, &'static str) {
                match self {
                    $($(#[$attr])* Logic::$kind(_) => <$module::$kind as RuleKind>::TITLE,)*
                }
            }

            dispatch! {
                [$($(#[$attr])* $module::$kind),*];
                /// See [`RuleKind::field`].
                fn field(&self) -> Option<Field>;
                /// See [`RuleKind::default_devices`].
                fn default_devices(&self) -> Vec<DeviceKind>;
                /// See [`RuleKind::check_devices`].
                fn check_devices(&self, check: &mut Check<'_>, at: &str, kinds: &[DeviceKind], only: Option<&HashSet<DeviceIndex>>) -> ();
                /// See [`RuleKind::sets_device_alarm`].
                fn sets_device_alarm(&self) -> bool;
                /// See [`RuleKind::needs_positions`].
                fn needs_positions(&self) -> bool;
                /// See [`RuleKind::follows_plate`].
                fn follows_plate(&self, plate: &str) -> bool;
                /// See [`RuleKind::watches_zone`].
                fn watches_zone(&self, zone: &Zone, plate: bool) -> bool;
                /// See [`RuleKind::scans`].
                fn scans(&self) -> bool;
                /// See [`RuleKind::feeds_zones`].
                fn feeds_zones(&self) -> bool;
                /// See [`RuleKind::judges_registry_levels`].
                fn judges_registry_levels(&self) -> bool;
                /// See [`RuleKind::on_latest`].
                fn on_latest(&self, rule: &Rule, states: &mut States<u16>, cx: &DeviceCx<'_>, latest: &Latest, out: &mut Vec<EngineOutput>) -> ();
                /// See [`RuleKind::on_plate_read`].
                fn on_plate_read(&self, rule: &Rule, cx: &DeviceCx<'_>, read: &PlateRead<'_>) -> Option<Alert>;
                /// See [`RuleKind::on_sample`].
                fn on_sample(&self, rule: &Rule, states: &mut States<u16>, cx: &DeviceCx<'_>, sample: &Sample) -> Option<Alert>;
                /// See [`RuleKind::on_rain_totals`].
                fn on_rain_totals(&self, rule: &Rule, states: &mut States<u16>, cx: &DeviceCx<'_>, totals: &[RainTotal], out: &mut Vec<EngineOutput>) -> ();
                /// See [`RuleKind::on_traffic_windows`].
                fn on_traffic_windows(&self, rule: &Rule, states: &mut States<u16>, cx: &DeviceCx<'_>, windows: &[TrafficMean], out: &mut Vec<EngineOutput>) -> ();
                /// See [`RuleKind::on_scan`].
                fn on_scan(&self, rule: &Rule, states: &mut States<u16>, cx: &DeviceCx<'_>, scan: &Scan, out: &mut Vec<EngineOutput>) -> ();
                /// See [`RuleKind::zone_totals`].
                fn zone_totals(&self, rule: &Rule, cx: &DeviceCx<'_>, total: &GaugeTotal<'_>, zones: &Zones, out: &mut Vec<ZoneTotal>) -> ();
                /// See [`RuleKind::on_zone_total`].
                fn on_zone_total(&self, rule: &Rule, states: &mut States<Arc<str>>, cx: &ZoneCx<'_>) -> Option<Alert>;
                /// See [`RuleKind::on_track`].
                fn on_track(&self, rule: &Rule, states: &mut States<Arc<str>>, cx: &TrackCx<'_>) -> Option<Alert>;
                /// See [`RuleKind::on_visits`].
                fn on_visits(&self, rule: &Rule, states: &mut States<Arc<str>>, cx: &VisitCx<'_>) -> Option<Alert>;
            }
        }
    };
}

/// A match over every kind of a [`Logic`], binding its settings to `$k`.
macro_rules! each_kind {
    ($value:expr, [$($(#[$attr:meta])* $module:ident :: $kind:ident),*], $k:ident => $body:expr) => {
        match $value {
            $($(#[$attr])* Logic::$kind($k) => $body,)*
        }
    };
}

/// One method of [`Logic`] per hook, each a match that calls the kind's.
macro_rules! dispatch {
    ($kinds:tt; $(
        $(#[$doc:meta])*
        fn $name:ident(&self $(, $arg:ident : $ty:ty)*) -> $ret:ty;
    )*) => {
        $(
            $(#[$doc])*
            #[inline]
            #[allow(clippy::unused_unit)]
            pub fn $name(&self $(, $arg: $ty)*) -> $ret {
                each_kind!(self, $kinds, k => k.$name($($arg),*))
            }
        )*
    };
}

kinds! {
    threshold::Threshold,
    rate_of_change::RateOfChange,
    rainfall::Rainfall,
    staleness::Staleness,
    congestion::Congestion,
    speed_drop::SpeedDrop,
    surge::Surge,
    watchlist::Watchlist,
    geofence::Geofence,
    cloned_plate::ClonedPlate,
    zone_rainfall::ZoneRainfall,
    #[cfg(test)]
    example::BatteryLow,
}
