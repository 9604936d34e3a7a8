//! JSON Schema documents generated from the Rust types.
//!
//! The files under `schemas/json/` are committed so that device makers can
//! validate without building anything. A test regenerates them and fails
//! when they differ from the code; run it with `IOC_BLESS=1` to rewrite them
//! after a deliberate change of the contract.

use schemars::{JsonSchema, Schema, generate::SchemaSettings};

use crate::{
    Alert, AlertDetail, DeviceState, DeviceView, EnvelopeV1, LiveMessage, LiveRequest,
    RejectReason, WindowResult,
};

fn schema_of<T: JsonSchema>() -> Schema {
    SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<T>()
}

/// Every published schema as `(file name, schema)`.
pub fn all() -> Vec<(&'static str, Schema)> {
    vec![
        (
            "telemetry-envelope-v1.schema.json",
            schema_of::<EnvelopeV1>(),
        ),
        ("device.schema.json", schema_of::<DeviceView>()),
        ("device-state.schema.json", schema_of::<DeviceState>()),
        ("alert.schema.json", schema_of::<Alert>()),
        ("alert-detail.schema.json", schema_of::<AlertDetail>()),
        ("live-message.schema.json", schema_of::<LiveMessage>()),
        ("live-request.schema.json", schema_of::<LiveRequest>()),
        ("reject-reason.schema.json", schema_of::<RejectReason>()),
        ("window.schema.json", schema_of::<WindowResult>()),
    ]
}

/// A schema as the pretty-printed text committed to the repository.
pub fn to_text(schema: &Schema) -> String {
    let mut text = serde_json::to_string_pretty(schema).unwrap_or_default();
    text.push('\n');
    text
}
