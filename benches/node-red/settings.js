// Node-RED settings for the baseline benchmark (benches/e2e.rs --node-red):
// no editor, the flow of flows.json, the gauges' BĐ levels in the global
// context. Paths and ports come from the environment the harness sets.
module.exports = {
  uiHost: "127.0.0.1",
  uiPort: parseInt(process.env.IOC_NODE_RED_PORT, 10),
  httpAdminRoot: false,
  flowFile: "flows.json",
  credentialSecret: false,
  functionGlobalContext: { levels: require(process.env.IOC_NODE_RED_LEVELS) },
  logging: { console: { level: "warn", metrics: false, audit: false } },
};
