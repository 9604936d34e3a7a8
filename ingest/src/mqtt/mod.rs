//! The MQTT source (rumqttc): [`config`] is what users write, [`source`] runs it.

pub mod config;
mod protocol;
pub mod source;

pub use config::{MqttProtocol, MqttSourceConfig};
pub use source::{MqttSource, publisher_options};
