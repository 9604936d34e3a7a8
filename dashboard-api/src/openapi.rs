//! The OpenAPI 3.1 description of the HTTP API, served at
//! `GET /api/v1/openapi.json`.
//!
//! Schemas come from the Rust types the handlers exchange (`schemars`, the
//! same derivations that write `schemas/json/`), query parameters from the
//! handlers' query structs and their doc comments, and each operation's
//! role from the route group it is in; the authorization test checks that
//! the document and the router list the same endpoints with the same
//! roles. OpenAPI 3.1 schemas are JSON Schema 2020-12, so nothing is
//! translated.

use std::sync::OnceLock;

use ioc_schemas::{Alert, AlertDetail, DeviceView, EnvelopeV1, Track};
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value, json};

use crate::auth::Role;
use crate::error::{ErrorBody, ErrorCode};
use crate::history::HistoryView;
use crate::routes::{alerts, rest};

/// The document as served (built once).
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| serde_json::to_string(&build()).unwrap_or_default())
}

/// `GET /api/v1/openapi.json`.
pub async fn serve() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        document(),
    )
}

struct Doc {
    generator: SchemaGenerator,
    paths: Map<String, Value>,
}

/// One operation being described.
struct Op<'a> {
    doc: &'a mut Doc,
    method: &'static str,
    path: &'static str,
    role: Option<Role>,
    op: Map<String, Value>,
    params: Vec<Value>,
    responses: Map<String, Value>,
}

impl Doc {
    fn op(
        &mut self,
        method: &'static str,
        path: &'static str,
        role: Option<Role>,
        tag: &str,
        summary: &str,
    ) -> Op<'_> {
        let mut op = Map::new();
        op.insert("tags".into(), json!([tag]));
        op.insert("summary".into(), json!(summary));
        let params = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        Op {
            doc: self,
            method,
            path,
            role,
            op,
            params,
            responses: Map::new(),
        }
    }

    fn schema<T: JsonSchema>(&mut self) -> Value {
        self.generator.subschema_for::<T>().into()
    }
}

impl Op<'_> {
    fn describe(mut self, text: &str) -> Self {
        self.op.insert("description".into(), json!(text));
        self
    }

    /// Query parameters: the properties of `T`, with their doc comments.
    fn query<T: JsonSchema>(mut self) -> Self {
        let schema: Value = T::json_schema(&mut self.doc.generator).into();
        let required: Vec<&str> = schema["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if let Some(props) = schema["properties"].as_object() {
            for (name, prop) in props {
                let mut prop = prop.clone();
                let description = prop
                    .as_object_mut()
                    .and_then(|p| p.remove("description"))
                    .unwrap_or(Value::Null);
                self.params.push(json!({
                    "name": name,
                    "in": "query",
                    "required": required.contains(&name.as_str()),
                    "description": description,
                    "schema": prop,
                }));
            }
        }
        self
    }

    /// Describes a path parameter.
    fn param(mut self, name: &str, description: &str, schema: Value) -> Self {
        for p in &mut self.params {
            if p["name"] == name {
                p["description"] = json!(description);
                p["schema"] = schema.clone();
            }
        }
        self
    }

    /// A JSON request body of type `T`.
    fn body<T: JsonSchema>(mut self, required: bool, description: &str) -> Self {
        let schema = self.doc.schema::<T>();
        self.op.insert(
            "requestBody".into(),
            json!({"required": required, "description": description,
                   "content": {"application/json": {"schema": schema}}}),
        );
        self
    }

    /// 200 with a JSON body of type `T`.
    fn ok<T: JsonSchema>(mut self, description: &str) -> Self {
        let schema = self.doc.schema::<T>();
        self.responses.insert(
            "200".into(),
            json!({"description": description, "content": {"application/json": {"schema": schema}}}),
        );
        self
    }

    /// A success with another media type (or none).
    fn ok_as(mut self, status: &str, media: Option<&str>, description: &str) -> Self {
        let mut r = json!({"description": description});
        if let Some(media) = media {
            r["content"] = json!({media: {"schema": {"type": "string"}}});
        }
        self.responses.insert(status.into(), r);
        self
    }

    /// A GeoJSON FeatureCollection (`application/geo+json`): an object,
    /// described by RFC 7946 rather than by a schema here.
    fn ok_geojson(mut self) -> Self {
        self.responses.insert(
            "200".into(),
            json!({"description": "A GeoJSON FeatureCollection (RFC 7946)",
                "content": {"application/geo+json": {"schema": {"type": "object"}}}}),
        );
        self
    }

    /// Error responses, in the shared shape.
    fn errors(mut self, codes: &[ErrorCode]) -> Self {
        for code in codes {
            let status = code.status().as_u16().to_string();
            let entry = self.responses.entry(status).or_insert_with(|| {
                json!({"description": "", "content": {"application/json": {"schema":
                    {"$ref": "#/components/schemas/ErrorBody"}}}})
            });
            let text = entry["description"].as_str().unwrap_or_default();
            let text = if text.is_empty() {
                format!("`{}`", code.as_str())
            } else {
                format!("{text}, `{}`", code.as_str())
            };
            entry["description"] = json!(text);
        }
        self
    }

    fn done(mut self) {
        if let Some(role) = self.role {
            self.op
                .insert("security".into(), json!([{"bearer": [role.as_str()]}]));
            self.op.insert("x-role".into(), json!(role.as_str()));
            self = self.errors(&[
                ErrorCode::Unauthorized,
                ErrorCode::Forbidden,
                ErrorCode::TooManyRequests,
            ]);
        } else {
            self.op.insert("security".into(), json!([]));
        }
        if !self.params.is_empty() {
            self.op
                .insert("parameters".into(), Value::Array(self.params));
        }
        self.op
            .insert("responses".into(), Value::Object(self.responses));
        self.op.insert(
            "operationId".into(),
            json!(format!(
                "{}{}",
                self.method,
                self.path.replace(['/', '{', '}', '.'], "_")
            )),
        );
        let item = self
            .doc
            .paths
            .entry(self.path.to_owned())
            .or_insert_with(|| json!({}));
        item[self.method] = Value::Object(self.op);
    }
}

fn build() -> Value {
    let generator = SchemaSettings::draft2020_12()
        .with(|s| s.definitions_path = "/components/schemas".into())
        .into_generator();
    let mut d = Doc {
        generator,
        paths: Map::new(),
    };
    let (v, o, a) = (Some(Role::Viewer), Some(Role::Operator), Some(Role::Admin));
    use ErrorCode::*;

    d.op("get", "/", None, "page", "The control-room page")
        .ok_as("200", Some("text/html"), "The page; it asks for a token")
        .done();
    d.op("get", "/healthz", None, "service", "Liveness")
        .ok::<rest::Health>("The process is up and serving")
        .done();
    d.op(
        "get",
        "/api/v1/openapi.json",
        None,
        "service",
        "This document",
    )
    .ok_as("200", Some("application/json"), "OpenAPI 3.1")
    .done();
    d.op("get", "/metrics", v, "service", "Prometheus metrics")
        .ok_as("200", Some("text/plain"), "Prometheus text format 0.0.4")
        .done();
    d.op(
        "get",
        "/api/v1/stats",
        v,
        "service",
        "Ingest and engine counters",
    )
    .ok::<Map<String, Value>>("Counters by component")
    .done();
    d.op(
        "get",
        "/api/v1/whoami",
        v,
        "service",
        "The caller's name and role",
    )
    .ok::<rest::WhoAmI>("The caller")
    .done();

    d.op(
        "get",
        "/api/v1/auth/oidc",
        None,
        "service",
        "Sign-in with the identity provider: where the page sends a person",
    )
    .ok::<crate::oidc::PageSignIn>("The provider's authorization endpoint and the page's client")
    .errors(&[NotFound])
    .done();
    d.op(
        "post",
        "/api/v1/auth/oidc/token",
        None,
        "service",
        "Sign-in with the identity provider: the code traded for a token",
    )
    .describe(
        "The authorization code and PKCE verifier the page got back from the \
         provider; ioc trades them at the provider's token endpoint and returns \
         the access token if it accepts it (401 with the reason otherwise).",
    )
    .body::<crate::oidc::CodeExchange>(true, "The code, its verifier and redirect URI")
    .ok::<crate::oidc::PageToken>("A bearer token ioc accepts")
    .errors(&[BadRequest, Unauthorized, NotFound])
    .done();
    d.op(
        "get",
        "/api/v1/live",
        None,
        "live",
        "The live feed (WebSocket)",
    )
    .describe(
        "Upgrade to a WebSocket. The first message is a `subscribe` request \
             (`schemas/json/live-request.schema.json`) carrying the token, unless \
             the `Authorization` header did; the server answers with a snapshot, \
             then ordered deltas (`schemas/json/live-message.schema.json`). \
             Protocol: `docs/live-protocol.md`.",
    )
    .ok_as("101", None, "Switching to the WebSocket protocol")
    .errors(&[BadRequest, Forbidden])
    .done();
    d.op(
        "post",
        "/api/v1/ingest",
        None,
        "ingest",
        "Telemetry over HTTP",
    )
    .describe(
        "A device or gateway token (`http_ingest.tokens`) as `Authorization: \
             Bearer`. `Content-Type: application/json`: one envelope; otherwise \
             (`application/x-ndjson`) one envelope per line. Rejected lines go to \
             the dead letters with their reason.",
    )
    .body::<EnvelopeV1>(true, "One envelope, or NDJSON lines of envelopes")
    .ok::<ioc_ingest::http::IngestReport>("A result per line")
    .errors(&[
        BadRequest,
        Unauthorized,
        NotFound,
        PayloadTooLarge,
        Unavailable,
    ])
    .done();

    d.op(
        "get",
        "/api/v1/devices",
        v,
        "devices",
        "Every device with its latest state",
    )
    .query::<rest::DeviceQuery>()
    .ok::<Vec<DeviceView>>("The devices")
    .errors(&[BadRequest])
    .done();
    d.op(
        "get",
        "/api/v1/devices/{id}",
        v,
        "devices",
        "One device with its latest state",
    )
    .param("id", "The device id", json!({"type": "string"}))
    .ok::<DeviceView>("The device")
    .errors(&[NotFound])
    .done();
    d.op(
        "get",
        "/api/v1/devices/{id}/history",
        v,
        "devices",
        "Recent readings, from memory",
    )
    .describe(
        "One row per step, per numeric metric the device reports: the sum \
             (rainfall) or the mean of the readings in it. Bounded by \
             `http.history`; older readings come from the time-series database.",
    )
    .param("id", "The device id", json!({"type": "string"}))
    .query::<rest::HistoryQuery>()
    .ok::<HistoryView>("The rows")
    .errors(&[BadRequest, NotFound])
    .done();
    d.op(
        "get",
        "/api/v1/areas",
        v,
        "map",
        "Administrative boundaries",
    )
    .ok_geojson()
    .done();
    d.op(
        "get",
        "/api/v1/zones",
        v,
        "map",
        "Zones and assets in force",
    )
    .ok_geojson()
    .done();
    d.op(
        "get",
        "/api/v1/tracks",
        v,
        "map",
        "Tracks of watch-listed plates",
    )
    .ok::<Vec<Track>>("Most recently seen first")
    .done();

    d.op("get", "/api/v1/alerts", v, "alerts", "Alerts matching filters")
        .describe("Newest episode first. When there are more, the `Link` header (`rel=\"next\"`) gives the next page.")
        .query::<alerts::ListQuery>()
        .ok::<Vec<Alert>>("The alerts")
        .errors(&[BadRequest, Unavailable])
        .done();
    d.op(
        "get",
        "/api/v1/alerts.cap",
        v,
        "alerts",
        "Active alerts as CAP 1.2 in Atom",
    )
    .ok_as(
        "200",
        Some("application/atom+xml"),
        "An Atom feed of CAP 1.2 messages",
    )
    .errors(&[Unavailable])
    .done();
    d.op(
        "get",
        "/api/v1/alerts/{id}",
        v,
        "alerts",
        "One alert with its history",
    )
    .describe("`{id}.cap`: its current version as a CAP 1.2 message (`application/cap+xml`).")
    .param(
        "id",
        "The alert id (optionally with `.cap`)",
        json!({"type": "string"}),
    )
    .ok::<AlertDetail>("The alert and every version of it")
    .errors(&[NotFound, Unavailable])
    .done();
    d.op(
        "post",
        "/api/v1/alerts/{id}/{action}",
        o,
        "alerts",
        "An operator's action on an alert",
    )
    .describe(
        "`ack` an open alert, `resolve` it by hand, `assign` it (`assignee`; \
             absent or empty: nobody), or add `notes` (`note`, 1 to 2000 \
             characters). Committed to the alert store before the answer; the \
             new version also reaches every live client.",
    )
    .param("id", "The alert id", json!({"type": "string"}))
    .param(
        "action",
        "What to do",
        json!({"type": "string", "enum": ["ack", "resolve", "assign", "notes"]}),
    )
    .body::<alerts::ActionBody>(
        false,
        "Who acts (for shared tokens), the note or the assignee",
    )
    .ok::<Alert>("The alert's new version")
    .errors(&[
        BadRequest,
        NotFound,
        AlertResolved,
        PayloadTooLarge,
        Invalid,
        Unavailable,
    ])
    .done();

    d.op(
        "get",
        "/api/v1/webhooks/deliveries",
        a,
        "admin",
        "Webhook deliveries",
    )
    .query::<alerts::DeliveryQuery>()
    .ok::<Vec<ioc_alerts::Delivery>>("Newest first, with attempts and the last error")
    .errors(&[BadRequest, Unavailable])
    .done();
    d.op("post", "/api/v1/rules/reload", a, "admin", "Reload the rules and zones")
        .describe("Reads the rules file again and puts it in force without losing state; when it is invalid, every problem is listed and the rules in force stay.")
        .ok::<Map<String, Value>>("A summary of the rules now in force")
        .errors(&[NotFound, Invalid, Unavailable])
        .done();
    d.op("get", "/api/v1/rules/file", a, "admin", "The rules file's text")
        .describe("The rules in force as text (`text`), where they come from (`source`) and whether they can be replaced (`editable`: there is a rules file).")
        .ok::<Map<String, Value>>("`{source, text, editable}`")
        .errors(&[NotFound, Invalid, Unavailable])
        .done();
    d.op("put", "/api/v1/rules/file", a, "admin", "Replace the rules file and reload it")
        .describe("Validates the text like `ioc rules check`, writes it over the rules file (atomically) and puts it in force without losing state; when it is invalid, every problem is listed and nothing changes.")
        .body::<crate::routes::rules::RulesText>(true, "The new rules file")
        .ok::<Map<String, Value>>("A summary of the rules now in force")
        .errors(&[BadRequest, NotFound, Invalid, Unavailable])
        .done();
    d.op("post", "/api/v1/backtest", a, "admin", "Backtest a rules file")
        .describe("Runs the engine's own code in event time over the server's recorded readings (`backtest.recording`) with the given rules and with the rules in force, and compares what they raise: episodes only in one, and episodes in both with a different level, start or end. Touches no store or output. The same as `ioc backtest`.")
        .body::<crate::routes::rules::BacktestRequest>(true, "The rules tried and the period")
        .ok::<Map<String, Value>>("The report: the input read, the diff and counts per rule and area")
        .errors(&[BadRequest, NotFound, Invalid, Unavailable])
        .done();
    d.op("get", "/api/v1/audit", a, "admin", "The audit log of writes")
        .describe("Every write through the API, allowed or refused: who, role, method, path, client address, status. `format=ndjson` gives one entry per line (`application/x-ndjson`) for a security operations centre's collector.")
        .query::<crate::audit::AuditQuery>()
        .ok::<Vec<ioc_alerts::AuditEntry>>("Newest first")
        .errors(&[BadRequest, Unavailable])
        .done();

    registry_ops(&mut d);

    // Every error body, referenced above.
    d.schema::<ErrorBody>();
    let schemas = d.generator.take_definitions(true);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "IOC API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The REST API of the Intelligent Operations Center: devices, \
                alerts and operators' actions, the map, ingest and administration. \
                Every error has the shape of `ErrorBody`; its `code` is stable. \
                The live feed is described in docs/live-protocol.md.",
            "license": {"name": env!("CARGO_PKG_LICENSE")},
        },
        "tags": [
            {"name": "devices"}, {"name": "alerts"}, {"name": "map"},
            {"name": "live"}, {"name": "ingest"}, {"name": "registry"}, {"name": "admin"},
            {"name": "service"}, {"name": "page"},
        ],
        "paths": d.paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API token (`http.auth.tokens`, or the admin token) \
                        or a JWT (`http.auth.jwt`). Roles: viewer < operator < admin; \
                        an operation's `x-role` is the least it needs.",
                },
            },
        },
    })
}

/// The device registry's operations.
fn registry_ops(d: &mut Doc) {
    use crate::routes::registry as r;
    use ErrorCode::*;
    let (v, o, a) = (Some(Role::Viewer), Some(Role::Operator), Some(Role::Admin));
    let id = || json!({"type": "string"});
    d.op("get", "/api/v1/registry/devices", v, "registry", "The device registry")
        .describe("Every registered device as it was registered (retired ones too), with the areas it resolves to; filtered and paged.")
        .query::<r::RegistryQuery>()
        .ok::<r::RegistryPage>("The matches, in registration order")
        .errors(&[BadRequest])
        .done();
    d.op(
        "get",
        "/api/v1/registry/devices/{id}",
        v,
        "registry",
        "One registered device and its changes",
    )
    .param("id", "The device's id", id())
    .ok::<r::RegistryDetail>("The device and who changed it, when, before and after")
    .errors(&[NotFound, Unavailable])
    .done();
    d.op("post", "/api/v1/registry/devices", a, "registry", "Register a device")
        .describe("In force at once on every worker, without a restart: its readings are accepted from the next one. Every problem is listed, naming the field (duplicate ids, unknown kinds, positions outside WGS 84 or far outside the province, BĐ levels not increasing, an expected interval of zero).")
        .body::<ioc_schemas::DeviceSpec>(true, "The device")
        .ok_as("201", Some("application/json"), "The device as registered")
        .errors(&[BadRequest, DeviceExists, Invalid, Unavailable, PayloadTooLarge])
        .done();
    d.op("put", "/api/v1/registry/devices/{id}", a, "registry", "Change a registered device")
        .describe("Its kind cannot change. A changed BĐ level judges the device's latest reading again, so its open alert rises or falls (with hysteresis) as a new reading would.")
        .param("id", "The device's id", id())
        .body::<ioc_schemas::DeviceSpec>(true, "The device as it should be")
        .ok::<r::RegisteredDevice>("The device as registered now")
        .errors(&[BadRequest, NotFound, Invalid, Unavailable, PayloadTooLarge])
        .done();
    d.op(
        "post",
        "/api/v1/registry/devices/{id}/retire",
        a,
        "registry",
        "Retire a device",
    )
    .describe(
        "Its readings are refused from now on (`retired_device`); its history and alerts are kept.",
    )
    .param("id", "The device's id", id())
    .body::<r::LifecycleBody>(false, "Why (`reason`)")
    .ok::<r::RegisteredDevice>("The device, retired")
    .errors(&[BadRequest, NotFound, Invalid, Unavailable])
    .done();
    d.op("post", "/api/v1/registry/devices/{id}/maintenance", o, "registry", "Put a device in maintenance")
        .describe("Its readings are taken and shown, but its rules raise nothing and it is not reported silent, until `until` (or until put back in service).")
        .param("id", "The device's id", id())
        .body::<r::LifecycleBody>(false, "Why and until when")
        .ok::<r::RegisteredDevice>("The device, in maintenance")
        .errors(&[BadRequest, NotFound, DeviceExists, Invalid, Unavailable])
        .done();
    d.op(
        "delete",
        "/api/v1/registry/devices/{id}/maintenance",
        o,
        "registry",
        "Put a device back in service",
    )
    .param("id", "The device's id", id())
    .ok::<r::RegisteredDevice>("The device, active")
    .errors(&[NotFound, DeviceExists, Invalid, Unavailable])
    .done();
    d.op("post", "/api/v1/registry/import", a, "registry", "Import devices from CSV or GeoJSON")
        .describe("The body is the file (at most 64 MiB): CSV with a header row (`id, kind, name, lon, lat, expected_interval_s` required; `area, bd1_m, bd2_m, bd3_m, normal_level_m, flood_control_level_m, lifecycle, maintenance_until, retired_at, lifecycle_reason, river, road, direction` optional) or a GeoJSON FeatureCollection of points. New ids are added, known ones changed. Nothing is applied unless every device is valid (`mode=partial`: the valid ones are); the report lists every problem by row and field, with 422 when nothing was applied.")
        .query::<r::ImportQuery>()
        .ok::<r::ImportReport>("What was applied, and every problem")
        .errors(&[BadRequest, Invalid, Unavailable, PayloadTooLarge])
        .done();
    d.op(
        "get",
        "/api/v1/registry/export",
        v,
        "registry",
        "Export the registry",
    )
    .describe("CSV (default) or GeoJSON (`format=geojson`), in the format the import reads.")
    .query::<r::ExportQuery>()
    .ok_as("200", Some("text/csv"), "The registry as a file")
    .errors(&[BadRequest])
    .done();
    d.op("get", "/api/v1/registry/unregistered", v, "registry", "Devices that send readings but are not registered")
        .describe("From the readings refused as `unknown_device` since the start: id, the kind its topic names, first and last heard, how many, last position. Their latest messages are kept for replay on adoption.")
        .ok::<Vec<ioc_ingest::unregistered::UnregisteredDevice>>("Most recently heard first")
        .errors(&[NotFound])
        .done();
    d.op("post", "/api/v1/registry/unregistered/{id}/adopt", a, "registry", "Adopt an unregistered device")
        .describe("Registers it with what its readings said (kind from its topic, its last position) and what the body adds, then replays its kept messages through ingest.")
        .param("id", "The device's id", id())
        .body::<r::AdoptBody>(false, "What the readings did not say")
        .ok::<r::Adopted>("The device as registered and the replay's counts")
        .errors(&[BadRequest, NotFound, Invalid, Unavailable])
        .done();
    d.op(
        "get",
        "/api/v1/registry/changes",
        a,
        "registry",
        "Changes of the registry",
    )
    .describe("Who changed which device, when, and the device before and after; newest first.")
    .query::<r::ChangesQuery>()
    .ok::<Vec<ioc_alerts::DeviceChangeEntry>>("Newest first")
    .errors(&[BadRequest, Unavailable])
    .done();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reference_resolves() {
        let doc: Value = serde_json::from_str(document()).expect("valid JSON");
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        let text = document();
        let mut rest = text;
        let mut refs = 0;
        while let Some(i) = rest.find("\"$ref\":\"#/components/schemas/") {
            rest = &rest[i + 29..];
            let name = &rest[..rest.find('"').expect("closed")];
            assert!(
                schemas.contains_key(name),
                "{name} is referenced, not defined"
            );
            refs += 1;
        }
        assert!(refs > 20, "{refs}");
        assert!(schemas.contains_key("ErrorBody"));
        assert!(!text.contains("#/$defs"), "a reference outside components");
    }

    #[test]
    fn operations_name_their_role_and_errors() {
        let doc: Value = serde_json::from_str(document()).expect("valid JSON");
        let op = &doc["paths"]["/api/v1/alerts/{id}/{action}"]["post"];
        assert_eq!(op["x-role"], "operator");
        assert!(
            op["responses"]["409"]["description"]
                .as_str()
                .is_some_and(|d| d.contains("alert_resolved"))
        );
        let history = &doc["paths"]["/api/v1/devices/{id}/history"]["get"];
        let mut params: Vec<&str> = history["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        params.sort_unstable();
        assert_eq!(params, ["from", "id", "step", "to"]);
    }
}
