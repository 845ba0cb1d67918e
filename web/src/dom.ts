// Small helpers the console's pages share: elements, and times as people read them.

export function element<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  properties: Partial<HTMLElementTagNameMap[K]> = {},
  ...children: (globalThis.Node | string)[]
): HTMLElementTagNameMap[K] {
  const made = Object.assign(document.createElement(tag), properties);
  made.append(...children);
  return made;
}

// "3 min ago" for a time as NMs hold it ("2026-12-04 05:30:51", in UTC: a browser would
// read it as local time) or in ISO 8601; the exact time is the cell's hover.
export function ago(time: string | undefined): string {
  const utc = time?.includes("T") ? time : `${time?.replace(" ", "T")}Z`;
  const seconds = Math.round((Date.now() - Date.parse(utc)) / 1000);
  if (Number.isNaN(seconds)) return time ?? "";
  if (seconds < 60) return `${Math.max(seconds, 0)} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

// A node by its unique id: what tells nodes apart, without the prefix every NM name has.
export function uniqueId(nmName: string): string {
  return nmName.replace(/^nodemaintenances-/, "");
}
