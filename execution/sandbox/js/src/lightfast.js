// The modules a bundle can import: the Lightfast API, zod, and the parts of the AI SDK that
// describe agents (models, tools, stop conditions). Models here are descriptors only: the platform
// runs the model on the host.
import * as zodV3 from "zod/v3";
import * as zodV4 from "zod/v4";
import { zodToJsonSchema } from "zod-to-json-schema";
import { WeakMapCtor, WeakMapGet, WeakMapHas, WeakMapSet, ObjectKeys, ArrayIsArray, ArrayPush } from "./intrinsics.js";
import { addNodeModules } from "./node/index.js";

const toolFactories = new WeakMapCtor(); // factory -> createTool config
const agentConfigs = new WeakMapCtor(); // agent -> createAgent options
const appConfigs = new WeakMapCtor(); // createLightfast result -> { agents, metadata }
const jsonSchemas = new WeakMapCtor(); // jsonSchema() result -> { schema, validate }
const stopConditions = new WeakMapCtor(); // stepCountIs()/hasToolCall() result -> descriptor
// The AI SDK marks its schemas (jsonSchema(), zodSchema()) with this registered symbol; bundles that
// inline the AI SDK carry their own copy of jsonSchema(), recognised by the marker (read once here,
// before bundle code could replace Symbol.for).
const AI_SDK_SCHEMA = Symbol.for("vercel.ai.schema");

function isObject(value) {
  return value !== null && typeof value === "object";
}

// ---------------------------------------------------------------- lightfast

// A tool without `execute` runs in the client (the AI SDK's client-side tools): the platform streams
// its call and waits for the client's result. `needsApproval` (AI SDK 6) asks the user before it runs.
function createTool(config) {
  if (!isObject(config)) throw new TypeError("createTool: expected a config object");
  if (config.execute !== undefined && typeof config.execute !== "function") {
    throw new TypeError("createTool: execute must be a function (or left out for a client-side tool)");
  }
  const factory = (context) => ({
    description: config.description,
    inputSchema: config.inputSchema,
    outputSchema: config.outputSchema,
    needsApproval: config.needsApproval,
    execute: typeof config.execute === "function" ? (input) => config.execute(input, context) : undefined,
  });
  WeakMapSet(toolFactories, factory, config);
  return factory;
}

function createAgent(options) {
  if (!isObject(options)) throw new TypeError("createAgent: expected an options object");
  if (typeof options.name !== "string" || options.name === "") {
    throw new TypeError("createAgent: name must be a non-empty string");
  }
  const agent = { ...options };
  WeakMapSet(agentConfigs, agent, options);
  return agent;
}

function createLightfast(config) {
  if (!isObject(config) || !isObject(config.agents)) {
    throw new TypeError("createLightfast: expected { agents: { ... } }");
  }
  const keys = ObjectKeys(config.agents);
  if (keys.length === 0) throw new Error("createLightfast: at least one agent is required");
  for (const key of keys) {
    if (!WeakMapHas(agentConfigs, config.agents[key])) {
      throw new TypeError(`createLightfast: agents.${key} was not created with createAgent`);
    }
  }
  const app = {
    agents: config.agents,
    metadata: config.metadata,
    getAgent: (key) => config.agents[key],
    getAgentKeys: () => ObjectKeys(config.agents),
  };
  WeakMapSet(appConfigs, app, { agents: config.agents, metadata: config.metadata });
  return app;
}

// ---------------------------------------------------------------- AI SDK parts

function jsonSchema(schema, options = undefined) {
  const result = { jsonSchema: schema, validate: options && options.validate };
  WeakMapSet(jsonSchemas, result, { schema, validate: options && options.validate });
  return result;
}

function stepCountIs(count) {
  const condition = ({ steps }) => steps.length === count;
  WeakMapSet(stopConditions, condition, { stepCount: count });
  return condition;
}

function hasToolCall(toolName) {
  const condition = ({ steps }) => {
    const last = steps[steps.length - 1];
    return Boolean(last && last.toolCalls && last.toolCalls.some((c) => c.toolName === toolName));
  };
  WeakMapSet(stopConditions, condition, { hasToolCall: toolName });
  return condition;
}

const notInSandbox = (name) => () => {
  throw new Error(`ai.${name} is not available inside the sandbox: the platform runs the model loop`);
};

function providerNamed(name) {
  const languageModel = (modelId) => ({ specificationVersion: "v2", provider: name, modelId: String(modelId) });
  const provider = (modelId) => languageModel(modelId);
  provider.languageModel = languageModel;
  provider.chat = languageModel;
  provider.responses = languageModel;
  provider.completion = languageModel;
  provider.messages = languageModel;
  return provider;
}

const gateway = providerNamed("gateway");
const openai = providerNamed("openai");
const anthropic = providerNamed("anthropic");

function esModule(named, defaultExport = undefined) {
  const mod = { ...named, __esModule: true };
  if (defaultExport !== undefined) mod.default = defaultExport;
  return mod;
}

export function buildModules() {
  const zod3 = esModule(zodV3, zodV3.z);
  const zod4 = esModule(zodV4, zodV4.z);
  // Node built-ins (`crypto` and `node:crypto`, ...), each built on first require (node/index.js).
  return addNodeModules({
    "lightfast/client": esModule({ createLightfast }),
    "lightfast/agent": esModule({ createAgent }),
    "lightfast/tool": esModule({ createTool }),
    // BUNDLES.md: the bare "zod" import is the v3 API (bundles were written against zod 3).
    zod: zod3,
    "zod/v3": zod3,
    "zod/v4": zod4,
    ai: esModule({
      tool: (t) => t,
      jsonSchema,
      zodSchema: (s) => s,
      stepCountIs,
      hasToolCall,
      generateText: notInSandbox("generateText"),
      streamText: notInSandbox("streamText"),
      generateObject: notInSandbox("generateObject"),
      streamObject: notInSandbox("streamObject"),
    }),
    "@ai-sdk/gateway": esModule({ gateway, createGateway: () => providerNamed("gateway") }, gateway),
    "@ai-sdk/openai": esModule({ openai, createOpenAI: () => providerNamed("openai") }, openai),
    "@ai-sdk/anthropic": esModule({ anthropic, createAnthropic: () => providerNamed("anthropic") }, anthropic),
  });
}

// ---------------------------------------------------------------- discovery and introspection

export function isAgent(value) {
  return WeakMapHas(agentConfigs, value);
}

// The agents a bundle exports: default createLightfast(...), a default single agent (keyed by its
// name), or agents exported by name.
export function discoverAgents(moduleExports) {
  const exportsObj = isObject(moduleExports) || typeof moduleExports === "function" ? moduleExports : {};
  const def = exportsObj.default;
  if (WeakMapHas(appConfigs, def)) {
    const app = WeakMapGet(appConfigs, def);
    return { agents: app.agents, metadata: app.metadata, source: "default" };
  }
  if (isAgent(def)) return { agents: { [def.name]: def }, metadata: undefined, source: "default-agent" };
  if (def !== undefined) {
    throw new TypeError("the default export is neither createLightfast(...) nor an agent from createAgent(...)");
  }
  const agents = {};
  for (const key of ObjectKeys(exportsObj)) {
    if (isAgent(exportsObj[key])) agents[key] = exportsObj[key];
  }
  if (ObjectKeys(agents).length === 0) {
    throw new TypeError("the bundle has no default export (expected `export default createLightfast({ agents })`)");
  }
  return { agents, metadata: undefined, source: "named" };
}

function schemaKind(schema) {
  if (!isObject(schema)) return "none";
  if (WeakMapHas(jsonSchemas, schema)) return "json";
  if (schema[AI_SDK_SCHEMA] === true) return "ai-schema"; // the inlined AI SDK's jsonSchema()/zodSchema()
  if (isObject(schema._zod)) return "zod4";
  if (isObject(schema._def) && typeof schema.safeParseAsync === "function") return "zod3";
  if (isObject(schema["~standard"])) return "standard";
  return "unknown";
}

export function schemaToJSON(schema, io) {
  switch (schemaKind(schema)) {
    case "json":
      return WeakMapGet(jsonSchemas, schema).schema;
    case "ai-schema": {
      // `.jsonSchema` is a getter that may evaluate a lazy schema function (AI SDK 5).
      const out = schema.jsonSchema;
      if (!isObject(out) || ArrayIsArray(out)) return {};
      const copy = { ...out };
      delete copy.$schema;
      return copy;
    }
    case "zod4": {
      const out = zodV4.toJSONSchema(schema, { io, unrepresentable: "any" });
      delete out.$schema;
      return out;
    }
    case "zod3": {
      const out = zodToJsonSchema(schema, { target: "jsonSchema7", $refStrategy: "none" });
      delete out.$schema;
      return out;
    }
    case "none":
      return null;
    default:
      return {};
  }
}

// Validate `input` with a tool's schema: { ok: true, value } or { ok: false, issues }.
export async function validateInput(schema, input) {
  const kind = schemaKind(schema);
  switch (kind) {
    case "zod3":
    case "zod4": {
      const result = await schema.safeParseAsync(input);
      if (result.success) return { ok: true, value: result.data };
      return { ok: false, issues: result.error.issues };
    }
    case "json":
    case "ai-schema": {
      const validate = kind === "json" ? WeakMapGet(jsonSchemas, schema).validate : schema.validate;
      if (typeof validate !== "function") return { ok: true, value: input };
      const result = await validate(input);
      if (result && result.success === false) {
        return { ok: false, issues: [{ message: String(result.error && result.error.message) }] };
      }
      return { ok: true, value: result && "value" in result ? result.value : input };
    }
    case "standard": {
      const result = await schema["~standard"].validate(input);
      if (result.issues) return { ok: false, issues: result.issues };
      return { ok: true, value: result.value };
    }
    default:
      return { ok: true, value: input };
  }
}

// The base URL an AI SDK provider model calls, when the model shows it without secrets: the
// config's `baseURL` (Anthropic, gateway) or its `url({ path: "", modelId })` (OpenAI, which only
// joins strings). Headers (where API keys live) are never read.
function modelBaseURL(model) {
  let config;
  try {
    config = model.config;
    if (!isObject(config)) return undefined;
    if (typeof config.baseURL === "string") return config.baseURL;
    if (typeof config.url === "function") {
      const url = config.url({ path: "", modelId: model.modelId });
      if (typeof url === "string") return url;
    }
  } catch {
    // A config that throws just has no reported base URL.
  }
  return undefined;
}

function modelDescriptor(model) {
  if (typeof model === "string") {
    return model === "demo" ? { provider: "demo", id: "demo" } : { provider: "gateway", id: model };
  }
  if (isObject(model) && typeof model.modelId === "string") {
    const out = { provider: String(model.provider || "unknown"), id: model.modelId };
    const baseURL = modelBaseURL(model);
    if (baseURL !== undefined) out.baseURL = baseURL;
    return out;
  }
  return null;
}

const AGENT_KEYS = new Set(["name", "system", "model", "tools", "createRuntimeContext"]);
const JSON_OPTIONS = new Set([
  "temperature", "maxOutputTokens", "topP", "topK", "presencePenalty", "frequencyPenalty", "seed",
  "maxRetries", "toolChoice", "providerOptions", "stopSequences", "activeTools", "headers",
]);

// Stop conditions from an inlined AI SDK are plain closures the WeakMap above never saw. They are
// recognised by behaviour: called with synthetic step lists, as the AI SDK calls them, they must
// answer exactly like stepCountIs(n) (true at one length only, whatever the steps hold) or like
// hasToolCall(name) (true exactly when the last step calls that one tool of the agent). Anything
// else (async, throwing, answering both ways) stays a custom condition and is reported as ignored.
// Five times the default platform step cap (LIGHTFAST_RUN_MAX_STEPS = 20): larger counts change nothing.
const MAX_PROBED_STEPS = 100;
const UNKNOWN_TOOL = "\u0000lightfast-probe-no-such-tool";

function probeStep(toolName) {
  const toolCalls = toolName === undefined ? [] : [{ type: "tool-call", toolCallId: "probe", toolName, input: {} }];
  return {
    content: [], text: "", reasoning: [], reasoningText: undefined, files: [], sources: [],
    toolCalls, staticToolCalls: toolCalls, dynamicToolCalls: [],
    toolResults: [], staticToolResults: [], dynamicToolResults: [],
    finishReason: toolName === undefined ? "stop" : "tool-calls",
    usage: { inputTokens: 0, outputTokens: 0, totalTokens: 0 }, warnings: [],
    request: {}, response: { messages: [] }, providerMetadata: undefined,
  };
}

// steps: `count` steps, the last one (or the one at `callAt`) calling `toolName`.
function probeSteps(count, toolName, callAt = count - 1) {
  const steps = [];
  for (let i = 0; i < count; i++) ArrayPush(steps, probeStep(i === callAt ? toolName : undefined));
  return steps;
}

function answers(condition, steps) {
  const result = condition({ steps });
  if (typeof result !== "boolean") throw new TypeError("not a synchronous boolean condition");
  return result;
}

export function recognizeStopCondition(condition, toolNames) {
  if (typeof condition !== "function") return undefined;
  try {
    // One growing list of one shared plain step keeps the scan linear (the AI SDK's conditions only
    // read the list; the verification below uses fresh lists).
    const trueAt = [];
    const plain = probeStep(undefined);
    const growing = [];
    for (let n = 1; n <= MAX_PROBED_STEPS && trueAt.length < 2; n++) {
      ArrayPush(growing, plain);
      if (answers(condition, growing)) ArrayPush(trueAt, n);
    }
    if (trueAt.length === 1) {
      const n = trueAt[0];
      for (const name of [...toolNames, UNKNOWN_TOOL]) {
        if (!answers(condition, probeSteps(n, name))) return undefined;
        if (answers(condition, probeSteps(n + 1, name))) return undefined;
        if (n > 1 && answers(condition, probeSteps(n - 1, name))) return undefined;
      }
      return { stepCount: n };
    }
    if (trueAt.length !== 0) return undefined;
    if (answers(condition, probeSteps(1, UNKNOWN_TOOL))) return undefined;
    const hits = [];
    for (const name of toolNames) {
      const last = [1, 2, 3].map((count) => answers(condition, probeSteps(count, name)));
      const earlier = answers(condition, probeSteps(2, name, 0));
      if (last[0] && last[1] && last[2] && !earlier) ArrayPush(hits, name);
      else if (last[0] || last[1] || last[2] || earlier) return undefined;
    }
    return hits.length === 1 ? { hasToolCall: hits[0] } : undefined;
  } catch {
    return undefined;
  }
}

function stopWhenDescriptor(stopWhen, toolNames, warn) {
  const list = ArrayIsArray(stopWhen) ? stopWhen : [stopWhen];
  const out = [];
  for (const c of list) {
    const known = WeakMapHas(stopConditions, c) ? WeakMapGet(stopConditions, c) : recognizeStopCondition(c, toolNames);
    if (known !== undefined) out.push(known);
    else warn("a custom stopWhen condition cannot run on the platform and is ignored");
  }
  if (out.length === 0) return undefined;
  return out.length === 1 && !ArrayIsArray(stopWhen) ? out[0] : out;
}

// The tool record of an agent: a record, or for dynamic tools the record its function returns.
export function agentTools(agent, context) {
  const tools = agent.tools;
  if (typeof tools === "function") return tools(context);
  return isObject(tools) ? tools : {};
}

// A tool ({ description, inputSchema, outputSchema, needsApproval, execute(input) }) from a record
// entry; `execute` is undefined for a client-side tool (an AI SDK tool() without execute).
export function resolveTool(entry, context) {
  if (WeakMapHas(toolFactories, entry)) return entry(context);
  if (isObject(entry) && typeof entry.execute === "function") {
    return { ...entry, execute: (input) => entry.execute(input, { toolCallId: "", messages: [], context }) };
  }
  if (isObject(entry) && entry.execute === undefined) return { ...entry, execute: undefined };
  if (typeof entry === "function") return entry(context);
  throw new TypeError("tool is neither a createTool(...) factory nor a tool object");
}

function describeTool(entry, context, warn) {
  const config = WeakMapHas(toolFactories, entry) ? WeakMapGet(toolFactories, entry) : resolveTool(entry, context);
  const out = {
    description: typeof config.description === "string" ? config.description : "",
    inputSchema: schemaToJSON(config.inputSchema, "input") || { type: "object", properties: {} },
    outputSchema: schemaToJSON(config.outputSchema, "output"),
  };
  if (typeof config.execute !== "function") out.clientSide = true;
  const approval = config.needsApproval;
  if (approval === true) out.needsApproval = true;
  else if (typeof approval === "function") {
    // The host cannot call the bundle's function before each call: it asks every time instead.
    out.needsApproval = true;
    warn("needsApproval is a function: the platform asks for approval of every call");
  }
  return out;
}

export function introspectAgents(found) {
  const warnings = [];
  const agents = {};
  for (const key of ObjectKeys(found.agents)) {
    const agent = found.agents[key];
    const warn = (message) => warnings.push(`agent ${key}: ${message}`);
    const model = modelDescriptor(agent.model);
    if (!model) warn("model is not a model id or an AI SDK model");
    const dynamicTools = typeof agent.tools === "function";
    const tools = {};
    let record = {};
    try {
      record = agentTools(agent, { sessionId: "introspection", resourceId: "introspection" });
    } catch (error) {
      warn(`tools(context) threw during introspection: ${String(error && error.message)}`);
    }
    for (const name of ObjectKeys(isObject(record) ? record : {})) {
      try {
        const context = { sessionId: "introspection", resourceId: "introspection" };
        tools[name] = describeTool(record[name], context, (message) => warn(`tool ${name}: ${message}`));
      } catch (error) {
        warn(`tool ${name} could not be described: ${String(error && error.message)}`);
      }
    }
    const options = {};
    for (const opt of ObjectKeys(agent)) {
      if (AGENT_KEYS.has(opt)) continue;
      const value = agent[opt];
      if (opt === "stopWhen") {
        const d = stopWhenDescriptor(value, ObjectKeys(tools), warn);
        if (d !== undefined) options.stopWhen = d;
      } else if (JSON_OPTIONS.has(opt) && typeof value !== "function") {
        options[opt] = value;
      } else {
        warn(`option ${opt} is not supported by the platform and is ignored`);
      }
    }
    agents[key] = {
      name: agent.name,
      system: typeof agent.system === "string" ? agent.system : "",
      model: model || { provider: "unknown", id: "" },
      tools,
      dynamicTools,
      options,
    };
  }
  const meta = isObject(found.metadata) ? found.metadata : {};
  const metadata = {};
  for (const k of ["name", "version", "description"]) {
    if (typeof meta[k] === "string") metadata[k] = meta[k];
  }
  return { metadata, agents, warnings };
}
