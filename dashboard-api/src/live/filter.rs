//! A live client's filter, checked against the registry once and then per
//! item.

use std::sync::Arc;

use ioc_devices::Registry;
use ioc_schemas::{Alert, AreaRef, DeviceKind, LiveFilter, ZoneRef};

use crate::hub::Place;

/// A [`LiveFilter`] ready to test items.
#[derive(Debug)]
pub struct Filter {
    spec: LiveFilter,
    registry: Arc<Registry>,
    /// Per device (registry index): whether it passes the kinds and areas;
    /// `None` when neither is given.
    fixed: Option<Vec<bool>>,
}

impl Filter {
    /// Checks `spec` (areas must exist, the box must be a box on Earth) and
    /// works out which devices pass its kinds and areas.
    pub fn new(spec: LiveFilter, registry: &Arc<Registry>) -> Result<Filter, String> {
        let areas = registry.areas();
        let unknown: Vec<&str> = spec
            .areas
            .iter()
            .filter(|a| areas.get(a).is_none())
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            return Err(format!("unknown area ids: {}", unknown.join(", ")));
        }
        if let Some([w, s, e, n]) = spec.bbox {
            let finite = [w, s, e, n].iter().all(|v| v.is_finite());
            if !finite
                || !(-180.0..=180.0).contains(&w)
                || !(-180.0..=180.0).contains(&e)
                || !(-90.0..=90.0).contains(&s)
                || !(-90.0..=90.0).contains(&n)
                || w > e
                || s > n
            {
                return Err(format!(
                    "bbox must be [west, south, east, north] in degrees with west <= east and south <= north, got {:?}",
                    [w, s, e, n]
                ));
            }
        }
        let fixed = (!spec.kinds.is_empty() || !spec.areas.is_empty()).then(|| {
            registry
                .devices()
                .iter()
                .map(|d| {
                    (spec.kinds.is_empty() || spec.kinds.contains(&d.kind))
                        && AreaRef::chain_within(&d.area, &spec.areas)
                })
                .collect()
        });
        Ok(Filter {
            spec,
            registry: registry.clone(),
            fixed,
        })
    }

    /// Whether it knows the kinds and areas of the first `devices`
    /// devices (it was made before later ones were registered).
    pub fn covers(&self, devices: usize) -> bool {
        self.fixed.as_ref().is_none_or(|f| f.len() >= devices)
    }

    /// The filter as the client gave it.
    pub fn spec(&self) -> &LiveFilter {
        &self.spec
    }

    fn in_box(&self, [x, y]: [f64; 2]) -> bool {
        self.spec
            .bbox
            .is_none_or(|[w, s, e, n]| (w..=e).contains(&x) && (s..=n).contains(&y))
    }

    fn in_zones(&self, zones: &[ZoneRef]) -> bool {
        self.spec.zones.is_empty() || zones.iter().any(|z| self.spec.zones.contains(&z.id))
    }

    /// Whether a geofence event in `zone` at `pos` passes.
    pub fn geofence(&self, zone: &str, pos: [f64; 2]) -> bool {
        self.in_box(pos)
            && (self.spec.zones.is_empty() || self.spec.zones.iter().any(|z| z == zone))
    }

    /// Whether the device (by registry index) at `place` passes.
    pub fn device(&self, place: &Place) -> bool {
        let fixed = match (&self.fixed, place.device) {
            (Some(fixed), Some(i)) => fixed.get(i as usize).copied().unwrap_or(false),
            (Some(_), None) => false,
            (None, _) => true,
        };
        fixed && self.in_box(place.pos) && self.in_zones(&place.zones)
    }

    /// Whether the alert (about the device of that registry index, if any)
    /// passes.
    pub fn alert(&self, alert: &Alert, device: Option<u32>) -> bool {
        let spec = &self.spec;
        // Kinds narrow alerts about devices; a zone's alert has no kind.
        let kind = match device {
            Some(i) if !spec.kinds.is_empty() => {
                let registered = self.registry.devices().get(i as usize);
                registered.is_some_and(|d| spec.kinds.contains(&d.kind))
            }
            _ => true,
        };
        kind && spec.min_severity.is_none_or(|m| alert.severity >= m)
            && AreaRef::chain_within(&alert.area, &spec.areas)
            && self.in_zones(&alert.zones)
    }

    /// Whether a track last read at `pos` passes.
    pub fn track(&self, pos: [f64; 2]) -> bool {
        let kinds = &self.spec.kinds;
        (kinds.is_empty() || kinds.contains(&DeviceKind::Camera)) && self.in_box(pos)
    }
}
