// Drives LoopKit's /mcp with the official MCP TypeScript SDK (Client + StreamableHTTPClientTransport).
// Usage: LOOPKIT_URL=http://127.0.0.1:PORT LOOPKIT_AGENT_KEY=... node check.mjs
// Prints one JSON object with what the server answered; tests/test_mcp_typescript.py checks it.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const url = new URL("/mcp", process.env.LOOPKIT_URL);
const transport = new StreamableHTTPClientTransport(url, {
  requestInit: { headers: { authorization: `Bearer ${process.env.LOOPKIT_AGENT_KEY}` } },
});
const client = new Client({ name: "loopkit-ts-check", version: "1.0.0" });
await client.connect(transport);

const out = {};
out.protocolVersion = transport.protocolVersion ?? null;
const { tools } = await client.listTools();
out.tools = tools.map((t) => ({ name: t.name, annotations: t.annotations }));
const call = async (name, args) => {
  const result = await client.callTool({ name, arguments: args });
  return { isError: result.isError ?? false, structured: result.structuredContent, text: result.content[0].text };
};
out.project = await call("loopkit_project", {});
out.diagnose = await call("loopkit_diagnose", {});
const packetId = out.diagnose.structured.packet.packet_id;
out.handoff = await call("loopkit_handoff", { packet_id: packetId, format: "markdown", max_chars: 1000 });
out.badLimit = await call("loopkit_telemetry", { limit: 1001 });
out.unknownArgument = await call("loopkit_packets", { bogus: 1 });
out.afterErrors = await call("loopkit_packets", { limit: 5 });
const prompt = await client.getPrompt({ name: "fix_packet", arguments: { packet_id: packetId } });
out.promptChars = prompt.messages[0].content.text.length;
await client.close();
process.stdout.write(JSON.stringify(out));
