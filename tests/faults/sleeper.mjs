// A bundle for the fault experiments: a tool that holds its sandbox runner for as long as it is told,
// without burning CPU, and one that answers at once. Its agent uses the offline demo model, which calls
// a tool named in the message with JSON arguments (`sleep {"ms": 60000}`).
import { createLightfast } from "lightfast/client";
import { createAgent } from "lightfast/agent";
import { createTool } from "lightfast/tool";
import { z } from "zod";

var sleep = createTool({
  description: "Waits ms milliseconds, then says how long it waited",
  inputSchema: z.object({ ms: z.number().int().min(0).max(600000) }),
  execute: async ({ ms }) => {
    await new Promise((resolve) => setTimeout(resolve, ms));
    return { slept: ms };
  }
});

var double = createTool({
  description: "Doubles n",
  inputSchema: z.object({ n: z.number() }),
  execute: ({ n }) => n * 2
});

var sleeper = createAgent({ name: "sleeper", system: "waits when asked", model: "demo", tools: { sleep, double } });

export default createLightfast({ agents: { sleeper } });
