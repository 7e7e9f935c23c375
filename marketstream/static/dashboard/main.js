/**
 * The dashboard (docs/dashboard.md): boots the page and wires its parts. Frames from the
 * stream update the models (seq book, quotes, rates) and mark what changed; one
 * animation frame then draws the board and the chart, and a timer refreshes the slow
 * readouts four times a second.
 */
import { SeqBook } from "./accounting.js";
import { Auth, AuthError } from "./auth.js";
import { Board } from "./board.js";
import { Catalog } from "./catalog.js";
import { Details } from "./details.js";
import { decimalsOf } from "./format.js";
import { Header } from "./header.js";
import { Latency } from "./latency.js";
import { ListControls } from "./lists.js";
import { Quotes } from "./quotes.js";
import { Rates } from "./rates.js";
import { Search } from "./search.js";
import { Stream } from "./stream.js";
import { Subscriptions } from "./subscriptions.js";
import { Watchlists } from "./watchlists.js";

const $ = (id) => document.getElementById(id);
const REFRESH_MS = 250;
// The board is written at most 30 times a second (every other frame at 60 Hz): a number that
// changes faster cannot be read, and each frame that changes the page costs its style, layout,
// paint and commit. The chart and scrolling keep every frame. docs/dashboard.md has the numbers.
const BOARD_EVERY_MS = 1000 / 30;
const CHART_DELAY_MS = 150; // the chart follows the selection once it rests
const NOTICE_MS = 8000;
const INTERVAL_ITEM = "marketstream.interval";
const INTERVALS = ["1s", "5s", "1m", "5m", "1h"];
const keyRequired = document.body.dataset.keyRequired === "true";

const auth = new Auth();
const catalog = new Catalog(auth);
const watchlists = new Watchlists();
const book = new SeqBook();
const quotes = new Quotes();
const rates = new Rates();
const latency = new Latency();
const perf = { frames: 0, busyMs: 0, messages: 0, firstTick: null }; // for docs/dashboard.md's measurements
let interval = INTERVALS.includes(localStorage.getItem(INTERVAL_ITEM)) ? localStorage.getItem(INTERVAL_ITEM) : "1s";

const stream = new Stream({
  url: `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws/v1/stream`,
  credential: () => auth.token(),
  onOpen: () => subs.connected(),
  onMessage: receive,
  onStatus: statusChanged,
});
const subs = new Subscriptions(stream, book);

const view = {
  quote: (s) => quotes.get(s),
  info: (s) => catalog.get(s),
  rate: (s) => rates.rate(s),
  lost: (s) => book.entries.get(s)?.lost ?? 0,
  entry: (s) => book.entries.get(s),
  reason: (s) => subs.reason(s),
  throttle: (s) => watchlists.throttle(s),
  effective: (s) => subs.effective.get(s),
};
const actions = {
  select: (s) => selected(s),
  remove: (s) => watchlists.remove(s),
  move: (s, delta) => {
    if (watchlists.sort) watchlists.setSort(null); // moving a row means the watchlist's own order
    watchlists.move(s, delta);
  },
  moveTo: (s, index) => {
    if (watchlists.sort) watchlists.setSort(null);
    watchlists.moveTo(s, index);
  },
  throttle: (s, ms) => watchlists.setThrottle(s, ms),
  sort: (sort) => watchlists.setSort(sort),
  dirty: () => requestFrame(),
};

const header = new Header(
  {
    status: $("status"),
    reconnect: $("reconnect"),
    rtt: $("rtt"),
    age: $("tick-age"),
    rate: $("rate"),
    lost: $("lost"),
    reconnects: $("reconnects"),
    keyToggle: $("key-toggle"),
    keyForm: $("key-form"),
    key: $("key"),
    keyForget: $("key-forget"),
    keyMessage: $("key-message"),
  },
  { key: useKey, forgetKey, reconnect: () => stream.start() },
);
const board = new Board($("board"), $("rows"), view, actions);
const details = new Details($("details"), view, actions);
let chart = null; // the chart's library loads after the stream has started: the board does not wait for it
const lists = new ListControls(
  { select: $("list"), name: $("list-name"), create: $("list-new"), drop: $("list-delete") },
  watchlists,
);
const search = new Search($("search"), $("results"), catalog, (s) => watchlists.has(s), (s) => watchlists.add(s));
watchlists.onChange = applyWatchlist;

// -- the watchlist, the selection and the chart ------------------------------------

function applyWatchlist() {
  const symbols = watchlists.symbols;
  lists.draw();
  if (board.sort?.key !== watchlists.sort?.key || board.sort?.dir !== watchlists.sort?.dir) board.setSort(watchlists.sort);
  board.setSymbols(symbols);
  for (const s of symbols) board.showThrottle(s, watchlists.throttle(s));
  subs.want(new Map(symbols.map((s) => [s, watchlists.throttle(s)])));
  for (const s of rates.counters.keys()) if (!symbols.includes(s)) rates.forget(s);
  $("empty").hidden = symbols.length > 0;
  details.show(board.selected);
}

let chartTimer = null;
let chartSymbol = null;
function selected(symbol) {
  details.show(symbol);
  $("chart-symbol").textContent = symbol ?? "";
  $("chart-name").textContent = (symbol && catalog.get(symbol)?.name) || "";
  clearTimeout(chartTimer);
  chartTimer = setTimeout(() => showChart(symbol), chartSymbol === null ? 0 : CHART_DELAY_MS);
}

function decimalsFor(symbol) {
  const last = catalog.get(symbol)?.last;
  const fromCatalog = last ? Math.max(decimalsOf(last.price), decimalsOf(last.bid), decimalsOf(last.ask)) : 0;
  return Math.max(quotes.get(symbol)?.decimals ?? 0, fromCatalog) || 2;
}

function showChart(symbol, force = false) {
  if (!force && symbol === chartSymbol && interval === chart?.interval) return;
  chartSymbol = symbol;
  subs.chartBars(symbol, interval);
  chart?.show(symbol, interval, decimalsFor(symbol));
}

async function loadChart() {
  const { ChartPanel } = await import("./chart.js");
  chart = new ChartPanel($("candles"), $("ticks"), (path) => auth.getJson(path), (text) => {
    $("chart-note").textContent = text;
  });
  if (chartSymbol) chart.show(chartSymbol, interval, decimalsFor(chartSymbol));
}

for (const button of $("intervals").querySelectorAll("button")) {
  button.setAttribute("aria-pressed", String(button.dataset.interval === interval));
  button.addEventListener("click", () => {
    interval = button.dataset.interval;
    localStorage.setItem(INTERVAL_ITEM, interval);
    for (const b of $("intervals").querySelectorAll("button")) b.setAttribute("aria-pressed", String(b === button));
    showChart(chartSymbol ?? board.selected, true);
  });
}

// -- the stream ----------------------------------------------------------------------

function receive(message) {
  const started = performance.now();
  perf.messages += 1;
  switch (message.type) {
    case "snapshot":
    case "ticks": {
      const snapshot = message.type === "snapshot";
      for (const tick of message.ticks) take(tick, snapshot);
      break;
    }
    case "bars":
      for (const bar of message.bars) chart?.onBar(bar);
      break;
    case "ack": {
      subs.acked(message);
      const refused = Object.entries(message.rejected ?? {});
      if (refused.length) notice(`Not streaming: ${refused.map(([s, code]) => `${s} (${code})`).join(", ")}`);
      break;
    }
    case "reset":
      book.reset(message.symbol, message.epoch);
      notice(`${message.symbol}: its seq started again (epoch ${message.epoch}); counting afresh`);
      break;
    case "unsubscribed":
      subs.ended(message);
      notice(`The hub ended ${message.symbols.join(", ")} (${message.reason})`);
      break;
    case "error":
      notice(`The hub says ${message.code}: ${message.message}`);
      break;
  }
  requestFrame();
  perf.busyMs += performance.now() - started;
}

function take(tick, snapshot) {
  if (!subs.wanted.has(tick.symbol)) return; // sent before its unsubscribe was acked
  if (!book.take(tick, snapshot)) return;
  perf.firstTick ??= performance.now(); // since the navigation started
  quotes.take(tick);
  rates.count(tick.symbol);
  if (!snapshot) latency.sample(tick.ts, stream.offset);
  board.markDirty(tick.symbol);
  chart?.onTick(tick);
}

let framePending = false;
function requestFrame() {
  if (!framePending) {
    framePending = true;
    requestAnimationFrame(drawFrame);
  }
}

let boardAt = -Infinity;
function drawFrame(now) {
  const started = performance.now();
  framePending = false;
  perf.frames += 1;
  let more = true;
  if (now - boardAt >= BOARD_EVERY_MS - 1) {
    boardAt = now;
    more = board.render(now);
  }
  chart?.flush();
  if (more) requestFrame();
  perf.busyMs += performance.now() - started;
}

setInterval(() => {
  header.refresh({
    rtt: stream.rtt,
    age: latency.median(),
    rate: rates.total(),
    lost: book.totalLost(),
    reconnects: stream.reconnects,
  });
  board.refresh();
  details.refresh();
}, REFRESH_MS);

function statusChanged(status) {
  header.setStatus(status);
  if (status.state === "stopped" && status.cause === "key") {
    auth.forget();
    header.showKey(`${status.text}. Enter a key:`);
  }
}

let notices = null;
function notice(text) {
  const el = $("notice");
  el.textContent = text;
  el.hidden = false;
  clearTimeout(notices);
  notices = setTimeout(() => (el.hidden = true), NOTICE_MS);
}

// -- keys and the start --------------------------------------------------------------

function useKey(key) {
  auth.setKey(key);
  stream.stop("using the new key…");
  start();
}

function forgetKey() {
  auth.forget();
  stream.stop("key forgotten");
  if (keyRequired) header.showKey("This hub requires an API key.");
  else start();
}

let starting = 0;
async function start() {
  const run = ++starting;
  stream.start(); // the handshake goes on while the catalog loads; the subscribe waits for the watchlist
  let status;
  try {
    status = await catalog.load();
  } catch (err) {
    if (!(err instanceof AuthError)) throw err;
    if (err.final) statusChanged({ state: "stopped", text: err.message, cause: "key" });
    else setTimeout(() => run === starting && start(), 2000);
    return;
  }
  if (run !== starting) return;
  if (status === 401) {
    stream.stop("a key is required");
    header.showKey("This hub requires an API key.");
    return;
  }
  if (status !== 200) {
    header.setStatus({ state: "waiting", text: `catalog unavailable (${status || "no answer"})`, until: Date.now() + 2000 });
    setTimeout(() => run === starting && start(), 2000);
    return;
  }
  watchlists.ensure(catalog.defaults());
  applyWatchlist();
  if (document.activeElement === $("search")) search.update(); // typed before the catalog came
  stream.start();
  if (!chart) setTimeout(loadChart, 0);
}

window.marketstream = {
  /** What the page holds, for the browser tests and the console. */
  stats() {
    const symbols = {};
    for (const s of watchlists.symbols) {
      symbols[s] = {
        ...book.entries.get(s),
        rate: rates.rate(s),
        reason: subs.reason(s),
        throttle: watchlists.throttle(s),
        effective: subs.effective.get(s) ?? null,
        price: quotes.get(s)?.price ?? null,
      };
    }
    return {
      status: stream.status.state,
      statusText: stream.status.text,
      reconnects: stream.reconnects,
      rtt: stream.rtt,
      lost: book.totalLost(),
      symbols,
      chart: chart?.stats() ?? { loaded: false, symbol: null, candles: 0, ticks: 0 },
      perf: { ...perf },
    };
  },
};

if (keyRequired && !auth.key) {
  header.setStatus({ state: "stopped", text: "a key is required" });
  header.showKey("This hub requires an API key.");
} else {
  start();
}
