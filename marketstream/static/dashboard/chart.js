/**
 * The chart of the selected symbol, with TradingView's lightweight-charts (vendored):
 * candles and volume from bars at the chosen interval, and below them a line of the
 * ticks. Both open with history (GET /api/v1/bars, GET /api/v1/history) and move with
 * the stream. Updates are queued and applied once per animation frame (`flush`).
 */
import {
  CandlestickSeries,
  HistogramSeries,
  LineSeries,
  createChart,
} from "../vendor/lightweight-charts/lightweight-charts.standalone.production.mjs";

const HISTORY_BARS = 300;
const HISTORY_TICKS = 600;
const MAX_POINTS = 6000; // past this the oldest half is dropped: a chart open all day stays small
const MAX_QUEUED = 2000; // updates queued while no frame comes (a hidden tab): applied at once past this

const UP = "#26a69a";
const DOWN = "#ef5350";
const THEME = {
  layout: { background: { color: "transparent" }, textColor: "#9aa4b2", fontSize: 11 },
  grid: { vertLines: { color: "#1f2630" }, horzLines: { color: "#1f2630" } },
  rightPriceScale: { borderColor: "#2a323d" },
  timeScale: { borderColor: "#2a323d", timeVisible: true, secondsVisible: true },
  localization: { timeFormatter: (t) => new Date(t * 1000).toLocaleTimeString([], { hour12: false }) },
  autoSize: true,
};

function localTicks(t) {
  return new Date(t * 1000).toLocaleTimeString([], { hour12: false, hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

/** Keep at most MAX_POINTS: drop the oldest half when over. True when trimmed. */
function trim(points) {
  if (points.length <= MAX_POINTS) return false;
  points.splice(0, points.length - MAX_POINTS / 2);
  return true;
}

export class ChartPanel {
  /** candles, ticks: the two containers; getJson(path) -> {status, body}; note(text) for what is missing. */
  constructor(candlesEl, ticksEl, getJson, note) {
    this.getJson = getJson;
    this.note = note;
    const options = { ...THEME, timeScale: { ...THEME.timeScale, tickMarkFormatter: localTicks } };
    this.candleChart = createChart(candlesEl, options);
    this.candles = this.candleChart.addSeries(CandlestickSeries, {
      upColor: UP,
      downColor: DOWN,
      borderVisible: false,
      wickUpColor: UP,
      wickDownColor: DOWN,
    });
    this.volume = this.candleChart.addSeries(HistogramSeries, {
      priceScaleId: "volume",
      priceFormat: { type: "volume" },
      lastValueVisible: false,
      priceLineVisible: false,
    });
    this.candleChart.priceScale("volume").applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
    this.candles.priceScale().applyOptions({ scaleMargins: { top: 0.08, bottom: 0.25 } });
    // ticks come several a second: narrow spacing, the newest at the right edge
    this.tickChart = createChart(ticksEl, { ...options, timeScale: { ...options.timeScale, barSpacing: 3, rightOffset: 3 } });
    this.line = this.tickChart.addSeries(LineSeries, { color: "#4c9aff", lineWidth: 1.5, priceLineVisible: false });
    this.symbol = null;
    this.interval = null;
    this.generation = 0;
    this.reset();
  }

  reset() {
    this.bars = []; // [{time, open, high, low, close}]
    this.volumes = [];
    this.points = []; // [{time, value}]
    this.queue = [];
    this.loaded = false;
  }

  /** Show `symbol` at `interval`: history first, then what the stream brings. */
  async show(symbol, interval, decimals = 2) {
    const generation = ++this.generation;
    this.symbol = symbol;
    this.interval = interval;
    this.reset();
    const format = { type: "price", precision: decimals, minMove: 10 ** -decimals };
    this.candles.applyOptions({ priceFormat: format });
    this.line.applyOptions({ priceFormat: format });
    this.candleChart.applyOptions({ timeScale: { secondsVisible: interval.endsWith("s") } });
    this.candles.setData([]);
    this.volume.setData([]);
    this.line.setData([]);
    if (!symbol) return;
    const q = encodeURIComponent(symbol);
    const [bars, ticks] = await Promise.all([
      this.getJson(`/api/v1/bars?symbol=${q}&interval=${interval}&limit=${HISTORY_BARS}`),
      this.getJson(`/api/v1/history?symbol=${q}&limit=${HISTORY_TICKS}`),
    ]);
    if (generation !== this.generation) return; // another symbol or interval meanwhile
    if (bars.status === 200) {
      for (const bar of bars.body.bars) this.putBar(bar);
      this.note("");
    } else {
      this.note(bars.status === 404 ? "This hub serves no bars: ticks only." : `No bar history (HTTP ${bars.status}).`);
    }
    if (ticks.status === 200) for (const tick of ticks.body.ticks) this.putTick(tick);
    this.candles.setData(this.bars);
    this.volume.setData(this.volumes);
    this.line.setData(this.points);
    this.loaded = true;
    this.flush();
    this.candleChart.timeScale().scrollToRealTime();
    this.tickChart.timeScale().scrollToRealTime();
  }

  onBar(bar) {
    if (bar.symbol === this.symbol && bar.interval === this.interval) this.enqueue(["bar", bar]);
  }

  onTick(tick) {
    if (tick.symbol === this.symbol) this.enqueue(["tick", tick]);
  }

  enqueue(item) {
    this.queue.push(item);
    if (this.queue.length > MAX_QUEUED) this.flush();
  }

  /** Apply the queued updates (once per frame); before the history is in, keep them. */
  flush() {
    if (!this.loaded || !this.queue.length) return;
    const queue = this.queue;
    this.queue = [];
    const bars = new Set(); // indexes of the bars and points changed, in order
    const points = new Set();
    for (const [kind, item] of queue) {
      const at = kind === "bar" ? this.putBar(item) : this.putTick(item);
      if (at >= 0) (kind === "bar" ? bars : points).add(at);
    }
    if (trim(this.bars)) {
      this.volumes.splice(0, this.volumes.length - this.bars.length);
      this.candles.setData(this.bars);
      this.volume.setData(this.volumes);
    } else {
      for (const at of bars) {
        this.candles.update(this.bars[at]);
        this.volume.update(this.volumes[at]);
      }
    }
    if (trim(this.points)) this.line.setData(this.points);
    else for (const at of points) this.line.update(this.points[at]);
  }

  /** Put a bar into the data: a new last one, or a newer version of the last. Its index, or
   *  -1 for a bar older than the last (a version superseded already). */
  putBar(bar) {
    const time = Math.floor(bar.start / 1e9);
    const last = this.bars[this.bars.length - 1];
    if (last && time < last.time) return -1;
    const candle = { time, open: bar.open, high: bar.high, low: bar.low, close: bar.close };
    const volume = { time, value: bar.volume, color: bar.close >= bar.open ? "#26a69a55" : "#ef535055" };
    if (last && time === last.time) {
      this.bars[this.bars.length - 1] = candle;
      this.volumes[this.volumes.length - 1] = volume;
    } else {
      this.bars.push(candle);
      this.volumes.push(volume);
    }
    return this.bars.length - 1;
  }

  /** Put a tick into the line: its index, or -1 when older than the last point. */
  putTick(tick) {
    const time = tick.ts / 1e9;
    const last = this.points[this.points.length - 1];
    if (last && time < last.time) return -1;
    const point = { time, value: tick.price };
    if (last && time === last.time) this.points[this.points.length - 1] = point;
    else this.points.push(point);
    return this.points.length - 1;
  }

  /** For the tests and the console: what is drawn. */
  stats() {
    const last = this.bars[this.bars.length - 1] ?? null;
    return {
      symbol: this.symbol,
      interval: this.interval,
      loaded: this.loaded,
      candles: this.candles.data().length,
      ticks: this.line.data().length,
      lastCandle: last ? { ...last } : null,
      lastTick: this.points[this.points.length - 1] ?? null,
    };
  }
}
