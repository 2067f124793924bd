// "Inside the network": one collapsible section per layer, in network order, with its feature maps,
// the histogram of its output values and, for conv layers, its kernels. A click on a feature map
// opens it enlarged with its value range.

import { drawHistogram, formatValue, pngUrl } from "./render.js";

const SHAPE_SEPARATOR = "×";

function element(tag, className, attributes = {}) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  return node;
}

/** On-screen size of one feature map: small maps are magnified more, big ones less. */
function mapSize(height) {
  return Math.max(36, Math.min(64, height * 2));
}

/** Value range of one channel, read back from its 8-bit PNG scaled over the layer's [low, high]. */
function channelRange(img, low, high) {
  const canvas = new OffscreenCanvas(img.naturalWidth, img.naturalHeight);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(img, 0, 0);
  const { data } = ctx.getImageData(0, 0, canvas.width, canvas.height);
  let min = 255;
  let max = 0;
  for (let i = 0; i < data.length; i += 4) {
    min = Math.min(min, data[i]);
    max = Math.max(max, data[i]);
  }
  const toValue = (level) => low + (level / 255) * (high - low);
  return { min: toValue(min), max: toValue(max) };
}

class LayerSection {
  /** @param {{name: string, kind: string, shape: number[]}} layer */
  constructor(layer, onEnlarge) {
    this.layer = layer;
    this.range = null;
    const spatial = layer.shape.length === 3;
    const channels = spatial ? layer.shape[0] : 1;

    this.root = element("details", "layer", { "data-layer": layer.name, "data-kind": layer.kind, open: "" });
    const summary = element("summary");
    const name = element("span", "layer-name");
    name.textContent = layer.name;
    const kind = element("span", "layer-kind");
    kind.textContent = layer.kind;
    const shape = element("span", "layer-shape");
    shape.textContent = layer.shape.join(SHAPE_SEPARATOR);
    summary.append(name, kind, shape);

    const body = element("div", "layer-body");
    const stats = element("div", "layer-stats");
    this.histogram = element("canvas", "histogram", {
      "data-testid": "histogram", width: "240", height: "48", role: "img",
      "aria-label": `Histogram of the output values of ${layer.name} (log scale)`,
    });
    this.statsText = element("p", "stats-text", { "data-testid": "layer-stats" });
    this.statsText.textContent = "–";
    stats.append(this.histogram, this.statsText);

    this.maps = element("div", spatial ? "feature-maps" : "feature-maps vector", {
      "data-testid": "feature-maps", role: "list", "aria-label": `Feature maps of ${layer.name}`,
    });
    this.images = [];
    for (let channel = 0; channel < channels; channel += 1) {
      const label = spatial ? `${layer.name} channel ${channel}` : `${layer.name}, all ${layer.shape[0]} values`;
      const button = element("button", "fmap", { type: "button", role: "listitem", "aria-label": `Enlarge ${label}`, title: label });
      const img = element("img", "", { alt: "", draggable: "false" });
      if (spatial) img.style.width = `${mapSize(layer.shape[1])}px`;
      button.append(img);
      button.addEventListener("click", () => {
        if (img.src && this.range) onEnlarge({ img, label, layer, layerRange: this.range });
      });
      this.maps.append(button);
      this.images.push(img);
    }
    body.append(stats, this.maps);

    if (layer.kind === "conv") {
      this.kernels = element("details", "kernels", { "data-testid": "kernels", open: "" });
      const kernelSummary = element("summary");
      kernelSummary.textContent = "Kernels";
      this.kernelGrid = element("div", "kernel-grid", { role: "list", "aria-label": `Kernels of ${layer.name}` });
      this.kernels.append(kernelSummary, this.kernelGrid);
      body.append(this.kernels);
    }
    this.root.append(summary, body);
  }

  /** One entry of an activations response (encoding=png). */
  show(entry) {
    const { stats, data } = entry;
    this.range = { min: data.min, max: data.max };
    (data.channels ?? []).forEach((png, channel) => {
      if (this.images[channel]) this.images[channel].src = pngUrl(png);
    });
    drawHistogram(this.histogram, stats.histogram);
    this.statsText.textContent =
      `min ${formatValue(stats.min)} · max ${formatValue(stats.max)} · mean ${formatValue(stats.mean)} · std ${formatValue(stats.std)}`;
  }

  reset() {
    this.range = null;
    for (const img of this.images) img.removeAttribute("src");
    this.histogram.getContext("2d").clearRect(0, 0, this.histogram.width, this.histogram.height);
    delete this.histogram.dataset.drawn;
    this.statsText.textContent = "–";
  }

  /** A weights response (encoding=png): one image per output channel, its input kernels side by side. */
  showKernels(weights) {
    if (!this.kernels) return;
    const [out, inChannels, kh, kw] = weights.weight.shape;
    const columns = inChannels * kw;
    const scale = Math.max(2, Math.min(8, Math.floor(240 / columns)));
    this.kernels.querySelector("summary").textContent =
      `Kernels ${weights.weight.shape.join(SHAPE_SEPARATOR)} (${formatValue(weights.weight.data.min)} … ${formatValue(weights.weight.data.max)})`;
    this.kernelGrid.replaceChildren(...weights.weight.data.channels.map((png, channel) => {
      const img = element("img", "kernel", {
        src: pngUrl(png), role: "listitem", alt: `${this.layer.name} kernel ${channel} of ${out}`,
        title: `output channel ${channel}: ${inChannels} input kernel(s) of ${kh}${SHAPE_SEPARATOR}${kw}`,
      });
      img.style.width = `${columns * scale}px`;
      return img;
    }));
  }
}

export class LayerPanel {
  /** @type {Map<string, LayerSection>} */
  #sections = new Map();

  /**
   * @param {HTMLElement} container #layers
   * @param {HTMLDialogElement} dialog #fmap-dialog with a canvas, #fmap-title and #fmap-range
   */
  constructor(container, dialog) {
    this.container = container;
    this.dialog = dialog;
  }

  /** Build the sections of a model's layers (ModelInfo.layers, network order). */
  setModel(info) {
    this.#sections = new Map(info.layers.map((layer) => [layer.name, new LayerSection(layer, (what) => this.#enlarge(what))]));
    this.container.replaceChildren(...[...this.#sections.values()].map((section) => section.root));
  }

  show(layers) {
    for (const entry of layers) this.#sections.get(entry.name)?.show(entry);
  }

  showKernels(layerName, weights) {
    this.#sections.get(layerName)?.showKernels(weights);
  }

  reset() {
    for (const section of this.#sections.values()) section.reset();
  }

  #enlarge({ img, label, layer, layerRange }) {
    const canvas = this.dialog.querySelector("canvas");
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    const ctx = canvas.getContext("2d");
    ctx.drawImage(img, 0, 0);
    canvas.classList.toggle("vector", layer.shape.length !== 3);
    canvas.setAttribute("aria-label", `${label}, enlarged`);
    const range = channelRange(img, layerRange.min, layerRange.max);
    this.dialog.querySelector("#fmap-title").textContent = label;
    this.dialog.querySelector("#fmap-range").textContent =
      `Values ${formatValue(range.min)} to ${formatValue(range.max)} (black to white spans the whole layer: ` +
      `${formatValue(layerRange.min)} to ${formatValue(layerRange.max)}).`;
    this.dialog.dataset.min = String(range.min);
    this.dialog.dataset.max = String(range.max);
    this.dialog.showModal();
  }
}
