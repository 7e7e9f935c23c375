/**
 * Updates per second actually received, per symbol and in all: counts in buckets of
 * 250 ms over the last 2 s (the bucket being filled is left out).
 */

const BUCKET_MS = 250;
const BUCKETS = 8; // the window: 2 s

class Counter {
  constructor() {
    this.ring = new Uint32Array(BUCKETS + 1);
    this.at = 0; // the bucket number of ring[at % length]
  }

  advance(bucket) {
    const n = this.ring.length;
    if (bucket - this.at >= n) this.ring.fill(0);
    else for (let b = this.at + 1; b <= bucket; b++) this.ring[b % n] = 0;
    if (bucket > this.at) this.at = bucket;
  }

  add(bucket, count) {
    this.advance(bucket);
    this.ring[bucket % this.ring.length] += count;
  }

  perSecond(bucket) {
    this.advance(bucket);
    let sum = 0;
    for (let k = 0; k < this.ring.length; k++) sum += this.ring[k];
    sum -= this.ring[bucket % this.ring.length];
    return sum / ((BUCKETS * BUCKET_MS) / 1000);
  }
}

export class Rates {
  constructor(now = () => performance.now()) {
    this.now = now;
    this.counters = new Map();
    this.all = new Counter();
  }

  count(symbol, n = 1) {
    const bucket = Math.floor(this.now() / BUCKET_MS);
    let counter = this.counters.get(symbol);
    if (counter === undefined) this.counters.set(symbol, (counter = new Counter()));
    counter.add(bucket, n);
    this.all.add(bucket, n);
  }

  /** Updates per second of `symbol` over the last 2 s. */
  rate(symbol) {
    const counter = this.counters.get(symbol);
    return counter === undefined ? 0 : counter.perSecond(Math.floor(this.now() / BUCKET_MS));
  }

  total() {
    return this.all.perSecond(Math.floor(this.now() / BUCKET_MS));
  }

  forget(symbol) {
    this.counters.delete(symbol);
  }
}
