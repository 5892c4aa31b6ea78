// The bridge: one WebSocket to the agent (or controller). Reconnects with
// backoff, pings every 20 s (an open socket with traffic keeps the service
// worker alive), says `hello` on every open, and hands incoming messages on.

export const PROTOCOL = 1;
const PING_EVERY_MS = 20_000;
const DEAD_AFTER_MS = 65_000;   // nothing heard for this long: reconnect
const BACKOFF_MIN_MS = 250;
const BACKOFF_MAX_MS = 5_000;
const OUTBOX_MAX = 500;          // messages kept while the socket is down

export class Bridge {
  /**
   * @param {object} hooks
   * @param {(msg: object) => void} hooks.onMessage  every parsed message except ping/pong
   * @param {() => object} hooks.helloPayload        fields of the `hello` message
   * @param {() => void} hooks.onOpen                 called after `hello` on every open
   */
  constructor({ onMessage, helloPayload, onOpen = () => {} }) {
    this.onMessage = onMessage;
    this.helloPayload = helloPayload;
    this.onOpen = onOpen;
    this.outbox = [];
    this.url = null;
    this.socket = null;
    this.backoffMs = BACKOFF_MIN_MS;
    this.retryTimer = null;
    this.pingTimer = null;
    this.lastHeard = 0;
    this.waiters = [];
  }

  get state() {
    if (!this.url) return "unconfigured";
    const ready = this.socket?.readyState;
    return ready === WebSocket.OPEN ? "open" : ready === WebSocket.CONNECTING ? "connecting" : "closed";
  }

  /** Connects to `url` (closing a socket to another URL); no-op when already open/connecting there. */
  connect(url) {
    if (url === this.url && (this.state === "open" || this.state === "connecting")) return;
    if (url !== this.url) this.backoffMs = BACKOFF_MIN_MS;
    this.url = url;
    this.#drop();
    this.#open();
  }

  /** Resolves when the socket is open; rejects after `timeoutMs`. */
  whenOpen(timeoutMs = 10_000) {
    if (this.state === "open") return Promise.resolve();
    return new Promise((resolve, reject) => {
      const waiter = { resolve, reject };
      waiter.timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`bridge ${this.url} did not open within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }

  /**
   * Sends one message; adds `id` and `protocol`. When the socket is not open
   * the message is dropped (returns false), or with `queue` kept and sent
   * right after the next `hello` (job results must survive a reconnect).
   */
  send(type, fields = {}, { queue = false } = {}) {
    const message = { ...fields, type, id: fields.id || crypto.randomUUID(), protocol: PROTOCOL };
    if (this.state !== "open") {
      if (!queue) return false;
      this.outbox.push(message);
      if (this.outbox.length > OUTBOX_MAX) this.outbox.shift();
      return true;
    }
    this.socket.send(JSON.stringify(message));
    return true;
  }

  sendHello() {
    return this.send("hello", this.helloPayload());
  }

  #open() {
    clearTimeout(this.retryTimer);
    let socket;
    try {
      socket = new WebSocket(this.url);
    } catch (err) {
      console.error("[semantest] bad bridge URL", this.url, err);
      return;
    }
    this.socket = socket;
    socket.onopen = () => {
      this.backoffMs = BACKOFF_MIN_MS;
      this.lastHeard = Date.now();
      this.sendHello();
      this.onOpen();
      for (const message of this.outbox.splice(0)) socket.send(JSON.stringify(message));
      this.pingTimer = setInterval(() => this.#keepalive(), PING_EVERY_MS);
      for (const w of this.waiters.splice(0)) {
        clearTimeout(w.timer);
        w.resolve();
      }
    };
    socket.onmessage = (event) => this.#receive(event.data);
    socket.onclose = () => {
      if (this.socket !== socket) return; // an old socket we replaced
      clearInterval(this.pingTimer);
      this.#scheduleReconnect();
    };
    socket.onerror = () => {}; // onclose follows and reconnects
  }

  #receive(data) {
    this.lastHeard = Date.now();
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      console.warn("[semantest] bridge sent non-JSON", String(data).slice(0, 200));
      return;
    }
    if (message.type === "ping") {
      this.send("pong", { replyTo: message.id });
    } else if (message.type !== "pong") {
      this.onMessage(message);
    }
  }

  #keepalive() {
    if (Date.now() - this.lastHeard > DEAD_AFTER_MS) {
      console.warn("[semantest] bridge silent, reconnecting");
      this.#drop();
      this.#scheduleReconnect();
      return;
    }
    this.send("ping");
  }

  #scheduleReconnect() {
    clearTimeout(this.retryTimer);
    const delay = this.backoffMs * (0.75 + Math.random() * 0.5);
    this.backoffMs = Math.min(this.backoffMs * 2, BACKOFF_MAX_MS);
    this.retryTimer = setTimeout(() => this.#open(), delay);
  }

  #drop() {
    clearTimeout(this.retryTimer);
    clearInterval(this.pingTimer);
    const old = this.socket;
    this.socket = null;
    if (old) {
      old.onclose = old.onmessage = old.onopen = null;
      try { old.close(); } catch { /* already closed */ }
    }
  }
}
