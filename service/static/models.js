// The model picker: every served model (GET /v1/models lists each model's latest version and all
// its versions) and, for the selected one, its versions. Events: "change" with detail
// {name, version}.

import { FRAMEWORKS } from "./compare.js";

export function accuracyText(model) {
  return typeof model.test_accuracy === "number" ? `${(model.test_accuracy * 100).toFixed(2)} %` : "n/a";
}

export function describeModel(model) {
  const framework = FRAMEWORKS[model.framework] ?? model.framework;
  return [
    `${framework}${model.framework_version ? ` ${model.framework_version}` : ""}`,
    `${model.architecture}`,
    `version ${model.version}`,
    `MNIST test accuracy ${accuracyText(model)}`,
  ].join(" · ");
}

export class ModelPicker extends EventTarget {
  constructor(modelSelect, versionSelect) {
    super();
    this.modelSelect = modelSelect;
    this.versionSelect = versionSelect;
    this.models = [];
    modelSelect.addEventListener("change", () => {
      this.#fillVersions(this.modelSelect.value, null);
      this.#emit();
    });
    versionSelect.addEventListener("change", () => this.#emit());
  }

  /** The listing's models; `selected` {name, version} is kept when it is still served. */
  fill(models, selected) {
    this.models = models;
    this.modelSelect.replaceChildren(...models.map((model) => {
      const option = document.createElement("option");
      option.value = model.name;
      option.textContent = `${model.name} (${accuracyText(model)})${model.ready === false ? ", not ready" : ""}`;
      return option;
    }));
    const name = models.some((model) => model.name === selected?.name) ? selected.name : models[0]?.name;
    this.modelSelect.value = name ?? "";
    this.modelSelect.disabled = models.length === 0;
    this.#fillVersions(name, selected?.version ?? null);
  }

  /** The selection: {name, version, latest: ModelInfo of that model's latest version}. */
  get value() {
    const latest = this.models.find((model) => model.name === this.modelSelect.value);
    if (!latest) return null;
    return { name: latest.name, version: Number(this.versionSelect.value || latest.version), latest };
  }

  #fillVersions(name, version) {
    const model = this.models.find((candidate) => candidate.name === name);
    const versions = [...(model?.versions ?? [])].sort((a, b) => b - a);
    this.versionSelect.replaceChildren(...versions.map((number) => {
      const option = document.createElement("option");
      option.value = String(number);
      option.textContent = number === model.version ? `v${number} (latest)` : `v${number}`;
      return option;
    }));
    this.versionSelect.value = String(versions.includes(version) ? version : model?.version ?? "");
    this.versionSelect.disabled = versions.length < 2;
  }

  #emit() {
    const value = this.value;
    if (value) this.dispatchEvent(new CustomEvent("change", { detail: value }));
  }
}
