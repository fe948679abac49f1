/**
 * Flags for atom text that looks like instructions to an agent (prompt injection) rather than knowledge. The text
 * is kept, as data; the flag travels with the atom into search results so a client can treat it as untrusted.
 * Heuristic and deliberately broad: a false positive costs a label, a false negative costs nothing more than today.
 */
export type AtomFlag = "instruction-like" | "tool-call-like" | "role-markup" | "hidden-html";

const INSTRUCTION = [
  /\b(ignore|disregard|forget|override)\b[^.\n]{0,40}\b(previous|prior|above|earlier|all|any|system)\b[^.\n]{0,20}\b(instructions?|prompts?|rules?|messages?)\b/i,
  /\byou are now\b|\bfrom now on,? you\b|\bnew instructions?\s*:/i,
  /\b(system prompt|developer message|jailbreak)\b/i,
  /\b(copy|send|exfiltrate|leak|forward|upload)\b[^.\n]{0,40}\b(every|all)\b[^.\n]{0,30}\b(atoms?|documents?|data|secrets?|tokens?|keys?)\b/i,
  /\b(reveal|print|show)\b[^.\n]{0,30}\b(secrets?|tokens?|api keys?|passwords?|credentials)\b/i,
  /\b(tenant|account)\s+[a-z0-9-]+\b[^.\n]{0,30}\b(copy|send|write|add)\b/i,
];
const TOOL_CALL = [
  /<\s*\/?\s*(tool_call|tool_use|function_call|invoke|antml:invoke|tool)\b/i,
  /"(name|tool|function)"\s*:\s*"[a-z_]+"\s*,\s*"(arguments|input|parameters)"\s*:/i,
  /\b(tools\/call|call the tool|use the tool|invoke the tool)\b/i,
];
const ROLE_MARKUP = [
  /<\|(im_start|im_end|system|user|assistant)\|>/i,
  /^\s*(###\s*)?(system|assistant|user)\s*:/im,
  /\[\/?INST\]/,
];

export function flagText(text: string, options: { hidden?: boolean } = {}): AtomFlag[] {
  const flags: AtomFlag[] = [];
  if (INSTRUCTION.some((pattern) => pattern.test(text))) flags.push("instruction-like");
  if (TOOL_CALL.some((pattern) => pattern.test(text))) flags.push("tool-call-like");
  if (ROLE_MARKUP.some((pattern) => pattern.test(text))) flags.push("role-markup");
  if (options.hidden) flags.push("hidden-html");
  return flags;
}
