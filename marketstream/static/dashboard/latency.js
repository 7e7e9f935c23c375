/**
 * The age of the ticks received: now (by the hub's clock, from the ping's offset) minus
 * each tick's `ts`, the median over the last second. Ticks older than 10 s are history
 * (a recovery), not latency, and are left out.
 */

const WINDOW_MS = 1000;
const HISTORY_MS = 10_000;

export class Latency {
  constructor() {
    this.samples = []; // [at (performance.now()), age ms]
  }

  sample(tsNs, offsetMs, now = performance.now()) {
    const age = performance.timeOrigin + now + offsetMs - tsNs / 1e6;
    if (age < HISTORY_MS) this.samples.push([now, age]);
    if (this.samples.length > 4096) this.samples.splice(0, 2048);
  }

  /** The median age over the last second, NaN without ticks. */
  median(now = performance.now()) {
    let k = 0;
    while (k < this.samples.length && now - this.samples[k][0] > WINDOW_MS) k += 1;
    this.samples.splice(0, k);
    if (!this.samples.length) return NaN;
    const ages = this.samples.map((s) => s[1]).sort((a, b) => a - b);
    return ages[ages.length >> 1];
  }
}
