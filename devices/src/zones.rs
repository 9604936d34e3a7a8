//! Zones and assets, and the indexes that answer "which zones contain this
//! point" and "which assets are nearest".
//!
//! A zones file is a GeoJSON FeatureCollection. Each feature has the
//! properties `id`, `name` and `kind`:
//!
//! - a zone kind (`landslide_risk`, `flood_prone`, `restricted`) with a
//!   Polygon or MultiPolygon, or `road_segment` with a LineString (or
//!   MultiLineString) and `buffer_m`, the half-width of the road corridor;
//! - an asset kind (`shelter`, `fire_station`, `hospital`, `police_post`,
//!   `camera`) with a Point.
//!
//! Optional: `buffer_m` on a polygon zone (how far outside its edge a
//! subject must go before it counts as having left; default
//! [`DEFAULT_BUFFER_M`]) and `dwell_s` (how long inside before a dwell
//! event; none by default). Several files can be loaded together
//! ([`Zones::from_files`]): ids must be unique across them.
//!
//! Every problem is reported with the feature's id and the reason: rings
//! that are not closed, coordinates that are not WGS 84, self-intersecting
//! or otherwise invalid polygons (checked with `geo`'s `Validation`),
//! unknown kinds, the wrong geometry for a kind.
//!
//! Point lookups go through an R-tree over the bounding boxes of pieces:
//! a polygon with many vertices is cut into monotone pieces (`geo`'s
//! `MonotonicPolygons`, an `O(log n)` point test each), a road into its
//! segments, so no single exact test is slow however large the zone.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;

use geo::algorithm::monotone::MonoPoly;
use geo::{
    BoundingRect, Centroid, Closest, Coord, Distance, Haversine, HaversineClosestPoint, Intersects,
    Line, LineString, MonotonicPolygons, MultiPolygon, Point, Polygon, Validation,
};
use ioc_schemas::{AssetKind, NearbyAsset, ZoneKind, ZoneRef};
use rstar::primitives::{GeomWithData, Rectangle};
use rstar::{AABB, RTree};
use serde::Deserialize;

use crate::CatalogueError;

/// Default geofence buffer of a polygon zone, metres.
pub const DEFAULT_BUFFER_M: f64 = 25.0;
/// Polygons with more vertices than this are cut into monotone pieces.
const SPLIT_ABOVE_VERTICES: usize = 24;
/// Metres per degree of latitude (mean).
const M_PER_DEG: f64 = 111_195.0;

/// A zone's geometry.
#[derive(Clone, Debug)]
pub enum Shape {
    /// An area.
    Area(MultiPolygon<f64>),
    /// A road: its centre lines; the corridor is `buffer_m` either side.
    Road(Vec<LineString<f64>>),
}

/// One zone.
#[derive(Clone, Debug)]
pub struct Zone {
    /// Id, name and kind.
    pub reference: ZoneRef,
    /// Its geometry.
    pub shape: Shape,
    /// Geofence buffer (polygons) or corridor half-width (roads), metres.
    pub buffer_m: f64,
    /// Time inside after which a subject's visit is a dwell, seconds.
    pub dwell_s: Option<u64>,
    /// A representative point, `[lon, lat]`: the centroid (roads: the
    /// middle vertex), where alerts about the zone are placed.
    pub centre: [f64; 2],
}

/// One asset.
#[derive(Clone, Debug)]
pub struct Asset {
    /// Id from the file.
    pub id: String,
    /// Name shown to operators.
    pub name: String,
    /// What it is.
    pub kind: AssetKind,
    /// Where, `[lon, lat]`.
    pub pos: [f64; 2],
}

#[derive(Debug)]
enum Piece {
    Mono(MonoPoly<f64>),
    Polygon(Polygon<f64>),
    /// A road segment; within `buffer_m` of it is inside.
    Segment(Line<f64>),
}

type Entry = GeomWithData<Rectangle<[f64; 2]>, u32>;

/// Zones and assets, indexed. Build with [`Zones::from_geojson`] or
/// [`Zones::from_files`]; [`Zones::default`] is empty.
#[derive(Debug, Default)]
pub struct Zones {
    zones: Vec<Zone>,
    by_id: HashMap<String, usize>,
    /// Each piece and the zone it belongs to.
    pieces: Vec<(Piece, u32)>,
    index: RTree<Entry>,
    assets: Vec<Asset>,
    /// Per asset kind (in `AssetKind::ALL` order), the assets' positions
    /// projected to metres around `origin`, for nearest-neighbour search.
    asset_index: Vec<RTree<GeomWithData<[f64; 2], u32>>>,
    origin: [f64; 2],
    geojson: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Properties {
    id: String,
    name: String,
    kind: String,
    #[serde(default)]
    buffer_m: Option<f64>,
    #[serde(default)]
    dwell_s: Option<u64>,
    /// Descriptive, kept for the map and not used.
    #[serde(default, rename = "note")]
    _note: Option<serde::de::IgnoredAny>,
}

fn check_coords<'a>(
    id: &str,
    coords: impl IntoIterator<Item = &'a geojson::Position>,
) -> Result<(), String> {
    for c in coords {
        let ok = c.len() >= 2
            && c[0].is_finite()
            && c[1].is_finite()
            && (-180.0..=180.0).contains(&c[0])
            && (-90.0..=90.0).contains(&c[1]);
        if !ok {
            return Err(format!(
                "zone {id}: coordinate {:?} is not WGS 84 [lon, lat]",
                c.as_slice()
            ));
        }
    }
    Ok(())
}

fn check_rings(id: &str, polygon: &[Vec<geojson::Position>]) -> Result<(), String> {
    for (n, ring) in polygon.iter().enumerate() {
        check_coords(id, ring)?;
        let which = if n == 0 {
            "exterior ring".to_owned()
        } else {
            format!("interior ring #{n}")
        };
        if ring.len() < 4 {
            return Err(format!(
                "zone {id}: {which} has {} positions; a ring needs at least 4",
                ring.len()
            ));
        }
        if ring.first().map(|p| &p[..2]) != ring.last().map(|p| &p[..2]) {
            return Err(format!(
                "zone {id}: {which} is not closed (its last position must repeat the first)"
            ));
        }
    }
    Ok(())
}

fn to_polygon(rings: &[Vec<geojson::Position>]) -> Polygon<f64> {
    let ring = |r: &Vec<geojson::Position>| {
        LineString::from(r.iter().map(|p| (p[0], p[1])).collect::<Vec<_>>())
    };
    let mut rings = rings.iter().map(ring);
    let exterior = rings.next().unwrap_or_else(|| LineString::new(Vec::new()));
    Polygon::new(exterior, rings.collect())
}

fn to_line(points: &[geojson::Position]) -> LineString<f64> {
    LineString::from(points.iter().map(|p| (p[0], p[1])).collect::<Vec<_>>())
}

/// What one feature is, once checked.
enum Parsed {
    Zone(Zone),
    Asset(Asset),
}

fn parse_feature(props: Properties, geometry: Option<geojson::Geometry>) -> Result<Parsed, String> {
    let Properties {
        id,
        name,
        kind: kind_name,
        buffer_m,
        dwell_s,
        ..
    } = props;
    let value = geometry.map(|g| g.value);
    if let Some(kind) = AssetKind::parse(&kind_name) {
        return match value {
            Some(geojson::GeometryValue::Point { coordinates }) => {
                check_coords(&id, [&coordinates])?;
                Ok(Parsed::Asset(Asset {
                    pos: [coordinates[0], coordinates[1]],
                    id,
                    name,
                    kind,
                }))
            }
            _ => Err(format!(
                "zone {id}: an asset ({}) must be a Point",
                kind.as_str()
            )),
        };
    }
    let Some(kind) = ZoneKind::parse(&kind_name) else {
        let known: Vec<_> = ZoneKind::ALL
            .iter()
            .map(|k| k.as_str())
            .chain(AssetKind::ALL.iter().map(|k| k.as_str()))
            .collect();
        return Err(format!(
            "zone {id}: unknown kind {:?}; expected one of {}",
            kind_name,
            known.join(", ")
        ));
    };
    if let Some(b) = buffer_m
        && !(b.is_finite() && (0.0..=10_000.0).contains(&b))
    {
        return Err(format!(
            "zone {id}: buffer_m must be between 0 and 10000 metres"
        ));
    }
    let shape = match (kind, value) {
        (ZoneKind::RoadSegment, Some(geojson::GeometryValue::LineString { coordinates })) => {
            vec![coordinates]
        }
        (ZoneKind::RoadSegment, Some(geojson::GeometryValue::MultiLineString { coordinates })) => {
            coordinates
        }
        (ZoneKind::RoadSegment, _) => {
            return Err(format!(
                "zone {id}: a road_segment must be a LineString or MultiLineString"
            ));
        }
        (_, Some(geojson::GeometryValue::Polygon { coordinates })) => {
            return area_zone(
                ZoneRef { id, name, kind },
                vec![coordinates],
                buffer_m,
                dwell_s,
            );
        }
        (_, Some(geojson::GeometryValue::MultiPolygon { coordinates })) => {
            return area_zone(ZoneRef { id, name, kind }, coordinates, buffer_m, dwell_s);
        }
        (_, _) => {
            return Err(format!(
                "zone {id}: a {} zone must be a Polygon or MultiPolygon",
                kind.as_str()
            ));
        }
    };
    let Some(buffer_m) = buffer_m.filter(|b| *b > 0.0) else {
        return Err(format!(
            "zone {id}: a road_segment needs buffer_m, the corridor's half-width in metres"
        ));
    };
    let mut lines = Vec::new();
    for line in &shape {
        check_coords(&id, line)?;
        if line.len() < 2 {
            return Err(format!("zone {id}: a line needs at least 2 positions"));
        }
        lines.push(to_line(line));
    }
    Ok(Parsed::Zone(Zone {
        reference: ZoneRef { id, name, kind },
        centre: lines
            .first()
            .and_then(|l| l.0.get(l.0.len() / 2))
            .map_or([0.0, 0.0], |c| [c.x, c.y]),
        shape: Shape::Road(lines),
        buffer_m,
        dwell_s,
    }))
}

fn area_zone(
    reference: ZoneRef,
    polygons: Vec<Vec<Vec<geojson::Position>>>,
    buffer_m: Option<f64>,
    dwell_s: Option<u64>,
) -> Result<Parsed, String> {
    let id = &reference.id;
    let mut out = Vec::with_capacity(polygons.len());
    for rings in &polygons {
        check_rings(id, rings)?;
        out.push(to_polygon(rings));
    }
    let shape = MultiPolygon::new(out);
    if let Err(e) = shape.check_validation() {
        return Err(format!("zone {id}: invalid polygon: {e}"));
    }
    let centre = shape.centroid().map_or([0.0, 0.0], |c| [c.x(), c.y()]);
    Ok(Parsed::Zone(Zone {
        reference,
        centre,
        shape: Shape::Area(shape),
        buffer_m: buffer_m.unwrap_or(DEFAULT_BUFFER_M),
        dwell_s,
    }))
}

fn rect(min: Coord<f64>, max: Coord<f64>, pad: [f64; 2], data: u32) -> Entry {
    GeomWithData::new(
        Rectangle::from_corners(
            [min.x - pad[0], min.y - pad[1]],
            [max.x + pad[0], max.y + pad[1]],
        ),
        data,
    )
}

/// Degrees of longitude and latitude that `m` metres span at latitude `lat`.
fn degrees(m: f64, lat: f64) -> [f64; 2] {
    let dlat = m / M_PER_DEG;
    [dlat / lat.to_radians().cos().max(0.01), dlat]
}

/// Great-circle distance in metres from `p` to the closest point of `g`
/// (0 when `p` lies on or in it).
fn distance_to<G: HaversineClosestPoint<f64>>(g: &G, p: Point<f64>) -> f64 {
    match g.haversine_closest_point(&p) {
        Closest::Intersection(_) => 0.0,
        Closest::SinglePoint(c) => Haversine.distance(p, c),
        Closest::Indeterminate => f64::INFINITY,
    }
}

impl Zones {
    /// Parses and validates one zones FeatureCollection; every problem is
    /// reported, each with its feature.
    pub fn from_geojson(text: &str) -> Result<Self, CatalogueError> {
        Self::from_files(&[("zones", text)])
    }

    /// Parses and validates several zones files as one set: `(name, text)`
    /// pairs, the name used in messages.
    pub fn from_files(files: &[(&str, &str)]) -> Result<Self, CatalogueError> {
        let mut problems = Vec::new();
        let mut zones = Vec::new();
        let mut assets = Vec::new();
        let mut features = Vec::new();
        for (name, text) in files {
            let collection = match crate::collection(text, name) {
                Ok(c) => c,
                Err(e) => {
                    problems.extend(e.problems);
                    continue;
                }
            };
            // Served as they came, at GET /api/v1/zones.
            features.extend(collection.features.iter().cloned());
            let parsed = crate::properties::<Properties>(collection.features, name, &mut problems);
            for (props, geometry) in parsed {
                match parse_feature(props, geometry) {
                    Ok(Parsed::Zone(z)) => zones.push(z),
                    Ok(Parsed::Asset(a)) => assets.push(a),
                    Err(e) => problems.push(format!("{name}: {e}")),
                }
            }
        }
        let mut by_id = HashMap::new();
        let ids = zones
            .iter()
            .map(|z| &z.reference.id)
            .chain(assets.iter().map(|a| &a.id));
        for (i, id) in ids.enumerate() {
            if by_id.insert(id.clone(), i).is_some() {
                problems.push(format!("zone {id}: duplicate id"));
            }
        }
        if !problems.is_empty() {
            return Err(CatalogueError { problems });
        }
        by_id.retain(|_, i| *i < zones.len());
        let geojson = serde_json::json!({"type": "FeatureCollection", "features": features});
        Ok(Self::indexed(zones, by_id, assets, geojson))
    }

    fn indexed(
        zones: Vec<Zone>,
        by_id: HashMap<String, usize>,
        assets: Vec<Asset>,
        geojson: serde_json::Value,
    ) -> Self {
        let mut pieces = Vec::new();
        let mut entries = Vec::new();
        for (zi, zone) in zones.iter().enumerate() {
            let zi = zi as u32;
            match &zone.shape {
                Shape::Area(mp) => {
                    for polygon in &mp.0 {
                        for piece in split(polygon) {
                            let bounds = match &piece {
                                Piece::Mono(m) => {
                                    m.top().bounding_rect().zip(m.bot().bounding_rect()).map(
                                        |(a, b)| {
                                            (
                                                Coord {
                                                    x: a.min().x.min(b.min().x),
                                                    y: a.min().y.min(b.min().y),
                                                },
                                                Coord {
                                                    x: a.max().x.max(b.max().x),
                                                    y: a.max().y.max(b.max().y),
                                                },
                                            )
                                        },
                                    )
                                }
                                Piece::Polygon(p) => p.bounding_rect().map(|r| (r.min(), r.max())),
                                Piece::Segment(_) => None,
                            };
                            if let Some((min, max)) = bounds {
                                entries.push(rect(min, max, [0.0, 0.0], pieces.len() as u32));
                                pieces.push((piece, zi));
                            }
                        }
                    }
                }
                Shape::Road(lines) => {
                    for line in lines {
                        for segment in line.lines() {
                            let r = segment.bounding_rect();
                            let pad = degrees(zone.buffer_m, r.max().y.abs().max(r.min().y.abs()));
                            entries.push(rect(r.min(), r.max(), pad, pieces.len() as u32));
                            pieces.push((Piece::Segment(segment), zi));
                        }
                    }
                }
            }
        }
        let origin = if assets.is_empty() {
            [0.0, 0.0]
        } else {
            let n = assets.len() as f64;
            let lat = assets.iter().map(|a| a.pos[1]).sum::<f64>() / n;
            let lon = assets.iter().map(|a| a.pos[0]).sum::<f64>() / n;
            [lon, lat]
        };
        let mut zones_set = Zones {
            zones,
            by_id,
            pieces,
            index: RTree::bulk_load(entries),
            assets,
            asset_index: Vec::new(),
            origin,
            geojson,
        };
        zones_set.asset_index = AssetKind::ALL
            .iter()
            .map(|&kind| {
                RTree::bulk_load(
                    zones_set
                        .assets
                        .iter()
                        .enumerate()
                        .filter(|(_, a)| a.kind == kind)
                        .map(|(i, a)| GeomWithData::new(zones_set.project(a.pos), i as u32))
                        .collect(),
                )
            })
            .collect();
        zones_set
    }

    /// A local equirectangular projection to metres around the assets'
    /// centre: accurate to a fraction of a percent across a province, and
    /// only used to order candidates (distances are great-circle).
    fn project(&self, pos: [f64; 2]) -> [f64; 2] {
        let k = self.origin[1].to_radians().cos();
        [
            (pos[0] - self.origin[0]) * M_PER_DEG * k,
            (pos[1] - self.origin[1]) * M_PER_DEG,
        ]
    }

    /// Every zone, in file order.
    pub fn all(&self) -> &[Zone] {
        &self.zones
    }

    /// Every asset, in file order.
    pub fn assets(&self) -> &[Asset] {
        &self.assets
    }

    /// The zone with this id.
    pub fn get(&self, id: &str) -> Option<&Zone> {
        self.by_id.get(id).map(|&i| &self.zones[i])
    }

    /// The zone with this id and its index.
    pub fn find(&self, id: &str) -> Option<(usize, &Zone)> {
        self.by_id.get(id).map(|&i| (i, &self.zones[i]))
    }

    /// The zone at index `i` (as returned by [`Zones::indices_at`]).
    pub fn zone(&self, i: usize) -> &Zone {
        &self.zones[i]
    }

    /// The files' features as one GeoJSON FeatureCollection (for the map).
    pub fn geojson(&self) -> &serde_json::Value {
        &self.geojson
    }

    /// Indices of the zones containing `pos` (roads: within their
    /// corridor), in file order, each once. Appends to `out` (cleared first).
    pub fn indices_at(&self, pos: [f64; 2], out: &mut Vec<usize>) {
        out.clear();
        let coord = Coord {
            x: pos[0],
            y: pos[1],
        };
        for entry in self.index.locate_all_at_point(&pos) {
            let (piece, zi) = &self.pieces[entry.data as usize];
            let zi = *zi as usize;
            if out.contains(&zi) {
                continue;
            }
            let inside = match piece {
                Piece::Mono(m) => m.intersects(&coord),
                Piece::Polygon(p) => p.intersects(&coord),
                Piece::Segment(s) => distance_to(s, Point::from(coord)) <= self.zones[zi].buffer_m,
            };
            if inside {
                out.push(zi);
            }
        }
        out.sort_unstable();
    }

    /// The zones containing `pos`, in file order.
    pub fn at(&self, pos: [f64; 2]) -> Vec<ZoneRef> {
        let mut found = Vec::new();
        self.indices_at(pos, &mut found);
        found
            .into_iter()
            .map(|i| self.zones[i].reference.clone())
            .collect()
    }

    /// Indices of the zones whose edge (or, for roads, corridor) lies
    /// within `m` metres of `pos`, including those containing it.
    pub fn indices_near(&self, pos: [f64; 2], m: f64, out: &mut Vec<usize>) {
        out.clear();
        let pad = degrees(m, pos[1]);
        let envelope = AABB::from_corners(
            [pos[0] - pad[0], pos[1] - pad[1]],
            [pos[0] + pad[0], pos[1] + pad[1]],
        );
        for entry in self.index.locate_in_envelope_intersecting(&envelope) {
            let zi = self.pieces[entry.data as usize].1 as usize;
            if !out.contains(&zi) && self.distance_m(zi, pos) <= m {
                out.push(zi);
            }
        }
        out.sort_unstable();
    }

    /// Great-circle distance in metres from `pos` to zone `i`: 0 inside
    /// (roads: within the corridor), else to its edge (roads: to the
    /// corridor's edge).
    pub fn distance_m(&self, i: usize, pos: [f64; 2]) -> f64 {
        let zone = &self.zones[i];
        let p = Point::new(pos[0], pos[1]);
        match &zone.shape {
            Shape::Area(mp) => {
                if mp.intersects(&p) {
                    0.0
                } else {
                    mp.0.iter()
                        .map(|poly| distance_to(poly, p))
                        .fold(f64::INFINITY, f64::min)
                }
            }
            Shape::Road(lines) => {
                let d = lines
                    .iter()
                    .map(|l| distance_to(l, p))
                    .fold(f64::INFINITY, f64::min);
                (d - zone.buffer_m).max(0.0)
            }
        }
    }

    /// The `n` assets of the given kinds nearest to `pos`, nearest first,
    /// no farther than `within_m` when given.
    pub fn nearest(
        &self,
        pos: [f64; 2],
        kinds: &[AssetKind],
        n: usize,
        within_m: Option<f64>,
    ) -> Vec<NearbyAsset> {
        let here = self.project(pos);
        let mut found: Vec<NearbyAsset> = Vec::new();
        for kind in kinds {
            let Some(index) = AssetKind::ALL
                .iter()
                .position(|k| k == kind)
                .and_then(|k| self.asset_index.get(k))
            else {
                continue;
            };
            // The planar order is very nearly the great-circle order; take
            // a few more than asked and rank them by great-circle distance.
            for entry in index.nearest_neighbor_iter(&here).take(n + 4) {
                let a = &self.assets[entry.data as usize];
                let distance_m = crate::distance_km(pos, a.pos) * 1000.0;
                if within_m.is_some_and(|w| distance_m > w) {
                    continue;
                }
                found.push(NearbyAsset {
                    id: a.id.clone(),
                    name: a.name.clone(),
                    kind: a.kind,
                    pos: a.pos,
                    distance_m: distance_m.round(),
                });
            }
        }
        found.sort_by(|a, b| a.distance_m.total_cmp(&b.distance_m).then(a.id.cmp(&b.id)));
        found.truncate(n);
        found
    }
}

/// A polygon as pieces for the index: itself when small, else its monotone
/// subdivision (falling back to itself if the subdivision fails).
fn split(polygon: &Polygon<f64>) -> Vec<Piece> {
    let vertices =
        polygon.exterior().0.len() + polygon.interiors().iter().map(|r| r.0.len()).sum::<usize>();
    if vertices <= SPLIT_ABOVE_VERTICES {
        return vec![Piece::Polygon(polygon.clone())];
    }
    let copy = polygon.clone();
    match std::panic::catch_unwind(AssertUnwindSafe(move || MonotonicPolygons::from(copy))) {
        Ok(mono) if !mono.subdivisions().is_empty() => mono
            .into_subdivisions()
            .into_iter()
            .map(Piece::Mono)
            .collect(),
        _ => vec![Piece::Polygon(polygon.clone())],
    }
}

/// A synthetic zones file for tests and benchmarks: `n` star-shaped
/// (so simple) polygons of `vertices` (min, max) vertices each, about
/// `radius_deg` across, scattered over `bbox` (`[min lon, min lat, max lon,
/// max lat]`), kinds cycling through the polygon kinds; deterministic in
/// `seed`.
pub fn synthetic(
    n: usize,
    vertices: (usize, usize),
    radius_deg: f64,
    bbox: [f64; 4],
    seed: u64,
) -> String {
    use crate::noise::unit;
    let kinds = [
        ZoneKind::LandslideRisk,
        ZoneKind::FloodProne,
        ZoneKind::Restricted,
    ];
    let mut features = Vec::with_capacity(n);
    for z in 0..n as u64 {
        let cx = bbox[0] + unit(seed, z, 0) * (bbox[2] - bbox[0]);
        let cy = bbox[1] + unit(seed, z, 1) * (bbox[3] - bbox[1]);
        let span = (vertices.1 - vertices.0 + 1) as f64;
        let count = vertices.0 + (unit(seed, z, 2) * span) as usize;
        let mut ring: Vec<[f64; 2]> = (0..count as u64)
            .map(|k| {
                let angle = std::f64::consts::TAU * k as f64 / count as f64;
                let r = radius_deg * (0.4 + 0.6 * unit(seed, z, 10 + k));
                [cx + r * angle.cos(), cy + r * angle.sin()]
            })
            .collect();
        ring.push(ring[0]);
        features.push(serde_json::json!({
            "type": "Feature",
            "properties": {"id": format!("z{z}"), "name": format!("Zone {z}"), "kind": kinds[z as usize % 3].as_str()},
            "geometry": {"type": "Polygon", "coordinates": [ring]},
        }));
    }
    serde_json::json!({"type": "FeatureCollection", "features": features}).to_string()
}

#[cfg(test)]
mod tests;
