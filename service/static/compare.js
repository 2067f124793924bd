// The "Frameworks" panel: the same input through the PyTorch and the TensorFlow model of one
// architecture (POST /v1/compare): where their probabilities differ, how well each layer's channels
// match (the two networks were trained apart: channels are paired by correlation, not by number),
// and their saliency maps on one scale with the difference.

import { ABSOLUTE, drawSignedMap, linearScale, renderLegend, symlogScale } from "./colors.js";
import { element, formatPercent, formatValue } from "./render.js";

export const FRAMEWORKS = { pytorch: "PyTorch", tensorflow: "TensorFlow" };

/** The model of the other framework with the same architecture (float models first), or null. */
export function counterpart(models, model) {
  const candidates = models.filter((other) => other.architecture === model.architecture && other.framework !== model.framework
                                             && other.name.endsWith("-int8") === model.name.endsWith("-int8"));
  return candidates[0] ?? null;
}

function mapFigure(title, values, scale, input, testid) {
  const figure = element("figure", "compare-map");
  const canvas = element("canvas", "signed-map", { width: "112", height: "112", role: "img", "aria-label": title, "data-testid": testid });
  drawSignedMap(canvas, values, scale, { underlay: input });
  const caption = element("figcaption");
  caption.textContent = title;
  figure.append(canvas, caption);
  return figure;
}

export class ComparePanel {
  constructor(container) {
    this.container = container;
  }

  clear(message = "") {
    const note = element("p", "hint");
    note.textContent = message;
    this.container.replaceChildren(note);
    delete this.container.dataset.models;
  }

  show(response, input) {
    const [a, b] = response.models;
    const title = (model) => `${model.model} v${model.version} (${FRAMEWORKS[model.framework] ?? model.framework})`;
    const head = element("p", "compare-head", { "data-testid": "compare-head" });
    head.textContent = a.predicted === b.predicted
      ? `${title(a)} and ${title(b)} both say ${a.predicted}; total variation between their probabilities ${formatValue(response.probabilities.total_variation)}.`
      : `They disagree: ${title(a)} says ${a.predicted}, ${title(b)} says ${b.predicted}.`;

    const diffs = element("div", "prob-diffs", { role: "list", "aria-label": "Probability differences, first model minus second", "data-testid": "prob-diffs" });
    const largest = Math.max(...response.probabilities.difference.map(Math.abs), 1e-9);
    response.probabilities.difference.forEach((difference, digit) => {
      const row = element("div", "prob-diff", { role: "listitem", "data-digit": String(digit), "data-value": String(difference) });
      const label = element("span", "prob-digit");
      label.textContent = String(digit);
      const track = element("span", "diff-track");
      const bar = element("span", `diff-bar ${difference >= 0 ? "positive" : "negative"}`);
      bar.style.width = `${(Math.abs(difference) / largest) * 50}%`;
      track.append(bar);
      const value = element("span", "prob-value");
      value.textContent = `${difference >= 0 ? "+" : "−"}${formatPercent(Math.abs(difference))}`;
      row.append(label, track, value);
      row.setAttribute("aria-label", `${digit}: ${formatPercent(a.probabilities[digit])} vs ${formatPercent(b.probabilities[digit])}`);
      diffs.append(row);
    });

    const layers = element("div", "layer-agreement", { role: "list", "aria-label": "How well each layer's channels match", "data-testid": "layer-agreement" });
    for (const layer of response.layers) {
      const row = element("div", "agreement", { role: "listitem", "data-layer": layer.name });
      const name = element("span", "agreement-name");
      name.textContent = layer.name;
      const track = element("span", "agreement-track");
      const text = element("span", "agreement-value");
      if (layer.agreement !== null && layer.agreement !== undefined) {
        const bar = element("span", "agreement-bar");
        bar.style.width = `${Math.max(0, layer.agreement) * 100}%`;
        track.append(bar);
        text.textContent = `r̄ ${layer.agreement.toFixed(2)}`;
        row.dataset.agreement = String(layer.agreement);
      } else if (layer.differences) {
        text.textContent = `logits differ by up to ${formatValue(Math.max(...layer.differences.map(Math.abs)))}`;
      } else {
        text.textContent = `mean ${formatValue(layer.stats[0].mean)} vs ${formatValue(layer.stats[1].mean)}`;
      }
      row.append(name, track, text);
      layers.append(row);
    }

    const saliency = response.saliency;
    const scale = symlogScale(ABSOLUTE.gradient);
    const differenceScale = linearScale(saliency.difference.max_abs, "logit");
    const maps = element("div", "compare-maps");
    maps.append(
      mapFigure(`${FRAMEWORKS[a.framework] ?? a.model}: why ${saliency.target}`, saliency.maps[0].values, scale, input, "saliency-a"),
      mapFigure(`${FRAMEWORKS[b.framework] ?? b.model}: why ${saliency.target}`, saliency.maps[1].values, scale, input, "saliency-b"),
      mapFigure(`difference (r = ${saliency.correlation.toFixed(2)})`, saliency.difference.values, differenceScale, input, "saliency-difference"),
    );
    const legend = element("div", "legend small");
    renderLegend(legend, scale, { negative: `against ${saliency.target}`, positive: `for ${saliency.target}` });
    const note = element("p", "hint");
    note.textContent = "Channels are paired one to one by the correlation of their maps for this input (the networks " +
      "were trained apart: channel k of one is not channel k of the other); r̄ is the mean over pairs. Dense layers " +
      "have no positions to correlate: only their means are shown. The difference map is on its own linear scale.";
    this.container.replaceChildren(head, diffs, layers, maps, legend, note);
    this.container.dataset.models = `${a.model},${b.model}`;
  }
}
