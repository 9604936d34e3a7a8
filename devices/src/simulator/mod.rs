//! The seeded Sơn La simulator: readings that behave like the province.
//!
//! Every value is a pure function of the seed, the device, the start time and
//! the reading's time, so a run is reproducible. The model:
//!
//! - **rain** falls from storm cells; a gauge's increment is the intensity
//!   at its position times the time since its previous reading;
//! - **rivers** respond to the storm with a lag that grows with distance
//!   from the storm centre (a rising limb over a minute, a plateau, an
//!   exponential recession): time is compressed so a demo shows a whole
//!   flood in a few minutes;
//! - **reservoirs** rise slowly with inflow;
//! - **traffic** follows a two-peak diurnal profile in local time (UTC+7),
//!   dominated by motorbikes;
//! - **cameras** mostly read plates, four in five registered in Sơn La (26).
//!
//! Scenarios repeat every 20 minutes (`FLOOD_CYCLE_MS`); values are time
//! compressed (a day's rain in minutes) but event time is not, so rules
//! with durations (congestion for 10 minutes, staleness after 3 intervals)
//! take that long in a live demo:
//!
//! - `normal`: scattered showers, rivers near their dry-season stage;
//! - `flood`: a storm over the first river gauge of Tô Hiệu ward, Sơn La
//!   city (or the gauge named with [`Simulator::with_flood_target`]): it
//!   passes BĐ1 about 45 s after the start, BĐ2 after about 55 s and BĐ3
//!   after about 70 s, then recedes; the Sơn La reservoir rises above its
//!   normal level and opens spillway gates (outflow surge) at about 3 min;
//! - `landslide_rain`: extreme rain over Tà Xùa (Bắc Yên), a
//!   landslide-prone pass: over 100 mm within minutes at the nearest gauges;
//! - `traffic_jam`: two counters on National Road 6 drop from free flow to
//!   8 km/h and 55 % occupancy from 2 to 15 minutes into the cycle;
//! - `device_outage`: two cameras and a traffic counter fall silent from 1
//!   to about 17 minutes into the cycle;
//! - `watchlist_plate`: the watch-listed plate 26A-999.99 passes three
//!   cameras of Sơn La city, 30, 90 and 150 s into the cycle;
//! - `demo`: all of the above at once (the embedded default).

pub mod mqtt;

use std::f64::consts::PI;
use std::str::FromStr;
use std::sync::Arc;

use ioc_schemas::{
    Body, Camera, CameraEvent, DeviceInfo, DeviceKind, Envelope, Hydrology, Timestamp, Traffic,
    VehicleCounts,
};

pub use crate::geo::distance_km;
use crate::noise::{gauss, hash, unit};
use crate::registry::{DeviceIndex, Registry};

/// A named scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// Ordinary weather: scattered light showers, rivers near their dry-season stage.
    Normal,
    /// A storm over one river basin that pushes its gauges past their alarm levels.
    Flood,
    /// Extreme rain over a landslide-prone pass.
    LandslideRain,
    /// A traffic jam on National Road 6.
    TrafficJam,
    /// A few devices fall silent.
    DeviceOutage,
    /// A watch-listed plate passes three cameras.
    WatchlistPlate,
    /// Every scenario at once.
    Demo,
}

impl Scenario {
    /// Every scenario's name.
    pub const NAMES: [&str; 7] = [
        "normal",
        "flood",
        "landslide_rain",
        "traffic_jam",
        "device_outage",
        "watchlist_plate",
        "demo",
    ];

    /// Whether this scenario includes `part`.
    pub fn has(self, part: Scenario) -> bool {
        self == part || (self == Scenario::Demo && part != Scenario::Normal)
    }
}

/// The watch-listed plate of the `watchlist_plate` scenario.
pub const WATCHED_PLATE: &str = "26A-999.99";

impl FromStr for Scenario {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "normal" => Ok(Scenario::Normal),
            "flood" => Ok(Scenario::Flood),
            "landslide_rain" => Ok(Scenario::LandslideRain),
            "traffic_jam" => Ok(Scenario::TrafficJam),
            "device_outage" => Ok(Scenario::DeviceOutage),
            "watchlist_plate" => Ok(Scenario::WatchlistPlate),
            "demo" => Ok(Scenario::Demo),
            other => Err(format!(
                "unknown scenario {other:?}: expected one of {}",
                Scenario::NAMES.join(", ")
            )),
        }
    }
}

/// Length of one flood cycle, in milliseconds.
pub const FLOOD_CYCLE_MS: i64 = 20 * 60 * 1000;
/// Storm radius (e-folding distance of rain and river response), in km.
const STORM_RADIUS_KM: f64 = 20.0;
/// Peak rain intensity at the storm centre, in mm/h.
const STORM_PEAK_MM_H: f64 = 80.0;
/// Peak rise of the target gauge above its dry-season stage, in metres.
const TARGET_RISE_M: f64 = 3.9;
/// Landslide rain: peak intensity (time-compressed), mm/h, and radius, km.
const LANDSLIDE_PEAK_MM_H: f64 = 3000.0;
const LANDSLIDE_RADIUS_KM: f64 = 8.0;

/// Rounds degrees to 1e-6 (about 0.1 m), as a GPS-equipped device would send them.
fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

fn smoothstep(x: f64) -> f64 {
    let x = x.clamp(0.0, 1.0);
    x * x * (3.0 - 2.0 * x)
}

/// Generates readings for every device of a registry.
#[derive(Debug)]
pub struct Simulator {
    registry: Arc<Registry>,
    scenario: Scenario,
    seed: u64,
    start_ms: i64,
    storm_centre: [f64; 2],
    landslide_centre: [f64; 2],
    /// Devices the scenarios single out (jam, outage, watch-list cameras, flooded reservoir).
    jam: Vec<DeviceIndex>,
    outage: Vec<DeviceIndex>,
    watch_cameras: Vec<DeviceIndex>,
    flooded_reservoir: Option<DeviceIndex>,
    seqs: Vec<u64>,
    last_ms: Vec<i64>,
    next: usize,
}

impl Simulator {
    /// A simulator whose scenario clock starts at `start`.
    pub fn new(registry: Arc<Registry>, scenario: Scenario, seed: u64, start: Timestamp) -> Self {
        let n = registry.devices().len();
        let centre = registry
            .get("river-to-hieu")
            .or_else(|| {
                registry
                    .devices()
                    .iter()
                    .find(|d| d.kind == DeviceKind::RiverGauge)
            })
            .map_or([0.0, 0.0], |d| d.pos);
        let pick = |ids: &[&str], kind: DeviceKind, n: usize| -> Vec<DeviceIndex> {
            let named: Vec<DeviceIndex> = ids.iter().filter_map(|id| registry.lookup(id)).collect();
            if !named.is_empty() {
                return named;
            }
            // Another catalogue: the first devices of the kind.
            registry
                .devices()
                .iter()
                .enumerate()
                .filter(|(_, d)| d.kind == kind)
                .take(n)
                .map(|(i, _)| i as DeviceIndex)
                .collect()
        };
        let landslide_centre = registry
            .get("rain-ta-xua")
            .or_else(|| {
                registry
                    .devices()
                    .iter()
                    .find(|d| d.kind == DeviceKind::RainGauge)
            })
            .map_or(centre, |d| d.pos);
        let jam = pick(
            &["traffic-ql6-03", "traffic-ql6-04"],
            DeviceKind::TrafficCounter,
            2,
        );
        let mut outage = pick(&["cam-son-la-05", "cam-son-la-06"], DeviceKind::Camera, 2);
        outage.extend(pick(&["traffic-ql6-07"], DeviceKind::TrafficCounter, 1));
        let watch_cameras = pick(
            &["cam-son-la-01", "cam-son-la-02", "cam-son-la-03"],
            DeviceKind::Camera,
            3,
        );
        let flooded_reservoir = pick(&["reservoir-son-la"], DeviceKind::Reservoir, 1)
            .first()
            .copied();
        Simulator {
            registry,
            scenario,
            seed,
            start_ms: start.millis(),
            storm_centre: centre,
            landslide_centre,
            jam,
            outage,
            watch_cameras,
            flooded_reservoir,
            seqs: vec![0; n],
            last_ms: vec![i64::MIN; n],
            next: 0,
        }
    }

    /// Centres the flood on this device (must exist in the registry).
    pub fn with_flood_target(mut self, device: &str) -> Option<Self> {
        self.storm_centre = self.registry.get(device)?.pos;
        Some(self)
    }

    /// The registry being simulated.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The next reading, cycling over all devices (skipping those the
    /// `device_outage` scenario silences).
    pub fn next_reading(&mut self, now: Timestamp) -> Option<Envelope> {
        let n = self.registry.devices().len();
        for _ in 0..n {
            let i = self.next % n;
            self.next = (i + 1) % n;
            if !self.silent(i as DeviceIndex, now.millis()) {
                return Some(self.reading(i as DeviceIndex, now));
            }
        }
        None
    }

    /// Whether the `device_outage` scenario silences a device at `t_ms`.
    pub fn silent(&self, index: DeviceIndex, t_ms: i64) -> bool {
        let tau = self.cycle_s(t_ms);
        self.scenario.has(Scenario::DeviceOutage)
            && (60.0..1020.0).contains(&tau)
            && self.outage.contains(&index)
    }

    /// A reading of one device at `now`.
    pub fn reading(&mut self, index: DeviceIndex, now: Timestamp) -> Envelope {
        let i = index as usize;
        self.seqs[i] += 1;
        let since_ms = if self.last_ms[i] == i64::MIN {
            10_000
        } else {
            (now.millis() - self.last_ms[i]).max(0)
        };
        self.last_ms[i] = now.millis();
        let seq = self.seqs[i];
        let device = self.registry.device(index);
        let t_ms = now.millis();
        let (body, pos) = match device.kind {
            DeviceKind::RiverGauge => (Body::Hydrology(self.river(index, device, t_ms)), None),
            DeviceKind::RainGauge => (
                Body::Hydrology(self.rain(index, device, t_ms, since_ms)),
                None,
            ),
            DeviceKind::Reservoir => (Body::Hydrology(self.reservoir(index, device, t_ms)), None),
            DeviceKind::TrafficCounter => (Body::Traffic(self.traffic(index, t_ms)), None),
            DeviceKind::Camera => {
                let (mut camera, pos) = self.camera(index, device, seq);
                if let Some(k) = self.watch_cameras.iter().position(|&c| c == index) {
                    let at = 30.0 + 60.0 * k as f64;
                    if self.scenario.has(Scenario::WatchlistPlate)
                        && (at..at + 10.0).contains(&self.cycle_s(t_ms))
                    {
                        camera.event = CameraEvent::PlateRead;
                        camera.plate = Some(WATCHED_PLATE.to_owned());
                    }
                }
                (Body::Camera(camera), Some(pos))
            }
        };
        Envelope {
            device: device.id.clone(),
            ts: now,
            seq,
            pos,
            body,
        }
    }

    /// Seconds into the current flood cycle.
    fn cycle_s(&self, t_ms: i64) -> f64 {
        (t_ms - self.start_ms).rem_euclid(FLOOD_CYCLE_MS) as f64 / 1000.0
    }

    /// Rain intensity in mm/h at a position.
    fn intensity(&self, index: DeviceIndex, pos: [f64; 2], t_ms: i64) -> f64 {
        let bucket = (t_ms / 600_000) as u64;
        let shower = if unit(self.seed ^ 0x5A, u64::from(index), bucket) < 0.08 {
            4.0 * unit(self.seed ^ 0x5B, u64::from(index), bucket)
        } else {
            0.0
        };
        let tau = self.cycle_s(t_ms);
        let mut mm_h = shower;
        if self.scenario.has(Scenario::Flood) {
            let envelope =
                smoothstep((tau - 5.0) / 55.0) * (1.0 - smoothstep((tau - 240.0) / 120.0));
            let d = distance_km(pos, self.storm_centre);
            mm_h += STORM_PEAK_MM_H * envelope * (-(d / STORM_RADIUS_KM).powi(2)).exp();
        }
        if self.scenario.has(Scenario::LandslideRain) {
            let envelope =
                smoothstep((tau - 60.0) / 60.0) * (1.0 - smoothstep((tau - 240.0) / 60.0));
            let d = distance_km(pos, self.landslide_centre);
            mm_h += LANDSLIDE_PEAK_MM_H * envelope * (-(d / LANDSLIDE_RADIUS_KM).powi(2)).exp();
        }
        mm_h
    }

    /// Health fields every hydrological station reports.
    fn health(&self, index: DeviceIndex, t_ms: i64) -> (Option<f64>, Option<f64>) {
        let b = (t_ms / 60_000) as u64;
        let battery = 12.6
            + 0.3 * (2.0 * PI * (t_ms as f64 / 86_400_000.0)).sin()
            + 0.05 * gauss(self.seed, u64::from(index), b);
        let signal = -70.0 - 15.0 * unit(self.seed ^ 0x51, u64::from(index), 0)
            + 2.0 * gauss(self.seed ^ 0x52, u64::from(index), b);
        (
            Some((battery * 100.0).round() / 100.0),
            Some(signal.round().clamp(-150.0, 0.0)),
        )
    }

    fn river(&self, index: DeviceIndex, device: &DeviceInfo, t_ms: i64) -> Hydrology {
        let bd1 = device.thresholds.alarm_levels_m.map_or(3.0, |l| l[0]);
        let dry = bd1 - 1.5;
        let noise = 0.02 * gauss(self.seed ^ 0x11, u64::from(index), (t_ms / 5_000) as u64);
        let rise = match self.scenario.has(Scenario::Flood) {
            false => 0.0,
            true => {
                let d = distance_km(device.pos, self.storm_centre);
                let lag = 20.0 + d;
                let tau = self.cycle_s(t_ms) - lag;
                let shape = if tau < 240.0 {
                    smoothstep(tau / 60.0)
                } else {
                    (-(tau - 240.0) / 120.0).exp()
                };
                TARGET_RISE_M * (-(d / STORM_RADIUS_KM).powi(2)).exp() * shape
            }
        };
        let level = dry + rise + noise;
        let (battery_v, signal_dbm) = self.health(index, t_ms);
        Hydrology {
            water_level_m: Some((level * 100.0).round() / 100.0),
            flow_m3s: Some(((5.0 + 40.0 * rise.max(0.0).powf(1.6)) * 10.0).round() / 10.0),
            battery_v,
            signal_dbm,
            ..Hydrology::default()
        }
    }

    fn rain(&self, index: DeviceIndex, device: &DeviceInfo, t_ms: i64, since_ms: i64) -> Hydrology {
        let mm = self.intensity(index, device.pos, t_ms) * since_ms as f64 / 3_600_000.0;
        let (battery_v, signal_dbm) = self.health(index, t_ms);
        Hydrology {
            rainfall_mm: Some(((mm * 10.0).round() / 10.0).min(500.0)),
            battery_v,
            signal_dbm,
            ..Hydrology::default()
        }
    }

    fn reservoir(&self, index: DeviceIndex, device: &DeviceInfo, t_ms: i64) -> Hydrology {
        let normal = device.thresholds.normal_level_m.unwrap_or(100.0);
        let base_inflow = 50.0 + 1500.0 * unit(self.seed ^ 0x21, u64::from(index), 0);
        let storm = self.intensity(index, device.pos, t_ms) / STORM_PEAK_MM_H;
        let inflow = base_inflow
            * (1.0 + 2.0 * storm)
            * (1.0 + 0.03 * gauss(self.seed ^ 0x22, u64::from(index), (t_ms / 60_000) as u64));
        let mut level =
            normal - 2.5 + 0.4 * (2.0 * PI * t_ms as f64 / 86_400_000.0).sin() + 0.8 * storm;
        if self.scenario.has(Scenario::Flood) && self.flooded_reservoir == Some(index) {
            // The flood fills the reservoir past its normal level for a few minutes.
            let tau = self.cycle_s(t_ms);
            level +=
                3.4 * smoothstep((tau - 60.0) / 120.0) * (1.0 - smoothstep((tau - 420.0) / 120.0));
        }
        let gates = if level > normal { 4 } else { 0 };
        Hydrology {
            water_level_m: Some((level * 100.0).round() / 100.0),
            inflow_m3s: Some(inflow.round()),
            outflow_m3s: Some((base_inflow * 0.9 + f64::from(gates) * 400.0).round()),
            gates_open: Some(gates),
            ..Hydrology::default()
        }
    }

    fn traffic(&self, index: DeviceIndex, t_ms: i64) -> Traffic {
        let jammed = self.scenario.has(Scenario::TrafficJam)
            && (120.0..900.0).contains(&self.cycle_s(t_ms))
            && self.jam.contains(&index);
        // Local time in Sơn La is UTC+7.
        let hour = ((t_ms / 1000 + 7 * 3600).rem_euclid(86_400)) as f64 / 3600.0;
        let peak = |h: f64, w: f64| (-((hour - h) / w).powi(2)).exp();
        let profile = 0.08 + 0.9 * peak(7.5, 1.5) + 0.75 * peak(17.5, 2.0) + 0.45 * peak(12.0, 2.5);
        let capacity = 600.0 + 600.0 * unit(self.seed ^ 0x31, u64::from(index), 0);
        let bucket = (t_ms / 60_000) as u64;
        let flow_h = capacity
            * profile
            * (1.0 + 0.12 * gauss(self.seed ^ 0x32, u64::from(index), bucket)).max(0.0);
        let vehicles = flow_h * 300.0 / 3600.0;
        let share = |s: f64, salt: u64| {
            (vehicles * s * (1.0 + 0.1 * gauss(self.seed ^ salt, u64::from(index), bucket)))
                .round()
                .max(0.0) as u32
        };
        let mut occupancy = (flow_h / capacity * 22.0).clamp(0.0, 100.0);
        let mut speed = (58.0 * (1.0 - occupancy / 60.0)
            + 3.0 * gauss(self.seed ^ 0x37, u64::from(index), bucket))
        .clamp(5.0, 90.0);
        if jammed {
            occupancy = 55.0 + 3.0 * gauss(self.seed ^ 0x38, u64::from(index), bucket);
            speed = 8.0 + gauss(self.seed ^ 0x39, u64::from(index), bucket);
        }
        Traffic {
            interval_s: 300,
            counts: VehicleCounts {
                motorbike: share(0.70, 0x33),
                car: share(0.18, 0x34),
                truck: share(0.09, 0x35),
                bus: share(0.03, 0x36),
            },
            speed_kmh: Some((speed * 10.0).round() / 10.0),
            occupancy_pct: Some((occupancy * 10.0).round() / 10.0),
        }
    }

    fn camera(&self, index: DeviceIndex, device: &DeviceInfo, seq: u64) -> (Camera, [f64; 2]) {
        let key = u64::from(index);
        let r = unit(self.seed ^ 0x41, key, seq);
        let event = match r {
            r if r < 0.88 => CameraEvent::PlateRead,
            r if r < 0.92 => CameraEvent::IllegalParking,
            r if r < 0.95 => CameraEvent::Congestion,
            r if r < 0.97 => CameraEvent::Crowd,
            r if r < 0.99 => CameraEvent::Intrusion,
            _ => CameraEvent::WrongWay,
        };
        let plate = (event == CameraEvent::PlateRead
            || event == CameraEvent::WrongWay
            || event == CameraEvent::IllegalParking)
            .then(|| {
                // Each read a different vehicle (until two million reads
                // have passed): a plate that repeats across the province
                // by chance would look cloned.
                let devices = self.registry.devices().len() as u64;
                let serial = (seq.wrapping_mul(devices).wrapping_add(key) % PLATE_SERIALS)
                    .wrapping_mul(7919)
                    .wrapping_add(12_345)
                    % PLATE_SERIALS;
                plate_of(serial, hash(self.seed ^ 0x42, key, seq))
            });
        let dx = (unit(self.seed ^ 0x43, key, seq) - 0.5) * 0.0004;
        let dy = (unit(self.seed ^ 0x44, key, seq) - 0.5) * 0.0004;
        let confidence = 0.7 + 0.29 * unit(self.seed ^ 0x45, key, seq);
        (
            Camera {
                event,
                plate,
                confidence: (confidence * 100.0).round() / 100.0,
                snapshot: Some(format!("snapshots/{}/{seq}.jpg", device.id)),
            },
            [round6(device.pos[0] + dx), round6(device.pos[1] + dy)],
        )
    }
}

/// How many plates [`plate_of`] tells apart by serial: 20 series letters
/// times 100 000 numbers.
pub const PLATE_SERIALS: u64 = 2_000_000;

/// A plausible Vietnamese plate from a hash: four in five from Sơn La (26).
pub fn plate(h: u64) -> String {
    plate_of((h >> 8) % 20 * 100_000 + (h >> 16) % 100_000, h)
}

/// A plausible Vietnamese plate whose series letter and number come from
/// `serial` (below [`PLATE_SERIALS`]: distinct serials give distinct
/// plates) and the rest (province, motorbike or car) from the hash `h`.
pub fn plate_of(serial: u64, h: u64) -> String {
    const OTHER: [&str; 9] = ["29", "30", "20", "21", "24", "25", "27", "28", "19"];
    const SERIES: &[u8] = b"ABCDEFGHKLMNPSTUVXYZ";
    let province = if !h.is_multiple_of(5) {
        "26"
    } else {
        OTHER[(h / 5 % 9) as usize]
    };
    let letter = SERIES[(serial / 100_000 % SERIES.len() as u64) as usize] as char;
    let number = serial % 100_000;
    if (h >> 40).is_multiple_of(2) {
        // Motorbike: series letter plus a digit.
        let digit = (h >> 44) % 9 + 1;
        format!(
            "{province}{letter}{digit}-{:03}.{:02}",
            number / 100,
            number % 100
        )
    } else {
        format!("{province}{letter}-{:03}.{:02}", number / 100, number % 100)
    }
}

#[cfg(test)]
mod tests {
    use ioc_schemas::envelope::{Limits, decode};
    use ioc_schemas::plate::is_vietnamese_plate;

    use super::*;

    const T0: i64 = 1_783_998_000_000;

    #[test]
    fn same_seed_same_readings() {
        let r = Registry::sonla_demo();
        let mut a = Simulator::new(r.clone(), Scenario::Flood, 42, Timestamp(T0));
        let mut b = Simulator::new(r, Scenario::Flood, 42, Timestamp(T0));
        for k in 0..2000 {
            let now = Timestamp(T0 + k * 37);
            assert_eq!(a.next_reading(now), b.next_reading(now));
        }
    }

    #[test]
    fn every_reading_passes_validation() {
        let r = Registry::sonla_demo();
        let mut sim = Simulator::new(r.clone(), Scenario::Flood, 7, Timestamp(T0));
        for k in 0..(r.devices().len() as i64 * 20) {
            let now = Timestamp(T0 + k * 500);
            let e = sim.next_reading(now).unwrap();
            let back = decode(&e.to_json(), &Limits::default(), now).unwrap();
            assert_eq!(back, e);
            assert!(r.device(r.lookup(&e.device).unwrap()).kind.accepts(&e.body));
        }
    }

    #[test]
    fn flood_pushes_the_target_past_bd2_then_it_recedes() {
        let r = Registry::sonla_demo();
        let idx = r.lookup("river-to-hieu").unwrap();
        let levels = r.device(idx).thresholds.alarm_levels_m.unwrap();
        let mut sim = Simulator::new(r, Scenario::Flood, 1, Timestamp(T0));
        let level =
            |sim: &mut Simulator, s: i64| match sim.reading(idx, Timestamp(T0 + s * 1000)).body {
                Body::Hydrology(h) => h.water_level_m.unwrap(),
                _ => unreachable!(),
            };
        assert!(level(&mut sim, 0) < levels[0] - 0.5);
        assert!(
            level(&mut sim, 120) > levels[1],
            "not past BĐ2 after two minutes"
        );
        assert!(level(&mut sim, 1100) < levels[0] - 0.5, "no recession");
        // The cycle repeats.
        assert!(level(&mut sim, 1200 + 120) > levels[1]);
    }

    #[test]
    fn plates_are_valid_and_mostly_local() {
        let local = (0..1000u64).filter(|h| {
            let p = plate(crate::noise::mix(*h));
            assert!(is_vietnamese_plate(&p), "{p}");
            p.starts_with("26")
        });
        assert!(local.count() > 700);
    }
}
