/** How numbers and times are shown: fixed decimals per symbol, signs, sizes, local times. */

const MAX_DECIMALS = 6;

/** The decimals a number is written with (1.0845 -> 4), at most 6. */
export function decimalsOf(x) {
  if (!Number.isFinite(x)) return 0;
  const text = String(x);
  const dot = text.indexOf(".");
  return dot < 0 || text.includes("e") ? 0 : Math.min(MAX_DECIMALS, text.length - dot - 1);
}

export function price(x, decimals) {
  return Number.isFinite(x) ? x.toFixed(decimals) : "–";
}

export function signed(x, decimals) {
  if (!Number.isFinite(x)) return "–";
  const text = x.toFixed(decimals);
  return Number(text) > 0 ? `+${text}` : Number(text) === 0 ? (0).toFixed(decimals) : text; // never "-0.00"
}

export function percent(x) {
  if (!Number.isFinite(x)) return "–";
  return `${x > 0 ? "+" : ""}${x.toFixed(2)}%`;
}

/** 300 -> "300", 125000 -> "125k", 2500000 -> "2.5M". */
export function size(x) {
  if (!Number.isFinite(x)) return "–";
  if (x >= 1e6) return `${+(x / 1e6).toFixed(2)}M`;
  if (x >= 1e4) return `${+(x / 1e3).toFixed(1)}k`;
  return String(Math.round(x * 100) / 100);
}

const clock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });

/** A tick's `ts` (ns since the Unix epoch) as the local time of day, HH:MM:SS. */
export function time(tsNs) {
  return Number.isFinite(tsNs) ? clock.format(new Date(tsNs / 1e6)) : "–";
}

/** Milliseconds, for latency readouts. */
export function ms(x) {
  if (!Number.isFinite(x)) return "–";
  return x < 10 ? `${x.toFixed(1)} ms` : `${Math.round(x)} ms`;
}

export function rate(x) {
  return x < 10 ? x.toFixed(1) : String(Math.round(x));
}

export const THROTTLES = [
  [0, "every tick"],
  [100, "100 ms"],
  [250, "250 ms"],
  [1000, "1 s"],
];
