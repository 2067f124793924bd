// The error banner (#error, role="alert"): one message per source (activations, explain, ...);
// a later success from the same source takes its message away.

export class ErrorBanner {
  /** @type {Map<string, string>} */
  #messages = new Map();

  /** @param {HTMLElement} element */
  constructor(element) {
    this.element = element;
    this.#render();
  }

  get hasErrors() {
    return this.#messages.size > 0;
  }

  /** @param {string} source @param {Error} error */
  set(source, error) {
    this.#messages.set(source, error.message || String(error));
    this.#render();
  }

  clear(source) {
    if (this.#messages.delete(source)) this.#render();
  }

  #render() {
    const messages = [...new Set(this.#messages.values())];
    this.element.hidden = messages.length === 0;
    this.element.replaceChildren(...messages.map((message) => {
      const line = document.createElement("p");
      line.textContent = message;
      return line;
    }));
  }
}
