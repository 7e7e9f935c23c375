/**
 * A sparkline: the recent prices of a symbol as a line in a small canvas. The caller gives
 * the canvas's CSS size: reading it here (clientWidth) between the board's writes would
 * force a layout per row, which measured as most of the page's cost at every tick.
 */

const UP = "#26a69a";
const DOWN = "#ef5350";

export function drawSparkline(canvas, prices, width, height) {
  const ratio = window.devicePixelRatio || 1;
  if (!width || !height) return;
  if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
  if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, width, height);
  if (prices.length < 2) return;
  let low = Infinity;
  let high = -Infinity;
  for (const p of prices) {
    if (p < low) low = p;
    if (p > high) high = p;
  }
  const span = high - low || 1;
  const dx = width / (prices.length - 1);
  g.beginPath();
  for (let k = 0; k < prices.length; k++) {
    const y = height - 1 - ((prices[k] - low) / span) * (height - 2);
    if (k === 0) g.moveTo(0, y);
    else g.lineTo(k * dx, y);
  }
  g.lineWidth = 1.25;
  g.strokeStyle = prices[prices.length - 1] >= prices[0] ? UP : DOWN;
  g.stroke();
}
