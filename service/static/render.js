// Drawing primitives: numbers and percentages, grayscale images from number grids, the
// probability bars. Pure DOM/canvas output; no requests, no page state.

export const DIGITS = Array.from({ length: 10 }, (_, digit) => digit);

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

export function element(tag, className, attributes = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  return node;
}

/**
 * Ten bars, one per digit: a radio group (pick the digit the "Why" map explains). Each row is
 * `[data-digit]` with `data-value` = its probability ("" when none); `.top` marks the prediction.
 * @param {HTMLElement} container
 * @param {number[]|null} probabilities null: the empty state
 * @param {number|null} label the predicted digit
 * @param {number|null} picked the digit picked for explanation (null: follow the prediction)
 */
export function renderProbabilities(container, probabilities, label = null, picked = null) {
  if (container.children.length !== DIGITS.length) {
    container.replaceChildren(...DIGITS.map((digit) => {
      const row = element("div", "prob", { role: "radio", "data-digit": String(digit), "aria-checked": "false", tabindex: "-1" });
      const name = element("span", "prob-digit", { "aria-hidden": "true" });
      name.textContent = String(digit);
      const track = element("span", "prob-track", { "aria-hidden": "true" });
      track.append(element("span", "prob-fill"));
      row.append(name, track, element("span", "prob-value", { "aria-hidden": "true" }));
      return row;
    }));
  }
  const checked = picked ?? label ?? 0;
  for (const digit of DIGITS) {
    const row = container.children[digit];
    const value = probabilities ? probabilities[digit] : null;
    row.dataset.value = value === null ? "" : String(value);
    row.classList.toggle("top", value !== null && digit === label);
    row.querySelector(".prob-fill").style.width = `${value === null ? 0 : Math.max(0, Math.min(1, value)) * 100}%`;
    const text = value === null ? "–" : formatPercent(value);
    row.querySelector(".prob-value").textContent = text;
    row.setAttribute("aria-label", `${digit}: ${value === null ? "no prediction" : text}${digit === label ? ", predicted" : ""}`);
    row.setAttribute("aria-checked", String(digit === checked));
    row.tabIndex = digit === checked ? 0 : -1;
  }
}

/** Grid of numbers (rows of equal length) -> ImageData, mapping [0, 1] to black..white. */
export function grayscaleImage(rows) {
  const height = rows.length;
  const width = rows[0]?.length ?? 0;
  const image = new ImageData(Math.max(width, 1), Math.max(height, 1));
  rows.forEach((row, y) => row.forEach((value, x) => {
    const level = Math.max(0, Math.min(255, Math.round(value * 255)));
    image.data.set([level, level, level, 255], (y * width + x) * 4);
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

/** Decode a base64 PNG into its gray levels (0..255), row-major. */
export async function pngLevels(base64) {
  const bitmap = new Image();  // an <img>, not fetch(): the CSP's connect-src does not allow data: URLs
  bitmap.src = pngUrl(base64);
  await bitmap.decode();
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  const { data } = ctx.getImageData(0, 0, bitmap.width, bitmap.height);
  const levels = new Uint8Array(bitmap.width * bitmap.height);
  for (let i = 0; i < levels.length; i += 1) levels[i] = data[i * 4];
  return { levels, width: bitmap.width, height: bitmap.height };
}
