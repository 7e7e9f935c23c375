/**
 * The stream: one WebSocket to the hub, and what keeps it alive (docs/protocol.md, close
 * codes). It reconnects by itself with backoff and jitter (at once after 1012, the hub
 * restarting), stops where the protocol says not to loop (1008, 1009, 4001, 4003, a key
 * refused), and sends the `ping` op every few seconds for the round trip and the offset
 * of the hub's clock. It knows nothing of the page: `onOpen` gets each welcome,
 * `onMessage` every message, `onStatus` every change of state.
 */
import { SUBPROTOCOL, decode, encode } from "./codec.js";

const PING_EVERY_MS = 5000;
const PONG_TIMEOUT_MS = 15_000;
const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 15_000;
const STABLE_AFTER_MS = 5000; // a connection that lived this long resets the backoff
const RESTART_JITTER_MS = 250; // after 1012 all clients come back at once: spread them a little

const FINAL = {
  1008: "closed for a policy violation",
  1009: "closed: a request was too big",
  4001: "the key is over its connection limit: close another connection, then reconnect",
  4003: "the key was revoked or has expired",
};

/** Delay before reconnect attempt `attempt` (0, 1, ...): doubling up to 15 s, "equal jitter". */
export function backoff(attempt, random = Math.random) {
  const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** attempt);
  return ceiling / 2 + (random() * ceiling) / 2;
}

/** The wall clock in ms with sub-ms precision. */
export function wallMs() {
  return performance.timeOrigin + performance.now();
}

export class Stream {
  /**
   * url: the stream's URL without credentials; credential: async () => a token or null,
   * throws AuthError; onOpen(welcome), onMessage(message), onStatus({state, text, until}).
   */
  constructor({ url, credential, onOpen, onMessage, onStatus }) {
    Object.assign(this, { url, credential, onOpen, onMessage, onStatus });
    this.ws = null;
    this.welcomed = null; // performance.now() of this connection's welcome
    this.connecting = false; // waiting for a credential before opening a socket
    this.halted = true;
    this.attempt = 0;
    this.reconnects = 0;
    this.timer = null;
    this.rtt = NaN; // ms, the last ping's round trip
    this.offset = 0; // ms, the hub's clock minus ours (from the best of the recent pongs)
    this.pings = new Map(); // id -> wall ms sent
    this.samples = []; // [rtt, offset] of the recent pongs
    this.nextPing = 0;
    this.pinger = null;
    this.status = { state: "stopped", text: "not connected" };
  }

  get open() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN && this.welcomed !== null;
  }

  /** Connect (now, if waiting to reconnect), unless connected or connecting. */
  start() {
    this.halted = false;
    this.attempt = 0;
    clearTimeout(this.timer);
    if (this.ws === null && !this.connecting) this.connect();
  }

  /** Close for good (until `start`). */
  stop(text = "stopped") {
    const ws = this.ws;
    this.ws = null; // its close event is ignored
    this.welcomed = null;
    clearInterval(this.pinger);
    this.pings.clear();
    this.halt(text);
    if (ws !== null) ws.close(1000, "bye");
  }

  /** Send a request (a map with `op`); false when not connected. */
  send(request) {
    if (!this.open) return false;
    this.ws.send(encode(request));
    return true;
  }

  setStatus(state, text, until = null) {
    this.status = { state, text, until };
    this.onStatus(this.status);
  }

  async connect() {
    this.timer = null;
    this.welcomed = null;
    this.setStatus("connecting", this.attempt ? `reconnecting (attempt ${this.attempt + 1})…` : "connecting…");
    let token;
    this.connecting = true;
    try {
      token = await this.credential();
    } catch (err) {
      if (err.final) this.halt(err.message, "key");
      else if (!this.halted) this.retry(err.message);
      return;
    } finally {
      this.connecting = false;
    }
    if (this.halted || this.ws !== null) return;
    const url = token ? `${this.url}?token=${encodeURIComponent(token)}` : this.url;
    const ws = new WebSocket(url, [SUBPROTOCOL]);
    ws.binaryType = "arraybuffer";
    ws.onmessage = (event) => this.receive(ws, event.data);
    ws.onclose = (event) => this.closed(ws, event);
    this.ws = ws;
  }

  receive(ws, data) {
    if (ws !== this.ws) return;
    const message = typeof data === "string" ? JSON.parse(data) : decode(data);
    if (message.type === "welcome") {
      this.welcomed = performance.now();
      const since = this.welcomed;
      setTimeout(() => {
        if (this.ws === ws && this.welcomed === since) this.attempt = 0;
      }, STABLE_AFTER_MS);
      this.setStatus("live", "live");
      this.startPings(ws);
      this.onOpen(message);
    } else if (message.type === "pong") {
      this.pong(message);
    }
    this.onMessage(message);
  }

  closed(ws, event) {
    if (ws !== this.ws) return;
    const wasLive = this.welcomed !== null;
    this.ws = null;
    this.welcomed = null;
    clearInterval(this.pinger);
    this.pings.clear();
    if (this.halted) return;
    if (wasLive) this.reconnects += 1;
    const reason = event.reason ? `: ${event.reason}` : "";
    if (event.code in FINAL) {
      this.halt(`${FINAL[event.code]}${reason} (close ${event.code})`, event.code === 4003 ? "key" : "closed");
    } else if (event.code === 1012 && wasLive) {
      this.schedule(Math.random() * RESTART_JITTER_MS, `the hub is restarting${reason}`);
    } else {
      this.retry(wasLive ? `connection lost (close ${event.code}${reason})` : "cannot connect");
    }
  }

  retry(why) {
    this.schedule(backoff(this.attempt), why);
  }

  schedule(delay, why) {
    this.attempt += 1;
    const until = Date.now() + delay;
    this.setStatus("waiting", why, until);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  /** Stop reconnecting. `cause`: "key" (the key was refused), "closed" or "stopped". */
  halt(text, cause = "stopped") {
    this.halted = true;
    clearTimeout(this.timer);
    this.setStatus("stopped", text);
    this.status.cause = cause;
  }

  startPings(ws) {
    clearInterval(this.pinger);
    const ping = () => {
      if (ws !== this.ws) return;
      const now = wallMs();
      for (const sent of this.pings.values()) {
        if (now - sent > PONG_TIMEOUT_MS) {
          ws.close(4000, "no pong"); // a dead connection: closed() reconnects
          return;
        }
      }
      const id = `ping-${++this.nextPing}`;
      this.pings.set(id, now);
      this.send({ op: "ping", id });
    };
    ping();
    this.pinger = setInterval(ping, PING_EVERY_MS);
  }

  pong(message) {
    const sent = this.pings.get(message.id);
    if (sent === undefined) return;
    this.pings.delete(message.id);
    const now = wallMs();
    this.rtt = now - sent;
    // the hub's clock at the middle of the round trip; the sample with the least rtt is the best
    this.samples.push([this.rtt, message.server_time / 1e6 - (sent + now) / 2]);
    if (this.samples.length > 8) this.samples.shift();
    // taken only when the clocks differ by more than the error of the estimate (on one host they agree)
    const [rtt, offset] = this.samples.reduce((best, s) => (s[0] < best[0] ? s : best));
    this.offset = Math.abs(offset) > rtt / 2 ? offset : 0;
  }
}
