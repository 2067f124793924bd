// The "Unit" panel: one unit of the network for the current input (POST /v1/models/{m}/inspect):
// its values with a scale, the kernels (or weights) that produced it per input channel, its
// receptive field on the input, and the channels of the layer before that added most to it.
// Events: "position" with detail {y, x} when a position of the unit's map is picked.

import { drawSignedMap, linearScale, renderLegend } from "./colors.js";
import { element, formatValue, pngUrl } from "./render.js";

const TOP_CONTRIBUTIONS = 6;

function signedCanvas(values, scale, { size = 112, label, box = null, underlay = null, testid = null } = {}) {
  const canvas = element("canvas", "signed-map", { width: String(size), height: String(size), role: "img", "aria-label": label });
  if (testid) canvas.dataset.testid = testid;
  drawSignedMap(canvas, values, scale, { box, underlay });
  return canvas;
}

function figure(title, ...content) {
  const wrap = element("figure", "unit-figure");
  const caption = element("figcaption");
  caption.textContent = title;
  wrap.append(caption, ...content);
  return wrap;
}

function legend(scale, meaning) {
  const container = element("div", "legend small");
  renderLegend(container, scale, meaning);
  return container;
}

/** [C, kh, kw] kernels (or [C, H, W] dense weights) as a grid of small signed maps on one scale. */
function kernelGrid(kernels, highlighted) {
  const [channels, kh, kw] = kernels.shape;
  const scale = linearScale(kernels.max_abs, "weight");
  const grid = element("div", "kernel-grid", { role: "list", "aria-label": `${channels} kernels of ${kh}×${kw}, one per input channel` });
  const size = Math.max(14, Math.min(28, Math.floor(260 / Math.ceil(Math.sqrt(channels)))));
  kernels.values.forEach((kernel, channel) => {
    const item = element("div", "kernel-item", { role: "listitem" });
    item.classList.toggle("strong", highlighted.has(channel));
    item.append(signedCanvas(kernel, scale, { size, label: `kernel for input channel ${channel}` }));
    item.title = `input channel ${channel}`;
    grid.append(item);
  });
  return { grid, scale };
}

/** A vector of weights (fc2: one per relu unit) drawn as a grid of cells. */
function weightStrip(vector) {
  const columns = Math.ceil(Math.sqrt(vector.values.length * 2));
  const rows = [];
  for (let start = 0; start < vector.values.length; start += columns) {
    const row = vector.values.slice(start, start + columns);
    while (row.length < columns) row.push(0);
    rows.push(row);
  }
  const scale = linearScale(vector.max_abs, "weight");
  const canvas = element("canvas", "signed-map wide", { width: String(columns * 6), height: String(rows.length * 6), role: "img",
                                                     "aria-label": `${vector.values.length} weights` });
  drawSignedMap(canvas, rows, scale);
  return { canvas, scale };
}

export class UnitInspector extends EventTarget {
  constructor(empty, body) {
    super();
    this.empty = empty;
    this.body = body;
  }

  clear(message = null) {
    this.body.hidden = true;
    this.body.replaceChildren();
    this.empty.hidden = false;
    if (message) this.empty.textContent = message;
    delete this.body.dataset.layer;
  }

  /**
   * @param {object} result the inspect response
   * @param {{input: number[][]|null, channelPngs: (layer: string) => string[]|null}} context
   */
  show(result, context) {
    const { unit, producer } = result;
    const where = unit.y !== undefined ? ` at (${unit.y}, ${unit.x})` : "";
    const which = unit.channel !== undefined ? `channel ${unit.channel}` : `unit ${unit.unit}`;
    const heading = element("h3", "unit-title", { "data-testid": "unit-title" });
    heading.textContent = `${unit.layer} ${which}${where} = ${formatValue(result.value)}`;
    const made = element("p", "hint");
    const madeBy = producer.layer === unit.layer ? "" : ` It is ${producer.layer} ${producer.channel ?? producer.unit}` +
      `${producer.y !== undefined ? ` at (${producer.y}, ${producer.x})` : ""} after ${unit.kind === "relu" ? "the ReLU" : "ReLU and pooling"}.`;
    made.textContent = `Weighted sum ${formatValue(result.pre_activation)} = bias ${formatValue(result.bias)} + what each ` +
      `channel of ${result.input_layer} adds (below).${madeBy}`;

    const figures = element("div", "unit-figures");
    const values = result.values;
    const valueScale = linearScale(values.max_abs);
    if (values.shape.length === 2) {
      const box = unit.y !== undefined ? { top: unit.y, left: unit.x, bottom: unit.y, right: unit.x } : null;
      const map = signedCanvas(values.values, valueScale, { label: `${unit.layer} ${which}: its values, ${formatValue(values.min)} to ${formatValue(values.max)}`, box, testid: "unit-map" });
      map.classList.add("pickable");
      map.addEventListener("click", (event) => {
        const rect = map.getBoundingClientRect();
        const [height, width] = values.shape;
        const y = Math.min(height - 1, Math.floor(((event.clientY - rect.top) / rect.height) * height));
        const x = Math.min(width - 1, Math.floor(((event.clientX - rect.left) / rect.width) * width));
        this.dispatchEvent(new CustomEvent("position", { detail: { y, x } }));
      });
      figures.append(figure(`Its map (${values.shape.join("×")}); click a position`, map, legend(valueScale, { negative: "below 0", positive: "above 0" })));
    } else {
      const note = element("p", "hint");
      note.textContent = `${unit.layer} has ${values.shape[0]} values, from ${formatValue(values.min)} to ${formatValue(values.max)}.`;
      figures.append(figure("Its layer", note));
    }

    const fieldScale = linearScale(result.input_gradient.max_abs, "per pixel");
    const field = result.field;
    figures.append(figure(
      `Receptive field: rows ${field.top}–${field.bottom}, columns ${field.left}–${field.right}`,
      signedCanvas(result.input_gradient.values, fieldScale, { label: "receptive field on the input, with how much each pixel moves the weighted sum", box: field, underlay: context.input, testid: "unit-field" }),
      legend(fieldScale, { negative: "brighter pixel lowers it", positive: "brighter pixel raises it" }),
    ));

    const top = result.contributions.slice(0, TOP_CONTRIBUTIONS);
    const strong = new Set(top.map(({ channel }) => channel));
    if (result.kernels.shape.length === 3) {
      const { grid, scale } = kernelGrid(result.kernels, strong);
      const kernelsTitle = producer.layer.startsWith("fc") ? `Its weights, laid out as ${result.input_layer}'s channels`
        : `Its kernels, one per channel of ${result.input_layer} (${result.kernels.shape.join("×")})`;
      figures.append(figure(kernelsTitle, grid, legend(scale, { negative: "negative weight", positive: "positive weight" })));
    } else {
      const { canvas, scale } = weightStrip(result.kernels);
      figures.append(figure(`Its ${result.kernels.shape[0]} weights, one per ${result.input_layer} unit`, canvas,
        legend(scale, { negative: "negative weight", positive: "positive weight" })));
    }

    const list = element("ol", "contributions", { "data-testid": "contributions", "aria-label": `Channels of ${result.input_layer} that add most` });
    const largest = Math.max(...top.map(({ value }) => Math.abs(value)), 1e-12);
    const pngs = context.channelPngs(result.input_layer);
    for (const { channel, value } of top) {
      const item = element("li", "contribution", { "data-channel": String(channel), "data-value": String(value) });
      if (pngs && pngs[channel]) item.append(element("img", "contribution-map", { src: pngUrl(pngs[channel]), alt: "" }));
      const label = element("span", "contribution-label");
      label.textContent = `${result.input_layer === "input" ? "input" : `${result.input_layer} ${channel}`}: ${value >= 0 ? "+" : ""}${formatValue(value)}`;
      const bar = element("span", `contribution-bar ${value >= 0 ? "positive" : "negative"}`);
      bar.style.width = `${(Math.abs(value) / largest) * 100}%`;
      item.append(label, bar);
      list.append(item);
    }
    figures.append(figure(`Strongest contributions from ${result.input_layer} (weights × activations)`, list));

    const note = result.note ? element("p", "hint approximate") : null;
    if (note) note.textContent = result.note;
    this.body.replaceChildren(heading, made, figures, ...(note ? [note] : []));
    this.body.dataset.layer = unit.layer;
    this.body.dataset.index = String(unit.channel ?? unit.unit);
    this.body.hidden = false;
    this.empty.hidden = true;
  }
}
