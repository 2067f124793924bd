// Side by side: the same input through the PyTorch and the TensorFlow model of one architecture.

import { formatPercent, renderProbabilities } from "./render.js";

export const FRAMEWORKS = [
  { id: "pytorch", title: "PyTorch" },
  { id: "tensorflow", title: "TensorFlow" },
];

/**
 * The model of each framework with the given architecture (ModelInfo or null when none is served).
 * @param {Array<{name: string, framework: string, architecture: string}>} models
 */
export function frameworkPair(models, architecture) {
  return FRAMEWORKS.map(({ id }) => models.find((model) => model.architecture === architecture && model.framework === id) ?? null);
}

export class ComparePanel {
  /** @param {HTMLElement} container the columns go here */
  constructor(container) {
    this.container = container;
    this.columns = [];
  }

  /** The models to compare, one per framework (null: that framework has no model of this architecture). */
  setPair(architecture, pair) {
    this.columns = FRAMEWORKS.map((framework, i) => {
      const model = pair[i];
      const column = document.createElement("div");
      column.className = "compare-column";
      column.dataset.framework = framework.id;
      const heading = document.createElement("h3");
      heading.textContent = model ? `${framework.title}: ${model.name}` : framework.title;
      column.append(heading);
      if (!model) {
        const note = document.createElement("p");
        note.className = "hint";
        note.textContent = `No ${framework.title} model of the ${architecture} architecture is served.`;
        column.append(note);
        return { model: null, column };
      }
      column.dataset.model = model.name;
      const prediction = document.createElement("output");
      prediction.className = "compare-prediction";
      prediction.setAttribute("aria-label", `${model.name} predicts`);
      prediction.textContent = "–";
      const confidence = document.createElement("p");
      confidence.className = "compare-confidence";
      const bars = document.createElement("div");
      bars.className = "probabilities";
      bars.setAttribute("role", "list");
      bars.setAttribute("aria-label", `Probabilities from ${model.name}`);
      renderProbabilities(bars, null);
      column.append(prediction, confidence, bars);
      return { model, column, prediction, confidence, bars };
    });
    this.container.replaceChildren(...this.columns.map(({ column }) => column));
  }

  /** The models that have a column, by name. */
  get modelNames() {
    return this.columns.filter(({ model }) => model).map(({ model }) => model.name);
  }

  /** A predict response's first prediction for one model. */
  show(modelName, prediction) {
    const column = this.columns.find(({ model }) => model?.name === modelName);
    if (!column) return;
    column.prediction.textContent = String(prediction.label);
    column.confidence.textContent = `confidence ${formatPercent(prediction.confidence)}`;
    renderProbabilities(column.bars, prediction.probabilities, prediction.label);
  }

  reset() {
    for (const column of this.columns) {
      if (!column.model) continue;
      column.prediction.textContent = "–";
      column.confidence.textContent = "";
      renderProbabilities(column.bars, null);
    }
  }
}
