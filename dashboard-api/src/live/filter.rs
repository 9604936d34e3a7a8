//! A live client's filter, checked against the registry once and then per
//! item.

use ioc_devices::Registry;
use ioc_schemas::{Alert, DeviceKind, LiveFilter, Severity, ZoneRef};

use crate::hub::{Place, SnapshotFilter};

/// A [`LiveFilter`] ready to test items.
#[derive(Debug)]
pub struct Filter {
    spec: LiveFilter,
    /// Per device (registry index): whether it passes the kinds and areas;
    /// `None` when neither is given.
    fixed: Option<Vec<bool>>,
    kinds: Vec<DeviceKind>,
    /// Every device's kind, by registry index, when kinds are given.
    registry_kinds: Vec<DeviceKind>,
    bbox: Option<[f64; 4]>,
    min_severity: Option<Severity>,
}

impl Filter {
    /// Checks `spec` (areas must exist, the box must be a box on Earth) and
    /// works out which devices pass its kinds and areas.
    pub fn new(spec: LiveFilter, registry: &Registry) -> Result<Filter, String> {
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
                        && (spec.areas.is_empty()
                            || d.area.iter().any(|a| spec.areas.contains(&a.id)))
                })
                .collect()
        });
        let registry_kinds = if spec.kinds.is_empty() {
            Vec::new()
        } else {
            registry.devices().iter().map(|d| d.kind).collect()
        };
        Ok(Filter {
            registry_kinds,
            kinds: spec.kinds.clone(),
            bbox: spec.bbox,
            min_severity: spec.min_severity,
            fixed,
            spec,
        })
    }

    /// The filter as the client gave it.
    pub fn spec(&self) -> &LiveFilter {
        &self.spec
    }

    fn in_box(&self, [x, y]: [f64; 2]) -> bool {
        self.bbox
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
}

impl SnapshotFilter for Filter {
    fn device(&self, place: &Place) -> bool {
        let fixed = match (&self.fixed, place.device) {
            (Some(fixed), Some(i)) => fixed.get(i as usize).copied().unwrap_or(false),
            (Some(_), None) => false,
            (None, _) => true,
        };
        fixed && self.in_box(place.pos) && self.in_zones(&place.zones)
    }

    fn alert(&self, alert: &Alert, device: Option<u32>) -> bool {
        // Kinds narrow alerts about devices; a zone's alert has no kind.
        let kind = match device {
            Some(i) if !self.kinds.is_empty() => {
                let kind = self.registry_kinds.get(i as usize);
                kind.is_some_and(|k| self.kinds.contains(k))
            }
            _ => true,
        };
        kind && self.min_severity.is_none_or(|m| alert.severity >= m)
            && (self.spec.areas.is_empty()
                || alert.area.iter().any(|a| self.spec.areas.contains(&a.id)))
            && self.in_zones(&alert.zones)
    }

    fn track(&self, pos: [f64; 2]) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&DeviceKind::Camera)) && self.in_box(pos)
    }
}
