// Drawing primitives: probability bars, grayscale images from number grids, histograms, the
// occlusion heatmap. Pure DOM/canvas output; no requests, no page state.

const DIGITS = Array.from({ length: 10 }, (_, digit) => digit);

/** "data:image/png;base64,..." for a base64 PNG from the service. */
export function pngUrl(base64) {
  return `data:image/png;base64,${base64}`;
}

export function formatPercent(probability) {
  const percent = probability * 100;
  if (percent > 0 && percent < 0.1) return "<0.1 %";
  if (percent > 99.9 && percent < 100) return ">99.9 %";
  return `${percent >= 10 || percent === 0 ? percent.toFixed(0) : percent.toFixed(1)} %`;
}

/** Short number for labels: 3 significant digits, no exponent for ordinary magnitudes. */
export function formatValue(value) {
  if (!Number.isFinite(value)) return String(value);
  if (value === 0) return "0";
  const magnitude = Math.abs(value);
  return magnitude >= 1e-3 && magnitude < 1e5 ? String(Number(value.toPrecision(3))) : value.toExponential(2);
}

function element(tag, className, attributes = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  return node;
}

/**
 * Ten bars, one per digit, each `[data-digit]` with `data-value` = its probability ("" when none).
 * @param {HTMLElement} container
 * @param {number[]|null} probabilities null: the empty state
 * @param {number|null} label the predicted digit, highlighted
 */
export function renderProbabilities(container, probabilities, label = null) {
  if (container.children.length !== DIGITS.length) {
    container.replaceChildren(...DIGITS.map((digit) => {
      const row = element("div", "prob", { role: "listitem", "data-digit": String(digit) });
      const name = element("span", "prob-digit");
      name.textContent = String(digit);
      const track = element("span", "prob-track", {
        role: "meter", "aria-label": `Probability of ${digit}`, "aria-valuemin": "0", "aria-valuemax": "1",
      });
      track.append(element("span", "prob-fill"));
      row.append(name, track, element("span", "prob-value"));
      return row;
    }));
  }
  for (const digit of DIGITS) {
    const row = container.children[digit];
    const value = probabilities ? probabilities[digit] : null;
    row.dataset.value = value === null ? "" : String(value);
    row.classList.toggle("top", value !== null && digit === label);
    row.querySelector(".prob-fill").style.width = `${value === null ? 0 : Math.max(0, Math.min(1, value)) * 100}%`;
    const track = row.querySelector(".prob-track");
    track.setAttribute("aria-valuenow", value === null ? "0" : String(value));
    track.setAttribute("aria-valuetext", value === null ? "no prediction" : formatPercent(value));
    row.querySelector(".prob-value").textContent = value === null ? "–" : formatPercent(value);
  }
}

/** Grid of numbers (rows of equal length) -> ImageData, mapping [0, 1] to black..white. */
export function grayscaleImage(rows) {
  const height = rows.length;
  const width = rows[0]?.length ?? 0;
  let top = 1;
  for (const row of rows) for (const value of row) top = Math.max(top, value);
  const scale = top > 1.5 ? 1 : 255;  // tolerate an input sent in 0..255
  const image = new ImageData(Math.max(width, 1), Math.max(height, 1));
  rows.forEach((row, y) => row.forEach((value, x) => {
    const level = Math.max(0, Math.min(255, Math.round(value * scale)));
    const i = (y * width + x) * 4;
    image.data[i] = level;
    image.data[i + 1] = level;
    image.data[i + 2] = level;
    image.data[i + 3] = 255;
  }));
  return image;
}

/** Draw a grid of [0, 1] numbers into a canvas at its own resolution (CSS scales it up). */
export function drawGrayscale(canvas, rows) {
  const image = grayscaleImage(rows);
  canvas.width = image.width;
  canvas.height = image.height;
  canvas.getContext("2d").putImageData(image, 0, 0);
  canvas.dataset.drawn = "true";
}

export function clearCanvas(canvas) {
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  delete canvas.dataset.drawn;
}

/**
 * Histogram of a layer's output values, bar heights on a log(1 + count) scale so that the
 * spike of zeros after a ReLU does not flatten everything else; a line marks zero.
 * @param {HTMLCanvasElement} canvas
 * @param {{counts: number[], edges: number[]}} histogram
 */
export function drawHistogram(canvas, histogram) {
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  const { counts, edges } = histogram;
  if (!counts?.length) return;
  const styles = getComputedStyle(canvas);
  const barColor = styles.getPropertyValue("--bar").trim() || "#3b82f6";
  const axisColor = styles.getPropertyValue("--axis").trim() || "#888888";
  const peak = Math.max(...counts.map((count) => Math.log1p(count)), 1e-9);
  const barWidth = width / counts.length;
  ctx.fillStyle = barColor;
  counts.forEach((count, i) => {
    const barHeight = (Math.log1p(count) / peak) * (height - 2);
    ctx.fillRect(i * barWidth + 0.5, height - barHeight, Math.max(1, barWidth - 1), barHeight);
  });
  const low = edges[0];
  const high = edges[edges.length - 1];
  if (low < 0 && high > 0) {
    const x = ((0 - low) / (high - low)) * width;
    ctx.fillStyle = axisColor;
    ctx.fillRect(Math.round(x), 0, 1, height);
  }
  canvas.dataset.drawn = "true";
}

/**
 * Colours are relative to the map's largest |drop| (the caption gives its size): a confident model
 * may move p by only 0.001 and still show clearly where it looks. Below this floor, drops are
 * float32 noise and stay faint.
 */
const HEAT_SCALE_FLOOR = 1e-4;

/** Drop in probability -> colour: red where covering the pixels lowers p(target), blue where it raises it. */
function heatColor(value, scale) {
  const strength = Math.min(1, Math.abs(value) / scale);
  return value >= 0 ? [239, 68, 68, Math.round(strength * 210)] : [59, 130, 246, Math.round(strength * 210)];
}

/**
 * The 28x28 input in gray with the occlusion heatmap over it.
 * @returns {number} the largest |drop| (0: the map is flat and nothing is overlaid)
 */
export function drawOcclusion(canvas, input, heatmap) {
  const ctx = canvas.getContext("2d");
  const base = grayscaleImage(input);
  const baseCanvas = new OffscreenCanvas(base.width, base.height);
  baseCanvas.getContext("2d").putImageData(base, 0, 0);
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.imageSmoothingEnabled = false;
  ctx.globalAlpha = 0.55;  // the input stays visible under the colours
  ctx.drawImage(baseCanvas, 0, 0, canvas.width, canvas.height);
  ctx.globalAlpha = 1;

  const rows = heatmap.length;
  const cols = heatmap[0]?.length ?? 0;
  let maxAbs = 0;
  for (const row of heatmap) for (const value of row) maxAbs = Math.max(maxAbs, Math.abs(value));
  if (maxAbs > 1e-6 && rows && cols) {
    const overlay = new ImageData(cols, rows);
    const scale = Math.max(maxAbs, HEAT_SCALE_FLOOR);
    heatmap.forEach((row, y) => row.forEach((value, x) => overlay.data.set(heatColor(value, scale), (y * cols + x) * 4)));
    const overlayCanvas = new OffscreenCanvas(cols, rows);
    overlayCanvas.getContext("2d").putImageData(overlay, 0, 0);
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(overlayCanvas, 0, 0, canvas.width, canvas.height);
  }
  canvas.dataset.drawn = "true";
  return maxAbs;
}
