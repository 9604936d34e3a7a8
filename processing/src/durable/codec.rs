//! The journal's binary record: an envelope in a few dozen bytes, written
//! and read without serde (a worker writes one for every reading it
//! takes, so this is on the hot path; JSON cost several times more).
//!
//! ```text
//! 0xB1  received i64  ts i64  seq u64  device (u16 len, UTF-8)
//! pos   (u8 0 | 1, lon f64, lat f64)
//! body  0 hydrology: u8 mask, then each present field (f64; gates u16)
//!       1 traffic:   interval u32, 4 counts u32, u8 mask, speed, occupancy f64
//!       2 camera:    event u8, confidence f64, plate and snapshot (u8 0 | 1, u16 len, UTF-8)
//! ```
//! Little-endian throughout. Records of the first journal format (JSON,
//! starting with `{`) are still read.

use ioc_schemas::{
    Body, Camera, CameraEvent, DeviceState, Envelope, Hydrology, Timestamp, Traffic, VehicleCounts,
};

/// First byte of a binary record.
pub const TAG: u8 = 0xB1;

/// Appends the record of `envelope`, received at `received` (ms).
pub fn encode(out: &mut Vec<u8>, received: i64, e: &Envelope) {
    out.push(TAG);
    out.extend_from_slice(&received.to_le_bytes());
    out.extend_from_slice(&e.ts.millis().to_le_bytes());
    out.extend_from_slice(&e.seq.to_le_bytes());
    text(out, &e.device);
    match e.pos {
        Some([lon, lat]) => {
            out.push(1);
            out.extend_from_slice(&lon.to_le_bytes());
            out.extend_from_slice(&lat.to_le_bytes());
        }
        None => out.push(0),
    }
    body(out, &e.body);
}

/// Appends a reading's body.
fn body(out: &mut Vec<u8>, b: &Body) {
    match b {
        Body::Hydrology(h) => {
            out.push(0);
            let floats = [
                h.water_level_m,
                h.rainfall_mm,
                h.flow_m3s,
                h.inflow_m3s,
                h.outflow_m3s,
                h.battery_v,
                h.signal_dbm,
            ];
            let mut mask = 0u8;
            for (i, f) in floats.iter().enumerate() {
                mask |= u8::from(f.is_some()) << i;
            }
            mask |= u8::from(h.gates_open.is_some()) << 7;
            out.push(mask);
            for f in floats.into_iter().flatten() {
                out.extend_from_slice(&f.to_le_bytes());
            }
            if let Some(g) = h.gates_open {
                out.extend_from_slice(&g.to_le_bytes());
            }
        }
        Body::Traffic(t) => {
            out.push(1);
            out.extend_from_slice(&t.interval_s.to_le_bytes());
            let c = &t.counts;
            for n in [c.motorbike, c.car, c.truck, c.bus] {
                out.extend_from_slice(&n.to_le_bytes());
            }
            out.push(u8::from(t.speed_kmh.is_some()) | u8::from(t.occupancy_pct.is_some()) << 1);
            for f in [t.speed_kmh, t.occupancy_pct].into_iter().flatten() {
                out.extend_from_slice(&f.to_le_bytes());
            }
        }
        Body::Camera(c) => {
            out.push(2);
            out.push(c.event as u8);
            out.extend_from_slice(&c.confidence.to_le_bytes());
            for s in [&c.plate, &c.snapshot] {
                match s {
                    Some(s) => {
                        out.push(1);
                        text(out, s);
                    }
                    None => out.push(0),
                }
            }
        }
    }
}

fn text(out: &mut Vec<u8>, s: &str) {
    // Ids, plates and snapshot keys are bounded far below 64 KiB by
    // validation; a longer one is cut at a character boundary.
    let mut end = s.len().min(usize::from(u16::MAX));
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&(end as u16).to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..end]);
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let bytes = self
            .data
            .get(self.at..self.at + N)
            .ok_or_else(|| format!("record ends at byte {}", self.at))?;
        self.at += N;
        Ok(bytes.try_into().unwrap_or([0; N]))
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_le_bytes(self.take()?))
    }
    fn f64(&mut self) -> Result<f64, String> {
        Ok(f64::from_le_bytes(self.take()?))
    }
    fn opt_f64(&mut self, present: bool) -> Result<Option<f64>, String> {
        present.then(|| self.f64()).transpose()
    }
    fn text(&mut self) -> Result<String, String> {
        let len = usize::from(self.u16()?);
        let bytes = self
            .data
            .get(self.at..self.at + len)
            .ok_or_else(|| format!("text ends past the record at byte {}", self.at))?;
        self.at += len;
        String::from_utf8(bytes.to_vec()).map_err(|e| e.to_string())
    }
    fn opt_text(&mut self) -> Result<Option<String>, String> {
        match self.u8()? {
            0 => Ok(None),
            _ => self.text().map(Some),
        }
    }
}

/// Reads a record written by [`encode`]: (received, envelope).
pub fn decode(data: &[u8]) -> Result<(i64, Envelope), String> {
    let mut r = Reader { data, at: 0 };
    if r.u8()? != TAG {
        return Err("not a binary record".into());
    }
    let received = r.i64()?;
    let ts = Timestamp(r.i64()?);
    let seq = r.i64()? as u64;
    let device = r.text()?;
    let pos = match r.u8()? {
        0 => None,
        _ => Some([r.f64()?, r.f64()?]),
    };
    let body = read_body(&mut r)?;
    if r.at != data.len() {
        return Err(format!("{} bytes after the record", data.len() - r.at));
    }
    Ok((
        received,
        Envelope {
            device,
            ts,
            seq,
            pos,
            body,
        },
    ))
}

/// Reads a body written by [`body`].
fn read_body(r: &mut Reader<'_>) -> Result<Body, String> {
    Ok(match r.u8()? {
        0 => {
            let mask = r.u8()?;
            let bit = |i: u8| mask & (1 << i) != 0;
            Body::Hydrology(Hydrology {
                water_level_m: r.opt_f64(bit(0))?,
                rainfall_mm: r.opt_f64(bit(1))?,
                flow_m3s: r.opt_f64(bit(2))?,
                inflow_m3s: r.opt_f64(bit(3))?,
                outflow_m3s: r.opt_f64(bit(4))?,
                battery_v: r.opt_f64(bit(5))?,
                signal_dbm: r.opt_f64(bit(6))?,
                gates_open: bit(7).then(|| r.u16()).transpose()?,
            })
        }
        1 => {
            let interval_s = r.u32()?;
            let counts = VehicleCounts {
                motorbike: r.u32()?,
                car: r.u32()?,
                truck: r.u32()?,
                bus: r.u32()?,
            };
            let mask = r.u8()?;
            Body::Traffic(Traffic {
                interval_s,
                counts,
                speed_kmh: r.opt_f64(mask & 1 != 0)?,
                occupancy_pct: r.opt_f64(mask & 2 != 0)?,
            })
        }
        2 => {
            let event = *CameraEvent::ALL
                .get(usize::from(r.u8()?))
                .ok_or("unknown camera event")?;
            Body::Camera(Camera {
                event,
                confidence: r.f64()?,
                plate: r.opt_text()?,
                snapshot: r.opt_text()?,
            })
        }
        other => return Err(format!("unknown body {other}")),
    })
}

/// First byte of a device state ([`encode_state`]).
pub const STATE_TAG: u8 = 0xB2;

/// Appends a device's latest state: a tag, the alarm level (`0xFF` for
/// none), event time, `seq`, id, position and body (as a record's), for
/// another process's screens: a tenth of its JSON's cost.
pub fn encode_state(out: &mut Vec<u8>, s: &DeviceState) {
    out.push(STATE_TAG);
    out.push(s.alarm_level.unwrap_or(u8::MAX));
    out.extend_from_slice(&s.ts.millis().to_le_bytes());
    out.extend_from_slice(&s.seq.to_le_bytes());
    text(out, &s.device);
    out.extend_from_slice(&s.pos[0].to_le_bytes());
    out.extend_from_slice(&s.pos[1].to_le_bytes());
    body(out, &s.reading);
}

/// Reads the device states [`encode_state`] wrote one after another.
pub fn decode_states(data: &[u8]) -> Result<Vec<DeviceState>, String> {
    let mut r = Reader { data, at: 0 };
    let mut states = Vec::new();
    while r.at < data.len() {
        if r.u8()? != STATE_TAG {
            return Err("not a device state".into());
        }
        let level = r.u8()?;
        let ts = Timestamp(r.i64()?);
        let seq = r.i64()? as u64;
        let device = r.text()?;
        let pos = [r.f64()?, r.f64()?];
        states.push(DeviceState {
            device: device.into(),
            ts,
            seq,
            pos,
            reading: read_body(&mut r)?,
            alarm_level: (level != u8::MAX).then_some(level),
        });
    }
    Ok(states)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn every_kind_of_reading_reads_back_the_same() {
        let registry = ioc_devices::Registry::sonla_demo();
        let mut sim = ioc_devices::Simulator::new(
            registry,
            ioc_devices::Scenario::Flood,
            7,
            Timestamp(1_767_225_600_000),
        );
        let mut kinds = std::collections::BTreeSet::new();
        let mut envelopes: Vec<Envelope> = (0..5_000)
            .filter_map(|k| sim.next_reading(Timestamp(1_767_225_600_000 + k * 1000)))
            .collect();
        envelopes.push(Envelope {
            device: "cam-Sơn-La".into(),
            ts: Timestamp(-5),
            seq: u64::MAX,
            pos: None,
            body: Body::Camera(Camera {
                event: CameraEvent::IllegalParking,
                plate: Some("26A-123.45".into()),
                confidence: 0.5,
                snapshot: Some("s3://bucket/ảnh.jpg".into()),
            }),
        });
        envelopes.push(Envelope {
            device: "dam".into(),
            ts: Timestamp(1),
            seq: 1,
            pos: Some([103.9, 21.3]),
            body: Body::Hydrology(Hydrology {
                gates_open: Some(3),
                signal_dbm: Some(-80.5),
                ..Hydrology::default()
            }),
        });
        for e in envelopes {
            kinds.insert(e.body.key());
            let mut buf = Vec::new();
            encode(&mut buf, 42, &e);
            assert_eq!(decode(&buf).unwrap(), (42, e.clone()));
            // Cut short anywhere: an error, never a wrong reading or a panic.
            for cut in 0..buf.len() {
                assert!(decode(&buf[..cut]).is_err(), "{e:?} cut at {cut}");
            }
        }
        assert_eq!(kinds.len(), 3, "{kinds:?}");
        // The event byte is the declaration order.
        for (i, e) in CameraEvent::ALL.into_iter().enumerate() {
            assert_eq!(e as usize, i);
        }
    }
}
