/**
 * mnist-serve's web page: draw or upload a digit; see what the served CNN saw, what it predicts,
 * what every layer computes, and where it looks. Plain ES modules, no build step.
 *
 * Stable hooks (the browser tests and docs/page.md rely on them):
 *   #app              <main>; data-state = loading | idle | busy | ready | error,
 *                     data-pending = requests in flight, data-seq = version of the input,
 *                     data-settled-seq = input version whose requests have all finished
 *   #pad              drawing canvas (Pointer Events: mouse, pen, touch); #clear, #undo its buttons
 *   #upload           file input: an image file as the input instead of a drawing
 *   #model-select     the served models (GET /v1/models); #model-info: the selected one's details
 *   #side-by-side     checkbox: PyTorch and TensorFlow models of the selected architecture side by side
 *   #compare          the side-by-side panel: a .compare-column[data-model] per model, each with
 *                     .compare-prediction (digit) and .probabilities (10 bars as in #probabilities)
 *   #prediction       the predicted digit; #confidence its probability
 *   #probabilities    10 bars, .prob[data-digit][data-value] (data-value = probability, "" when none)
 *   #model-input      28×28 canvas: the input after the server's preprocessing (data-drawn when drawn)
 *   #layers           a details.layer[data-layer=<name>][data-kind] per layer, network order, with
 *                     [data-testid=feature-maps] (an img per channel; one strip for 1-D layers),
 *                     [data-testid=histogram] (canvas), [data-testid=layer-stats] and, for conv
 *                     layers, [data-testid=kernels] (an img per output channel)
 *   #occlusion        occlusion-sensitivity heatmap over the input (data-drawn, data-target);
 *                     #occlusion-patch, #occlusion-stride, #occlusion-target its options
 *   #fmap-dialog      an enlarged feature map with its value range (data-min, data-max)
 *   #error            role="alert": the service's {"error"} message, or that it is unreachable
 */

import * as api from "./api.js";
import { ComparePanel, frameworkPair } from "./compare.js";
import { ErrorBanner } from "./errors.js";
import { LayerPanel } from "./layers.js";
import { DrawingPad } from "./pad.js";
import { clearCanvas, drawGrayscale, drawOcclusion, formatPercent, formatValue, renderProbabilities } from "./render.js";
import { Freshness, debounce } from "./scheduler.js";

const UPDATE_WAIT_MS = 200;
const UPDATE_MAX_WAIT_MS = 500;
const MODEL_LIST_RETRY_MS = 3000;
const FRAMEWORK_TITLES = { pytorch: "PyTorch", tensorflow: "TensorFlow" };

const $ = (selector) => document.querySelector(selector);
const ui = {
  app: $("#app"),
  pad: $("#pad"),
  clear: $("#clear"),
  undo: $("#undo"),
  upload: $("#upload"),
  padStatus: $("#pad-status"),
  modelSelect: $("#model-select"),
  modelInfo: $("#model-info"),
  sideBySide: $("#side-by-side"),
  compare: $("#compare"),
  prediction: $("#prediction"),
  confidence: $("#confidence"),
  probabilities: $("#probabilities"),
  modelInput: $("#model-input"),
  occlusion: $("#occlusion"),
  occlusionPatch: $("#occlusion-patch"),
  occlusionStride: $("#occlusion-stride"),
  occlusionTarget: $("#occlusion-target"),
  occlusionCaption: $("#occlusion-caption"),
};

const pad = new DrawingPad(ui.pad);
const layers = new LayerPanel($("#layers"), $("#fmap-dialog"));
const comparison = new ComparePanel($("#compare-columns"));
const errors = new ErrorBanner($("#error"));
const fresh = { activations: new Freshness(), explain: new Freshness(), compare: new Freshness() };

const state = {
  /** @type {Array<object>} ModelInfo of every served model */
  models: [],
  /** @type {object|null} ModelInfo of the selected model */
  model: null,
  /** base64 image of the input the outputs show, null when the pad is empty */
  image: null,
  /** the 28×28 input of the last activations response (the occlusion map is drawn over it) */
  input: null,
  seq: 0,
  settledSeq: 0,
  pending: 0,
  /** @type {Map<string, Promise<object>>} weights responses by "<model>@<version>/<layer>" */
  kernels: new Map(),
};

function publishState() {
  const { app } = ui;
  app.dataset.seq = String(state.seq);
  app.dataset.settledSeq = String(state.settledSeq);
  app.dataset.pending = String(state.pending);
  if (!state.model) app.dataset.state = errors.hasErrors ? "error" : "loading";
  else if (state.pending > 0 || state.settledSeq < state.seq) app.dataset.state = "busy";
  else if (errors.hasErrors) app.dataset.state = "error";
  else app.dataset.state = pad.isEmpty ? "idle" : "ready";
  ui.undo.disabled = !pad.canUndo;
  ui.clear.disabled = pad.isEmpty;
}

/** Count a request in data-pending while it runs. */
async function tracked(promise) {
  state.pending += 1;
  publishState();
  try {
    return await promise;
  } finally {
    state.pending -= 1;
    publishState();
  }
}

/**
 * Run one request whose answer is drawn only while it is the newest of its kind; its error goes
 * to the banner under `kind`, and its success takes that kind's error away. True when drawn.
 */
async function fetchFresh(kind, request, apply) {
  const ticket = fresh[kind].issue();
  let applied = false;
  try {
    const result = await tracked(request());
    if (fresh[kind].accept(ticket)) {
      errors.clear(kind);
      apply(result);
      applied = true;
    }
  } catch (error) {
    if (fresh[kind].accept(ticket)) errors.set(kind, error);
  }
  publishState();
  return applied;
}

// ---- outputs -------------------------------------------------------------------------------

function showPrediction(prediction) {
  ui.prediction.textContent = String(prediction.label);
  ui.confidence.textContent = `confidence ${formatPercent(prediction.confidence)}`;
  renderProbabilities(ui.probabilities, prediction.probabilities, prediction.label);
}

function showActivations(response) {
  state.input = response.input;
  showPrediction(response.prediction);
  drawGrayscale(ui.modelInput, response.input);
  layers.show(response.layers);
}

function showExplanation(response) {
  const input = response.input ?? state.input ?? response.heatmap.map((row) => row.map(() => 0));
  const maxDrop = drawOcclusion(ui.occlusion, input, response.heatmap);
  ui.occlusion.dataset.target = String(response.target);
  ui.occlusion.dataset.patch = String(response.patch);
  ui.occlusion.dataset.stride = String(response.stride);
  const percent = formatPercent(response.probability);
  const probability = /^[<>]/.test(percent) ? `p ${percent}` : `p = ${percent}`;  // "p >99.9 %", "p = 42 %"
  ui.occlusionCaption.textContent =
    `Target ${response.target} (${probability}). Red: covering this area with a ` +
    `${response.patch}×${response.patch} patch lowers p(${response.target}), by up to ${formatValue(maxDrop)}; ` +
    "blue: covering it raises p." +
    (maxDrop < 0.01 ? " The model stays confident wherever the patch sits; a larger patch shows more." : "");
}

function resetOutputs() {
  state.image = null;
  state.input = null;
  ui.prediction.textContent = "–";
  ui.confidence.textContent = "Draw a digit to see a prediction.";
  renderProbabilities(ui.probabilities, null);
  clearCanvas(ui.modelInput);
  clearCanvas(ui.occlusion);
  delete ui.occlusion.dataset.target;
  ui.occlusionCaption.textContent = "";
  layers.reset();
  comparison.reset();
  for (const source of ["activations", "explain", "compare"]) errors.clear(source);
}

// ---- requests ------------------------------------------------------------------------------

function explainOptions() {
  const target = ui.occlusionTarget.value;
  return { patch: Number(ui.occlusionPatch.value), stride: Number(ui.occlusionStride.value), target: target === "" ? null : Number(target) };
}

function loadExplanation(model, image) {
  return fetchFresh("explain", () => api.explain(model.name, image, explainOptions()), showExplanation);
}

function loadComparison(image) {
  const names = comparison.modelNames;
  return fetchFresh("compare",
    () => Promise.all(names.map((name) => api.predict(name, image))),
    (responses) => responses.forEach((response, i) => comparison.show(names[i], response.predictions[0])));
}

/** Everything that depends on the input, for the input as it is now. */
async function update() {
  if (!state.model || pad.isEmpty) return;
  const seq = state.seq;
  const model = state.model;
  const image = pad.encode();
  state.image = image;
  // the occlusion map is drawn over the activations' input, so it waits for them; after an
  // error, or when a newer input is on its way, the other requests would be wasted
  const shown = await fetchFresh("activations", () => api.activations(model.name, image), showActivations);
  if (shown && seq === state.seq) {
    await Promise.all([loadExplanation(model, image), ui.sideBySide.checked ? loadComparison(image) : null]);
  }
  if (seq > state.settledSeq) state.settledSeq = seq;
  publishState();
}

const scheduleUpdate = debounce(() => { update(); }, UPDATE_WAIT_MS, UPDATE_MAX_WAIT_MS);

/**
 * The pad was emptied or the model changed: answers still on their way describe something that
 * is gone. (A stroke going on does not invalidate: an answer for its start is still worth showing.)
 */
function invalidate() {
  for (const freshness of Object.values(fresh)) freshness.invalidate();
}

function kernelsFor(model, layerName) {
  const key = `${model.name}@${model.version}/${layerName}`;
  if (!state.kernels.has(key)) {
    const request = api.layerWeights(model.name, model.version, layerName);
    request.catch(() => state.kernels.delete(key));  // a failure is not cached: the next visit retries
    state.kernels.set(key, request);
  }
  return state.kernels.get(key);
}

async function loadKernels(model) {
  const convLayers = model.layers.filter((layer) => layer.kind === "conv");
  await Promise.all(convLayers.map(async (layer) => {
    try {
      const weights = await tracked(kernelsFor(model, layer.name));
      if (state.model !== model) return;
      errors.clear("kernels");
      layers.showKernels(layer.name, weights);
    } catch (error) {
      if (state.model === model) errors.set("kernels", error);
    }
  }));
  publishState();
}

// ---- models --------------------------------------------------------------------------------

function describeModel(model) {
  const framework = FRAMEWORK_TITLES[model.framework] ?? model.framework;
  const accuracy = typeof model.test_accuracy === "number" ? `${(model.test_accuracy * 100).toFixed(2)} %` : "n/a";
  return { framework, accuracy };
}

function fillModelSelect(models, selected) {
  ui.modelSelect.replaceChildren(...models.map((model) => {
    const { framework, accuracy } = describeModel(model);
    const option = document.createElement("option");
    option.value = model.name;
    option.textContent = `${model.name}: ${framework}, ${model.architecture}, test accuracy ${accuracy}${model.ready === false ? " (not ready)" : ""}`;
    option.selected = model.name === selected;
    return option;
  }));
  ui.modelSelect.disabled = models.length === 0;
}

function showModelInfo(model) {
  const { framework, accuracy } = describeModel(model);
  const parts = [
    `${framework}${model.framework_version ? ` ${model.framework_version}` : ""}`,
    `architecture ${model.architecture}`,
    `version ${model.version}`,
    `test accuracy ${accuracy}`,
    model.provider,
  ].filter(Boolean);
  ui.modelInfo.textContent = parts.join(" · ");
}

function setComparePair() {
  if (!state.model) return;
  comparison.setPair(state.model.architecture, frameworkPair(state.models, state.model.architecture));
}

function selectModel(name) {
  const model = state.models.find((candidate) => candidate.name === name);
  if (!model) return;
  state.model = model;
  invalidate();
  state.seq += 1;
  showModelInfo(model);
  layers.setModel(model);
  setComparePair();
  resetOutputs();
  errors.clear("kernels");
  loadKernels(model);
  if (!pad.isEmpty) update();
  else state.settledSeq = state.seq;
  publishState();
}

async function loadModels() {
  try {
    const { default_model: defaultModel, models } = await tracked(api.listModels());
    errors.clear("models");
    state.models = models;
    const wanted = new URLSearchParams(location.search).get("model");
    const selected = [wanted, defaultModel, models[0]?.name].find((name) => models.some((model) => model.name === name));
    fillModelSelect(models, selected);
    if (selected) selectModel(selected);
    else errors.set("models", new Error("The service serves no models yet."));
  } catch (error) {
    errors.set("models", error);
    setTimeout(loadModels, MODEL_LIST_RETRY_MS);
  }
  publishState();
}

// ---- wiring --------------------------------------------------------------------------------

function describePad() {
  const upload = pad.uploadName;
  ui.padStatus.textContent = upload ? `Input: ${upload}, sent as the file. Draw over it, or clear to start again.` : "";
}

pad.addEventListener("change", (event) => {
  state.seq += 1;
  describePad();
  if (pad.isEmpty) {
    invalidate();
    scheduleUpdate.cancel();
    resetOutputs();
    state.settledSeq = state.seq;
  } else {
    scheduleUpdate();
    if (event.detail.reason !== "draw") scheduleUpdate.flush();  // stroke ends, undo, upload: no need to wait
  }
  publishState();
});

ui.clear.addEventListener("click", () => pad.clear());
ui.undo.addEventListener("click", () => pad.undo());
ui.upload.addEventListener("change", async () => {
  const [file] = ui.upload.files;
  if (!file) return;
  try {
    await pad.loadFile(file);
    errors.clear("upload");
  } catch (error) {
    errors.set("upload", new Error(`Cannot read ${file.name}: ${error.message}`));
    publishState();
  }
  ui.upload.value = "";  // the same file can be chosen again
});

ui.pad.addEventListener("keydown", (event) => {
  if (event.key === "Delete" || event.key === "Backspace") {
    event.preventDefault();
    pad.clear();
  }
});

document.addEventListener("keydown", (event) => {
  const typing = event.target instanceof HTMLInputElement || event.target instanceof HTMLSelectElement;
  if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === "z" && !typing) {
    event.preventDefault();
    pad.undo();
  }
});

ui.modelSelect.addEventListener("change", () => selectModel(ui.modelSelect.value));

ui.sideBySide.addEventListener("change", () => {
  ui.compare.hidden = !ui.sideBySide.checked;
  if (ui.sideBySide.checked && state.image) loadComparison(state.image);
});

function onOcclusionOptions() {
  ui.occlusionPatch.nextElementSibling.value = ui.occlusionPatch.value;
  ui.occlusionStride.nextElementSibling.value = ui.occlusionStride.value;
  if (state.model && state.image) loadExplanation(state.model, state.image);
}
const scheduleExplanation = debounce(onOcclusionOptions, UPDATE_WAIT_MS);
for (const control of [ui.occlusionPatch, ui.occlusionStride]) {
  control.addEventListener("input", () => {
    control.nextElementSibling.value = control.value;
    scheduleExplanation();
  });
}
ui.occlusionTarget.addEventListener("change", onOcclusionOptions);

ui.compare.hidden = !ui.sideBySide.checked;
resetOutputs();
publishState();
loadModels();
