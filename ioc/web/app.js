// Wall display of the IOC (Trung tâm điều hành thông minh): KPI tiles kept live over a WebSocket.
// Plain ES module, no build step, no external resources.
// URL options: ?lang=en (English labels), ?unit=<code> (show another unit than the province),
// ?token=<bearer token>: kept in this browser's localStorage and removed from the address bar;
// sent as an Authorization header to the API and as the first message on /ws (never in a URL
// that access logs would keep).

const params = new URLSearchParams(location.search);
const LANG = params.get("lang") === "en" ? "en" : "vi";
const TOKEN = rememberToken(params.get("token"));
const NUMBER_LOCALE = LANG === "en" ? "en-US" : "vi-VN";
const DATE_LOCALE = LANG === "en" ? "en-GB" : "vi-VN";

const CONNECTOR_POLL_MS = 10_000;
const KPI_REFRESH_MS = 5 * 60_000; // safety net in case a push is missed
const BACKOFF_START_MS = 1_000;
const BACKOFF_CAP_MS = 30_000;
const STABLE_CONNECTION_MS = 10_000;
const STALE_FACTOR = 3; // a source is stale after 3× its polling interval
const SYSTEM_TIMEOUT_MS = 5_000;
const FALLBACK_TIME_ZONE = "Asia/Ho_Chi_Minh";

const TEXT = {
  vi: {
    title: "Trung tâm điều hành thông minh",
    connecting: "Đang kết nối…",
    connected: "Trực tuyến",
    offline: "Mất kết nối",
    disconnected: "Mất kết nối — đang kết nối lại…",
    loading: "Đang tải dữ liệu…",
    noKpis: "Chưa có chỉ số nào cho đơn vị này",
    sources: "Nguồn dữ liệu",
    noSources: "Chưa cấu hình nguồn dữ liệu",
    dataAt: "dữ liệu lúc",
    noData: "chưa có dữ liệu",
    updated: "cập nhật",
    today: "Hôm nay",
    yesterday: "Hôm qua",
    day: (d) => `Ngày ${d}`,
    week: (d) => `Tuần từ ${d}`,
    month: (m, y) => `Tháng ${m}/${y}`,
    quarter: (q, y) => `Quý ${q}/${y}`,
    year: (y) => `Năm ${y}`,
    status: { ok: "Đạt", warn: "Cảnh báo", critical: "Nghiêm trọng", none: "", empty: "Chưa có số liệu" },
    health: { ok: "Bình thường", degraded: "Chập chờn", failing: "Lỗi", disabled: "Tạm dừng", stale: "Trễ dữ liệu" },
    thresholds: "Ngưỡng",
    warnShort: "cảnh báo",
    criticalShort: "nghiêm trọng",
    demoBadge: "DEMO · không xác thực",
  },
  en: {
    title: "Intelligent Operations Center",
    connecting: "Connecting…",
    connected: "Live",
    offline: "Offline",
    disconnected: "Disconnected — reconnecting…",
    loading: "Loading data…",
    noKpis: "No indicators for this unit yet",
    sources: "Data sources",
    noSources: "No data sources configured",
    dataAt: "data at",
    noData: "no data yet",
    updated: "updated",
    today: "Today",
    yesterday: "Yesterday",
    day: (d) => d,
    week: (d) => `Week of ${d}`,
    month: (m, y) =>
      new Intl.DateTimeFormat("en-GB", { month: "long", year: "numeric", timeZone: "UTC" }).format(
        Date.UTC(y, m - 1, 1),
      ),
    quarter: (q, y) => `Q${q} ${y}`,
    year: (y) => `Year ${y}`,
    status: { ok: "On target", warn: "Warning", critical: "Critical", none: "", empty: "No data" },
    health: { ok: "OK", degraded: "Degraded", failing: "Failing", disabled: "Disabled", stale: "Stale" },
    thresholds: "Thresholds",
    warnShort: "warn",
    criticalShort: "critical",
    demoBadge: "DEMO · no authentication",
  },
};
const T = TEXT[LANG];

// Unit-of-measure suffixes; anything not listed is shown verbatim.
const UOM_SUFFIX = {
  count: { vi: "", en: "" },
  ratio: { vi: "", en: "" },
  days: { vi: "ngày", en: "days" },
  hours: { vi: "giờ", en: "h" },
  min: { vi: "phút", en: "min" },
  minutes: { vi: "phút", en: "min" },
  points: { vi: "điểm", en: "pts" },
};

// What the denominator of a ratio counts, by KPI id prefix (longest prefix wins).
const DENOMINATOR_NOUN = {
  onestop: { vi: "hồ sơ", en: "dossiers" },
  feedback: { vi: "phản ánh", en: "reports" },
  "health.bed_occupancy": { vi: "giường", en: "beds" },
  health: { vi: "lượt", en: "cases" },
  education: { vi: "lượt học sinh", en: "pupil-days" },
};

const state = {
  unitCode: params.get("unit"),
  unitLoaded: false,
  tiles: new Map(), // topic -> { el, data, seq }
  socket: null,
  attempt: 0,
  openedAt: 0,
  everConnected: false,
  reconnectTimer: null,
  // From GET /api/v1/system: the province's time zone and the server clock minus the browser's.
  timeZone: FALLBACK_TIME_ZONE,
  clockOffsetMs: 0,
  systemLoaded: false,
};

const $ = (id) => document.getElementById(id);

// --------------------------------------------------------------------- time
// Every time and date shown is the server's clock, in the province's time zone: never the wall
// PC's clock or zone (the PC may run UTC, and a demo server may replay days in the past).

function serverNow() {
  return new Date(Date.now() + state.clockOffsetMs);
}

// An API timestamp as a Date; one without a zone designator is taken as UTC, not browser-local.
function parseInstant(text) {
  const hasZone = /(Z|[+-]\d{2}:?\d{2})$/i.test(text);
  return new Date(hasZone ? text : `${text}Z`);
}

function formatZoned(date, options, locale = DATE_LOCALE) {
  return new Intl.DateTimeFormat(locale, { ...options, timeZone: state.timeZone }).format(date);
}

// Year, month and day ("2026", "11", "23") of a moment in the province's time zone.
function zonedDateParts(date) {
  const options = { year: "numeric", month: "2-digit", day: "2-digit", timeZone: state.timeZone };
  const parts = new Intl.DateTimeFormat("en-US", options).formatToParts(date);
  const part = (type) => parts.find((p) => p.type === type).value;
  return { year: part("year"), month: part("month"), day: part("day") };
}

function zonedIsoDate(date) {
  const { year, month, day } = zonedDateParts(date);
  return `${year}-${month}-${day}`;
}

// Calendar arithmetic on "YYYY-MM-DD", independent of any time zone.
function shiftIsoDate(iso, days) {
  const [y, m, d] = iso.split("-").map(Number);
  return new Date(Date.UTC(y, m - 1, d + days)).toISOString().slice(0, 10);
}

function isValidTimeZone(zone) {
  try {
    new Intl.DateTimeFormat("en-US", { timeZone: zone });
    return true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------- formatting

function formatNumber(value, { decimals }) {
  return new Intl.NumberFormat(NUMBER_LOCALE, {
    minimumFractionDigits: decimals,
    maximumFractionDigits: decimals,
  }).format(value);
}

function isCount(uom) {
  return uom === "count" || uom === "" || uom == null;
}

// A measure split into its number and its unit suffix, so the suffix can be drawn smaller.
function measureParts(value, uom, { decimals } = {}) {
  if (value == null || Number.isNaN(value)) return { number: "—", suffix: "" };
  if (uom === "%") return { number: formatNumber(value, { decimals: decimals ?? 1 }), suffix: "%" };
  if (isCount(uom)) return { number: formatNumber(Math.round(value), { decimals: 0 }), suffix: "" };
  const suffix = UOM_SUFFIX[uom]?.[LANG] ?? uom;
  const places = decimals ?? (Number.isInteger(value) ? 0 : 1);
  return { number: formatNumber(value, { decimals: places }), suffix: suffix ? ` ${suffix}` : "" };
}

function formatMeasure(value, uom, options) {
  const { number, suffix } = measureParts(value, uom, options);
  return number + suffix;
}

function shortDate(iso) {
  const [y, m, d] = iso.split("-");
  return `${d}/${m}/${y}`;
}

function formatPeriod({ period_kind: kind, period_start: start }) {
  if (!start) return "";
  const [y, m] = start.split("-").map(Number);
  switch (kind) {
    case "day": {
      const today = zonedIsoDate(serverNow());
      if (start === today) return T.today;
      if (start === shiftIsoDate(today, -1)) return T.yesterday;
      return T.day(shortDate(start));
    }
    case "week":
      return T.week(shortDate(start));
    case "month":
      return T.month(m, y);
    case "quarter":
      return T.quarter(Math.floor((m - 1) / 3) + 1, y);
    case "year":
      return T.year(y);
    default:
      return shortDate(start);
  }
}

function formatClockTime(date, { seconds }) {
  const opts = { hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
  if (seconds) opts.second = "2-digit";
  return formatZoned(date, opts);
}

function formatLongDate(date) {
  const weekday = formatZoned(date, { weekday: "long" });
  const label = weekday.charAt(0).toUpperCase() + weekday.slice(1);
  const { year, month, day } = zonedDateParts(date);
  return `${label}, ${day}/${month}/${year}`;
}

function denominatorNoun(kpi) {
  const prefix = Object.keys(DENOMINATOR_NOUN)
    .filter((p) => kpi.startsWith(p))
    .sort((a, b) => b.length - a.length)[0];
  return prefix ? DENOMINATOR_NOUN[prefix][LANG] : "";
}

function formatRatio(data) {
  if (data.unit_of_measure !== "%" || data.denominator == null) return "";
  const num = formatNumber(data.numerator ?? 0, { decimals: 0 });
  const den = formatNumber(data.denominator, { decimals: 0 });
  const noun = denominatorNoun(data.kpi);
  return `${num} / ${den}${noun ? ` ${noun}` : ""}`;
}

// ------------------------------------------------------------------- status

function isWorse(direction, value, threshold) {
  if (direction === "up") return value < threshold;
  return value > threshold; // "down" and "band": higher is worse
}

function tileStatus({ value, warn, critical, good_direction: direction }) {
  if (value == null) return "empty";
  if (!direction || (warn == null && critical == null)) return "none";
  if (critical != null && isWorse(direction, value, critical)) return "critical";
  if (warn != null && isWorse(direction, value, warn)) return "warn";
  return "ok";
}

function formatThresholds({ good_direction: direction, warn, critical, unit_of_measure: uom }) {
  if (!direction) return "";
  const op = direction === "up" ? "<" : ">";
  const format = (v) => formatMeasure(v, uom, { decimals: Number.isInteger(v) ? 0 : 1 });
  const parts = [];
  if (warn != null) parts.push(`${T.warnShort} ${op} ${format(warn)}`);
  if (critical != null) parts.push(`${T.criticalShort} ${op} ${format(critical)}`);
  return parts.length ? `${T.thresholds}: ${parts.join(" · ")}` : "";
}

// -------------------------------------------------------------------- tiles

function topicOf(data) {
  return `kpi:${data.kpi}:${data.unit}`;
}

function createTile(topic) {
  const el = $("tile-template").content.firstElementChild.cloneNode(true);
  el.dataset.topic = topic;
  el.querySelector(".tile-value").addEventListener("animationend", (event) => {
    event.currentTarget.classList.remove("flash");
  });
  const tile = { el, data: null, seq: 0 };
  state.tiles.set(topic, tile);
  return tile;
}

function renderTile(tile, data) {
  const { el } = tile;
  const previous = tile.data;
  tile.data = data;
  const status = tileStatus(data);
  el.dataset.kpi = data.kpi;
  el.dataset.unit = data.unit;
  el.dataset.status = status;
  el.querySelector(".tile-name").textContent = LANG === "en" ? data.name_en || data.name_vi : data.name_vi;
  el.querySelector(".tile-period").textContent = formatPeriod(data);
  const valueEl = el.querySelector(".tile-value");
  renderValue(valueEl, data);
  el.querySelector(".tile-status").textContent = T.status[status];
  el.querySelector(".tile-ratio").textContent = formatRatio(data);
  el.querySelector(".tile-threshold").textContent = formatThresholds(data);
  el.querySelector(".tile-updated").textContent = data.computed_at
    ? `${T.updated} ${formatClockTime(parseInstant(data.computed_at), { seconds: false })}`
    : "";
  if (previous && previous.value !== data.value) flash(valueEl);
}

function renderValue(valueEl, data) {
  const { number, suffix } = measureParts(data.value, data.unit_of_measure);
  const numberEl = document.createElement("span");
  numberEl.className = "value-number";
  numberEl.textContent = number;
  const suffixEl = document.createElement("span");
  suffixEl.className = "value-suffix";
  suffixEl.textContent = suffix;
  valueEl.replaceChildren(numberEl, suffixEl);
  valueEl.dataset.value = data.value ?? "";
  fitValue(valueEl);
}

// Shrink a value that is wider than its tile (long numbers, long unit suffixes).
function fitValue(valueEl) {
  valueEl.style.setProperty("--fit", "1");
  const available = valueEl.parentElement.clientWidth;
  const needed = valueEl.scrollWidth;
  if (available > 0 && needed > available) {
    valueEl.style.setProperty("--fit", String((available / needed) * 0.97));
  }
}

function flash(valueEl) {
  valueEl.classList.remove("flash");
  void valueEl.offsetWidth; // restart the animation if it is already running
  valueEl.classList.add("flash");
}

function applyKpi(data, { seq } = {}) {
  const topic = topicOf(data);
  const tile = state.tiles.get(topic) ?? createTile(topic);
  if (!tile.el.isConnected) {
    $("tiles").append(tile.el);
    layoutTiles();
  }
  if (seq != null) tile.seq = seq;
  renderTile(tile, data);
}

// Replace the tile set with a REST list, keeping its order and the existing elements.
function syncTiles(list) {
  const container = $("tiles");
  const wanted = new Set(list.map(topicOf));
  for (const [topic, tile] of state.tiles) {
    if (!wanted.has(topic)) {
      tile.el.remove();
      state.tiles.delete(topic);
    }
  }
  for (const data of list) {
    const topic = topicOf(data);
    const tile = state.tiles.get(topic) ?? createTile(topic);
    container.append(tile.el); // append moves existing nodes into list order
    renderTile(tile, data);
  }
  $("tiles-empty").textContent = T.noKpis;
  $("tiles-empty").hidden = list.length > 0;
  layoutTiles();
}

// Choose the column count whose tiles come closest to a wide landscape shape.
function layoutTiles() {
  const container = $("tiles");
  const count = state.tiles.size;
  if (count === 0) return;
  const { width, height } = container.getBoundingClientRect();
  const targetAspect = 1.6;
  let best = { cols: 1, score: Infinity };
  for (let cols = 1; cols <= count; cols += 1) {
    const rows = Math.ceil(count / cols);
    const aspect = width / cols / (height / rows);
    const emptyCells = cols * rows - count;
    const score = Math.abs(Math.log(aspect / targetAspect)) + 0.35 * emptyCells;
    if (score < best.score) best = { cols, score };
  }
  container.style.setProperty("--cols", best.cols);
  container.style.setProperty("--rows", Math.ceil(count / best.cols));
  for (const tile of state.tiles.values()) fitValue(tile.el.querySelector(".tile-value"));
}

function rerenderAllTiles() {
  for (const tile of state.tiles.values()) if (tile.data) renderTile(tile, tile.data);
}

// ---------------------------------------------------------------------- API

function rememberToken(fromUrl) {
  const key = "ioc.token";
  try {
    if (fromUrl) {
      localStorage.setItem(key, fromUrl);
      const url = new URL(location.href);
      url.searchParams.delete("token");
      history.replaceState(null, "", url);
      return fromUrl;
    }
    return localStorage.getItem(key);
  } catch {
    return fromUrl; // storage disabled: keep the token for this page only
  }
}

async function api(path, { timeoutMs } = {}) {
  const headers = { Accept: "application/json" };
  if (TOKEN) headers.Authorization = `Bearer ${TOKEN}`;
  const signal = timeoutMs ? AbortSignal.timeout(timeoutMs) : undefined;
  const response = await fetch(path, { headers, cache: "no-store", signal });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

// Time zone, clock offset and demo flag. The offset is taken against the midpoint of the round trip.
async function loadSystem() {
  const sentAt = Date.now();
  const system = await api("/api/v1/system", { timeoutMs: SYSTEM_TIMEOUT_MS });
  const receivedAt = Date.now();
  const serverMs = parseInstant(system.now).getTime();
  if (Number.isNaN(serverMs)) throw new Error(`/api/v1/system: unreadable now ${system.now}`);
  state.clockOffsetMs = serverMs - (sentAt + receivedAt) / 2;
  state.timeZone = isValidTimeZone(system.timezone) ? system.timezone : FALLBACK_TIME_ZONE;
  state.systemLoaded = true;
  $("demo-badge").hidden = system.demo !== true;
}

// On failure the last known values stay; before any success that is the fallback (Vietnam, the
// browser's clock, no demo badge).
async function refreshSystem() {
  try {
    await loadSystem();
  } catch (error) {
    console.warn(state.systemLoaded ? "System refresh failed" : "System info unavailable", error);
  }
}

// Everything fetched over REST: server clock first, so the tiles' periods are judged with it.
async function refreshAll() {
  await refreshSystem();
  return refreshKpis();
}

async function loadUnit() {
  const root = await api("/api/v1/units");
  const code = state.unitCode ?? root.code;
  const unit = findUnit(root, code) ?? root;
  state.unitCode = unit.code;
  state.unitLoaded = true;
  const label = unit === root ? unit.name : `${unit.name} · ${root.name}`;
  $("unit-name").textContent = label;
  document.title = `${T.title} — ${label}`;
}

function findUnit(node, code) {
  if (!node) return null;
  if (node.code === code) return node;
  for (const child of node.children ?? []) {
    const found = findUnit(child, code);
    if (found) return found;
  }
  return null;
}

// The wall's default tiles, two per domain; `?kpis=a,b,c` chooses others.
const DEFAULT_KPIS = [
  "onestop.on_time_rate",
  "onestop.overdue_open",
  "feedback.on_time_rate",
  "feedback.overdue_open",
  "health.bed_occupancy",
  "health.inpatients",
  "education.attendance_rate",
  "education.enrolment",
];
const WALL_KPIS = (params.get("kpis") || DEFAULT_KPIS.join(",")).split(",").filter(Boolean);

async function loadKpis() {
  if (!state.unitLoaded) await loadUnit();
  const query = new URLSearchParams({ unit: state.unitCode });
  for (const kpi of WALL_KPIS) query.append("kpi", kpi);
  const list = await api(`/api/v1/kpis?${query}`);
  syncTiles(list);
}

async function refreshKpis() {
  try {
    await loadKpis();
    return true;
  } catch (error) {
    console.warn("KPI refresh failed", error);
    return false;
  }
}

// ---------------------------------------------------------------- live push

function socketUrl() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${location.host}/ws`;
}

function connect() {
  clearTimeout(state.reconnectTimer);
  let socket;
  try {
    socket = new WebSocket(socketUrl());
  } catch (error) {
    console.error("WebSocket could not be created", error);
    scheduleReconnect();
    return;
  }
  state.socket = socket;
  socket.addEventListener("open", () => onOpen(socket));
  socket.addEventListener("message", (event) => onMessage(socket, event));
  socket.addEventListener("close", () => onClose(socket));
  socket.addEventListener("error", () => socket.close());
}

async function onOpen(socket) {
  // Browsers cannot set headers on a WebSocket: the token goes in the first message.
  if (TOKEN) socket.send(JSON.stringify({ type: "auth", token: TOKEN }));
  state.openedAt = Date.now();
  const reconnect = state.everConnected;
  state.everConnected = true;
  setConnected(true);
  // On a reconnect (or after a failed first load) the REST state is refetched before subscribing,
  // so snapshots that follow always win over the older REST values.
  if (reconnect || state.tiles.size === 0) await refreshAll();
  if (socket !== state.socket || socket.readyState !== WebSocket.OPEN) return;
  for (const tile of state.tiles.values()) tile.seq = 0;
  const topics = [...state.tiles.keys()];
  if (topics.length) socket.send(JSON.stringify({ type: "subscribe", topics }));
}

function onMessage(socket, event) {
  let message;
  try {
    message = JSON.parse(event.data);
  } catch {
    console.error("Unreadable WebSocket message", event.data);
    return;
  }
  switch (message.type) {
    case "snapshot":
    case "update":
      applyPush(message);
      break;
    case "ping":
      socket.send(JSON.stringify({ type: "pong" }));
      break;
    case "error":
      console.error("IOC server error:", message.message);
      break;
    default:
      break; // topics this page does not show (incidents, connectors…) are ignored
  }
}

function applyPush({ type, topic, seq, data }) {
  if (!data || !topic?.startsWith("kpi:")) return;
  const tile = state.tiles.get(topic);
  // Updates carry a per-topic increasing seq: drop any that arrive out of order.
  if (type === "update" && tile && seq != null && seq <= tile.seq) return;
  applyKpi(data, { seq });
}

function onClose(socket) {
  if (socket !== state.socket) return;
  state.socket = null;
  // Back off from scratch only if the connection had been healthy for a while; a server that
  // accepts and drops at once must not be hammered every second.
  if (state.openedAt && Date.now() - state.openedAt > STABLE_CONNECTION_MS) state.attempt = 0;
  state.openedAt = 0;
  setConnected(false);
  scheduleReconnect();
}

function scheduleReconnect() {
  const base = Math.min(BACKOFF_CAP_MS, BACKOFF_START_MS * 2 ** state.attempt);
  const delay = Math.min(BACKOFF_CAP_MS, base * (0.85 + Math.random() * 0.3)); // jitter: walls don't reconnect in lockstep
  state.attempt += 1;
  clearTimeout(state.reconnectTimer);
  state.reconnectTimer = setTimeout(connect, delay);
}

function setConnected(connected) {
  const indicator = $("connection");
  indicator.dataset.state = connected ? "connected" : "disconnected";
  $("connection-label").textContent = connected ? T.connected : T.offline;
  $("banner").hidden = connected;
  document.body.classList.toggle("is-offline", !connected);
}

// ------------------------------------------------------------- data sources

function sourceHealth(source, now) {
  if (!source.enabled || source.health === "disabled") return "disabled";
  if (source.health === "failing") return "failing";
  if (!source.last_success_at) return "stale";
  if (typeof source.stale === "boolean") {
    // The server judges staleness on its real-time clock (right even in a demo replay).
    if (source.stale) return "stale";
  } else {
    const ageMs = now - parseInstant(source.last_success_at).getTime();
    if (ageMs > STALE_FACTOR * (source.interval_seconds ?? 60) * 1000) return "stale";
  }
  return source.health === "degraded" ? "degraded" : "ok";
}

function renderSource(source, now) {
  const health = sourceHealth(source, now);
  const item = document.createElement("li");
  item.className = "source";
  item.dataset.health = health;
  item.dataset.connector = source.name;
  const freshness = source.last_success_at
    ? `${T.dataAt} ${formatClockTime(parseInstant(source.last_success_at), { seconds: false })}`
    : T.noData;
  item.title = source.last_error ? `${T.health[health]}: ${source.last_error}` : T.health[health];
  item.innerHTML = `<span class="source-dot" aria-hidden="true"></span>
    <span class="source-title"></span><span class="source-time"></span>`;
  item.querySelector(".source-title").textContent = source.title || source.name;
  item.querySelector(".source-time").textContent =
    health === "ok" ? freshness : `${freshness} · ${T.health[health]}`;
  return item;
}

async function pollConnectors() {
  try {
    const sources = await api("/api/v1/connectors");
    const now = serverNow().getTime();
    const list = $("sources");
    if (sources.length === 0) {
      const empty = document.createElement("li");
      empty.className = "source source-empty";
      empty.textContent = T.noSources;
      list.replaceChildren(empty);
    } else {
      list.replaceChildren(...sources.map((source) => renderSource(source, now)));
    }
  } catch (error) {
    console.warn("Connector poll failed", error); // the list keeps its last known state
  } finally {
    setTimeout(pollConnectors, CONNECTOR_POLL_MS);
  }
}

// -------------------------------------------------------------------- clock

function startClock() {
  let shownDate = "";
  const tick = () => {
    const now = serverNow();
    $("clock").textContent = formatClockTime(now, { seconds: true });
    const dateText = formatLongDate(now);
    if (dateText !== shownDate) {
      if (shownDate) rerenderAllTiles(); // "Hôm nay" moves on at midnight
      shownDate = dateText;
      $("date").textContent = dateText;
    }
    setTimeout(tick, 1000 - (serverNow().getTime() % 1000) + 5); // on the server's second
  };
  tick();
}

// --------------------------------------------------------------------- boot

function applyStaticText() {
  document.documentElement.lang = LANG;
  for (const el of document.querySelectorAll("[data-i18n]")) {
    const text = T[el.dataset.i18n];
    if (typeof text === "string") el.textContent = text;
  }
  document.title = T.title;
}

async function main() {
  applyStaticText();
  await refreshSystem(); // before anything shows a time
  startClock();
  new ResizeObserver(() => layoutTiles()).observe($("tiles"));
  pollConnectors();
  await refreshKpis();
  connect();
  setInterval(() => {
    if (state.socket?.readyState === WebSocket.OPEN) refreshAll();
  }, KPI_REFRESH_MS);
}

main();
