/**
 * mnist-serve's web page: draw or upload a digit; on one screen, the prediction, what the server
 * did to the input, every layer of the network, and on demand why (gradient maps), one unit in
 * detail, the two frameworks compared, occlusion. Plain ES modules, no build step.
 *
 * Stable hooks (the browser tests and docs/page.md rely on them):
 *   #app              <main>; data-state = loading | idle | busy | ready | error, data-pending = requests
 *                     in flight, data-seq = version of the input, data-settled-seq = input version whose
 *                     requests have all finished; data-prediction-ms / data-layers-ms = time from the end
 *                     of the last stroke to the prediction / to every layer drawn
 *   #busy             visible while requests are pending (#result, #network, .detail-panel get aria-busy)
 *   #pad, #clear, #undo, #upload   the input; #steps the preprocessing steps; #warnings its warnings
 *   #model-select, #version-select the served models and the selected one's versions
 *   #prediction, #confidence, #model-input (28×28 the model saw)
 *   #probabilities    radio group: .prob[data-digit][data-value][aria-checked] (the digit explained)
 *   #tabs             Why (#attribution), Unit (#unit-body), Frameworks (#compare-body), Occlusion (#occlusion)
 *   #layers           a .layer[data-layer][data-kind][data-min][data-max] per layer, network order, with
 *                     [data-testid=feature-maps] (listbox of img.tile) or [data-testid=units] (slider canvas)
 *   #error            role="alert": one line per failing request kind; a success of that kind clears it
 */

import * as api from "./api.js";
import { AttributionPanel } from "./attribution.js";
import { ComparePanel } from "./compare.js";
import { ErrorBanner } from "./errors.js";
import { UnitInspector } from "./inspector.js";
import { ModelPicker, describeModel } from "./models.js";
import { NetworkView } from "./network.js";
import { OcclusionPanel } from "./occlusion.js";
import { DrawingPad } from "./pad.js";
import { makePanels } from "./panels.js";
import { DIGITS, clearCanvas, drawGrayscale, formatPercent, renderProbabilities } from "./render.js";
import { Freshness, debounce } from "./scheduler.js";
import { StepsView } from "./steps.js";
import { Tabs } from "./tabs.js";

const UPDATE_WAIT_MS = 200;
const UPDATE_MAX_WAIT_MS = 500;
const RETRY_MS = 3000;

const $ = (selector) => document.querySelector(selector);
const ui = {
  app: $("#app"), busy: $("#busy"), busyText: $("#busy-text"), padStatus: $("#pad-status"), modelInfo: $("#model-info"),
  prediction: $("#prediction"), confidence: $("#confidence"), probabilities: $("#probabilities"), modelInput: $("#model-input"),
  clear: $("#clear"), undo: $("#undo"), upload: $("#upload"), pad: $("#pad"),
  busyRegions: [$("#result-bar"), $("#result"), $("#network"), $(".detail-panel")],
};

const pad = new DrawingPad(ui.pad);
const errors = new ErrorBanner($("#error"));
const picker = new ModelPicker($("#model-select"), $("#version-select"));
const network = new NetworkView($("#layers"));
const tabs = new Tabs($("#tabs"));
const steps = new StepsView($("#steps .steps-list"), $("#warnings"));
const inspector = new UnitInspector($("#unit-empty"), $("#unit-body"));
const comparison = new ComparePanel($("#compare-body"));
const attribution = new AttributionPanel({
  canvas: $("#attribution"), legend: $("#attribution-legend"), caption: $("#attribution-caption"),
  method: $("#attribution-method"), versus: $("#attribution-versus"), scale: $("#attribution-scale"),
});
const occlusion = new OcclusionPanel({
  canvas: $("#occlusion"), legend: $("#occlusion-legend"), caption: $("#occlusion-caption"),
  patch: $("#occlusion-patch"), stride: $("#occlusion-stride"),
});

const state = {
  models: [], model: null, image: null, input: null, prediction: null, picked: null, unit: null,
  layerPngs: new Map(), seq: 0, settledSeq: 0, pending: 0, strokeEnd: null,
};
const freshness = new Map();
const failed = new Set();
let retryTimer = null;

const fresh = (kind) => freshness.get(kind) ?? freshness.set(kind, new Freshness()).get(kind);
const ref = () => ({ name: state.model.name, version: state.model.version });
const hasInput = () => Boolean(state.model) && !pad.isEmpty;

function publishState() {
  const busy = state.pending > 0 || state.settledSeq < state.seq;
  Object.assign(ui.app.dataset, { seq: String(state.seq), settledSeq: String(state.settledSeq), pending: String(state.pending) });
  if (!state.model) ui.app.dataset.state = errors.hasErrors ? "error" : "loading";
  else if (busy) ui.app.dataset.state = "busy";
  else if (errors.hasErrors) ui.app.dataset.state = "error";
  else ui.app.dataset.state = pad.isEmpty ? "idle" : "ready";
  ui.app.classList.toggle("stale", busy && state.prediction !== null);
  ui.busy.classList.toggle("on", busy);
  ui.busyText.textContent = busy ? "Updating…" : "";
  for (const region of ui.busyRegions) region.setAttribute("aria-busy", String(busy));
  ui.undo.disabled = !pad.canUndo;
  ui.clear.disabled = pad.isEmpty;
}

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
 * One request whose answer is shown only while it is the newest of its kind. Its error goes to the
 * banner under `kind` and clears what it had shown (`clearStale`); its success takes that error away.
 */
async function fetchFresh(kind, request, apply, clearStale) {
  const ticket = fresh(kind).issue();
  try {
    const result = await tracked(request());
    if (!fresh(kind).accept(ticket)) return false;
    errors.clear(kind);
    failed.delete(kind);
    await apply(result);
    recoverOthers();
    return true;
  } catch (error) {
    if (!fresh(kind).accept(ticket)) return false;
    errors.set(kind, error);
    failed.add(kind);
    clearStale(error.message);
    if (error.unreachable) scheduleRetry();
    return false;
  } finally {
    publishState();
  }
}

/** The service answered again: a model listing that failed is fetched again (every update
 * fetches the input's requests and the visible panel anew). */
function recoverOthers() {
  if (failed.has("models")) loadModels();
}

function scheduleRetry() {
  if (retryTimer !== null) return;
  retryTimer = setTimeout(() => {
    retryTimer = null;
    if (failed.has("models") || !state.model) loadModels();
    else if (failed.size > 0 && hasInput()) update();
  }, RETRY_MS);
}

// ---- outputs ---------------------------------------------------------------------------------

function renderBars() {
  const prediction = state.prediction;
  renderProbabilities(ui.probabilities, prediction?.probabilities ?? null, prediction?.label ?? null, state.picked);
}

/** The digit the Why and Occlusion maps explain: the one picked in the bars, else the predicted one. */
const explained = () => state.picked ?? state.prediction?.label ?? null;

/** An activations answer for input version `seq`: the prediction, the input the model saw, every layer. */
async function showActivations(response, seq) {
  state.input = response.input;
  state.prediction = response.prediction;
  state.layerPngs = new Map(response.layers.map((layer) => [layer.name, layer.data.channels]));
  ui.prediction.textContent = String(response.prediction.label);
  ui.confidence.textContent = `${formatPercent(response.prediction.confidence)} sure`;
  renderBars();
  drawGrayscale(ui.modelInput, response.input);
  const stroke = state.strokeEnd && seq >= state.strokeEnd.seq ? state.strokeEnd : null;  // not a mid-stroke answer
  if (stroke) ui.app.dataset.predictionMs = String(Math.round(performance.now() - stroke.at));
  await network.show(response.layers);
  if (stroke && stroke === state.strokeEnd) {
    ui.app.dataset.layersMs = String(Math.round(performance.now() - stroke.at));
    state.strokeEnd = null;
  }
}

function clearActivations(message = "") {
  state.input = null;
  state.prediction = null;
  state.layerPngs = new Map();
  ui.prediction.textContent = "–";
  ui.confidence.textContent = message ? "No answer for this input." : "Draw a digit to see a prediction.";
  renderBars();
  clearCanvas(ui.modelInput);
  network.reset();
}

function clearPanels(message = "") {
  steps.clear();
  for (const panel of Object.values(PANELS)) panel.clear(message);
}

// ---- the detail panels -----------------------------------------------------------------------

const PANELS = makePanels({
  state, hasInput, fetchFresh, explained, views: { attribution, inspector, comparison, occlusion },
  requestFor: (send) => {  // a request for the current model and input (encoded once per input version)
    const model = ref();
    const image = state.image ?? pad.encode();
    return () => send(model, image);
  },
});

// ---- requests --------------------------------------------------------------------------------

/** Everything that depends on the input, for the input as it is now. */
async function update() {
  if (!hasInput()) return;
  const seq = state.seq;
  state.image = pad.encode();
  const model = ref();
  const image = state.image;
  // the prediction and the layers first: on 2 cores, the other requests would slow them down
  const shown = await fetchFresh("activations", () => api.activations(model, image), (response) => showActivations(response, seq),
    clearActivations);
  if (seq === state.seq) {
    if (shown) {
      await Promise.all([
        fetchFresh("input-check", () => api.inputCheck(model, image), (check) => steps.show(check), () => steps.clear()),
        PANELS[tabs.selected]?.load(),
      ]);
    } else {
      clearPanels();
    }
  }
  if (seq > state.settledSeq) state.settledSeq = seq;
  publishState();
}

const scheduleUpdate = debounce(() => { update(); }, UPDATE_WAIT_MS, UPDATE_MAX_WAIT_MS);

/** The input or the model changed: answers still on their way describe something that is gone. */
function invalidate() {
  for (const tracker of freshness.values()) tracker.invalidate();
}

function resetOutputs() {
  state.image = null;
  clearActivations();
  clearPanels();
  for (const kind of ["activations", "input-check", "attribution", "inspect", "compare", "explain", "upload"]) {
    errors.clear(kind);
    failed.delete(kind);
  }
}

// ---- models ----------------------------------------------------------------------------------

async function selectModel({ name, version, latest }) {
  let info = latest;
  if (version !== latest.version) {
    try {
      info = await tracked(api.describe({ name, version }));
      errors.clear("models");
    } catch (error) {
      errors.set("models", error);
      publishState();
      return;
    }
  }
  state.model = info;
  invalidate();
  state.seq += 1;
  state.unit = null;
  state.picked = null;
  ui.modelInfo.textContent = describeModel(info);
  network.setModel(info);
  network.mark(null, null);
  resetOutputs();
  if (!pad.isEmpty) update();
  else state.settledSeq = state.seq;
  publishState();
}

async function loadModels() {
  try {
    const { default_model: defaultModel, models } = await tracked(api.listModels());
    errors.clear("models");
    failed.delete("models");
    state.models = models;
    const wanted = new URLSearchParams(location.search).get("model");
    const current = state.model ? { name: state.model.name, version: state.model.version } : null;
    const name = [current?.name, wanted, defaultModel].find((candidate) => models.some((model) => model.name === candidate));
    picker.fill(models, { name: name ?? models[0]?.name, version: current?.version ?? null });
    if (!models.length) errors.set("models", new Error("The service serves no models yet."));
    else if (!state.model || state.model.name !== picker.value.name || state.model.version !== picker.value.version) {
      await selectModel(picker.value);
    }
  } catch (error) {
    errors.set("models", error);
    failed.add("models");
    scheduleRetry();
  }
  publishState();
}

// ---- wiring ----------------------------------------------------------------------------------

pad.addEventListener("change", (event) => {
  state.seq += 1;
  state.image = null;
  const upload = pad.uploadName;
  ui.padStatus.textContent = upload ? `Input: ${upload}, sent as the file. Draw over it, or clear to start again.` : "";
  if (event.detail.reason === "stroke-end") state.strokeEnd = { at: performance.now(), seq: state.seq };
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

function pick(digit, focus = false) {
  state.picked = digit;
  renderBars();
  if (focus) ui.probabilities.children[digit]?.focus();
  if (tabs.selected !== "why" && tabs.selected !== "occlusion" && tabs.selected !== "frameworks") tabs.select("why");
  else PANELS[tabs.selected].load();
}
ui.probabilities.addEventListener("click", (event) => {
  const row = event.target.closest(".prob");
  if (row) pick(Number(row.dataset.digit), true);
});
ui.probabilities.addEventListener("keydown", (event) => {
  const current = explained() ?? 0;
  const moves = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1 };
  if (event.key in moves) pick((current + moves[event.key] + DIGITS.length) % DIGITS.length, true);
  else if (event.key === " " || event.key === "Enter") pick(current, true);
  else return;
  event.preventDefault();
});

picker.addEventListener("change", (event) => selectModel(event.detail));
tabs.addEventListener("change", ({ detail }) => {
  const previous = PANELS[detail.previous];
  if (previous) {  // a hidden panel shows nothing: its error goes with it, and it is fetched again when shown
    errors.clear(previous.kind);
    failed.delete(previous.kind);
  }
  PANELS[detail.panel]?.load();
  publishState();
});
network.addEventListener("inspect", ({ detail }) => {
  state.unit = { layer: detail.layer, unit: detail.index, y: null, x: null };
  network.mark(detail.layer, detail.index);
  if (tabs.selected === "unit") PANELS.unit.load();
  else tabs.select("unit");
});
inspector.addEventListener("position", ({ detail }) => {
  if (!state.unit) return;
  Object.assign(state.unit, detail);
  PANELS.unit.load();
});
$("#attribution-versus").addEventListener("change", () => PANELS.why.load());
const reloadOcclusion = debounce(() => PANELS.occlusion.load(), UPDATE_WAIT_MS);
for (const control of ["#occlusion-patch", "#occlusion-stride"]) $(control).addEventListener("input", reloadOcclusion);

resetOutputs();
publishState();
loadModels();
