//! The MQTT source (rumqttc): [`config`] is what users write, [`source`] runs it.

pub mod config;
pub mod source;

pub use config::MqttSourceConfig;
pub use source::MqttSource;
