//! Administrative areas and the point-in-polygon index over them.
//!
//! Areas come from a GeoJSON FeatureCollection. Each feature has the
//! properties `id`, `name`, `level` (`province`, `former_district`,
//! `commune`, `ward`) and an optional `parent` id; its geometry is a Polygon,
//! a MultiPolygon, or null for levels kept only as a name in the hierarchy
//! (the former districts). [`Areas::chain_at`] finds the most specific area
//! containing a point through an R-tree over bounding boxes, confirms it with
//! an exact test, and walks up the parents to the province.

use std::collections::HashMap;
use std::sync::Arc;

use geo::{BoundingRect, Contains, MultiPolygon, Point};
use ioc_schemas::{AreaLevel, AreaRef};
use rstar::RTree;
use rstar::primitives::{GeomWithData, Rectangle};
use serde::Deserialize;

use crate::CatalogueError;

/// One administrative area.
#[derive(Clone, Debug)]
pub struct Area {
    /// Id, name and level.
    pub reference: AreaRef,
    /// Parent area id, if any.
    pub parent: Option<String>,
    /// Boundary, if the area has one.
    pub boundary: Option<MultiPolygon<f64>>,
}

/// Every area, indexed for point lookups.
#[derive(Debug)]
pub struct Areas {
    areas: Vec<Area>,
    by_id: HashMap<Arc<str>, usize>,
    index: RTree<GeomWithData<Rectangle<[f64; 2]>, usize>>,
    geojson: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AreaProperties {
    id: String,
    name: String,
    level: AreaLevel,
    #[serde(default)]
    parent: Option<String>,
}

fn depth(level: AreaLevel) -> u8 {
    match level {
        AreaLevel::Province => 0,
        AreaLevel::FormerDistrict => 1,
        AreaLevel::Commune | AreaLevel::Ward => 2,
    }
}

impl Areas {
    /// Parses and validates an areas FeatureCollection. Every problem is
    /// reported, each with the feature it concerns.
    pub fn from_geojson(text: &str) -> Result<Self, CatalogueError> {
        let mut problems = Vec::new();
        let mut areas = Vec::new();
        for (props, geometry) in crate::features::<AreaProperties>(text, "areas", &mut problems)? {
            let boundary = match geometry.map(|g| geo::Geometry::<f64>::try_from(&g.value)) {
                None => None,
                Some(Ok(geo::Geometry::Polygon(p))) => Some(MultiPolygon::new(vec![p])),
                Some(Ok(geo::Geometry::MultiPolygon(m))) => Some(m),
                Some(Ok(_)) => {
                    problems.push(format!(
                        "area {}: geometry must be a Polygon or MultiPolygon",
                        props.id
                    ));
                    continue;
                }
                Some(Err(e)) => {
                    problems.push(format!("area {}: bad geometry: {e}", props.id));
                    continue;
                }
            };
            if let Some(b) = &boundary {
                let bad = b.0.iter().flat_map(|p| p.exterior().coords()).find(|c| {
                    !(c.x.is_finite()
                        && c.y.is_finite()
                        && (-180.0..=180.0).contains(&c.x)
                        && (-90.0..=90.0).contains(&c.y))
                });
                if let Some(c) = bad {
                    problems.push(format!(
                        "area {}: coordinate [{}, {}] is not WGS 84 [lon, lat]",
                        props.id, c.x, c.y
                    ));
                    continue;
                }
            }
            areas.push(Area {
                reference: AreaRef {
                    id: props.id.into(),
                    name: props.name.into(),
                    level: props.level,
                },
                parent: props.parent,
                boundary,
            });
        }
        let mut by_id = HashMap::new();
        for (i, a) in areas.iter().enumerate() {
            if by_id.insert(a.reference.id.clone(), i).is_some() {
                problems.push(format!("area {}: duplicate id", a.reference.id));
            }
        }
        for a in &areas {
            match &a.parent {
                Some(p) => match by_id.get(p.as_str()) {
                    None => problems.push(format!(
                        "area {}: parent {p} does not exist",
                        a.reference.id
                    )),
                    Some(&pi) if depth(areas[pi].reference.level) >= depth(a.reference.level) => {
                        problems.push(format!(
                            "area {}: parent {p} is not a higher level",
                            a.reference.id
                        ))
                    }
                    Some(_) => {}
                },
                None if a.reference.level != AreaLevel::Province => {
                    problems.push(format!(
                        "area {}: only a province may have no parent",
                        a.reference.id
                    ));
                }
                None => {}
            }
        }
        if !problems.is_empty() {
            return Err(CatalogueError { problems });
        }
        let index = RTree::bulk_load(
            areas
                .iter()
                .enumerate()
                .filter_map(|(i, a)| {
                    let rect = a.boundary.as_ref()?.bounding_rect()?;
                    Some(GeomWithData::new(
                        Rectangle::from_corners(
                            [rect.min().x, rect.min().y],
                            [rect.max().x, rect.max().y],
                        ),
                        i,
                    ))
                })
                .collect(),
        );
        Ok(Areas {
            areas,
            by_id,
            index,
            geojson: text.to_owned(),
        })
    }

    /// All areas, in file order.
    pub fn all(&self) -> &[Area] {
        &self.areas
    }

    /// The area with this id.
    pub fn get(&self, id: &str) -> Option<&Area> {
        self.by_id.get(id).map(|&i| &self.areas[i])
    }

    /// The GeoJSON text the areas were loaded from (served to the map).
    pub fn geojson(&self) -> &str {
        &self.geojson
    }

    /// The chain of areas containing `[lon, lat]`, most specific first, up
    /// to the province. Empty when no area contains the point.
    pub fn chain_at(&self, pos: [f64; 2]) -> Vec<AreaRef> {
        let point = Point::new(pos[0], pos[1]);
        let best = self
            .index
            .locate_all_at_point(&pos)
            .map(|g| g.data)
            .filter(|&i| {
                self.areas[i]
                    .boundary
                    .as_ref()
                    .is_some_and(|b| b.contains(&point))
            })
            .max_by_key(|&i| (depth(self.areas[i].reference.level), std::cmp::Reverse(i)));
        match best {
            Some(i) => self.chain_from(i),
            None => Vec::new(),
        }
    }

    /// The chain from the area with this id up to the province.
    pub fn chain_of(&self, id: &str) -> Vec<AreaRef> {
        self.by_id
            .get(id)
            .map(|&i| self.chain_from(i))
            .unwrap_or_default()
    }

    fn chain_from(&self, mut i: usize) -> Vec<AreaRef> {
        let mut chain = vec![self.areas[i].reference.clone()];
        // Parents were validated to be strictly higher levels, so this ends.
        while let Some(p) = self.areas[i]
            .parent
            .as_ref()
            .and_then(|p| self.by_id.get(p.as_str()))
        {
            i = *p;
            chain.push(self.areas[i].reference.clone());
        }
        chain
    }

    /// The bounding box `(min, max)` of every boundary, `[lon, lat]`; `None`
    /// when no area has a boundary.
    pub fn bounds(&self) -> Option<([f64; 2], [f64; 2])> {
        (self.index.size() > 0).then(|| {
            let e = self.index.root().envelope();
            (e.lower(), e.upper())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AREAS: &str = r#"{"type":"FeatureCollection","features":[
      {"type":"Feature","properties":{"id":"p","name":"Tỉnh P","level":"province"},
       "geometry":{"type":"Polygon","coordinates":[[[0,0],[10,0],[10,10],[0,10],[0,0]]]}},
      {"type":"Feature","properties":{"id":"d","name":"Huyện D","level":"former_district","parent":"p"},"geometry":null},
      {"type":"Feature","properties":{"id":"c1","name":"Xã C1","level":"commune","parent":"d"},
       "geometry":{"type":"Polygon","coordinates":[[[0,0],[5,0],[5,10],[0,10],[0,0]]]}},
      {"type":"Feature","properties":{"id":"w2","name":"Phường W2","level":"ward","parent":"p"},
       "geometry":{"type":"Polygon","coordinates":[[[5,0],[10,0],[10,10],[5,10],[5,0]]]}}
    ]}"#;

    #[test]
    fn chain_walks_up_through_the_optional_level() {
        let areas = Areas::from_geojson(AREAS).unwrap();
        let ids: Vec<_> = areas
            .chain_at([2.0, 3.0])
            .into_iter()
            .map(|a| a.id.to_string())
            .collect();
        assert_eq!(ids, ["c1", "d", "p"]);
        let ids: Vec<_> = areas
            .chain_at([7.0, 3.0])
            .into_iter()
            .map(|a| a.id.to_string())
            .collect();
        assert_eq!(ids, ["w2", "p"]);
        assert!(areas.chain_at([20.0, 3.0]).is_empty());
    }

    #[test]
    fn reports_every_problem() {
        let bad = r#"{"type":"FeatureCollection","features":[
          {"type":"Feature","properties":{"id":"c","name":"C","level":"commune","parent":"nowhere"},"geometry":null},
          {"type":"Feature","properties":{"id":"c","name":"C again","level":"commune"},"geometry":null},
          {"type":"Feature","properties":{"id":"x","name":"X","level":"county"},"geometry":null},
          {"type":"Feature","properties":{"id":"y","name":"Y","level":"province"},
           "geometry":{"type":"Polygon","coordinates":[[[0,0],[500,0],[5,5],[0,0]]]}}
        ]}"#;
        let err = Areas::from_geojson(bad).unwrap_err();
        let text = err.to_string();
        for needle in [
            "parent nowhere",
            "duplicate id",
            "feature #2",
            "area y: coordinate",
        ] {
            assert!(text.contains(needle), "{needle} missing from {text}");
        }
    }
}
