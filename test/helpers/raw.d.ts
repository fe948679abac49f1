/** Vite's `?raw` imports (test only): the file's text. */
declare module "*?raw" {
  const text: string;
  export default text;
}
