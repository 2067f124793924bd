// Signed colour scales and their legends. Every signed map (attribution, occlusion, kernels,
// contributions) is coloured blue (negative) - neutral - red (positive) on a scale the legend shows.
//
// Two kinds of scale:
//  - absolute: a symmetric log scale with fixed bounds per quantity, so a colour means the same
//    number on every map and every input (a drop of 0.0003 stays faint, 0.9 is saturated);
//  - fitted: linear over this map's own ±max|value| (small differences become visible; the legend
//    then says how small its bounds are).

/** Absolute scales: values from ±floor to ±limit span the colours logarithmically (docs/page.md). */
export const ABSOLUTE = {
  gradient: { limit: 5, floor: 1e-4, unit: "logit" },  // attribution maps: logit (per unit of pixel)
  probability: { limit: 1, floor: 1e-4, unit: "probability" },  // occlusion: drop in probability
};

const NEGATIVE = [33, 102, 172];
const NEUTRAL = [247, 247, 247];
const POSITIVE = [178, 24, 43];

/** A scale: value -> t in [-1, 1], and its description for the legend. */
export function symlogScale({ limit, floor, unit }) {
  const span = Math.log10(1 + limit / floor);
  return {
    kind: "absolute", limit, floor, unit,
    t: (value) => Math.max(-1, Math.min(1, Math.sign(value) * Math.log10(1 + Math.abs(value) / floor) / span)),
    ticks: () => {  // the bounds, one decade in between, zero: five labels fit under the bar
      const middle = 10 ** Math.round(Math.log10(Math.sqrt(floor * limit)));
      return [-limit, -middle, 0, middle, limit];
    },
  };
}

export function linearScale(maxAbs, unit = "") {
  const limit = maxAbs > 0 ? maxAbs : 1;
  return {
    kind: "fitted", limit, unit,
    t: (value) => Math.max(-1, Math.min(1, value / limit)),
    ticks: () => [-limit, -limit / 2, 0, limit / 2, limit],
  };
}

/** t in [-1, 1] -> [r, g, b] on the diverging map. */
export function divergingColor(t) {
  const [from, to] = t < 0 ? [NEUTRAL, NEGATIVE] : [NEUTRAL, POSITIVE];
  const amount = Math.abs(t);
  return from.map((channel, i) => Math.round(channel + (to[i] - channel) * amount));
}

function formatTick(value) {
  if (value === 0) return "0";
  const magnitude = Math.abs(value);
  const text = magnitude >= 0.01 && magnitude < 1000 ? String(Number(value.toPrecision(2))) : value.toExponential(0);
  return text.replace("e-", "e−").replace(/^-/, "−");
}

/** Draw a rows x cols grid of signed values into an ImageData (one pixel per value). */
export function signedImage(values, scale) {
  const rows = values.length;
  const cols = values[0]?.length ?? 0;
  const image = new ImageData(Math.max(1, cols), Math.max(1, rows));
  values.forEach((row, y) => row.forEach((value, x) => {
    const [r, g, b] = divergingColor(scale.t(value));
    image.data.set([r, g, b, 255], (y * cols + x) * 4);
  }));
  return image;
}

/**
 * A signed grid drawn into a canvas (scaled to the canvas, pixels kept square), with the input's
 * ink laid over it faintly when given, and an optional box (inclusive cells) outlined.
 */
export function drawSignedMap(canvas, values, scale, { underlay = null, box = null } = {}) {
  const ctx = canvas.getContext("2d");
  const image = signedImage(values, scale);
  const source = new OffscreenCanvas(image.width, image.height);
  source.getContext("2d").putImageData(image, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(source, 0, 0, canvas.width, canvas.height);
  if (underlay) {
    const rows = underlay.length;
    const cols = underlay[0].length;
    const ink = new ImageData(cols, rows);
    underlay.forEach((row, y) => row.forEach((value, x) => ink.data.set([0, 0, 0, Math.round(Math.min(1, value) * 90)], (y * cols + x) * 4)));
    const inkCanvas = new OffscreenCanvas(cols, rows);
    inkCanvas.getContext("2d").putImageData(ink, 0, 0);
    ctx.drawImage(inkCanvas, 0, 0, canvas.width, canvas.height);
  }
  if (box) {
    const cell = canvas.width / (values[0]?.length || 1);
    ctx.strokeStyle = "#f59e0b";
    ctx.lineWidth = 2;
    ctx.strokeRect(box.left * cell + 1, box.top * cell + 1, (box.right - box.left + 1) * cell - 2, (box.bottom - box.top + 1) * cell - 2);
  }
  canvas.dataset.drawn = "true";
}

/**
 * A horizontal legend: the colour bar, its ticks, what the colours mean. Fills `container` and
 * records the scale on it (data-scale, data-limit) for tests.
 * @param {{negative: string, positive: string}} meaning what blue and red stand for
 */
export function renderLegend(container, scale, meaning) {
  const bar = document.createElement("canvas");
  bar.width = 200;
  bar.height = 10;
  bar.className = "legend-bar";
  bar.setAttribute("aria-hidden", "true");
  const ctx = bar.getContext("2d");
  for (let x = 0; x < bar.width; x += 1) {
    const t = (x / (bar.width - 1)) * 2 - 1;
    const [r, g, b] = divergingColor(t);
    ctx.fillStyle = `rgb(${r} ${g} ${b})`;
    ctx.fillRect(x, 0, 1, bar.height);
  }
  const ticks = document.createElement("div");
  ticks.className = "legend-ticks";
  for (const value of scale.ticks()) {
    const tick = document.createElement("span");
    tick.textContent = formatTick(value);
    tick.style.left = `${((scale.t(value) + 1) / 2) * 100}%`;
    ticks.append(tick);
  }
  const note = document.createElement("p");
  note.className = "legend-note";
  const how = scale.kind === "absolute" ? `log scale, fixed for every input (${scale.unit})` : `linear, this map's own range${scale.unit ? ` (${scale.unit})` : ""}`;
  note.textContent = `blue: ${meaning.negative}; red: ${meaning.positive}. ${how}.`;
  container.replaceChildren(bar, ticks, note);
  container.dataset.scale = scale.kind;
  container.dataset.limit = String(scale.limit);
  container.setAttribute("role", "img");
  container.setAttribute("aria-label", `Colour scale from ${formatTick(-scale.limit)} to ${formatTick(scale.limit)}, ${how}; ${note.textContent}`);
}

/** Grayscale ramp legend for a layer: black = min, white = max, with a mark at zero. */
export function grayLegend(min, max) {
  const wrap = document.createElement("div");
  wrap.className = "gray-legend";
  const low = document.createElement("span");
  low.textContent = formatTick(min);
  const ramp = document.createElement("span");
  ramp.className = "gray-ramp";
  if (min < 0 && max > 0) ramp.style.setProperty("--zero", `${((0 - min) / (max - min)) * 100}%`);
  else ramp.classList.add("no-zero");
  const high = document.createElement("span");
  high.textContent = formatTick(max);
  wrap.append(low, ramp, high);
  wrap.title = `black ${formatTick(min)}, white ${formatTick(max)}`;
  return wrap;
}

export { formatTick };
