// Control-room page: offline province map, live device states, open alerts.
// Talks to the server only: GET /api/v1/areas and /api/v1/zones once, the
// /api/v1/live WebSocket (subscribe with the map's viewport, then a snapshot
// and ordered deltas, resumed after a lost connection),
// GET /api/v1/devices/{id}/history for the selected station's chart,
// POST for operators' actions on alerts, for admins the rules file
// (GET/PUT /api/v1/rules/file) and backtests (POST /api/v1/backtest), and
// the device registry (/api/v1/registry/...).
// No third-party code, no tiles.
"use strict";

const TEXT = {
  vi: {
    title: "Trung tâm giám sát, điều hành thông minh — Sơn La",
    connected: "Đang kết nối trực tiếp", disconnected: "Mất kết nối",
    alerts: "Cảnh báo đang mở", selected: "Thiết bị đã chọn", pick: "Chọn một thiết bị trên bản đồ.",
    none: "Không có cảnh báo nào.", devices: "thiết bị", reporting: "đang báo cáo",
    opened: "Mở lúc", updated: "cập nhật", kind: "Loại", area: "Địa bàn", last: "Lần đo cuối", seq: "Số thứ tự",
    levels: "Mức BĐ1/BĐ2/BĐ3", noData: "Chưa có dữ liệu.", normal: "Bình thường",
    presence: "Kết nối", online: "trực tuyến", offline: "mất kết nối",
    ack: "Xác nhận", resolve: "Đã xử lý", assign: "Giao việc", assignTo: "Giao cảnh báo này cho (để trống: không ai):", acked: "Đã xác nhận", by: "bởi", assignee: "Giao cho",
    who: "Tên cán bộ trực (ghi vào lịch sử cảnh báo):", failed: "Không thực hiện được",
    zones: "Vùng", nearest: "Gần nhất", track: "Hành trình", evidence: "Căn cứ cảnh báo", rate: "Tốc độ thay đổi",
    signIn: "Đăng nhập", tokenLabel: "Mã truy cập (token)", signInButton: "Vào",
    ssoButton: "Đăng nhập bằng tài khoản của tỉnh", ssoFailed: "Đăng nhập qua tài khoản của tỉnh không thành công:",
    badToken: "Mã truy cập không hợp lệ hoặc đã hết hạn.",
    soundOn: "Chuông: bật", soundOff: "Chuông: tắt",
    lost: "Mất kết nối tới máy chủ — đang kết nối lại… Dữ liệu trên màn hình có thể đã cũ.",
    muteTitle: "Tắt/bật chuông báo cảnh báo nghiêm trọng", largeTitle: "Chữ lớn (màn hình tường)",
    cluster: "thiết bị", zoomIn: "bấm để phóng to", inView: "trong khung nhìn",
    water_level_m: "Mực nước (m)", rainfall_mm: "Mưa (mm)", flow_m3s: "Lưu lượng (m³/s)",
    inflow_m3s: "Lưu lượng đến (m³/s)", outflow_m3s: "Lưu lượng xả (m³/s)",
    flow_vph: "Lưu lượng xe (xe/giờ)", speed_kmh: "Tốc độ (km/h)", occupancy_pct: "Chiếm dụng (%)",
    rulesButton: "Quy tắc", rulesTitle: "Quy tắc cảnh báo — chạy thử trên dữ liệu đã ghi", close: "Đóng", rulesSource: "Tệp quy tắc",
    from: "Từ", to: "Đến", btRun: "Chạy thử", apply: "Áp dụng", btRunning: "Đang chạy thử…", applied: "Đã áp dụng quy tắc mới.",
    applyConfirm: "Áp dụng tệp quy tắc này cho toàn hệ thống?", notEditable: "Máy chủ đang dùng quy tắc mẫu tích hợp: đặt rules.file để sửa.",
    btRead: "bản tin đã chạy", btSkipped: "bỏ qua", btNoDiff: "Không có khác biệt: hai bộ quy tắc phát cùng", episodes: "đợt cảnh báo",
    onlyNew: "Chỉ có với quy tắc mới", onlyCurrent: "Chỉ có với quy tắc hiện hành", changed: "Khác nhau", same: "Giống nhau", rule: "Quy tắc",
    earlier: "sớm hơn", later: "muộn hơn", opens: "mở", resolves: "kết thúc", peak: "mức cao nhất", instead: "thay vì", stillOpen: "vẫn mở đến cuối",
    timeline: "Dòng thời gian theo trạm (trên: hiện hành, dưới: mới)", upload: "Tải tệp quy tắc lên",
    registryButton: "Thiết bị", registryTitle: "Danh mục thiết bị", newDevice: "Thêm thiết bị", regId: "Mã", regName: "Tên",
    regState: "Trạng thái", active: "Hoạt động", maintenance: "Bảo trì", retired: "Ngừng sử dụng", allKinds: "Mọi loại", allStates: "Mọi trạng thái",
    search: "Tìm theo mã hoặc tên", lon: "Kinh độ", lat: "Vĩ độ", pickOnMap: "Chọn trên bản đồ", interval: "Chu kỳ báo cáo (s)",
    regRiver: "Sông", regRoad: "Đường", save: "Lưu", cancel: "Huỷ", edit: "Sửa", retire: "Ngừng", toMaintenance: "Bảo trì", inService: "Hoạt động lại",
    importFile: "Nhập từ tệp CSV/GeoJSON", partial: "Chỉ nhập các dòng hợp lệ", import: "Nhập", unregistered: "Thiết bị gửi dữ liệu nhưng chưa đăng ký",
    firstSeen: "Lần đầu", lastSeen: "Lần cuối", count: "Số bản tin", adopt: "Đăng ký", saved: "Đã lưu; có hiệu lực ngay.",
    retireConfirm: "Ngừng sử dụng thiết bị này? Bản tin của nó sẽ bị từ chối.", reasonPrompt: "Lý do:",
    untilPrompt: "Bảo trì đến (YYYY-MM-DD HH:MM, để trống: đến khi hoạt động lại):", pickHint: "Bấm vào bản đồ để chọn vị trí.",
    imported: "Đã nhập", added: "thêm", changedN: "sửa", unchanged: "không đổi", notApplied: "Không nhập gì: tệp có lỗi.", row: "Dòng",
    editTitle: "Sửa thiết bị", newTitle: "Thiết bị mới", adoptTitle: "Đăng ký thiết bị",
  },
  en: {
    title: "Intelligent Operations Center — Sơn La",
    connected: "Live", disconnected: "Disconnected",
    alerts: "Open alerts", selected: "Selected device", pick: "Pick a device on the map.",
    none: "No open alerts.", devices: "devices", reporting: "reporting",
    opened: "Opened", updated: "updated", kind: "Kind", area: "Area", last: "Last reading", seq: "Sequence",
    levels: "Levels BĐ1/BĐ2/BĐ3", noData: "No data yet.", normal: "Normal",
    presence: "Connection", online: "online", offline: "offline",
    ack: "Acknowledge", resolve: "Resolve", assign: "Assign", assignTo: "Assign this alert to (empty: nobody):", acked: "Acknowledged", by: "by", assignee: "Assigned to",
    who: "Operator name (recorded in the alert's history):", failed: "Could not do it",
    zones: "Zones", nearest: "Nearest", track: "Track", evidence: "Evidence", rate: "Rate of change",
    signIn: "Sign in", tokenLabel: "Access token", signInButton: "Sign in",
    ssoButton: "Sign in with the province's account", ssoFailed: "Sign-in with the province's account failed:",
    badToken: "The token is not valid or has expired.",
    soundOn: "Sound: on", soundOff: "Sound: off",
    lost: "Connection to the server lost — reconnecting… What the screen shows may be out of date.",
    muteTitle: "Mute/unmute the chime for critical alerts", largeTitle: "Large type (videowall)",
    cluster: "devices", zoomIn: "click to zoom in", inView: "in view",
    water_level_m: "Water level (m)", rainfall_mm: "Rainfall (mm)", flow_m3s: "Flow (m³/s)",
    inflow_m3s: "Inflow (m³/s)", outflow_m3s: "Outflow (m³/s)",
    flow_vph: "Traffic flow (veh/h)", speed_kmh: "Speed (km/h)", occupancy_pct: "Occupancy (%)",
    rulesButton: "Rules", rulesTitle: "Alert rules — try them on recorded readings", close: "Close", rulesSource: "Rules file",
    from: "From", to: "To", btRun: "Backtest", apply: "Apply", btRunning: "Running the backtest…", applied: "The new rules are in force.",
    applyConfirm: "Put this rules file in force for the whole system?", notEditable: "The server runs the built-in demo rules: set rules.file to edit them.",
    btRead: "readings run", btSkipped: "skipped", btNoDiff: "No difference: both rule sets raise the same", episodes: "episodes",
    onlyNew: "Only with the new rules", onlyCurrent: "Only with the rules in force", changed: "Different", same: "Same", rule: "Rule",
    earlier: "earlier", later: "later", opens: "opens", resolves: "resolves", peak: "peak", instead: "instead of", stillOpen: "still open at the end",
    timeline: "Timeline per station (top: in force, bottom: new)", upload: "Upload a rules file",
    registryButton: "Devices", registryTitle: "Device registry", newDevice: "Add a device", regId: "Id", regName: "Name",
    regState: "State", active: "Active", maintenance: "Maintenance", retired: "Retired", allKinds: "All kinds", allStates: "All states",
    search: "Search by id or name", lon: "Longitude", lat: "Latitude", pickOnMap: "Pick on the map", interval: "Reporting interval (s)",
    regRiver: "River", regRoad: "Road", save: "Save", cancel: "Cancel", edit: "Edit", retire: "Retire", toMaintenance: "Maintenance", inService: "Back in service",
    importFile: "Import a CSV/GeoJSON file", partial: "Import the valid rows only", import: "Import", unregistered: "Devices sending readings but not registered",
    firstSeen: "First seen", lastSeen: "Last seen", count: "Messages", adopt: "Register", saved: "Saved; in force now.",
    retireConfirm: "Retire this device? Its readings will be refused.", reasonPrompt: "Reason:",
    untilPrompt: "In maintenance until (YYYY-MM-DD HH:MM, empty: until back in service):", pickHint: "Click the map to pick the position.",
    imported: "Imported", added: "added", changedN: "changed", unchanged: "unchanged", notApplied: "Nothing imported: the file has problems.", row: "Row",
    editTitle: "Edit device", newTitle: "New device", adoptTitle: "Register device",
  },
};
const KIND = {
  vi: { river_gauge: "Trạm thủy văn", rain_gauge: "Trạm đo mưa", reservoir: "Hồ chứa", traffic_counter: "Đếm xe", camera: "Camera AI" },
  en: { river_gauge: "River gauge", rain_gauge: "Rain gauge", reservoir: "Reservoir", traffic_counter: "Traffic counter", camera: "AI camera" },
};
const KIND_COLOR = { river_gauge: "#4aa3ff", rain_gauge: "#7fd3e6", reservoir: "#2e6bd6", traffic_counter: "#7bd88f", camera: "#c39bf0" };
const LEVEL_COLOR = ["", "#f1c40f", "#e67e22", "#e74c3c"];
const ZONE_COLOR = { landslide_risk: "#b5651d", flood_prone: "#3b7dd8", restricted: "#d94a8c", road_segment: "#9aa5b1" };
const ZONE_NAME = {
  vi: { landslide_risk: "Nguy cơ sạt lở", flood_prone: "Vùng ngập", restricted: "Khu vực hạn chế", road_segment: "Đoạn đường" },
  en: { landslide_risk: "Landslide risk", flood_prone: "Flood-prone", restricted: "Restricted", road_segment: "Road segment" },
};
const ASSET_MARK = { shelter: "S", fire_station: "F", hospital: "H", police_post: "P", camera: "C" };
// Below this map scale (pixels per degree) devices are clustered.
const CLUSTER_BELOW = 6000;
const CLUSTER_PX = 42;

let lang = localStorage.getItem("ioc.lang") || "vi";
const devices = new Map();   // id -> { info, state }
const alerts = new Map();    // id -> alert
let chart = null;            // the selected station's history: { id, step_s, metrics, t, values }
let clusters = [];           // drawn clusters: { x, y, r, ids }
let areas = [];              // { id, level, name, rings: [[[lon, lat]]], bbox }
let zones = [];              // { id, kind, name, rings | lines, buffer }
let assets = [];             // { id, kind, name, pos }
const tracks = new Map();    // plate -> { plate, points: [{ camera, ts, pos, speed_kmh }] }
let selected = null;
let lastSeq = null;
let session = null; // the live session, resumed after a lost connection
let freshAlerts = new Set();

const $ = (id) => document.getElementById(id);

// ---------- access ----------
// The token comes from the login form, or once from the link the server
// prints at start (#token=...), and is kept in this browser.
let token = localStorage.getItem("ioc.token");
let role = null;
{
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    token = decodeURIComponent(m[1]);
    localStorage.setItem("ioc.token", token);
    window.history.replaceState(null, "", location.pathname + location.search);
  }
}
// Sign-in with the province's identity provider: authorization code with
// PKCE. The verifier stays in this tab (sessionStorage) while the browser
// is at the provider; back with a code, ioc trades it for a token.
const b64url = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes)))
  .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
const pageAddress = () => location.origin + location.pathname;
async function ssoStart(config) {
  const verifier = b64url(crypto.getRandomValues(new Uint8Array(32)));
  const state = b64url(crypto.getRandomValues(new Uint8Array(16)));
  const challenge = b64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  sessionStorage.setItem("ioc.sso", JSON.stringify({ verifier, state }));
  const q = new URLSearchParams({
    response_type: "code", client_id: config.client_id, redirect_uri: pageAddress(),
    scope: config.scope, state, code_challenge: challenge, code_challenge_method: "S256",
  });
  location.assign(`${config.authorization_endpoint}?${q}`);
}
async function ssoFinish() {
  const q = new URLSearchParams(location.search);
  const saved = JSON.parse(sessionStorage.getItem("ioc.sso") || "null");
  if (!q.has("state") || !(q.has("code") || q.has("error"))) return null;
  sessionStorage.removeItem("ioc.sso");
  window.history.replaceState(null, "", location.pathname);
  if (!saved || saved.state !== q.get("state")) return `${t("ssoFailed")} state`;
  if (q.has("error")) return `${t("ssoFailed")} ${q.get("error_description") || q.get("error")}`;
  const r = await fetch("/api/v1/auth/oidc/token", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ code: q.get("code"), code_verifier: saved.verifier, redirect_uri: pageAddress() }),
  });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) return `${t("ssoFailed")} ${body.message || r.status}`;
  token = body.access_token;
  localStorage.setItem("ioc.token", token);
  return null;
}
function needLogin(message) {
  localStorage.removeItem("ioc.token");
  token = null;
  $("login-error").textContent = message || "";
  $("login").hidden = false;
  $("token").focus();
}
async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {}, token ? { Authorization: `Bearer ${token}` } : {});
  const r = await fetch(path, Object.assign({}, options, { headers }));
  if (r.status === 401) needLogin(t("badToken"));
  return r;
}
function login() {
  return new Promise((resolve) => {
    const tryToken = async () => {
      const r = await fetch("/api/v1/whoami", { headers: token ? { Authorization: `Bearer ${token}` } : {} });
      if (r.ok) {
        const me = await r.json();
        role = me.role;
        $("whoami").textContent = `${me.name} · ${me.role}`;
        $("rules-open").hidden = role !== "admin";
        $("registry-open").hidden = false;
        document.body.classList.toggle("admin", role === "admin");
        $("login").hidden = true;
        resolve();
        return true;
      }
      return false;
    };
    $("login-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      token = $("token").value.trim();
      if (await tryToken()) localStorage.setItem("ioc.token", token);
      else needLogin(t("badToken"));
    });
    fetch("/api/v1/auth/oidc").then((r) => (r.ok ? r.json() : null)).then((config) => {
      if (!config) return;
      $("sso").hidden = false;
      $("sso").addEventListener("click", () => ssoStart(config));
    }).catch(() => {});
    ssoFinish().then((problem) => tryToken().then((ok) => {
      if (!ok) needLogin(problem || (token ? t("badToken") : ""));
    }));
  });
}
const t = (key) => TEXT[lang][key] || key;

// ---------- map ----------
const canvas = $("map");
const ctx = canvas.getContext("2d");
const view = { lon: 104.1, lat: 21.3, scale: 400, lat0: 21.3 };
let dirty = true;

function resize() {
  const r = canvas.getBoundingClientRect();
  canvas.width = Math.max(1, Math.round(r.width * devicePixelRatio));
  canvas.height = Math.max(1, Math.round(r.height * devicePixelRatio));
  dirty = true;
}
function project(lon, lat) {
  const k = view.scale * devicePixelRatio;
  return [
    canvas.width / 2 + (lon - view.lon) * k * Math.cos(view.lat0 * Math.PI / 180),
    canvas.height / 2 - (lat - view.lat) * k,
  ];
}
function unproject(x, y) {
  const k = view.scale * devicePixelRatio;
  return [view.lon + (x - canvas.width / 2) / (k * Math.cos(view.lat0 * Math.PI / 180)), view.lat - (y - canvas.height / 2) / k];
}
function fit() {
  const province = areas.find((a) => a.level === "province") || areas[0];
  if (!province) return;
  const [w, s, e, n] = province.bbox;
  view.lon = (w + e) / 2; view.lat = (s + n) / 2; view.lat0 = view.lat;
  const cos = Math.cos(view.lat0 * Math.PI / 180);
  const r = canvas.getBoundingClientRect();
  view.scale = 0.92 * Math.min(r.width / ((e - w) * cos), r.height / (n - s));
  dirty = true;
}

function openAreaIds() {
  const ids = new Map();
  for (const a of alerts.values()) {
    const leaf = a.area && a.area[0];
    if (leaf) ids.set(leaf.id, Math.max(ids.get(leaf.id) || 0, a.level));
  }
  return ids;
}

function draw() {
  dirty = false;
  ctx.fillStyle = "#0c131b";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  const alarmed = openAreaIds();
  for (const a of areas) {
    if (a.level === "province") continue;
    ctx.beginPath();
    for (const ring of a.rings) {
      ring.forEach(([lon, lat], i) => { const [x, y] = project(lon, lat); i ? ctx.lineTo(x, y) : ctx.moveTo(x, y); });
      ctx.closePath();
    }
    const lvl = alarmed.get(a.id);
    ctx.fillStyle = lvl ? LEVEL_COLOR[lvl] + "40" : (a.level === "ward" ? "#1d2f42" : "#172534");
    ctx.fill();
    ctx.strokeStyle = "#2c4157";
    ctx.lineWidth = devicePixelRatio;
    ctx.stroke();
  }
  drawZones();
  const province = areas.find((a) => a.level === "province");
  if (province) {
    ctx.beginPath();
    for (const ring of province.rings) {
      ring.forEach(([lon, lat], i) => { const [x, y] = project(lon, lat); i ? ctx.lineTo(x, y) : ctx.moveTo(x, y); });
      ctx.closePath();
    }
    ctx.strokeStyle = "#6c90b8";
    ctx.lineWidth = 2 * devicePixelRatio;
    ctx.stroke();
  }
  if (view.scale > 900) {
    ctx.fillStyle = "#7f93a8";
    ctx.font = `${11 * devicePixelRatio}px system-ui, sans-serif`;
    ctx.textAlign = "center";
    for (const a of areas) {
      if (a.level !== "commune" && a.level !== "ward") continue;
      const [x, y] = project(a.label[0], a.label[1]);
      ctx.fillText(a.short, x, y);
    }
  }
  drawDevices();
  drawTracks();
}
// Zones under the devices: areas filled lightly by kind, roads as lines;
// assets (lettered) once zoomed in; watch-listed plates' tracks on top.
function drawZones() {
  perf.zones = zones.length;
  const alarmed = new Set();
  for (const a of alerts.values()) for (const z of a.zones || []) alarmed.add(z.id);
  for (const z of zones) {
    const c = ZONE_COLOR[z.kind] || "#888888";
    ctx.beginPath();
    if (z.rings) {
      for (const ring of z.rings) {
        ring.forEach(([lon, lat], i) => { const [x, y] = project(lon, lat); i ? ctx.lineTo(x, y) : ctx.moveTo(x, y); });
        ctx.closePath();
      }
      ctx.fillStyle = c + (alarmed.has(z.id) ? "66" : "26");
      ctx.fill();
      ctx.setLineDash(z.kind === "restricted" ? [] : [6 * devicePixelRatio, 4 * devicePixelRatio]);
      ctx.strokeStyle = c; ctx.lineWidth = (alarmed.has(z.id) ? 2.5 : 1.2) * devicePixelRatio; ctx.stroke();
      ctx.setLineDash([]);
    } else {
      for (const line of z.lines) line.forEach(([lon, lat], i) => { const [x, y] = project(lon, lat); i ? ctx.lineTo(x, y) : ctx.moveTo(x, y); });
      ctx.strokeStyle = c + "99"; ctx.lineWidth = 3 * devicePixelRatio; ctx.stroke();
    }
  }
  if (view.scale > 1500) {
    ctx.font = `bold ${10 * devicePixelRatio}px system-ui, sans-serif`;
    ctx.textAlign = "center"; ctx.textBaseline = "middle";
    for (const a of assets) {
      const [x, y] = project(a.pos[0], a.pos[1]);
      const r = 6 * devicePixelRatio;
      ctx.fillStyle = "#f4f6f8"; ctx.fillRect(x - r, y - r, 2 * r, 2 * r);
      ctx.fillStyle = "#10202e"; ctx.fillText(ASSET_MARK[a.kind] || "?", x, y);
    }
    ctx.textBaseline = "alphabetic";
  }
}

function drawTracks() {
  ctx.font = `bold ${12 * devicePixelRatio}px system-ui, sans-serif`;
  ctx.textAlign = "left";
  perf.tracks = 0;
  for (const tr of tracks.values()) {
    if (!tr.points.length) continue;
    perf.tracks++;
    ctx.beginPath();
    tr.points.forEach((p, i) => { const [x, y] = project(p.pos[0], p.pos[1]); i ? ctx.lineTo(x, y) : ctx.moveTo(x, y); });
    ctx.strokeStyle = "#ff4fd8"; ctx.lineWidth = 3 * devicePixelRatio; ctx.stroke();
    for (const p of tr.points) {
      const [x, y] = project(p.pos[0], p.pos[1]);
      ctx.beginPath(); ctx.arc(x, y, 4 * devicePixelRatio, 0, 2 * Math.PI); ctx.fillStyle = "#ff4fd8"; ctx.fill();
    }
    const last = tr.points[tr.points.length - 1];
    const [x, y] = project(last.pos[0], last.pos[1]);
    ctx.fillStyle = "#ffd6f6"; ctx.fillText(`${t("track")} ${tr.plate}`, x + 8 * devicePixelRatio, y - 8 * devicePixelRatio);
  }
}

// Devices: off-screen ones skipped; at low zoom the quiet ones are grouped
// per grid cell into a bubble with their count (its grey arc: the share
// offline); alarmed and selected devices are always drawn one by one, on
// top. Tens of thousands of devices stay a few thousand draw calls.
function drawDevices() {
  const dpr = devicePixelRatio, W = canvas.width, H = canvas.height, margin = 12 * dpr;
  const k = uiScale();
  const cluster = view.scale < CLUSTER_BELOW;
  const cell = CLUSTER_PX * dpr * k;
  const cells = new Map();
  const single = [], top = [];
  for (const d of devices.values()) {
    const pos = (d.state && d.state.pos) || d.info.pos;
    const [x, y] = project(pos[0], pos[1]);
    if (x < -margin || y < -margin || x > W + margin || y > H + margin) continue;
    if (alarmLevel(d) || d.info.id === selected) { top.push([d, x, y]); continue; }
    if (!cluster) { single.push([d, x, y]); continue; }
    const key = Math.floor(x / cell) * 100003 + Math.floor(y / cell);
    let c = cells.get(key);
    if (!c) { c = { sx: 0, sy: 0, n: 0, off: 0, first: [d, x, y], ids: [] }; cells.set(key, c); }
    c.sx += x; c.sy += y; c.n++; c.ids.push(d.info.id);
    if (offline(d)) c.off++;
  }
  clusters = [];
  ctx.textAlign = "center"; ctx.textBaseline = "middle";
  ctx.font = `bold ${11 * dpr * k}px system-ui, sans-serif`;
  for (const c of cells.values()) {
    if (c.n === 1) { single.push(c.first); continue; }
    const x = c.sx / c.n, y = c.sy / c.n;
    const r = (9 + 4 * Math.log10(c.n)) * dpr * k;
    ctx.beginPath(); ctx.arc(x, y, r, 0, 2 * Math.PI);
    ctx.fillStyle = "#2b6d9e"; ctx.fill();
    ctx.lineWidth = 3 * dpr; ctx.strokeStyle = "#4aa3ff"; ctx.stroke();
    if (c.off) {
      ctx.beginPath(); ctx.arc(x, y, r, -Math.PI / 2, -Math.PI / 2 + 2 * Math.PI * c.off / c.n);
      ctx.strokeStyle = "#8a96a3"; ctx.stroke();
    }
    ctx.fillStyle = "#ffffff"; ctx.fillText(String(c.n), x, y);
    clusters.push({ x, y, r, n: c.n, off: c.off });
  }
  ctx.textBaseline = "alphabetic";
  for (const [d, x, y] of single) marker(d, x, y);
  top.sort((a, b) => alarmLevel(a[0]) - alarmLevel(b[0]));
  for (const [d, x, y] of top) marker(d, x, y);
}

function marker(d, x, y) {
  const dpr = devicePixelRatio;
  const lvl = alarmLevel(d);
  const r = (lvl ? 7 : 3.5) * dpr * uiScale();
  ctx.beginPath();
  if (d.info.kind === "reservoir") ctx.rect(x - r, y - r, 2 * r, 2 * r); else ctx.arc(x, y, r, 0, 2 * Math.PI);
  ctx.fillStyle = lvl ? LEVEL_COLOR[lvl] : (d.state ? KIND_COLOR[d.info.kind] : "#56677a");
  // An offline device is drawn hollow: its last state may be stale.
  if (offline(d) && !lvl) {
    ctx.lineWidth = 1.5 * dpr; ctx.strokeStyle = ctx.fillStyle; ctx.stroke();
  } else ctx.fill();
  if (lvl || d.info.id === selected) {
    ctx.lineWidth = 2 * dpr;
    ctx.strokeStyle = d.info.id === selected ? "#ffffff" : "#1b0c0c";
    ctx.stroke();
  }
}

function uiScale() { return document.body.classList.contains("large") ? 1.4 : 1; }

// A device's alarm: its reading's level, or its open alert's (the alert
// follows the reading once the engine has ordered it).
let alertLevels = new Map(); // subject -> highest open level
function alarmLevel(d) { return Math.max((d.state && d.state.alarm_level) || 0, alertLevels.get(d.info.id) || 0); }
function indexAlerts() {
  alertLevels = new Map();
  for (const a of alerts.values()) alertLevels.set(a.subject, Math.max(alertLevels.get(a.subject) || 0, a.level));
}
function offline(d) { return d.presence && d.presence.status === "offline"; }

// Pan and zoom redraw at once; live data at most five times a second.
let dataDirty = false, lastDraw = 0;
const perf = { draws: 0, worstMs: 0, recent: [], zones: 0, tracks: 0 }; // draw times and what was drawn, for measuring and tests
window.iocPerf = perf;
function frame(now) {
  if (dirty || (dataDirty && now - lastDraw > 200)) {
    const t0 = performance.now();
    dataDirty = false;
    draw();
    const ms = performance.now() - t0;
    perf.draws++; perf.worstMs = Math.max(perf.worstMs, ms); perf.clusters = clusters.length;
    perf.recent.push(ms); if (perf.recent.length > 100) perf.recent.shift();
    lastDraw = now;
  }
  requestAnimationFrame(frame);
}

function clusterAt(px, py) {
  return clusters.find((c) => (c.x - px) ** 2 + (c.y - py) ** 2 <= c.r * c.r) || null;
}
function nearest(px, py) {
  let best = null, bestD = (10 * devicePixelRatio) ** 2;
  for (const d of devices.values()) {
    const pos = (d.state && d.state.pos) || d.info.pos;
    const [x, y] = project(pos[0], pos[1]);
    const dd = (x - px) ** 2 + (y - py) ** 2;
    if (dd < bestD) { bestD = dd; best = d; }
  }
  return best;
}

let drag = null;
canvas.addEventListener("mousedown", (e) => { drag = { x: e.clientX, y: e.clientY, moved: false }; });
window.addEventListener("mouseup", (e) => {
  if (drag && !drag.moved && picking) {
    const r = canvas.getBoundingClientRect();
    const [lon, lat] = unproject((e.clientX - r.left) * devicePixelRatio, (e.clientY - r.top) * devicePixelRatio);
    picked(lon, lat);
  } else if (drag && !drag.moved) {
    const r = canvas.getBoundingClientRect();
    const px = (e.clientX - r.left) * devicePixelRatio, py = (e.clientY - r.top) * devicePixelRatio;
    const d = nearest(px, py);
    const c = !d && clusterAt(px, py);
    if (d) select(d.info.id);
    else if (c) zoomAt(px, py, 3);
  }
  if (drag && drag.moved) viewChanged();
  drag = null;
});
canvas.addEventListener("mousemove", (e) => {
  const r = canvas.getBoundingClientRect();
  if (drag) {
    const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
    if (Math.abs(dx) + Math.abs(dy) > 2) drag.moved = true;
    const k = view.scale;
    view.lon -= dx / (k * Math.cos(view.lat0 * Math.PI / 180));
    view.lat += dy / k;
    drag.x = e.clientX; drag.y = e.clientY;
    dirty = true;
    return;
  }
  const px = (e.clientX - r.left) * devicePixelRatio, py = (e.clientY - r.top) * devicePixelRatio;
  const d = nearest(px, py);
  const c = !d && clusterAt(px, py);
  const tip = $("tooltip");
  if (!d && !c) { tip.hidden = true; return; }
  tip.hidden = false;
  tip.style.left = `${e.clientX - r.left + 14}px`;
  tip.style.top = `${e.clientY - r.top + 10}px`;
  tip.textContent = d
    ? `${d.info.name} — ${summary(d)}`
    : `${c.n} ${t("cluster")}` + (c.off ? ` (${c.off} ${t("offline")})` : "") + ` — ${t("zoomIn")}`;
});
canvas.addEventListener("mouseleave", () => { $("tooltip").hidden = true; });
canvas.addEventListener("wheel", (e) => {
  e.preventDefault();
  const r = canvas.getBoundingClientRect();
  const px = (e.clientX - r.left) * devicePixelRatio, py = (e.clientY - r.top) * devicePixelRatio;
  zoomAt(px, py, Math.exp(-e.deltaY * 0.0015));
}, { passive: false });
// Zooms by factor f keeping the point under (px, py) in place.
function zoomAt(px, py, f) {
  const [lon, lat] = unproject(px, py);
  view.scale = Math.min(60000, Math.max(100, view.scale * f));
  const [lon2, lat2] = unproject(px, py);
  view.lon += lon - lon2; view.lat += lat - lat2;
  dirty = true;
  viewChanged();
}
canvas.addEventListener("dblclick", () => { fit(); viewChanged(); });

// The live feed follows the viewport: zoomed in, the server sends only the
// devices in view (with a margin), so a screen on one district does not
// carry the province's traffic. Alerts always arrive whatever the viewport.
let viewTimer = null;
let sentBox = null;
function viewChanged() {
  clearTimeout(viewTimer);
  viewTimer = setTimeout(() => {
    const box = viewBox();
    if (JSON.stringify(box) === JSON.stringify(sentBox)) return;
    sentBox = box;
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "subscribe", filter: filter() }));
  }, 400);
}
function viewBox() {
  const province = areas.find((a) => a.level === "province");
  const [w, n] = unproject(0, 0), [e, s] = unproject(canvas.width, canvas.height);
  const mx = (e - w) * 0.25, my = (n - s) * 0.25;
  const box = [w - mx, s - my, e + mx, n + my];
  // The whole province in view: no box at all.
  if (!province || (box[0] <= province.bbox[0] && box[1] <= province.bbox[1] && box[2] >= province.bbox[2] && box[3] >= province.bbox[3])) return null;
  return box.map((x) => Math.round(x * 1e5) / 1e5);
}
function filter() { return sentBox ? { bbox: sentBox } : {}; }
window.addEventListener("resize", () => { resize(); viewChanged(); });

// ---------- readings ----------
function primary(d) {
  const r = d.state && d.state.reading;
  if (!r) return null;
  if (r.hydrology) {
    if (r.hydrology.water_level_m != null) return { v: r.hydrology.water_level_m, unit: "m" };
    if (r.hydrology.rainfall_mm != null) return { v: r.hydrology.rainfall_mm, unit: "mm" };
  }
  if (r.traffic && r.traffic.speed_kmh != null) return { v: r.traffic.speed_kmh, unit: "km/h" };
  return null;
}
function summary(d) {
  const r = d.state && d.state.reading;
  if (!r) return t("noData");
  if (r.camera) return `${r.camera.event}${r.camera.plate ? " " + r.camera.plate : ""} (${Math.round(r.camera.confidence * 100)}%)`;
  if (r.traffic) {
    const c = r.traffic.counts;
    return `${(c.motorbike || 0) + (c.car || 0) + (c.truck || 0) + (c.bus || 0)} xe/${r.traffic.interval_s}s, ${r.traffic.speed_kmh ?? "–"} km/h`;
  }
  const p = primary(d);
  const lvl = alarmLevel(d);
  return p ? `${p.v} ${p.unit}${lvl ? " — BĐ" + lvl : ""}` : t("noData");
}
// The numeric metrics of a reading, named as the history endpoint names them.
const ADDITIVE = new Set(["rainfall_mm"]);
function metricsOf(reading) {
  const m = {};
  const h = reading.hydrology, tr = reading.traffic;
  if (h) for (const k of ["water_level_m", "rainfall_mm", "flow_m3s", "inflow_m3s", "outflow_m3s"]) if (h[k] != null) m[k] = h[k];
  if (tr) {
    const c = tr.counts;
    m.flow_vph = ((c.motorbike || 0) + (c.car || 0) + (c.truck || 0) + (c.bus || 0)) * 3600 / Math.max(1, tr.interval_s);
    if (tr.speed_kmh != null) m.speed_kmh = tr.speed_kmh;
    if (tr.occupancy_pct != null) m.occupancy_pct = tr.occupancy_pct;
  }
  return m;
}
// A live reading of the charted station joins its row (a new one when its
// step has begun): sums for rain, running means otherwise.
function remember(state) {
  if (!chart || chart.id !== state.device) return;
  const ms = Date.parse(state.ts), step = chart.step_s * 1000;
  const row = Math.floor(ms / step) * step;
  let i = chart.t.length - 1;
  if (i < 0 || chart.t[i] < row) {
    chart.t.push(row); chart.n.push(0);
    chart.values.forEach((v) => v.push(null));
    i++;
  } else if (chart.t[i] > row) return; // late: the server's rows have it
  const m = metricsOf(state.reading);
  chart.metrics.forEach((info, j) => {
    const v = m[info.name];
    if (v == null) return;
    const old = chart.values[j][i];
    chart.values[j][i] = old == null ? v : (ADDITIVE.has(info.name) ? old + v : old + (v - old) / (chart.n[i] + 1));
  });
  chart.n[i]++;
  if (chart.t.length > 720) { chart.t.shift(); chart.n.shift(); chart.values.forEach((v) => v.shift()); }
}
async function loadChart(id) {
  const r = await api(`/api/v1/devices/${encodeURIComponent(id)}/history`);
  if (!r.ok || selected !== id) return;
  const h = await r.json();
  chart = { id, step_s: h.step_s, metrics: h.metrics, t: h.t, values: h.values, n: h.t.map(() => 1) };
  renderChart();
}

// ---------- side panel ----------
function areaText(area) {
  return (area || []).filter((a) => a.level !== "province").map((a) => a.name).join(" · ");
}
function time(ts) { return new Date(ts).toLocaleTimeString(lang === "vi" ? "vi-VN" : "en-GB"); }

function renderAlerts() {
  const list = [...alerts.values()].sort((a, b) => b.level - a.level || Date.parse(b.updated_at) - Date.parse(a.updated_at));
  $("alert-count").textContent = list.length;
  const ol = $("alerts");
  ol.replaceChildren();
  if (!list.length) {
    const li = document.createElement("li");
    li.className = "empty";
    li.textContent = t("none");
    ol.append(li);
  }
  for (const a of list) {
    const li = document.createElement("li");
    li.className = `l${a.level}` + (freshAlerts.has(a.id) ? " new" : "");
    li.dataset.alert = a.id;
    li.dataset.subject = a.subject;
    const lvl = document.createElement("span");
    lvl.className = "level";
    lvl.textContent = a.level_name;
    const title = document.createElement("span");
    title.className = "title";
    title.textContent = lang === "vi" ? a.title_vi : a.title_en;
    const area = document.createElement("div");
    area.className = "area";
    area.textContent = areaText(a.area);
    const when = document.createElement("div");
    when.className = "time";
    when.textContent = `${t("opened")} ${time(a.opened_at)} · ${t("updated")} ${time(a.updated_at)}`;
    li.append(lvl, title, area);
    if ((a.zones || []).length) {
      const z = document.createElement("div");
      z.className = "zones";
      z.textContent = `${t("zones")}: ` + a.zones.map((x) => x.name).join(" · ");
      li.append(z);
    }
    if ((a.nearest || []).length) {
      const n = document.createElement("div");
      n.className = "nearest";
      n.textContent = `${t("nearest")}: ` + a.nearest.map((x) => `${x.name} (${distance(x.distance_m)})`).join(" · ");
      li.append(n);
    }
    li.append(when);
    const h = a.handling || {};
    if (a.status === "acknowledged" || h.assignee) {
      const who = document.createElement("div");
      who.className = "handling";
      const parts = [];
      if (a.status === "acknowledged") parts.push(`${t("acked")} ${t("by")} ${h.acknowledged_by}`);
      if (h.assignee) parts.push(`${t("assignee")}: ${h.assignee}`);
      who.textContent = parts.join(" · ");
      li.append(who);
    }
    // Viewers (a videowall's token) see no action buttons.
    if (role === "operator" || role === "admin") {
      const actions = document.createElement("div");
      actions.className = "actions";
      if (a.status === "open") actions.append(actionButton(a, "ack"));
      actions.append(actionButton(a, "assign"), actionButton(a, "resolve"));
      li.append(actions);
    }
    li.addEventListener("click", () => {
      if (devices.has(a.subject)) { select(a.subject, true); return; }
      // A zone or a plate: centre the map on the alert.
      view.lon = a.pos[0]; view.lat = a.pos[1]; view.scale = Math.max(view.scale, 2500); dirty = true;
    });
    ol.append(li);
  }
  freshAlerts = new Set();
}

// Operators' actions: POST /api/v1/alerts/{id}/ack|resolve with the
// operator's name; the new version comes back over the live feed.
function operator() {
  let name = localStorage.getItem("ioc.operator");
  if (!name) {
    name = (prompt(t("who")) || "").trim();
    if (name) localStorage.setItem("ioc.operator", name);
  }
  return name;
}

function actionButton(a, action) {
  const b = document.createElement("button");
  b.className = action;
  b.textContent = t(action);
  b.addEventListener("click", async (ev) => {
    ev.stopPropagation();
    const by = operator();
    if (!by) return;
    const body = { by };
    if (action === "assign") {
      // Empty: nobody.
      const to = prompt(t("assignTo"), (a.handling && a.handling.assignee) || "");
      if (to === null) return;
      body.assignee = to.trim();
    }
    b.disabled = true;
    try {
      const r = await api(`/api/v1/alerts/${encodeURIComponent(a.id)}/${action}`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      });
      if (!r.ok) {
        const e = await r.json().catch(() => ({}));
        window.alert(`${t("failed")}: ${(e.error && e.error.message) || r.status}`);
      }
    } finally {
      b.disabled = false;
    }
  });
  return b;
}

function select(id, centre) {
  const changed = selected !== id;
  selected = id;
  const d = devices.get(id);
  if (d && centre) { view.lon = d.info.pos[0]; view.lat = d.info.pos[1]; view.scale = Math.max(view.scale, 2500); viewChanged(); }
  dirty = true;
  if (changed) { chart = null; loadChart(id).catch((e) => console.error("history", e)); }
  renderDetail();
}

function row(k, v) {
  const tr = document.createElement("tr");
  const a = document.createElement("td"), b = document.createElement("td");
  a.textContent = k; b.textContent = v;
  tr.append(a, b);
  return tr;
}

function renderDetail() {
  const box = $("detail");
  const d = selected && devices.get(selected);
  if (!d) return;
  $("detail-name").textContent = d.info.name;
  const table = document.createElement("table");
  table.append(row("ID", d.info.id), row(t("kind"), KIND[lang][d.info.kind] || d.info.kind), row(t("area"), areaText(d.info.area)));
  const lv = d.info.thresholds && d.info.thresholds.alarm_levels_m;
  if (lv) table.append(row(t("levels"), lv.map((x) => x.toFixed(2)).join(" / ") + " m"));
  if (d.presence) table.append(row(t("presence"), `${t(d.presence.status)} (${time(d.presence.received)})`));
  if (d.state) {
    table.append(row(t("last"), time(d.state.ts)), row(t("seq"), d.state.seq));
    const body = Object.values(d.state.reading)[0] || {};
    for (const [k, v] of Object.entries(body)) {
      if (v && typeof v === "object") for (const [k2, v2] of Object.entries(v)) table.append(row(`${k}.${k2}`, v2));
      else table.append(row(k, v));
    }
  } else {
    table.append(row(t("last"), t("noData")));
  }
  // The device's open alert: what it saw against which threshold.
  const a = [...alerts.values()].find((x) => x.subject === d.info.id);
  if (a) {
    const e = a.evidence || {};
    table.append(row(t("evidence"), `${a.level_name}: ${e.value} ${e.unit} ≥ ${e.threshold} ${e.unit} (${time(e.ts)})`));
    if (e.rate_per_h != null) table.append(row(t("rate"), `${e.rate_per_h.toFixed(2)} ${e.unit}/h` + (e.next_level ? ` → ${e.next_level} ${time(e.next_level_at)}` : "")));
    if ((a.nearest || []).length) table.append(row(t("nearest"), a.nearest.map((x) => `${x.name} (${distance(x.distance_m)})`).join(" · ")));
  }
  box.replaceChildren(table);
  renderChart();
}
function distance(m) { return m < 1000 ? `${m} m` : `${(m / 1000).toFixed(1)} km`; }

// The selected station's chart: its level (or speed) as a line against its
// BĐ lines, rainfall (or vehicles per hour) as bars on their own scale, the time
// axis from the history endpoint's rows.
const LINE = ["water_level_m", "speed_kmh", "flow_m3s", "inflow_m3s"];
const BARS = ["rainfall_mm", "flow_vph"];
function renderChart() {
  const boxEl = $("chart-box");
  const d = selected && devices.get(selected);
  if (!d || !chart || chart.id !== selected || chart.t.length < 1) { boxEl.hidden = true; return; }
  const col = (names) => {
    const j = chart.metrics.findIndex((m) => names.includes(m.name));
    return j < 0 ? null : { name: chart.metrics[j].name, v: chart.values[j] };
  };
  const line = col(LINE), bars = col(BARS);
  if (!line && !bars) { boxEl.hidden = true; return; }
  boxEl.hidden = false;
  const c = $("chart");
  const dpr = devicePixelRatio, k = uiScale();
  const rect = c.getBoundingClientRect();
  c.width = Math.max(1, Math.round(rect.width * dpr)); c.height = Math.max(1, Math.round(rect.height * dpr));
  const g = c.getContext("2d");
  const W = c.width, H = c.height, padL = 44 * dpr * k, padR = 40 * dpr * k, padT = 8 * dpr, padB = 20 * dpr * k;
  g.clearRect(0, 0, W, H);
  g.font = `${10 * dpr * k}px system-ui, sans-serif`;
  const step = chart.step_s * 1000;
  const t0 = chart.t[0], t1 = chart.t[chart.t.length - 1] + step;
  const X = (ms) => padL + (W - padL - padR) * (ms - t0) / Math.max(1, t1 - t0);
  // Bars, scaled from zero on the right axis.
  if (bars) {
    const max = Math.max(1e-9, ...bars.v.filter((v) => v != null));
    const bw = Math.max(1, (W - padL - padR) * step / Math.max(1, t1 - t0) - dpr);
    g.fillStyle = bars.name === "rainfall_mm" ? "#3b7dd8aa" : "#7bd88f88";
    bars.v.forEach((v, i) => {
      if (v == null) return;
      const h = (H - padT - padB) * v / max;
      g.fillRect(X(chart.t[i]), H - padB - h, bw, h);
    });
    g.fillStyle = "#9fb0c2"; g.textAlign = "left";
    g.fillText(fmt(max), W - padR + 4 * dpr, padT + 8 * dpr * k);
    g.fillText("0", W - padR + 4 * dpr, H - padB);
  }
  // The line, with the station's alarm levels when it has them.
  if (line) {
    const lv = line.name === "water_level_m" ? ((d.info.thresholds && d.info.thresholds.alarm_levels_m) || []) : [];
    const vals = line.v.filter((v) => v != null);
    if (vals.length) {
      // Levels far above the readings would flatten the line: show those
      // within reach (the next one up, and any already passed).
      const top = Math.max(...vals);
      const shown = lv.filter((x, i) => x <= top || i === lv.findIndex((y) => y > top));
      const all = vals.concat(shown);
      let lo = Math.min(...all), hi = Math.max(...all);
      const pad = Math.max(0.05, (hi - lo) * 0.1); lo -= pad; hi += pad;
      const Y = (v) => H - padB - (H - padT - padB) * (v - lo) / (hi - lo);
      shown.forEach((v) => {
        const i = lv.indexOf(v);
        g.strokeStyle = LEVEL_COLOR[i + 1]; g.lineWidth = dpr; g.setLineDash([5 * dpr, 4 * dpr]);
        g.beginPath(); g.moveTo(padL, Y(v)); g.lineTo(W - padR, Y(v)); g.stroke();
        g.fillStyle = LEVEL_COLOR[i + 1]; g.textAlign = "right"; g.fillText(`BĐ${i + 1}`, W - padR - 2 * dpr, Y(v) - 3 * dpr);
      });
      g.setLineDash([]);
      g.strokeStyle = "#e6edf3"; g.lineWidth = 2 * dpr; g.beginPath();
      let pen = false;
      line.v.forEach((v, i) => {
        if (v == null) { pen = false; return; }
        const x = X(chart.t[i] + step / 2), y = Y(v);
        pen ? g.lineTo(x, y) : g.moveTo(x, y); pen = true;
      });
      g.stroke();
      g.fillStyle = "#9fb0c2"; g.textAlign = "right";
      g.fillText(fmt(hi), padL - 4 * dpr, padT + 8 * dpr * k);
      g.fillText(fmt(lo), padL - 4 * dpr, H - padB);
    }
  }
  g.fillStyle = "#9fb0c2";
  g.textAlign = "left"; g.fillText(hhmm(t0), padL, H - 5 * dpr);
  g.textAlign = "right"; g.fillText(hhmm(t1), W - padR, H - 5 * dpr);
  const legend = $("chart-legend");
  legend.replaceChildren();
  for (const [m, color] of [[line, "#e6edf3"], [bars, bars && bars.name === "rainfall_mm" ? "#3b7dd8" : "#7bd88f"]]) {
    if (!m) continue;
    const span = document.createElement("span"), i = document.createElement("i");
    i.style.background = color; span.append(i, t(m.name)); legend.append(span);
  }
  const steps = document.createElement("span");
  steps.textContent = `${chart.step_s >= 60 ? chart.step_s / 60 + " min" : chart.step_s + " s"}`;
  legend.append(steps);
}
function fmt(v) { return Math.abs(v) >= 100 ? v.toFixed(0) : v.toFixed(2); }
function hhmm(ms) { return new Date(ms).toLocaleTimeString(lang === "vi" ? "vi-VN" : "en-GB", { hour: "2-digit", minute: "2-digit" }); }

function renderCounts() {
  let reporting = 0, off = 0;
  for (const d of devices.values()) { if (d.state) reporting++; if (offline(d)) off++; }
  // Zoomed in, the feed carries the devices in view only.
  $("counts").textContent = `${devices.size} ${t("devices")}${sentBox ? " " + t("inView") : ""} · ${reporting} ${t("reporting")}` + (off ? ` · ${off} ${t("offline")}` : "");
}

function renderLegend() {
  const box = $("legend");
  box.replaceChildren();
  for (const [k, c] of Object.entries(KIND_COLOR)) {
    const s = document.createElement("span"); const i = document.createElement("i");
    i.style.background = c; s.append(i, KIND[lang][k]); box.append(s);
  }
  for (const [k, c] of Object.entries(ZONE_COLOR)) {
    const s = document.createElement("span"); const i = document.createElement("i");
    i.style.background = c + "80"; i.style.borderRadius = "2px"; s.append(i, ZONE_NAME[lang][k]); box.append(s);
  }
  ["BĐ1", "BĐ2", "BĐ3"].forEach((n, i) => {
    const s = document.createElement("span"); const b = document.createElement("i");
    b.style.background = LEVEL_COLOR[i + 1]; s.append(b, n); box.append(s);
  });
}

function applyLang() {
  document.documentElement.lang = lang;
  $("lang").textContent = lang === "vi" ? "EN" : "VI";
  document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  document.querySelectorAll("[data-i18n-title]").forEach((el) => { el.title = t(el.dataset.i18nTitle); });
  $("conn").textContent = t($("conn").classList.contains("up") ? "connected" : "disconnected");
  $("offline-banner").textContent = t("lost");
  applyMute();
  renderLegend(); renderAlerts(); renderCounts(); renderDetail(); renderBacktest();
  fillSelects();
  if (!$("registry-panel").hidden) loadRegistry();
}
$("lang").addEventListener("click", () => { lang = lang === "vi" ? "en" : "vi"; localStorage.setItem("ioc.lang", lang); applyLang(); });

// Large type for a videowall, kept in this browser.
function applyLarge(on) {
  document.body.classList.toggle("large", on);
  $("large").setAttribute("aria-pressed", String(on));
  $("large").textContent = on ? "A−" : "A+";
  localStorage.setItem("ioc.large", on ? "1" : "");
  resize(); renderChart();
}
$("large").addEventListener("click", () => applyLarge(!document.body.classList.contains("large")));

// ---------- new critical alerts: a chime (unless muted) and a flash ----------
let muted = localStorage.getItem("ioc.mute") === "1";
const pageTitle = document.title;
let audio = null;
const alarms = { count: 0, chimes: 0 }; // for the page's tests
window.iocAlarms = alarms;
function applyMute() {
  $("mute").textContent = t(muted ? "soundOff" : "soundOn");
  $("mute").setAttribute("aria-pressed", String(muted));
}
$("mute").addEventListener("click", () => { muted = !muted; localStorage.setItem("ioc.mute", muted ? "1" : ""); applyMute(); });
// Browsers start sound only after a gesture on the page: the first click
// or key press unlocks it.
for (const ev of ["click", "keydown"]) {
  window.addEventListener(ev, () => {
    if (!audio && window.AudioContext) audio = new AudioContext();
    if (audio && audio.state === "suspended") audio.resume();
  }, { once: false, passive: true });
}
function critical(a) { return a.severity === "severe" || a.severity === "extreme"; }
function alarm(a) {
  alarms.count++;
  document.body.classList.remove("alarm");
  void document.body.offsetWidth; // restart the animation
  document.body.classList.add("alarm");
  setTimeout(() => document.body.classList.remove("alarm"), 3500);
  document.title = `(!) ${lang === "vi" ? a.title_vi : a.title_en}`;
  setTimeout(() => { document.title = pageTitle; }, 15000);
  if (muted || !audio || audio.state !== "running") return;
  alarms.chimes++;
  // Three short tones, loud enough over a control room's hum.
  const now = audio.currentTime;
  for (let i = 0; i < 3; i++) {
    const o = audio.createOscillator(), g = audio.createGain();
    o.type = "square"; o.frequency.value = i === 2 ? 1175 : 880;
    g.gain.setValueAtTime(0.0001, now + i * 0.3);
    g.gain.exponentialRampToValueAtTime(0.25, now + i * 0.3 + 0.02);
    g.gain.exponentialRampToValueAtTime(0.0001, now + i * 0.3 + 0.25);
    o.connect(g).connect(audio.destination);
    o.start(now + i * 0.3); o.stop(now + i * 0.3 + 0.27);
  }
}

// ---------- connection state ----------
// Lost for more than two seconds: a banner over the map, and the map greyed,
// until the feed is back (a resume or a fresh snapshot).
let lostTimer = null;
function connectionState(up) {
  $("conn").className = up ? "conn up" : "conn down";
  $("conn").textContent = t(up ? "connected" : "disconnected");
  clearTimeout(lostTimer);
  if (up) {
    $("offline-banner").hidden = true;
    $("map-wrap").classList.remove("stale");
  } else {
    lostTimer = setTimeout(() => {
      $("offline-banner").hidden = false;
      $("map-wrap").classList.add("stale");
    }, 2000);
  }
}

// ---------- live feed ----------
let panelDirty = false;
function schedulePanel() {
  if (panelDirty) return;
  panelDirty = true;
  setTimeout(() => { panelDirty = false; renderAlerts(); renderCounts(); if (selected) renderDetail(); }, 100);
}

function addDevices(list) {
  for (const d of list) {
    const { state, presence, ...info } = d;
    devices.set(info.id, { info, state: state || null, presence: presence || null });
    if (state) remember(state);
  }
}

// A device not known here (registered since the snapshot, its entry not
// come yet, or moved into the box): its view, once.
const fetching = new Set();
async function fetchDevice(id) {
  if (fetching.has(id)) return;
  fetching.add(id);
  try {
    const r = await api(`/api/v1/devices/${encodeURIComponent(id)}`);
    if (r.ok && !devices.has(id)) { addDevices([await r.json()]); dataDirty = true; }
  } finally { fetching.delete(id); }
}

function onMessage(msg) {
  if (msg.type === "snapshot_part") {
    // The snapshot's next devices (a large one comes in parts).
    if (lastSeq !== null && msg.seq !== lastSeq + 1) { socket.close(); return; }
    addDevices(msg.devices);
    lastSeq = msg.seq;
    dataDirty = true;
    if (!msg.more) { renderCounts(); if (selected) renderDetail(); }
    return;
  } else if (msg.type === "snapshot") {
    devices.clear(); alerts.clear();
    addDevices(msg.devices);
    for (const a of msg.alerts) alerts.set(a.id, a);
    indexAlerts();
    tracks.clear();
    for (const tr of msg.tracks || []) tracks.set(tr.plate, tr);
    lastSeq = msg.seq;
    session = msg.session;
    dirty = true;
    renderAlerts(); renderCounts(); renderDetail();
    return;
  } else if (msg.type === "error") {
    console.error("live feed refused a request:", msg.code, msg.message);
    if (msg.code === "unauthorized") needLogin(t("badToken"));
    return;
  } else if (msg.type === "delta") {
    // A gap: reconnect and resume from the last message seen.
    if (lastSeq !== null && msg.seq !== lastSeq + 1) { socket.close(); return; }
    // Registry changes first: a new device's first state finds its entry.
    for (const v of msg.registry || []) {
      const { state, presence, ...info } = v;
      const d = devices.get(info.id);
      if (d) d.info = info;
      else devices.set(info.id, { info, state: state || null, presence: presence || null });
    }
    if ((msg.registry || []).length && !$("registry-panel").hidden) scheduleRegistry();
    for (const s of msg.devices || []) {
      const d = devices.get(s.device);
      if (d) { d.state = s; remember(s); } else fetchDevice(s.device);
    }
    for (const p of msg.presence || []) {
      const d = devices.get(p.device);
      if (d) d.presence = { status: p.status, received: p.received };
    }
    for (const tr of msg.tracks || []) tracks.set(tr.plate, tr);
    for (const a of msg.alerts || []) {
      if (a.status === "resolved") { alerts.delete(a.id); freshAlerts.delete(a.id); continue; }
      const known = alerts.get(a.id);
      if (known && known.version > a.version) continue;
      if (!known || known.level !== a.level) freshAlerts.add(a.id);
      if (critical(a) && (!known || a.level > known.level)) alarm(a);
      alerts.set(a.id, a);
    }
    if ((msg.alerts || []).length) indexAlerts();
  }
  lastSeq = msg.seq;
  dataDirty = true;
  schedulePanel();
}

let socket = null;
let backoff = 500;
function connect() {
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/v1/live`;
  socket = new WebSocket(url);
  socket.onopen = () => {
    backoff = 500;
    const request = { type: "subscribe", filter: filter(), token };
    // Resume: the server replays what was missed, or sends a snapshot.
    if (session && lastSeq !== null) request.resume = { session, seq: lastSeq };
    socket.send(JSON.stringify(request));
  };
  // Live once the snapshot (or the resumed deltas) arrive.
  socket.onmessage = (e) => {
    try {
      const msg = JSON.parse(e.data);
      if (msg.type !== "error") connectionState(true);
      onMessage(msg);
    } catch (err) { console.error(err); }
  };
  socket.onclose = () => {
    connectionState(false);
    setTimeout(connect, backoff); backoff = Math.min(10000, backoff * 2);
  };
}

// ---------- rules: backtest and apply (admins) ----------
// The rules file in force is edited here, run over the server's recorded
// readings against the rules in force (POST /api/v1/backtest: the engine's
// own code, nothing stored or sent), then applied (PUT /api/v1/rules/file,
// which validates, writes and reloads it).
let lastReport = null;
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
function span(ms) {
  const s = Math.floor(Math.abs(ms) / 1000);
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.floor(s / 60)} min`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}
function when(ms) { return `${span(ms)} ${t(ms < 0 ? "earlier" : "later")}`; }
function stamp(ts) { return new Date(ts).toLocaleString(lang === "vi" ? "vi-VN" : "en-GB"); }
function peakName(e) {
  const l = e.levels.find((x) => x.level === e.peak_level);
  return l && l.name ? l.name : String(e.peak_level);
}
function episodeText(e) {
  const end = e.resolved_at ? `→ ${stamp(e.resolved_at)}` : `(${t("stillOpen")})`;
  return `${e.rule} · ${e.subject} (${e.area}) ${peakName(e)}: ${stamp(e.opened_at)} ${end}`;
}
function changeText(c) {
  const said = [];
  if (c.start_ms) said.push(`${t("opens")} ${when(c.start_ms)}`);
  if (c.end_ms) said.push(`${t("resolves")} ${when(c.end_ms)}`);
  if (c.new.peak_level !== c.current.peak_level) said.push(`${t("peak")} ${peakName(c.new)} ${t("instead")} ${peakName(c.current)}`);
  return said.join("; ");
}
function showProblems(body, fallback) {
  const box = $("bt-result");
  box.replaceChildren();
  const err = (body && body.error) || {};
  box.append(el("p", "problems", err.message || fallback));
  const ul = el("ul");
  for (const p of err.problems || []) ul.append(el("li", "problems", p));
  box.append(ul);
}
function renderBacktest() {
  const r = lastReport, box = $("bt-result");
  if (!r) return;
  box.replaceChildren();
  const i = r.input;
  $("bt-status").textContent = `${i.readings} ${t("btRead")} · ${r.seconds.toFixed(2)} s · ` +
    `${t("btSkipped")}: ${i.outside + i.duplicates + i.late + i.bad}`;
  const d = r.diff;
  if (!d.only_new.length && !d.only_current.length && !d.changed.length) {
    box.append(el("p", "no-diff", `${t("btNoDiff")} ${d.same} ${t("episodes")}.`));
    return;
  }
  const table = el("table");
  const head = el("tr");
  for (const h of ["rule", "area", "onlyNew", "onlyCurrent", "changed", "same"]) head.append(el("th", "", t(h)));
  table.append(head);
  for (const row of d.rows) {
    const tr = el("tr");
    for (const v of [row.rule, row.area, row.only_new, row.only_current, row.changed, row.same]) tr.append(el("td", "", String(v)));
    table.append(tr);
  }
  box.append(table);
  const list = el("ul");
  const item = (kind, e, text) => {
    const li = el("li", kind, text);
    li.dataset.subject = e.subject; li.dataset.rule = e.rule;
    list.append(li);
  };
  for (const e of d.only_new) item("only_new", e, `+ ${t("onlyNew")}: ${episodeText(e)}`);
  for (const e of d.only_current) item("only_current", e, `− ${t("onlyCurrent")}: ${episodeText(e)}`);
  for (const c of d.changed) item("changed", c.new, `~ ${t("changed")}: ${episodeText(c.new)} — ${changeText(c)}`);
  box.append(list);
  // One timeline per station: its episodes in force above, the new ones below.
  const t0 = Date.parse(i.first), t1 = Math.max(Date.parse(i.last), t0 + 1);
  const rows = new Map();
  const add = (e, which) => {
    const k = `${e.rule} · ${e.subject}`;
    if (!rows.has(k)) rows.set(k, []);
    rows.get(k).push([e, which]);
  };
  d.only_new.forEach((e) => add(e, "new"));
  d.only_current.forEach((e) => add(e, "current"));
  d.changed.forEach((c) => { add(c.new, "new"); add(c.current, "current"); });
  box.append(el("h3", "", t("timeline")));
  for (const [k, eps] of rows) {
    box.append(el("div", "muted", k));
    const line = el("div", "timeline");
    line.dataset.station = k;
    for (const [e, which] of eps) {
      const a = Date.parse(e.opened_at), b = e.resolved_at ? Date.parse(e.resolved_at) : t1;
      const bar = el("div", `bar ${which}`);
      bar.style.left = `${(100 * (a - t0)) / (t1 - t0)}%`;
      bar.style.width = `${(100 * (b - a)) / (t1 - t0)}%`;
      bar.title = episodeText(e);
      line.append(bar);
    }
    box.append(line);
  }
}
function isoOf(input) { return input.value ? new Date(input.value).toISOString() : undefined; }
async function openRules() {
  $("rules-panel").hidden = false;
  $("bt-status").textContent = "";
  const r = await api("/api/v1/rules/file");
  const b = await r.json();
  if (!r.ok) { showProblems(b, t("failed")); return; }
  $("rules-text").value = b.text;
  $("rules-source").textContent = b.source;
  $("rules-apply").disabled = !b.editable;
  $("rules-apply").title = b.editable ? "" : t("notEditable");
}
async function runBacktest() {
  $("bt-status").textContent = t("btRunning");
  $("bt-result").replaceChildren();
  const body = { rules: $("rules-text").value, from: isoOf($("bt-from")), to: isoOf($("bt-to")) };
  const r = await api("/api/v1/backtest", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const b = await r.json();
  if (!r.ok) { $("bt-status").textContent = ""; showProblems(b, t("failed")); return; }
  lastReport = b;
  renderBacktest();
}
async function applyRules() {
  if (!window.confirm(t("applyConfirm"))) return;
  const r = await api("/api/v1/rules/file", { method: "PUT", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ text: $("rules-text").value }) });
  const b = await r.json();
  if (!r.ok) { showProblems(b, t("failed")); return; }
  $("bt-status").textContent = t("applied");
}
$("rules-upload").addEventListener("change", async (ev) => {
  const file = ev.target.files[0];
  if (file) $("rules-text").value = await file.text();
});
$("rules-open").addEventListener("click", openRules);
$("rules-close").addEventListener("click", () => { $("rules-panel").hidden = true; });
$("bt-run").addEventListener("click", runBacktest);
$("rules-apply").addEventListener("click", applyRules);

// ---------- the device registry ----------
// Viewers read it (GET /api/v1/registry/devices); operators put devices in
// maintenance and back; admins add, edit, retire, import and adopt
// (POST/PUT /api/v1/registry/...). Changes are in force at once: the live
// feed brings them back as `registry` items.
let picking = false;
let regTimer = null;
let regForm = null; // { mode: "new" | "edit" | "adopt", id }
const LIFECYCLES = ["active", "maintenance", "retired"];
function scheduleRegistry() {
  clearTimeout(regTimer);
  regTimer = setTimeout(loadRegistry, 250);
}
function fillSelects() {
  const opt = (value, text) => { const o = el("option", null, text); o.value = value; return o; };
  const kinds = Object.keys(KIND.vi);
  const keep = (id) => $(id).value;
  const [k, l, f] = [keep("reg-kind"), keep("reg-lifecycle"), keep("rf-kind")];
  $("reg-kind").replaceChildren(opt("", t("allKinds")), ...kinds.map((x) => opt(x, KIND[lang][x])));
  $("reg-lifecycle").replaceChildren(opt("", t("allStates")), ...LIFECYCLES.map((x) => opt(x, t(x))));
  $("rf-kind").replaceChildren(...kinds.map((x) => opt(x, KIND[lang][x])));
  $("reg-kind").value = k; $("reg-lifecycle").value = l; if (f) $("rf-kind").value = f;
  $("reg-q").placeholder = t("search");
}
function regStatus(text, problem) {
  $("reg-status").textContent = text || "";
  $("reg-status").className = problem ? "problems" : "muted";
}
async function regProblems(r) {
  let b = null;
  try { b = await r.json(); } catch (e) { /* not JSON */ }
  const err = (b && b.error) || {};
  regStatus(`${t("failed")}: ${err.message || r.status}`, true);
  const box = $("reg-report");
  box.replaceChildren();
  const ul = el("ul");
  for (const p of err.problems || []) ul.append(el("li", "problems", p));
  box.append(ul);
}
async function loadRegistry() {
  const q = new URLSearchParams({ limit: "500" });
  if ($("reg-q").value.trim()) q.set("q", $("reg-q").value.trim());
  if ($("reg-kind").value) q.set("kind", $("reg-kind").value);
  if ($("reg-lifecycle").value) q.set("lifecycle", $("reg-lifecycle").value);
  const r = await api(`/api/v1/registry/devices?${q}`);
  if (!r.ok) { await regProblems(r); return; }
  const page = await r.json();
  $("reg-total").textContent = `${page.devices.length} / ${page.total} ${t("devices")}`;
  const body = $("reg-table").querySelector("tbody");
  body.replaceChildren(...page.devices.map(regRow));
  loadUnregistered();
}
function regRow(d) {
  const tr = el("tr", d.lifecycle ? d.lifecycle.state : "active");
  tr.dataset.id = d.id;
  const levels = d.thresholds && d.thresholds.alarm_levels_m;
  const state = d.lifecycle ? d.lifecycle.state : "active";
  const reason = d.lifecycle && d.lifecycle.reason ? ` — ${d.lifecycle.reason}` : "";
  tr.append(el("td", null, d.id), el("td", null, d.name), el("td", null, KIND[lang][d.kind] || d.kind),
    el("td", null, (d.areas[0] && d.areas[0].name) || ""), el("td", null, levels ? levels.join(" / ") : ""),
    el("td", null, t(state) + reason));
  const actions = el("td");
  const button = (key, f) => { const b = el("button", null, t(key)); b.type = "button"; b.dataset.action = key; b.addEventListener("click", f); actions.append(b); };
  if (role === "admin" && state !== "retired") button("edit", () => openForm("edit", d));
  if ((role === "operator" || role === "admin") && state === "active") button("toMaintenance", () => maintenance(d.id));
  if ((role === "operator" || role === "admin") && state === "maintenance") button("inService", () => inService(d.id));
  if (role === "admin" && state !== "retired") button("retire", () => retire(d.id));
  tr.append(actions);
  return tr;
}
async function loadUnregistered() {
  const body = $("reg-unregistered").querySelector("tbody");
  const r = await api("/api/v1/registry/unregistered");
  if (!r.ok) { body.replaceChildren(); return; }
  const list = await r.json();
  body.replaceChildren(...list.map((u) => {
    const tr = el("tr");
    tr.dataset.id = u.id;
    tr.append(el("td", null, u.id), el("td", null, u.kind ? KIND[lang][u.kind] : "?"),
      el("td", null, stamp(u.first_seen)), el("td", null, stamp(u.last_seen)), el("td", null, String(u.count)));
    const td = el("td");
    if (role === "admin") {
      const b = el("button", null, t("adopt"));
      b.type = "button"; b.dataset.action = "adopt";
      b.addEventListener("click", () => openForm("adopt", { id: u.id, kind: u.kind || "river_gauge", name: u.id, pos: u.last_pos || [view.lon, view.lat], expected_interval_s: 600 }));
      td.append(b);
    }
    tr.append(td);
    return tr;
  }));
}
function openForm(mode, d) {
  regForm = { mode, id: d ? d.id : null, spec: d || null };
  const f = $("reg-form");
  f.hidden = false;
  $("reg-form-title").textContent = t(mode === "new" ? "newTitle" : mode === "adopt" ? "adoptTitle" : "editTitle");
  $("rf-id").value = d ? d.id : "";
  $("rf-id").readOnly = mode !== "new";
  $("rf-kind").value = d ? d.kind : "river_gauge";
  $("rf-kind").disabled = mode === "edit";
  $("rf-name").value = d ? d.name : "";
  $("rf-lon").value = d && d.pos ? d.pos[0] : "";
  $("rf-lat").value = d && d.pos ? d.pos[1] : "";
  $("rf-interval").value = d ? d.expected_interval_s : 600;
  const levels = (d && d.thresholds && d.thresholds.alarm_levels_m) || [];
  ["rf-bd1", "rf-bd2", "rf-bd3"].forEach((id, i) => { $(id).value = levels[i] !== undefined ? levels[i] : ""; });
  $("rf-river").value = (d && d.river) || "";
  $("rf-road").value = (d && d.road) || "";
  $("reg-report").replaceChildren();
  f.scrollIntoView({ block: "nearest" });
  $("rf-name").focus();
}
function formSpec() {
  const num = (id) => ($(id).value === "" ? null : Number($(id).value));
  const bd = ["rf-bd1", "rf-bd2", "rf-bd3"].map(num);
  const base = regForm.spec || {};
  const spec = Object.assign({}, base.lifecycle ? { lifecycle: base.lifecycle } : {}, base.area ? { area: base.area } : {}, {
    id: $("rf-id").value.trim(), kind: $("rf-kind").value, name: $("rf-name").value.trim(),
    pos: [num("rf-lon"), num("rf-lat")], expected_interval_s: num("rf-interval"),
    thresholds: Object.assign({}, base.thresholds || {}),
  });
  delete spec.thresholds.alarm_levels_m;
  if (bd.some((x) => x !== null)) spec.thresholds.alarm_levels_m = bd;
  for (const k of ["river", "road"]) { const v = $(`rf-${k}`).value.trim(); if (v) spec[k] = v; }
  if (base.direction) spec.direction = base.direction;
  return spec;
}
async function saveForm(ev) {
  ev.preventDefault();
  const spec = formSpec();
  const json = { "Content-Type": "application/json" };
  let r;
  if (regForm.mode === "new") {
    r = await api("/api/v1/registry/devices", { method: "POST", headers: json, body: JSON.stringify(spec) });
  } else if (regForm.mode === "adopt") {
    const { id, lifecycle, ...rest } = spec;
    r = await api(`/api/v1/registry/unregistered/${encodeURIComponent(regForm.id)}/adopt`, { method: "POST", headers: json, body: JSON.stringify(rest) });
  } else {
    r = await api(`/api/v1/registry/devices/${encodeURIComponent(regForm.id)}`, { method: "PUT", headers: json, body: JSON.stringify(spec) });
  }
  if (!r.ok) { await regProblems(r); return; }
  $("reg-form").hidden = true;
  $("reg-report").replaceChildren();
  regStatus(t("saved"));
  loadRegistry();
}
async function lifecycleCall(path, method, body) {
  const r = await api(path, { method, headers: { "Content-Type": "application/json" }, body: body ? JSON.stringify(body) : undefined });
  if (!r.ok) { await regProblems(r); return; }
  regStatus(t("saved"));
  loadRegistry();
}
function retire(id) {
  if (!window.confirm(t("retireConfirm"))) return;
  const reason = window.prompt(t("reasonPrompt"), "") || "";
  lifecycleCall(`/api/v1/registry/devices/${encodeURIComponent(id)}/retire`, "POST", { reason });
}
function maintenance(id) {
  const reason = window.prompt(t("reasonPrompt"), "");
  if (reason === null) return;
  const until = window.prompt(t("untilPrompt"), "");
  if (until === null) return;
  const body = { reason };
  if (until.trim()) body.until = new Date(until.trim().replace(" ", "T")).toISOString();
  lifecycleCall(`/api/v1/registry/devices/${encodeURIComponent(id)}/maintenance`, "POST", body);
}
function inService(id) {
  lifecycleCall(`/api/v1/registry/devices/${encodeURIComponent(id)}/maintenance`, "DELETE");
}
function picked(lon, lat) {
  picking = false;
  document.body.classList.remove("picking");
  $("rf-lon").value = lon.toFixed(5);
  $("rf-lat").value = lat.toFixed(5);
  $("registry-panel").hidden = false;
  regStatus("");
}
async function importFile() {
  const file = $("reg-import-file").files[0];
  if (!file) return;
  const geo = /\.(geo)?json$/i.test(file.name);
  const q = new URLSearchParams({ format: geo ? "geojson" : "csv" });
  if ($("reg-partial").checked) q.set("mode", "partial");
  regStatus(`${t("import")}…`);
  const r = await api(`/api/v1/registry/import?${q}`, { method: "POST", headers: { "Content-Type": geo ? "application/geo+json" : "text/csv" }, body: await file.text() });
  let report = null;
  try { report = await r.json(); } catch (e) { /* not JSON */ }
  if (!report || report.error) { await regProblems(new Response(JSON.stringify(report || {}), { status: r.status })); return; }
  regStatus(report.applied
    ? `${t("imported")}: ${report.added} ${t("added")}, ${report.changed} ${t("changedN")}, ${report.unchanged} ${t("unchanged")}`
    : t("notApplied"), !report.applied || report.problems.length > 0);
  const box = $("reg-report");
  box.replaceChildren();
  if (report.problems.length) {
    const table = el("table");
    table.append(...report.problems.slice(0, 500).map((p) => {
      const tr = el("tr");
      tr.append(el("td", null, `${t("row")} ${p.row}`), el("td", null, p.id), el("td", null, p.field), el("td", "problems", p.problem));
      return tr;
    }));
    box.append(table);
  }
  if (report.applied) loadRegistry();
}
async function download(format) {
  const r = await api(`/api/v1/registry/export?format=${format}`);
  if (!r.ok) { await regProblems(r); return; }
  const a = el("a");
  a.href = URL.createObjectURL(await r.blob());
  a.download = format === "csv" ? "devices.csv" : "devices.geojson";
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}
$("registry-open").addEventListener("click", () => { fillSelects(); $("registry-panel").hidden = false; regStatus(""); loadRegistry(); });
$("registry-close").addEventListener("click", () => { $("registry-panel").hidden = true; });
$("reg-q").addEventListener("input", scheduleRegistry);
$("reg-kind").addEventListener("change", loadRegistry);
$("reg-lifecycle").addEventListener("change", loadRegistry);
$("reg-new").addEventListener("click", () => openForm("new", null));
$("reg-form").addEventListener("submit", saveForm);
$("rf-cancel").addEventListener("click", () => { $("reg-form").hidden = true; });
$("rf-pick").addEventListener("click", () => {
  picking = true;
  document.body.classList.add("picking");
  $("registry-panel").hidden = true;
  $("offline-banner").hidden = true;
});
$("reg-import").addEventListener("click", importFile);
$("reg-export-csv").addEventListener("click", () => download("csv"));
$("reg-export-geojson").addEventListener("click", () => download("geojson"));

async function loadAreas() {
  const fc = await (await api("/api/v1/areas")).json();
  areas = fc.features.filter((f) => f.geometry).map((f) => {
    const polys = f.geometry.type === "Polygon" ? [f.geometry.coordinates] : f.geometry.coordinates;
    const rings = polys.map((p) => p[0]);
    let w = 180, s = 90, e = -180, n = -90, sx = 0, sy = 0, k = 0;
    for (const r of rings) for (const [x, y] of r) { w = Math.min(w, x); e = Math.max(e, x); s = Math.min(s, y); n = Math.max(n, y); sx += x; sy += y; k++; }
    const name = f.properties.name;
    return { id: f.properties.id, level: f.properties.level, name, short: name.replace(/^(Xã|Phường) /, ""), rings, bbox: [w, s, e, n], label: [sx / k, sy / k] };
  });
}

async function loadZones() {
  const fc = await (await api("/api/v1/zones")).json();
  zones = []; assets = [];
  for (const f of fc.features) {
    const p = f.properties, g = f.geometry;
    if (!g) continue;
    if (g.type === "Point") { assets.push({ id: p.id, kind: p.kind, name: p.name, pos: g.coordinates }); continue; }
    const z = { id: p.id, kind: p.kind, name: p.name };
    if (g.type === "Polygon") z.rings = g.coordinates;
    else if (g.type === "MultiPolygon") z.rings = g.coordinates.flat();
    else if (g.type === "LineString") z.lines = [g.coordinates];
    else if (g.type === "MultiLineString") z.lines = g.coordinates;
    else continue;
    zones.push(z);
  }
  dirty = true;
}

(async function main() {
  applyLarge(localStorage.getItem("ioc.large") === "1");
  resize();
  applyLang();
  await login();
  try { await loadAreas(); } catch (e) { console.error("areas", e); }
  try { await loadZones(); } catch (e) { console.error("zones", e); }
  fit();
  connect();
  requestAnimationFrame(frame);
})();
