// The chat page: the AI SDK's own client code (`ai`: its AbstractChat with DefaultChatTransport) against the
// platform's /api/v1/chat/{bundle}/{agent}, signed in by the session cookie (CSRF token and X-Organization
// headers from base.html's meta tags). Answers stream in token by token; tool calls are expandable cards
// (input, output or error, logs and time from the run's events); Stop cancels the run; a run still going
// when the page loads (a reload mid-answer) is resumed from its first event by the AI SDK's reconnect
// (GET …/{chatId}/stream), so no text is lost or repeated.
import { AbstractChat, DefaultChatTransport, generateId } from "ai";
import "./chat.css";

// User Timing marks the browser benchmark reads (benchmarks/dashboard_chat.py): Send pressed, first text shown.
const MARK_SEND = "lightfast:send";
const MARK_FIRST_TOKEN = "lightfast:first-token";
const MEASURE_FIRST_TOKEN = "lightfast:time-to-first-token";

function meta(name) {
  return document.querySelector(`meta[name="${name}"]`)?.content ?? "";
}

// What every platform request of this page carries: the CSRF token (session callers must send it on
// POST) and the current organization (a member of several organizations names one).
function apiHeaders() {
  const headers = { "X-CSRFToken": meta("csrf-token") };
  const organization = meta("lightfast-organization");
  if (organization) headers["X-Organization"] = organization;
  return headers;
}

async function apiGet(path) {
  const response = await fetch(path, { headers: apiHeaders(), credentials: "same-origin" });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

// The AI SDK's chat state, kept in plain arrays; `listener` hears which message changed. Stored messages
// are snapshots: the stream processor keeps mutating its own copy.
class ChatState {
  #status = "ready";
  #error = undefined;
  #messages;

  constructor(messages, listener) {
    this.#messages = messages;
    this.listener = listener;
  }

  get status() {
    return this.#status;
  }

  set status(value) {
    this.#status = value;
    this.listener.status();
  }

  get error() {
    return this.#error;
  }

  set error(value) {
    this.#error = value;
    this.listener.status();
  }

  get messages() {
    return this.#messages;
  }

  set messages(value) {
    this.#messages = [...value];
    this.listener.all();
  }

  pushMessage = (message) => {
    this.#messages = [...this.#messages, this.snapshot(message)];
    this.listener.message(this.#messages.length - 1);
  };

  popMessage = () => {
    this.#messages = this.#messages.slice(0, -1);
    this.listener.all();
  };

  replaceMessage = (index, message) => {
    const messages = [...this.#messages];
    messages[index] = this.snapshot(message);
    this.#messages = messages;
    this.listener.message(index);
  };

  snapshot = (value) => structuredClone(value);
}

// `ai` ships the chat logic as AbstractChat; each UI framework adds its own state. This is the plain-DOM one.
class Chat extends AbstractChat {
  constructor({ messages, listener, ...init }) {
    super({ ...init, state: new ChatState(messages, listener) });
  }
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function json(value) {
  if (value === undefined) return "";
  return typeof value === "string" ? value : JSON.stringify(value, null, 2);
}

function isToolPart(part) {
  return part.type === "dynamic-tool" || part.type.startsWith("tool-");
}

function toolName(part) {
  return part.type === "dynamic-tool" ? part.toolName : part.type.slice("tool-".length);
}

const TOOL_STATES = {
  "input-streaming": "preparing…",
  "input-available": "running…",
  "output-available": "done",
  "output-error": "error",
};

function formatMs(ms) {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}

// A tool call as an expandable card: input, output or error, logs, time (the last two from the run's events).
class ToolCard {
  constructor(messageIndex) {
    this.root = element("details", "tool-card");
    this.root.dataset.messageIndex = String(messageIndex);
    const summary = element("summary");
    this.name = element("span", "tool-name");
    this.state = element("span", "tool-state");
    this.time = element("span", "tool-time");
    summary.append(this.name, " ", this.state, " ", this.time);
    const body = element("div", "tool-body");
    this.input = element("pre", "tool-input");
    this.outputHeading = element("h4", "tool-heading", "Output");
    this.output = element("pre", "tool-output");
    this.logs = element("ol", "tool-logs");
    this.noLogs = element("p", "help", "No logs.");
    this.timeText = element("p", "tool-time-text");
    body.append(
      element("h4", "tool-heading", "Input"),
      this.input,
      this.outputHeading,
      this.output,
      element("h4", "tool-heading", "Logs"),
      this.logs,
      this.noLogs,
      this.timeText,
    );
    this.root.append(summary, body);
  }

  update(part, details, answering) {
    const state = part.state;
    this.root.dataset.state = state;
    this.root.dataset.toolCallId = part.toolCallId;
    this.name.textContent = toolName(part);
    // A call still without output once its answer ended: the run stopped, or the call waits for the chat's
    // own client (a client-side tool, an approval), which this page is not.
    const unanswered = !answering && (state === "input-available" || state === "input-streaming");
    this.state.textContent = unanswered ? "no output" : (TOOL_STATES[state] ?? state);
    this.input.textContent = json(part.input);
    const error = state === "output-error";
    const ended = error || state === "output-available";
    this.outputHeading.textContent = error ? "Error" : "Output";
    this.outputHeading.hidden = !ended;
    this.output.hidden = !ended;
    this.output.classList.toggle("tool-error", error);
    this.output.textContent = error ? part.errorText ?? "" : json(part.output);
    const lines = details?.logs ?? [];
    this.logs.replaceChildren(
      ...lines.map((line) => element("li", `log log-${line.level ?? "log"}`, line.message ?? json(line))),
    );
    this.logs.hidden = lines.length === 0;
    this.noLogs.textContent = details ? "No logs." : "Logs appear when the run has ended.";
    this.noLogs.hidden = lines.length > 0;
    const took = details?.ms;
    this.time.textContent = took === undefined ? "" : `· ${formatMs(took)}`;
    this.timeText.textContent = took === undefined ? "" : `Time: ${formatMs(took)}`;
  }
}

// Logs and time of each tool call of a run, from its events (GET /api/v1/runs/{id}/events): the live stream
// leaves tool logs out unless the agent opts in, and carries no times.
async function runToolDetails(runId) {
  const tools = new Map();
  let after = 0;
  for (;;) {
    const page = await apiGet(`/api/v1/runs/${encodeURIComponent(runId)}/events?after=${after}`);
    for (const event of page.events) {
      const chunk = event.chunk;
      const at = Date.parse(event.created_at);
      if (chunk.type === "tool-input-available") {
        tools.set(chunk.toolCallId, { logs: [], started: at, ms: undefined });
      } else if (chunk.type === "tool-output-available" || chunk.type === "tool-output-error") {
        const tool = tools.get(chunk.toolCallId);
        if (tool) tool.ms = at - tool.started;
      } else if (chunk.type === "data-log" && chunk.data) {
        const tool = tools.get(chunk.data.toolCallId);
        if (tool) tool.logs.push(...(chunk.data.logs ?? []));
      }
    }
    if (page.done || page.events.length === 0) return { tools, ended: page.done };
    after = page.last_seq;
  }
}

class ChatPage {
  constructor(root) {
    this.root = root;
    this.log = document.getElementById("chat-log");
    this.statusLine = document.getElementById("chat-status");
    this.errorBox = document.getElementById("chat-error");
    this.form = document.getElementById("chat-form");
    this.input = document.getElementById("chat-message");
    this.sendButton = document.getElementById("chat-send");
    this.stopButton = document.getElementById("chat-stop");
    this.basePath = root.dataset.basePath;
    this.activeRun = root.dataset.activeRun || "";
    this.items = [];
    this.usage = new Map(); // message id -> the run's usage (the transient `data-usage` chunk)
    this.details = new Map(); // run id -> {tools, ended}
    this.awaitingFirstToken = false;
    this.stopped = false;
    this.firstText = null;
    const chatId = root.dataset.chatId;
    this.chatIdInUrl = Boolean(chatId);
    const messages = JSON.parse(document.getElementById("chat-messages-data").textContent);
    this.chat = new Chat({
      id: chatId || generateId(),
      messages,
      listener: {
        status: () => this.renderStatus(),
        message: (index) => this.renderMessage(index),
        all: () => this.renderAll(),
      },
      transport: new DefaultChatTransport({
        api: root.dataset.api,
        credentials: "same-origin",
        headers: apiHeaders,
        // A reload or a lost connection must not cancel the run: the page resumes it. Stop cancels it
        // through the API instead (docs/modules.md, execution/sse.py).
        body: { resumable: true },
      }),
      onData: (part) => {
        const last = this.chat.lastMessage;
        if (part.type === "data-usage" && last?.role === "assistant") {
          this.usage.set(last.id, part.data);
          this.renderMessage(this.chat.messages.length - 1);
        }
      },
      onFinish: ({ message }) => this.loadDetails(message),
      onError: () => this.renderStatus(),
    });
    this.renderAll();
    this.renderStatus();
    this.bind();
    if (this.activeRun) this.resume();
  }

  bind() {
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.send();
    });
    this.input.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.form.requestSubmit();
      }
    });
    this.stopButton.addEventListener("click", () => this.stop());
    // A card opened for the first time loads its run's logs and times (older messages load lazily).
    this.log.addEventListener(
      "toggle",
      (event) => {
        const card = event.target;
        if (card instanceof HTMLDetailsElement && card.open && card.classList.contains("tool-card")) {
          const message = this.chat.messages[Number(card.dataset.messageIndex)];
          if (message) this.loadDetails(message);
        }
      },
      true,
    );
  }

  get busy() {
    return this.chat.status === "submitted" || this.chat.status === "streaming";
  }

  send() {
    const text = this.input.value;
    if (!text.trim() || this.busy || this.input.disabled) return;
    performance.clearMarks(MARK_SEND);
    performance.clearMarks(MARK_FIRST_TOKEN);
    performance.mark(MARK_SEND);
    this.awaitingFirstToken = true;
    this.stopped = false;
    this.input.value = "";
    if (!this.chatIdInUrl) this.firstText = text;
    this.chat.sendMessage({ text });
  }

  // Once the server answers the first message, the chat exists there: its URL resumes it, the list shows it.
  chatStarted() {
    const path = this.chat.id.split("/").map(encodeURIComponent).join("/");
    history.replaceState(null, "", `${this.basePath}${path}/`);
    this.chatIdInUrl = true;
    this.listChat(`${this.basePath}${path}/`, this.firstText ?? "");
  }

  listChat(href, text) {
    const box = document.getElementById("chat-sessions");
    if (!box) return;
    let list = box.querySelector(".session-list");
    if (!list) {
      list = element("ul", "session-list");
      box.replaceChildren(list);
    }
    const link = element("a", "", text.trim().length > 60 ? `${text.trim().slice(0, 59)}…` : text.trim());
    link.href = href;
    link.setAttribute("aria-current", "page");
    const item = element("li", "current");
    item.append(link);
    list.prepend(item);
  }

  // The run answering now: the streaming message's (its `start` chunk's metadata), or the page's hint.
  currentRunId() {
    const last = this.chat.lastMessage;
    if (this.chat.status === "streaming" && last?.role === "assistant" && last.metadata?.runId) {
      return last.metadata.runId;
    }
    return this.activeRun || null;
  }

  async stop() {
    if (!this.busy) return;
    this.stopped = true;
    this.awaitingFirstToken = false;
    this.renderStatus();
    const runId = this.currentRunId();
    await Promise.all([this.chat.stop(), this.cancel(runId)]);
    this.renderStatus();
  }

  async cancel(runId) {
    let ids = runId ? [runId] : [];
    if (!runId) {
      // Stopped before the answer started: the chat's runs still queued or running.
      for (const status of ["queued", "running"]) {
        const query = `session=${encodeURIComponent(this.chat.id)}&status=${status}&limit=10`;
        const page = await apiGet(`/api/v1/runs?${query}`);
        ids = ids.concat(page.results.map((run) => run.id));
      }
    }
    await Promise.all(
      ids.map((id) =>
        fetch(`/api/v1/runs/${encodeURIComponent(id)}/cancel`, {
          method: "POST",
          headers: apiHeaders(),
          credentials: "same-origin",
        }),
      ),
    );
  }

  async resume() {
    await this.chat.resumeStream();
    this.activeRun = "";
    if (this.chat.lastMessage?.role !== "assistant") {
      // The run ended between this page's render and the reconnect (204): its answer is stored now.
      await this.reloadMessages();
    }
  }

  async reloadMessages() {
    const page = await apiGet(`/api/v1/sessions/${encodeURIComponent(this.chat.id)}/messages?limit=500`);
    this.chat.messages = page.results.map((message) => ({
      id: message.id,
      role: message.role,
      parts: message.parts,
      ...(message.run ? { metadata: { runId: message.run } } : {}),
    }));
  }

  async loadDetails(message) {
    const runId = message?.metadata?.runId;
    if (!runId || !message.parts.some(isToolPart)) return;
    const known = this.details.get(runId);
    if (known?.ended) return;
    try {
      this.details.set(runId, await runToolDetails(runId));
    } catch (error) {
      this.details.delete(runId);
      return;
    }
    this.chat.messages.forEach((candidate, index) => {
      if (candidate.role === "assistant" && candidate.metadata?.runId === runId) this.renderMessage(index);
    });
  }

  renderStatus() {
    const status = this.chat.status;
    if (status === "streaming" && !this.chatIdInUrl) this.chatStarted();
    const busy = this.busy;
    this.log.setAttribute("aria-busy", busy ? "true" : "false");
    this.sendButton.disabled = busy || this.input.disabled;
    this.stopButton.disabled = !busy;
    this.root.dataset.status = status;
    let text = "";
    if (busy && this.stopped) text = "Stopping…";
    else if (status === "submitted") text = "Sending…";
    else if (status === "streaming") text = "Answering…";
    else if (this.stopped) text = "Stopped.";
    this.statusLine.textContent = text;
    if (!busy && this.chat.messages.length) this.renderMessage(this.chat.messages.length - 1);
    const error = this.chat.error;
    this.errorBox.hidden = !error;
    this.errorBox.textContent = error ? error.message || "The chat failed." : "";
  }

  renderAll() {
    this.log.replaceChildren();
    this.items = [];
    this.chat.messages.forEach((_, index) => this.renderMessage(index));
  }

  renderMessage(index) {
    const message = this.chat.messages[index];
    if (!message) return;
    let item = this.items[index];
    if (!item || item.role !== message.role) {
      const root = element("article", `msg msg-${message.role}`);
      const label = element("h3", "msg-role", message.role === "user" ? "You" : "Agent");
      const body = element("div", "msg-body");
      const footer = element("p", "msg-footer");
      root.append(label, body, footer);
      const fresh = { role: message.role, root, body, footer, parts: [] };
      if (item) item.root.replaceWith(root);
      else this.log.append(root);
      this.items[index] = fresh;
      item = fresh;
    }
    item.root.dataset.messageId = message.id;
    const details = this.details.get(message.metadata?.runId);
    message.parts.forEach((part, position) => this.renderPart(item, index, position, part, details));
    for (const stale of item.parts.splice(message.parts.length)) stale.node.remove();
    this.renderFooter(item, message);
  }

  renderPart(item, index, position, part, details) {
    const key = isToolPart(part) ? `tool:${part.toolCallId}` : `${part.type}:${position}`;
    let entry = item.parts[position];
    if (!entry || entry.key !== key) {
      let node;
      let card = null;
      if (part.type === "text" || part.type === "reasoning") {
        node = element("p", part.type === "text" ? "msg-text" : "msg-reasoning");
      } else if (isToolPart(part)) {
        card = new ToolCard(index);
        node = card.root;
      } else {
        node = document.createComment(part.type); // step boundaries, data parts: nothing to show
      }
      const fresh = { key, node, card };
      if (entry) entry.node.replaceWith(node);
      else item.body.append(node);
      item.parts[position] = fresh;
      entry = fresh;
    }
    if (part.type === "text" || part.type === "reasoning") {
      if (entry.node.textContent !== part.text) entry.node.textContent = part.text;
      if (this.awaitingFirstToken && item.role === "assistant" && part.type === "text" && part.text) {
        this.awaitingFirstToken = false;
        performance.mark(MARK_FIRST_TOKEN);
        performance.measure(MEASURE_FIRST_TOKEN, MARK_SEND, MARK_FIRST_TOKEN);
      }
    } else if (entry.card) {
      const answering = this.busy && index === this.chat.messages.length - 1;
      entry.card.update(part, details?.tools.get(part.toolCallId), answering);
    }
  }

  renderFooter(item, message) {
    const runId = message.metadata?.runId;
    if (message.role !== "assistant" || !runId) {
      item.footer.hidden = true;
      return;
    }
    item.footer.hidden = false;
    const usage = this.usage.get(message.id);
    const words = [];
    if (usage) {
      words.push(usage.model || "model", `${usage.inputTokens} tokens in`, `${usage.outputTokens} out`);
      if (usage.sandboxCpuMs) words.push(`${formatMs(usage.sandboxCpuMs)} sandbox CPU`);
    }
    const link = element("a", "", "Run details");
    link.href = `/runs/${encodeURIComponent(runId)}/`;
    item.footer.replaceChildren(words.length ? `${words.join(" · ")} · ` : "", link);
  }
}

function start() {
  const root = document.getElementById("chat");
  if (root) window.lightfastChat = new ChatPage(root);
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
else start();
