// Types of bench/edge/atoms.mjs (plain JS, imported by both Node and the template worker).
export declare const SEARCH_ATOMS: number;
export declare const SEARCH_QUERY: string;
export declare function searchAtom(i: number): { id: string; text: string; tags: string[]; source: string };
