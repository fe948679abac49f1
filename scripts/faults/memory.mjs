export async function memoryRun() {
  throw new Error("todo");
}
