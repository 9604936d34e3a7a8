//! InfluxDB line protocol for readings and alerts.
//!
//! One measurement per device kind (`river_gauge`, `rain_gauge`,
//! `reservoir`, `traffic_counter`, `camera`), one per window kind
//! (`rainfall_window`, `traffic_window`, `camera_events_window`, tagged
//! with the window length `window` in seconds and with the device's tags),
//! one for alert changes (`alert`) and one for geofence events
//! (`geofence`). Tags are bounded by the catalogue and the zones file:
//! `device`, `kind` and one tag per administrative level (`province`,
//! `former_district`, `commune`, `ward`, holding area ids), plus the
//! camera `event` type, the alert's `rule`, `severity` and `status`, and
//! the geofence event's `zone`, `zone_kind`, `transition` and `source`.
//! Free text (plates, titles, the geofence subject) is never a tag. Field
//! names carry their unit (`water_level_m`, `speed_kmh`); timestamps are
//! event time in milliseconds (`precision=ms`).
//!
//! A device's measurement and tags never change while the process runs, so
//! [`LineEncoder::new`] renders them once per device; encoding a reading is
//! then a copy and a few number formats.
//!
//! A batch ([`Lines`]) goes to the database grouped by series, each
//! series' lines in the order they came.

use ioc_devices::{DeviceIndex, Registry};
use ioc_schemas::{Alert, AreaRef, Body, Envelope, GeofenceEvent, WindowResult, WindowValue};

use crate::Record;

/// Renders readings and alerts as line protocol, appending to a buffer.
#[derive(Debug)]
pub struct LineEncoder {
    /// `measurement,tag=value,...` for each device, by registry index.
    prefixes: Vec<Box<[u8]>>,
    /// Each device's place among the prefixes in byte order: devices of one
    /// kind and area are neighbours.
    series: Vec<u32>,
}

impl LineEncoder {
    /// Renders every device's measurement and tags.
    pub fn new(registry: &Registry) -> Self {
        let prefixes: Vec<Box<[u8]>> = registry
            .devices()
            .iter()
            .map(|d| {
                let mut tags: Vec<(&str, &str)> =
                    vec![("device", &d.id), ("kind", d.kind.as_str())];
                tags.extend(area_tags(&d.area));
                let mut out = Vec::with_capacity(96);
                escape_measurement(&mut out, d.kind.as_str());
                write_tags(&mut out, tags);
                out.into_boxed_slice()
            })
            .collect();
        let mut by_prefix: Vec<usize> = (0..prefixes.len()).collect();
        by_prefix.sort_by(|&a, &b| prefixes[a].cmp(&prefixes[b]));
        let mut series = vec![0; prefixes.len()];
        for (place, device) in by_prefix.into_iter().enumerate() {
            series[device] = u32::try_from(place).unwrap_or(u32::MAX);
        }
        LineEncoder { prefixes, series }
    }

    /// The order a record's line takes in a batch: a device's readings,
    /// then its window results, each by the device's place in prefix order;
    /// geofence events, then alert changes last.
    fn series(&self, record: &Record) -> u64 {
        let place = |device: DeviceIndex| {
            u64::from(
                self.series
                    .get(device as usize)
                    .copied()
                    .unwrap_or(u32::MAX),
            )
        };
        match record {
            Record::Reading { device, .. } => place(*device),
            Record::Window { device, .. } => (1 << 32) + place(*device),
            Record::Geofence(_) => 2 << 32,
            Record::Alert(_) | Record::Barrier(_) => 3 << 32,
        }
    }

    /// Appends one line for any record. Returns `false` (and appends
    /// nothing) for a device index outside the registry.
    pub fn record(&self, out: &mut Vec<u8>, record: &Record) -> bool {
        match record {
            Record::Reading { device, envelope } => self.reading(out, *device, envelope),
            Record::Alert(alert) => {
                self.alert(out, alert);
                true
            }
            Record::Window { device, window } => self.window(out, *device, window),
            Record::Geofence(event) => {
                self.geofence(out, event);
                true
            }
            Record::Barrier(_) => false,
        }
    }

    /// Appends one line for a reading of the device at `device`. Returns
    /// `false` (and appends nothing) for an index outside the registry.
    pub fn reading(&self, out: &mut Vec<u8>, device: DeviceIndex, envelope: &Envelope) -> bool {
        let Some(prefix) = self.prefixes.get(device as usize) else {
            return false;
        };
        out.extend_from_slice(prefix);
        if let Body::Camera(c) = &envelope.body {
            out.extend_from_slice(b",event=");
            escape_tag(out, camera_event(c.event));
        }
        let mut f = Fields::new(out);
        match &envelope.body {
            Body::Hydrology(h) => {
                f.float("water_level_m", h.water_level_m);
                f.float("rainfall_mm", h.rainfall_mm);
                f.float("flow_m3s", h.flow_m3s);
                f.float("inflow_m3s", h.inflow_m3s);
                f.float("outflow_m3s", h.outflow_m3s);
                f.int("gates_open", h.gates_open.map(i64::from));
                f.float("battery_v", h.battery_v);
                f.float("signal_dbm", h.signal_dbm);
            }
            Body::Traffic(t) => {
                f.int("interval_s", Some(i64::from(t.interval_s)));
                f.int("motorbikes", Some(i64::from(t.counts.motorbike)));
                f.int("cars", Some(i64::from(t.counts.car)));
                f.int("trucks", Some(i64::from(t.counts.truck)));
                f.int("buses", Some(i64::from(t.counts.bus)));
                f.int("vehicles", i64::try_from(t.counts.total()).ok());
                f.float("speed_kmh", t.speed_kmh);
                f.float("occupancy_pct", t.occupancy_pct);
            }
            Body::Camera(c) => {
                f.float("confidence", Some(c.confidence));
                f.string("plate", c.plate.as_deref());
            }
        }
        if let Some([lon, lat]) = envelope.pos {
            f.float("lon", Some(lon));
            f.float("lat", Some(lat));
        }
        f.int("seq", i64::try_from(envelope.seq).ok());
        timestamp(out, envelope.ts.millis());
        true
    }

    /// Appends one line for a window result, at the window's end. Returns
    /// `false` (and appends nothing) for an index outside the registry.
    pub fn window(&self, out: &mut Vec<u8>, device: DeviceIndex, w: &WindowResult) -> bool {
        let Some(prefix) = self.prefixes.get(device as usize) else {
            return false;
        };
        // The device's tags follow its measurement name (which needs no escaping).
        let tags = prefix
            .iter()
            .position(|&b| b == b',')
            .map_or(&prefix[..0], |i| &prefix[i..]);
        escape_measurement(out, &format!("{}_window", w.value.kind()));
        out.extend_from_slice(tags);
        out.extend_from_slice(b",window=");
        out.extend_from_slice(itoa::Buffer::new().format(w.window_s()).as_bytes());
        let mut f = Fields::new(out);
        match &w.value {
            WindowValue::Rainfall { total_mm, complete } => {
                f.float("total_mm", Some(*total_mm));
                f.int("complete", Some(i64::from(*complete)));
            }
            WindowValue::Traffic {
                flow_vph,
                mean_speed_kmh,
                occupancy_pct,
                vehicles,
            } => {
                f.float("motorbikes_vph", Some(flow_vph.motorbike));
                f.float("cars_vph", Some(flow_vph.car));
                f.float("trucks_vph", Some(flow_vph.truck));
                f.float("buses_vph", Some(flow_vph.bus));
                f.float("vehicles_vph", Some(flow_vph.total()));
                f.int("vehicles", i64::try_from(*vehicles).ok());
                f.float("mean_speed_kmh", *mean_speed_kmh);
                f.float("occupancy_pct", *occupancy_pct);
            }
            WindowValue::CameraEvents { counts } => {
                for (event, n) in counts {
                    f.int(camera_event(*event), Some(i64::from(*n)));
                }
                f.int("events", Some(counts.values().map(|&n| i64::from(n)).sum()));
            }
        }
        f.int("revision", Some(i64::from(w.revision)));
        timestamp(out, w.end.millis());
        true
    }

    /// Appends one line for a geofence event, at the event time of the
    /// position that caused it. The subject (a device id or a plate) is a
    /// field: plates are unbounded.
    pub fn geofence(&self, out: &mut Vec<u8>, event: &GeofenceEvent) {
        escape_measurement(out, "geofence");
        write_tags(
            out,
            vec![
                ("source", &event.source),
                ("transition", event.transition.as_str()),
                ("zone", &event.zone.id),
                ("zone_kind", event.zone.kind.as_str()),
            ],
        );
        let mut f = Fields::new(out);
        f.string("subject", Some(&event.subject));
        f.int(
            "inside_s",
            event.inside_s.and_then(|s| i64::try_from(s).ok()),
        );
        f.float("lon", Some(event.pos[0]));
        f.float("lat", Some(event.pos[1]));
        f.int("events", Some(1));
        timestamp(out, event.ts.millis());
    }

    /// Appends one line for a change of an alert, at its `updated_at`.
    pub fn alert(&self, out: &mut Vec<u8>, alert: &Alert) {
        escape_measurement(out, "alert");
        let mut tags: Vec<(&str, &str)> = vec![
            ("rule", &alert.rule),
            ("severity", alert.severity.as_str()),
            ("status", alert.status.as_str()),
            ("subject", &alert.subject),
        ];
        tags.extend(area_tags(&alert.area));
        write_tags(out, tags);
        let mut f = Fields::new(out);
        f.int("level", Some(i64::from(alert.level)));
        f.int("peak_level", Some(i64::from(alert.peak_level)));
        f.float("value", Some(alert.evidence.value));
        f.float("threshold", Some(alert.evidence.threshold));
        f.int("version", Some(i64::from(alert.version)));
        f.string("id", Some(&alert.id));
        f.string("level_name", Some(&alert.level_name));
        timestamp(out, alert.updated_at.millis());
    }
}

/// A batch of lines, handed out grouped by series.
///
/// Lines are rendered as records come; [`Lines::grouped`] then puts each
/// series' lines together (devices of one kind and area side by side), in
/// the order they came within a series. The database keeps no order
/// between series, and gzip gains: at level 1 it keeps only the latest
/// position of each 4-byte hash, and a neighbour that shares the
/// measurement, tags and field names yields one long match where lines in
/// arrival order (interleaved kinds) yield many short ones. On the demo's mix that is
/// about a quarter less gzip CPU and a fifth fewer bytes per point
/// (BENCHMARKS.md, "Time-series sink").
#[derive(Debug, Default)]
pub struct Lines {
    /// The lines as they came.
    text: Vec<u8>,
    /// Where each line ends in `text`.
    ends: Vec<usize>,
    /// One per line: its series in the high 32 bits, its number in the low
    /// ones, so that sorting them orders the lines by series and keeps
    /// arrival order within each.
    keys: Vec<u64>,
    /// `text` grouped, when `text` is not already in that order.
    grouped: Vec<u8>,
    state: Grouping,
}

/// Whether [`Lines::grouped`] has run since the last line was added.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Grouping {
    #[default]
    Pending,
    /// The lines came in series order: `text` is the answer.
    InText,
    /// `grouped` holds them in series order.
    InCopy,
}

impl Lines {
    /// Room for `lines` lines of about 256 bytes.
    pub fn with_capacity(lines: usize) -> Self {
        Lines {
            text: Vec::with_capacity(lines * 256),
            ends: Vec::with_capacity(lines),
            keys: Vec::with_capacity(lines),
            grouped: Vec::with_capacity(lines * 256),
            state: Grouping::Pending,
        }
    }

    /// Renders `record` as one more line. Returns `false` (and adds
    /// nothing) for a device index outside the registry.
    pub fn add(&mut self, encoder: &LineEncoder, record: &Record) -> bool {
        if !encoder.record(&mut self.text, record) {
            return false;
        }
        // Batches are capped far below 2^32 lines (`batch_size`).
        let number = self.ends.len() as u64 & u64::from(u32::MAX);
        self.keys.push(encoder.series(record) << 32 | number);
        self.ends.push(self.text.len());
        self.state = Grouping::Pending;
        true
    }

    /// Lines in the batch.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether the batch has no line.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The lines, grouped by series; the same bytes as they came, in
    /// another order.
    pub fn grouped(&mut self) -> &[u8] {
        if self.state == Grouping::Pending {
            self.state = if self.keys.is_sorted() {
                Grouping::InText
            } else {
                self.keys.sort_unstable();
                self.grouped.clear();
                self.grouped.reserve(self.text.len());
                for key in &self.keys {
                    let line = (key & u64::from(u32::MAX)) as usize;
                    let start = line.checked_sub(1).map_or(0, |p| self.ends[p]);
                    self.grouped
                        .extend_from_slice(&self.text[start..self.ends[line]]);
                }
                Grouping::InCopy
            };
        }
        match self.state {
            Grouping::InCopy => &self.grouped,
            _ => &self.text,
        }
    }

    /// Empties the batch, keeping its memory.
    pub fn clear(&mut self) {
        self.text.clear();
        self.ends.clear();
        self.keys.clear();
        self.grouped.clear();
        self.state = Grouping::Pending;
    }
}

fn area_tags(area: &[AreaRef]) -> impl Iterator<Item = (&'static str, &str)> {
    area.iter().map(|a| (a.level.as_str(), &*a.id))
}

fn camera_event(e: ioc_schemas::CameraEvent) -> &'static str {
    use ioc_schemas::CameraEvent::*;
    match e {
        PlateRead => "plate_read",
        Intrusion => "intrusion",
        FireSmoke => "fire_smoke",
        Crowd => "crowd",
        Congestion => "congestion",
        Accident => "accident",
        WrongWay => "wrong_way",
        IllegalParking => "illegal_parking",
    }
}

/// Writes `,key=value` pairs sorted by key (InfluxDB's fast path), skipping
/// empty values (line protocol has no empty tag values).
fn write_tags(out: &mut Vec<u8>, mut tags: Vec<(&str, &str)>) {
    tags.sort_by(|a, b| a.0.cmp(b.0));
    tags.dedup_by(|a, b| a.0 == b.0);
    for (k, v) in tags {
        if v.is_empty() {
            continue;
        }
        out.push(b',');
        escape_tag(out, k);
        out.push(b'=');
        escape_tag(out, v);
    }
}

/// The field set: `k=v,k=v` after a space, skipping absent and non-finite values.
struct Fields<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Fields<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        Fields { out, first: true }
    }

    /// Field keys are our own identifiers (`[a-z0-9_]`), never escaped.
    ///
    /// This and the typed writers below are inlined into each call so that
    /// the key's length is a constant there and its copy a few moves, not
    /// a call to `memcpy` (eight or so per line).
    #[inline(always)]
    fn key(&mut self, key: &'static str) {
        debug_assert!(key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        self.out.push(if self.first { b' ' } else { b',' });
        self.first = false;
        self.out.extend_from_slice(key.as_bytes());
        self.out.push(b'=');
    }

    #[inline(always)]
    fn float(&mut self, key: &'static str, value: Option<f64>) {
        if let Some(v) = value.filter(|v| v.is_finite()) {
            self.key(key);
            write_float(self.out, v);
        }
    }

    #[inline(always)]
    fn int(&mut self, key: &'static str, value: Option<i64>) {
        if let Some(v) = value {
            self.key(key);
            let mut b = itoa::Buffer::new();
            self.out.extend_from_slice(b.format(v).as_bytes());
            self.out.push(b'i');
        }
    }

    fn string(&mut self, key: &'static str, value: Option<&str>) {
        if let Some(v) = value {
            self.key(key);
            self.out.push(b'"');
            for c in v.bytes() {
                match c {
                    b'"' | b'\\' => self.out.extend_from_slice(&[b'\\', c]),
                    b'\n' => self.out.extend_from_slice(b"\\n"),
                    b'\r' => {}
                    _ => self.out.push(c),
                }
            }
            self.out.push(b'"');
        }
    }
}

/// Writes a finite float so that it parses back to the same value.
///
/// Sensor values and coordinates mostly have at most six decimals (`2.84`,
/// `-71`, `103.912345`); those are written as an integer and a fraction,
/// several times faster than the general shortest-representation algorithm
/// (`ryu`), which handles the rest. A value without a fraction is written
/// without a decimal point: line protocol reads a number without an `i`
/// suffix as a float either way.
fn write_float(out: &mut Vec<u8>, v: f64) {
    // Rounds to the nearest integer (ties to even) for |x| < 2^51, without
    // the libm call `f64::round` is on baseline x86-64; `v` is checked
    // against the result below, so the rounding mode cannot make it wrong.
    const ROUND: f64 = 6_755_399_441_055_744.0; // 1.5 × 2^52
    let scaled = v * 1e6;
    let micro = (scaled + ROUND) - ROUND;
    // Exact: `micro / 1e6` is the double nearest the decimal we write (both
    // are exact doubles and division rounds correctly), so parsing that
    // decimal gives `v` back.
    if scaled.abs() < 1e15 && micro / 1e6 == v {
        let micro = micro as i64;
        if micro < 0 {
            out.push(b'-');
        }
        let (int, mut frac) = (
            micro.unsigned_abs() / 1_000_000,
            micro.unsigned_abs() % 1_000_000,
        );
        let mut b = itoa::Buffer::new();
        out.extend_from_slice(b.format(int).as_bytes());
        if frac != 0 {
            let mut digits = [b'.'; 7];
            for d in digits[1..].iter_mut().rev() {
                *d = b'0' + (frac % 10) as u8;
                frac /= 10;
            }
            // All seven bytes, then cut the trailing zeros: a copy of
            // constant length is a move, one of variable length a `memcpy`.
            let zeros = digits.iter().rev().take_while(|&&d| d == b'0').count();
            out.extend_from_slice(&digits);
            out.truncate(out.len() - zeros);
        }
    } else {
        let mut b = ryu::Buffer::new();
        out.extend_from_slice(b.format_finite(v).as_bytes());
    }
}

fn timestamp(out: &mut Vec<u8>, millis: i64) {
    out.push(b' ');
    let mut b = itoa::Buffer::new();
    out.extend_from_slice(b.format(millis).as_bytes());
    out.push(b'\n');
}

/// Measurement names escape commas and spaces.
fn escape_measurement(out: &mut Vec<u8>, s: &str) {
    for c in s.bytes() {
        match c {
            b',' | b' ' => out.extend_from_slice(&[b'\\', c]),
            b'\n' | b'\r' => out.push(b'_'),
            _ => out.push(c),
        }
    }
}

/// Tag keys, tag values and field keys escape commas, equals signs and
/// spaces; a line break cannot be escaped and becomes `_`.
fn escape_tag(out: &mut Vec<u8>, s: &str) {
    for c in s.bytes() {
        match c {
            b',' | b'=' | b' ' => out.extend_from_slice(&[b'\\', c]),
            b'\n' | b'\r' => out.push(b'_'),
            _ => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use ioc_schemas::{Camera, CameraEvent, Hydrology, Timestamp, Traffic, VehicleCounts};

    use super::*;

    fn line(f: impl FnOnce(&LineEncoder, &mut Vec<u8>)) -> String {
        let registry = Registry::sonla_demo();
        let enc = LineEncoder::new(&registry);
        let mut out = Vec::new();
        f(&enc, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn envelope(device: &str, body: Body) -> Envelope {
        Envelope {
            device: device.into(),
            ts: Timestamp(1_784_000_000_123),
            seq: 7,
            pos: None,
            body,
        }
    }

    #[test]
    fn river_reading_has_kind_measurement_area_tags_and_unit_fields() {
        let registry = Registry::sonla_demo();
        let i = registry.lookup("river-to-hieu").unwrap();
        let text = line(|e, out| {
            let h = Hydrology {
                water_level_m: Some(2.5),
                battery_v: Some(12.0),
                ..Hydrology::default()
            };
            assert!(e.reading(out, i, &envelope("river-to-hieu", Body::Hydrology(h))));
        });
        let area = &registry.device(i).area;
        assert!(text.starts_with("river_gauge,"), "{text}");
        assert!(text.contains(",device=river-to-hieu,"), "{text}");
        assert!(text.contains(",kind=river_gauge"), "{text}");
        for a in area {
            assert!(
                text.contains(&format!("{}={}", a.level.as_str(), a.id)),
                "{text}"
            );
        }
        assert!(
            text.ends_with(" water_level_m=2.5,battery_v=12,seq=7i 1784000000123\n"),
            "{text}"
        );
        // Tags sorted by key.
        let tags: Vec<&str> = text
            .split(' ')
            .next()
            .unwrap()
            .split(',')
            .skip(1)
            .map(|t| t.split('=').next().unwrap())
            .collect();
        let mut sorted = tags.clone();
        sorted.sort();
        assert_eq!(tags, sorted);
    }

    #[test]
    fn traffic_and_camera_fields() {
        let registry = Registry::sonla_demo();
        let kind = |k| registry.devices().iter().position(|d| d.kind == k).unwrap() as DeviceIndex;
        let counter = kind(ioc_schemas::DeviceKind::TrafficCounter);
        let camera = kind(ioc_schemas::DeviceKind::Camera);
        let text = line(|e, out| {
            let t = Traffic {
                interval_s: 60,
                counts: VehicleCounts {
                    motorbike: 40,
                    car: 10,
                    truck: 3,
                    bus: 1,
                },
                speed_kmh: Some(35.5),
                occupancy_pct: None,
            };
            e.reading(out, counter, &envelope("x", Body::Traffic(t)));
            let c = Camera {
                event: CameraEvent::PlateRead,
                plate: Some("26A-123.45 \"x\"".into()),
                confidence: 0.9,
                snapshot: None,
            };
            let mut env = envelope("y", Body::Camera(c));
            env.pos = Some([103.9, 21.3]);
            e.reading(out, camera, &env);
        });
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains(
            " interval_s=60i,motorbikes=40i,cars=10i,trucks=3i,buses=1i,vehicles=54i,speed_kmh=35.5,seq=7i "
        ), "{text}");
        assert!(lines[1].starts_with("camera,"), "{text}");
        assert!(lines[1].contains(",event=plate_read "), "{text}");
        assert!(
            lines[1]
                .contains(r#" confidence=0.9,plate="26A-123.45 \"x\"",lon=103.9,lat=21.3,seq=7i "#),
            "{text}"
        );
    }

    #[test]
    fn geofence_event_has_zone_tags_and_the_subject_as_a_field() {
        let event = ioc_schemas::GeofenceEvent {
            subject: "plate:26A99999".into(),
            zone: ioc_schemas::ZoneRef {
                id: "restricted-thuy-dien-son-la".into(),
                name: "Khu vực đập, thủy điện Sơn La".into(),
                kind: ioc_schemas::ZoneKind::Restricted,
            },
            transition: ioc_schemas::GeofenceTransition::Exit,
            ts: Timestamp(1_784_000_000_123),
            pos: [103.912345, 21.3],
            source: "cam-son-la-01".into(),
            inside_s: Some(95),
        };
        let text = line(|e, out| assert!(e.record(out, &Record::Geofence(Box::new(event)))));
        assert_eq!(
            text,
            "geofence,source=cam-son-la-01,transition=exit,zone=restricted-thuy-dien-son-la,\
             zone_kind=restricted subject=\"plate:26A99999\",inside_s=95i,lon=103.912345,\
             lat=21.3,events=1i 1784000000123\n"
        );
    }

    #[test]
    fn unknown_index_writes_nothing() {
        let text = line(|e, out| {
            assert!(!e.reading(
                out,
                u32::MAX,
                &envelope("x", Body::Hydrology(Hydrology::default()))
            ));
        });
        assert!(text.is_empty());
    }

    #[test]
    fn escaping() {
        let mut out = Vec::new();
        escape_tag(&mut out, "a b,c=d\ne");
        assert_eq!(out, b"a\\ b\\,c\\=d_e");
        out.clear();
        escape_measurement(&mut out, "m x,y=z");
        assert_eq!(out, b"m\\ x\\,y=z");
        let mut out = Vec::new();
        let mut f = Fields::new(&mut out);
        f.float("nan", Some(f64::NAN));
        f.float("big", Some(1e300));
        f.string("s", Some("a\\b"));
        assert_eq!(String::from_utf8(out).unwrap(), " big=1e300,s=\"a\\\\b\"");
    }

    fn float_text(v: f64) -> String {
        let mut out = Vec::new();
        write_float(&mut out, v);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn floats_are_short_and_exact() {
        for (v, text) in [
            (2.84, "2.84"),
            (-71.0, "-71"),
            (0.0, "0"),
            (-0.5, "-0.5"),
            (0.001, "0.001"),
            (103.912345, "103.912345"),
            (-0.000001, "-0.000001"),
            (21.3, "21.3"),
            (0.05, "0.05"),
            (12.340, "12.34"),
            (1e-7, "1e-7"),
            (0.1 + 0.2, "0.30000000000000004"),
        ] {
            assert_eq!(float_text(v), text, "{v}");
        }
    }

    /// A reading of the device at `index` with sequence number `seq`.
    fn record(registry: &Registry, index: DeviceIndex, seq: u64) -> Record {
        let d = registry.device(index);
        let body = match d.kind {
            ioc_schemas::DeviceKind::TrafficCounter => Body::Traffic(Traffic {
                interval_s: 60,
                counts: VehicleCounts::default(),
                speed_kmh: None,
                occupancy_pct: None,
            }),
            ioc_schemas::DeviceKind::Camera => Body::Camera(Camera {
                event: CameraEvent::Crowd,
                plate: None,
                confidence: 0.5,
                snapshot: None,
            }),
            _ => Body::Hydrology(Hydrology {
                water_level_m: Some(seq as f64 / 100.0),
                ..Hydrology::default()
            }),
        };
        let mut envelope = envelope(&d.id, body);
        envelope.seq = seq;
        Record::Reading {
            device: index,
            envelope,
        }
    }

    #[test]
    fn a_batch_in_series_order_is_handed_out_as_it_came() {
        let registry = Registry::sonla_demo();
        let enc = LineEncoder::new(&registry);
        let mut lines = Lines::with_capacity(4);
        let first = (0..registry.devices().len() as DeviceIndex)
            .min_by_key(|&i| enc.series[i as usize])
            .unwrap();
        for seq in 0..3 {
            assert!(lines.add(&enc, &record(&registry, first, seq)));
        }
        let Record::Reading { envelope, .. } = record(&registry, first, 9) else {
            unreachable!()
        };
        let unknown = Record::Reading {
            device: u32::MAX,
            envelope,
        };
        assert!(!lines.add(&enc, &unknown));
        assert_eq!(lines.len(), 3);
        let text = String::from_utf8(lines.grouped().to_vec()).unwrap();
        assert_eq!(lines.state, Grouping::InText);
        assert_eq!(text.lines().count(), 3);
        lines.clear();
        assert!(lines.is_empty() && lines.grouped().is_empty());
    }

    proptest::proptest! {
        /// Grouping reorders lines and nothing else: the same lines, each
        /// series together, each series in the order it came, and asking
        /// twice gives the same bytes.
        #[test]
        fn grouping_keeps_every_line_and_each_series_order(
            picks in proptest::collection::vec(0usize..1000, 0..300),
        ) {
            let registry = Registry::sonla_demo();
            let enc = LineEncoder::new(&registry);
            let n = registry.devices().len();
            let mut lines = Lines::with_capacity(8);
            let mut came = Vec::new();
            for (seq, pick) in picks.iter().enumerate() {
                let record = record(&registry, (pick % n) as DeviceIndex, seq as u64);
                let mut one = Vec::new();
                proptest::prop_assert!(enc.record(&mut one, &record));
                came.push(String::from_utf8(one).unwrap());
                proptest::prop_assert!(lines.add(&enc, &record));
            }
            let grouped = String::from_utf8(lines.grouped().to_vec()).unwrap();
            proptest::prop_assert_eq!(lines.grouped(), grouped.as_bytes());
            let out: Vec<String> = grouped.lines().map(|l| format!("{l}\n")).collect();
            // The same lines.
            let (mut a, mut b) = (came.clone(), out.clone());
            a.sort();
            b.sort();
            proptest::prop_assert_eq!(a, b);
            // Each series together and in the order it came.
            let series = |l: &str| l.split(' ').next().unwrap_or("").to_owned();
            let mut seen: Vec<String> = Vec::new();
            for l in &out {
                let s = series(l);
                if seen.last() != Some(&s) {
                    proptest::prop_assert!(!seen.contains(&s), "{} split", s);
                    seen.push(s);
                }
            }
            for s in seen {
                let of = |v: &[String]| v.iter().filter(|l| series(l) == s).cloned().collect::<Vec<_>>();
                proptest::prop_assert_eq!(of(&came), of(&out));
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn every_float_parses_back_to_itself(v in proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL | proptest::num::f64::ZERO) {
            let text = float_text(v);
            proptest::prop_assert_eq!(text.parse::<f64>().unwrap(), v, "{}", text);
        }

        #[test]
        fn sensor_like_floats_parse_back(milli in -10_000_000_000i64..10_000_000_000, scale in 0u32..8) {
            let v = milli as f64 / 10f64.powi(scale as i32);
            let text = float_text(v);
            proptest::prop_assert_eq!(text.parse::<f64>().unwrap(), v, "{}", text);
        }
    }
}
