// Wall display of the IOC (Trung tâm điều hành thông minh): a wall layout's tiles kept live over
// a WebSocket. Plain ES module, no build step, no external resources.
// URL options: ?layout=<id> (a wall layout; the default layout otherwise), ?lang=en (English
// labels), ?token=<bearer token>: kept in this browser's localStorage and removed from the
// address bar; sent as an Authorization header to the API and as the first message on /ws
// (never in a URL that access logs would keep).

const params = new URLSearchParams(location.search);
const LANG = params.get("lang") === "en" ? "en" : "vi";
const TOKEN = rememberToken(params.get("token"));
const NUMBER_LOCALE = LANG === "en" ? "en-US" : "vi-VN";
const DATE_LOCALE = LANG === "en" ? "en-GB" : "vi-VN";

const BACKOFF_START_MS = 1_000;
const BACKOFF_CAP_MS = 30_000;
const STABLE_CONNECTION_MS = 10_000;
const CLIENT_PING_MS = 15_000; // we ping the server…
const SILENCE_LIMIT_MS = 50_000; // …and give up on a socket that says nothing for this long
const FRESHNESS_CHECK_MS = 5_000;
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
    noLayout: "Không tìm thấy bố cục màn hình",
    emptyLayout: "Bố cục này chưa có ô nào",
    sources: "Nguồn dữ liệu",
    noSources: "Chưa cấu hình nguồn dữ liệu",
    dataAt: "dữ liệu lúc",
    noData: "chưa có dữ liệu",
    updated: "cập nhật",
    today: "Hôm nay",
    yesterday: "Hôm qua",
    days14: "14 ngày",
    day: (d) => `Ngày ${d}`,
    week: (d) => `Tuần từ ${d}`,
    month: (m, y) => `Tháng ${m}/${y}`,
    quarter: (q, y) => `Quý ${q}/${y}`,
    year: (y) => `Năm ${y}`,
    status: { ok: "Đạt", warn: "Cảnh báo", critical: "Nghiêm trọng", none: "", empty: "Chưa có số liệu" },
    health: { ok: "Bình thường", degraded: "Chập chờn", failing: "Lỗi", disabled: "Tạm dừng", stale: "Trễ dữ liệu" },
    severity: { warn: "Cảnh báo", critical: "Nghiêm trọng" },
    thresholds: "Ngưỡng",
    warnShort: "cảnh báo",
    criticalShort: "nghiêm trọng",
    demoBadge: "DEMO · không xác thực",
    noIncidents: "Không có sự cố đang mở",
    incidentsUnavailable: "Chưa kết nối dữ liệu sự cố",
    openIncidents: (n) => `${n} sự cố đang mở`,
    since: "từ",
    worstOf: (n, total) => `${n} đơn vị thấp nhất / ${total}`,
    noBars: "Chưa có số liệu theo đơn vị",
  },
  en: {
    title: "Intelligent Operations Center",
    connecting: "Connecting…",
    connected: "Live",
    offline: "Offline",
    disconnected: "Disconnected — reconnecting…",
    loading: "Loading data…",
    noLayout: "Wall layout not found",
    emptyLayout: "This layout has no tiles yet",
    sources: "Data sources",
    noSources: "No data sources configured",
    dataAt: "data at",
    noData: "no data yet",
    updated: "updated",
    today: "Today",
    yesterday: "Yesterday",
    days14: "14 days",
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
    severity: { warn: "Warning", critical: "Critical" },
    thresholds: "Thresholds",
    warnShort: "warn",
    criticalShort: "critical",
    demoBadge: "DEMO · no authentication",
    noIncidents: "No open incidents",
    incidentsUnavailable: "Incident feed not connected",
    openIncidents: (n) => `${n} open incident${n === 1 ? "" : "s"}`,
    since: "since",
    worstOf: (n, total) => `worst ${n} of ${total} units`,
    noBars: "No values by unit yet",
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
  layoutId: params.get("layout"),
  layout: null, // the last layout message's data
  tiles: new Map(), // tile id -> { el, data }
  seq: new Map(), // topic -> last seq applied
  epoch: null, // the server hub's epoch those seqs belong to
  sources: [], // the connectors topic's data, with the local time it arrived
  sourcesReceivedAt: 0,
  socket: null,
  attempt: 0,
  openedAt: 0,
  lastHeardAt: 0,
  reconnectTimer: null,
  // From GET /api/v1/system: the province's time zone and the server clock minus the browser's.
  timeZone: FALLBACK_TIME_ZONE,
  clockOffsetMs: 0,
  systemLoaded: false,
};

const $ = (id) => document.getElementById(id);
const SVG_NS = "http://www.w3.org/2000/svg";

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

function formatThresholds({ good_direction: direction, warn, critical, unit_of_measure: uom }) {
  if (!direction || direction === "none") return "";
  const op = direction === "up" ? "<" : ">";
  const format = (v) => formatMeasure(v, uom, { decimals: Number.isInteger(v) ? 0 : 1 });
  const parts = [];
  if (warn != null) parts.push(`${T.warnShort} ${op} ${format(warn)}`);
  if (critical != null) parts.push(`${T.criticalShort} ${op} ${format(critical)}`);
  return parts.length ? `${T.thresholds}: ${parts.join(" · ")}` : "";
}

function svg(tag, attributes = {}) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attributes)) el.setAttribute(key, String(value));
  return el;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = text;
  return node;
}

// -------------------------------------------------------------------- tiles

function tileTitle(tile) {
  return LANG === "en" ? tile.title_en || tile.title_vi : tile.title_vi;
}

function createTile(tile) {
  const node = $("tile-template").content.firstElementChild.cloneNode(true);
  node.dataset.tileId = tile.id;
  const entry = { el: node, data: null };
  state.tiles.set(tile.id, entry);
  return entry;
}

// Draw a whole layout message: place every tile on the grid, then fill it.
function applyLayout(layout) {
  state.layout = layout;
  const container = $("tiles");
  if (layout.deleted) {
    showEmpty(T.noLayout);
    return;
  }
  container.style.setProperty("--cols", layout.columns);
  container.style.setProperty("--rows", layout.rows);
  const name = LANG === "en" ? layout.name_en || layout.name_vi : layout.name_vi;
  $("unit-name").textContent = layout.unit_name;
  $("layout-name").textContent = name;
  document.title = `${T.title} — ${layout.unit_name}`;
  const wanted = new Set(layout.tiles.map((t) => t.id));
  for (const [id, entry] of state.tiles) {
    if (!wanted.has(id)) {
      entry.el.remove();
      state.tiles.delete(id);
    }
  }
  for (const tile of layout.tiles) {
    const entry = state.tiles.get(tile.id) ?? createTile(tile);
    if (entry.el.parentElement !== container) container.append(entry.el);
    entry.el.style.gridColumn = `${tile.x + 1} / span ${tile.w}`;
    entry.el.style.gridRow = `${tile.y + 1} / span ${tile.h}`;
    renderTile(entry, tile);
  }
  $("tiles-empty").textContent = T.emptyLayout;
  $("tiles-empty").hidden = layout.tiles.length > 0;
}

function showEmpty(text) {
  for (const entry of state.tiles.values()) entry.el.remove();
  state.tiles.clear();
  $("tiles-empty").textContent = text;
  $("tiles-empty").hidden = false;
}

function renderTile(entry, tile) {
  const previous = entry.data;
  entry.data = tile;
  const node = entry.el;
  const data = { kpi: tile.kpi ?? "", ...(tile.data ?? {}) };
  node.dataset.visualisation = tile.visualisation;
  node.dataset.kpi = tile.kpi ?? "";
  node.dataset.unit = tile.unit;
  node.dataset.status = data.status ?? "none";
  node.querySelector(".tile-name").textContent = tileTitle(tile);
  const body = node.querySelector(".tile-body");
  body.className = `tile-body body-${tile.visualisation}`;
  const period = node.querySelector(".tile-period");
  const sub = node.querySelector(".tile-sub");
  const statusEl = node.querySelector(".tile-status");
  const updated = node.querySelector(".tile-updated");
  period.textContent = data.period_kind ? formatPeriod(data) : "";
  sub.textContent = tile.kpi ? subtitle(tile) : tile.unit_name;
  statusEl.textContent = tile.kpi ? T.status[data.status] ?? "" : "";
  updated.textContent = data.computed_at
    ? `${T.updated} ${formatClockTime(parseInstant(data.computed_at), { seconds: false })}`
    : "";
  switch (tile.visualisation) {
    case "number":
      drawNumber(body, data);
      break;
    case "gauge":
      drawGauge(body, data);
      break;
    case "sparkline":
      drawSparkline(body, data);
      break;
    case "bars":
      drawBars(body, data, tile);
      statusEl.textContent = ""; // each bar carries its own colour
      period.textContent = data.bars?.rows?.length
        ? T.worstOf(data.bars.rows.length, data.bars.parts)
        : period.textContent;
      break;
    case "incidents":
      drawIncidents(body, data);
      period.textContent = data.available ? T.openIncidents(data.open ?? 0) : "";
      node.dataset.status = data.items?.some((i) => i.severity === "critical")
        ? "critical"
        : data.items?.length
          ? "warn"
          : "none";
      break;
    case "freshness":
      // The connectors topic is the fresher copy (and its arrival time judges staleness).
      drawSources(body, state.sourcesReceivedAt ? state.sources : [], "tile-sources");
      break;
    default:
      body.replaceChildren(el("p", "tile-note", tile.visualisation));
  }
  const value = body.querySelector(".tile-value");
  if (value && previous && previous.data?.value !== data.value) flash(value);
}

function subtitle(tile) {
  const thresholds = formatThresholds(tile.data ?? {});
  const unit = state.layout && tile.unit !== state.layout.unit ? tile.unit_name : "";
  return [unit, thresholds].filter(Boolean).join(" · ");
}

function valueNode(data, className = "tile-value") {
  const { number, suffix } = measureParts(data.value, data.unit_of_measure);
  const node = el("span", className);
  node.append(el("span", "value-number", number), el("span", "value-suffix", suffix));
  node.dataset.value = data.value ?? "";
  return node;
}

function drawNumber(body, data) {
  const value = valueNode(data);
  body.replaceChildren(value, el("span", "tile-ratio", formatRatio(data)));
  fitValue(value);
}

// A half dial: faint threshold zones, the value's arc in its status colour, the value below.
function drawGauge(body, data) {
  const { min = 0, max = 100 } = data.range ?? {};
  const share = (v) => Math.max(0, Math.min(1, ((v ?? min) - min) / (max - min || 1)));
  const cx = 100;
  const cy = 100;
  const r = 80;
  const point = (s) => {
    const angle = Math.PI * (1 - s);
    return [cx + r * Math.cos(angle), cy - r * Math.sin(angle)];
  };
  const arc = (from, to) => {
    const [x1, y1] = point(from);
    const [x2, y2] = point(to);
    return `M ${x1.toFixed(2)} ${y1.toFixed(2)} A ${r} ${r} 0 0 1 ${x2.toFixed(2)} ${y2.toFixed(2)}`;
  };
  const chart = svg("svg", { viewBox: "0 0 200 112", class: "gauge", "aria-hidden": "true" });
  chart.append(svg("path", { d: arc(0, 1), class: "gauge-track" }));
  const { warn, critical, good_direction: direction } = data;
  if (direction === "up" || direction === "down" || direction === "band") {
    const zones = [];
    if (critical != null) zones.push(["critical", critical]);
    if (warn != null) zones.push(["warn", warn]);
    for (const [kind, limit] of zones) {
      const s = share(limit);
      const [from, to] = direction === "up" ? [0, s] : [s, 1];
      if (to > from) chart.append(svg("path", { d: arc(from, to), class: `gauge-zone zone-${kind}` }));
    }
  }
  if (data.value != null) {
    const s = share(data.value);
    if (s > 0) chart.append(svg("path", { d: arc(0, Math.max(s, 0.005)), class: "gauge-value" }));
  }
  const value = valueNode(data, "tile-value gauge-number");
  const wrap = el("div", "gauge-wrap");
  wrap.append(chart, value);
  body.replaceChildren(wrap, el("span", "tile-ratio", formatRatio(data)));
}

// Today's line against yesterday's: by hour for stocks, by day (last 14) for the others.
function drawSparkline(body, data) {
  const chart = svg("svg", {
    viewBox: "0 0 240 100",
    preserveAspectRatio: "none",
    class: "spark",
    "aria-hidden": "true",
  });
  let series;
  let xMax;
  let todayValue;
  let yesterdayValue;
  if (data.mode === "hourly") {
    series = [
      { points: (data.yesterday ?? []).map((p) => [p.hour, p.value]), cls: "spark-yesterday" },
      { points: (data.today ?? []).map((p) => [p.hour, p.value]), cls: "spark-today" },
    ];
    xMax = 24;
    todayValue = data.value;
    yesterdayValue = data.yesterday?.at(-1)?.value;
  } else {
    const days = data.days ?? [];
    series = [{ points: days.map((d, i) => [i, d.value]), cls: "spark-today" }];
    xMax = Math.max(1, days.length - 1);
    todayValue = data.today_value;
    yesterdayValue = data.yesterday_value;
  }
  // The scale hugs the data (a backlog of 330 moving by ten must not look flat), with a margin.
  const values = series.flatMap((s) => s.points.map((p) => p[1])).filter((v) => v != null);
  let top = values.length ? Math.max(...values) : 1;
  let low = values.length ? Math.min(...values) : 0;
  const margin = (top - low) * 0.15 || Math.max(Math.abs(top) * 0.1, 1);
  top += margin;
  low = Math.max(low - margin, Math.min(low, 0));
  const y = (v) => 96 - ((v - low) / (top - low || 1)) * 88;
  const x = (h) => (h / xMax) * 240;
  for (const { points, cls } of series) {
    const known = points.filter((p) => p[1] != null);
    if (known.length === 0) continue;
    const line = known.map(([h, v]) => `${x(h).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    if (cls === "spark-today") {
      const area = `${x(known[0][0]).toFixed(1)},100 ${line} ${x(known.at(-1)[0]).toFixed(1)},100`;
      chart.append(svg("polygon", { points: area, class: "spark-area" }));
    }
    chart.append(svg("polyline", { points: line, class: cls, "vector-effect": "non-scaling-stroke" }));
  }
  if (data.warn != null && data.warn > low && data.warn < top) {
    const yw = y(data.warn).toFixed(1);
    chart.append(svg("line", { x1: 0, x2: 240, y1: yw, y2: yw, class: "spark-limit", "vector-effect": "non-scaling-stroke" }));
  }
  const head = el("div", "spark-head");
  const value = valueNode({ ...data, value: todayValue }, "tile-value spark-number");
  const legend = el("div", "spark-legend");
  const today = el("span", "legend-today", `${T.today} ${formatMeasure(todayValue, data.unit_of_measure)}`);
  const yesterday = el(
    "span",
    "legend-yesterday",
    data.mode === "hourly"
      ? `${T.yesterday} ${formatMeasure(yesterdayValue, data.unit_of_measure)}`
      : `${T.yesterday} ${formatMeasure(yesterdayValue, data.unit_of_measure)} · ${T.days14}`,
  );
  legend.append(today, yesterday);
  head.append(value, legend);
  body.replaceChildren(head, chart);
}

function drawBars(body, data) {
  const rows = data.bars?.rows ?? [];
  if (rows.length === 0) {
    body.replaceChildren(el("p", "tile-note", T.noBars));
    return;
  }
  const scale = data.unit_of_measure === "%" ? 100 : Math.max(...rows.map((r) => r.value ?? 0), 1);
  const list = el("ol", "bars");
  for (const row of rows) {
    const item = el("li", "bar");
    item.dataset.status = row.status;
    item.dataset.unit = row.unit;
    const track = el("span", "bar-track");
    const fill = el("span", "bar-fill");
    fill.style.width = `${Math.max(0, Math.min(100, (100 * (row.value ?? 0)) / scale)).toFixed(1)}%`;
    track.append(fill);
    item.append(
      el("span", "bar-name", row.name ?? row.unit),
      track,
      el("span", "bar-value", formatMeasure(row.value, data.unit_of_measure)),
    );
    list.append(item);
  }
  body.replaceChildren(list);
}

function drawIncidents(body, data) {
  if (!data.available) {
    body.replaceChildren(el("p", "tile-note", T.incidentsUnavailable));
    return;
  }
  const items = data.items ?? [];
  if (items.length === 0) {
    body.replaceChildren(el("p", "tile-note tile-note-ok", T.noIncidents));
    return;
  }
  const list = el("ul", "incidents");
  for (const incident of items) {
    const item = el("li", "incident");
    item.dataset.severity = incident.severity;
    item.dataset.incident = incident.id;
    const opened = incident.opened_at
      ? `${T.since} ${formatClockTime(parseInstant(incident.opened_at), { seconds: false })}`
      : "";
    item.append(
      el("span", "incident-badge", T.severity[incident.severity] ?? incident.severity),
      el("span", "incident-title", incident.title),
      el("span", "incident-unit", incident.unit_name ?? incident.unit_code ?? ""),
      el("span", "incident-time", opened),
    );
    list.append(item);
  }
  body.replaceChildren(list);
}

// The ticker: when the incidents do not all fit, the first one moves to the end every few seconds.
function tickIncidents() {
  for (const list of document.querySelectorAll(".incidents")) {
    if (list.scrollHeight > list.clientHeight + 2 && list.children.length > 1) {
      list.append(list.firstElementChild);
    }
  }
}

// Shrink a value that is wider than its tile (long numbers, long unit suffixes).
function fitValue(valueEl) {
  valueEl.style.setProperty("--fit", "1");
  const available = valueEl.parentElement?.clientWidth ?? 0;
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

function rerenderAll() {
  for (const entry of state.tiles.values()) if (entry.data) renderTile(entry, entry.data);
}

// ------------------------------------------------------------- data sources

// Staleness is judged on the server's real-time clock: `checked_at` (server time when sent)
// against the browser's clock at arrival gives the offset, so a demo's replayed clock or a wall
// PC's wrong clock cannot hide a stale source.
function sourceHealth(source) {
  if (!source.enabled || source.health === "disabled") return "disabled";
  if (source.health === "failing") return "failing";
  if (!source.last_success_at || !source.stale_at) return "stale";
  const offset = parseInstant(source.checked_at).getTime() - state.sourcesReceivedAt;
  const serverNowMs = Date.now() + offset;
  if (serverNowMs > parseInstant(source.stale_at).getTime()) return "stale";
  return source.health === "degraded" ? "degraded" : "ok";
}

function renderSource(source) {
  const health = sourceHealth(source);
  const item = el("li", "source");
  item.dataset.health = health;
  item.dataset.connector = source.name;
  const freshness = source.last_success_at
    ? `${T.dataAt} ${formatClockTime(parseInstant(source.last_success_at), { seconds: false })}`
    : T.noData;
  item.title = source.last_error ? `${T.health[health]}: ${source.last_error}` : T.health[health];
  item.append(
    el("span", "source-dot"),
    el("span", "source-title", source.title || source.name),
    el("span", "source-time", health === "ok" ? freshness : `${freshness} · ${T.health[health]}`),
  );
  return item;
}

function drawSources(list, sources, className = "sources-list") {
  const target = list.tagName === "UL" ? list : el("ul", className);
  if (sources.length === 0) {
    target.replaceChildren(el("li", "source source-empty", T.noSources));
  } else {
    target.replaceChildren(...sources.map(renderSource));
  }
  if (target !== list) list.replaceChildren(target);
}

function applySources(sources) {
  state.sources = sources;
  state.sourcesReceivedAt = Date.now();
  refreshFreshness();
}

function refreshFreshness() {
  if (state.sourcesReceivedAt) drawSources($("sources"), state.sources);
  for (const entry of state.tiles.values()) {
    if (entry.data?.visualisation === "freshness") renderTile(entry, entry.data);
  }
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

async function refreshSystem() {
  try {
    await loadSystem();
  } catch (error) {
    console.warn(state.systemLoaded ? "System refresh failed" : "System info unavailable", error);
  }
}

// The layout to show: ?layout=…, else the deployment's default one.
async function chooseLayout() {
  if (state.layoutId) return state.layoutId;
  try {
    const layouts = await api("/api/v1/layouts");
    state.layoutId = layouts[0]?.id ?? null;
  } catch (error) {
    console.warn("Layouts unavailable", error);
  }
  return state.layoutId;
}

// ---------------------------------------------------------------- live push

function socketUrl() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${location.host}/ws`;
}

function topics() {
  return state.layoutId ? [`layout:${state.layoutId}`, "connectors"] : ["connectors"];
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

// Subscribe, resuming from the last seq of each topic: the server sends what was missed, or a
// fresh snapshot when it cannot, never a silent gap.
async function onOpen(socket) {
  // Browsers cannot set headers on a WebSocket: the token goes in the first message.
  if (TOKEN) socket.send(JSON.stringify({ type: "auth", token: TOKEN }));
  state.openedAt = Date.now();
  state.lastHeardAt = Date.now();
  setConnected(true);
  await refreshSystem();
  if (socket !== state.socket || socket.readyState !== WebSocket.OPEN) return;
  const message = { type: "subscribe", topics: topics() };
  if (state.epoch) {
    message.epoch = state.epoch;
    message.resume = Object.fromEntries(state.seq);
  }
  socket.send(JSON.stringify(message));
}

function onMessage(socket, event) {
  state.lastHeardAt = Date.now();
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
      console.error("IOC server error:", message.topic ?? "", message.message);
      if (message.topic === `layout:${state.layoutId}`) showEmpty(T.noLayout);
      break;
    default:
      break;
  }
}

function applyPush({ type, topic, seq, epoch, data }) {
  if (type === "snapshot") {
    if (epoch && epoch !== state.epoch) {
      state.epoch = epoch;
      state.seq.clear();
    }
  } else if (seq != null && seq <= (state.seq.get(topic) ?? -1)) {
    return; // already applied
  }
  // Every message carries the topic's whole state, so a skipped seq (a slow screen's queue keeps
  // only the newest) loses nothing.
  if (seq != null) state.seq.set(topic, seq);
  if (topic === "connectors") applySources(data ?? []);
  else if (topic === `layout:${state.layoutId}` && data) applyLayout(data);
}

function onClose(socket) {
  if (socket !== state.socket) return;
  state.socket = null;
  if (state.openedAt && Date.now() - state.openedAt > STABLE_CONNECTION_MS) state.attempt = 0;
  state.openedAt = 0;
  setConnected(false);
  scheduleReconnect();
}

function scheduleReconnect() {
  const base = Math.min(BACKOFF_CAP_MS, BACKOFF_START_MS * 2 ** state.attempt);
  const delay = Math.min(BACKOFF_CAP_MS, base * (0.85 + Math.random() * 0.3)); // walls don't reconnect in lockstep
  state.attempt += 1;
  clearTimeout(state.reconnectTimer);
  state.reconnectTimer = setTimeout(connect, delay);
}

// Our half of the heartbeat: ping the server, and drop a socket that has gone silent (a dead
// network often closes nothing).
function heartbeat() {
  const socket = state.socket;
  if (socket?.readyState !== WebSocket.OPEN) return;
  if (Date.now() - state.lastHeardAt > SILENCE_LIMIT_MS) {
    console.warn("The server went silent; reconnecting");
    socket.close();
    onClose(socket);
    return;
  }
  socket.send(JSON.stringify({ type: "ping" }));
}

function setConnected(connected) {
  $("connection").dataset.state = connected ? "connected" : "disconnected";
  $("connection-label").textContent = connected ? T.connected : T.offline;
  $("banner").hidden = connected;
  document.body.classList.toggle("is-offline", !connected);
}

// -------------------------------------------------------------------- clock

function startClock() {
  let shownDate = "";
  const tick = () => {
    const now = serverNow();
    $("clock").textContent = formatClockTime(now, { seconds: true });
    const dateText = formatLongDate(now);
    if (dateText !== shownDate) {
      if (shownDate) rerenderAll(); // "Hôm nay" moves on at midnight
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
  for (const node of document.querySelectorAll("[data-i18n]")) {
    const text = T[node.dataset.i18n];
    if (typeof text === "string") node.textContent = text;
  }
  document.title = T.title;
}

async function main() {
  applyStaticText();
  await refreshSystem(); // before anything shows a time
  startClock();
  new ResizeObserver(() => {
    for (const value of document.querySelectorAll(".body-number .tile-value")) fitValue(value);
  }).observe($("tiles"));
  if (!(await chooseLayout())) {
    showEmpty(T.noLayout);
  }
  setInterval(heartbeat, CLIENT_PING_MS);
  setInterval(refreshFreshness, FRESHNESS_CHECK_MS);
  setInterval(tickIncidents, 5_000);
  connect();
}

main();
