// Bundles the console into ../api/ui/: index.html, console.js and console.css, and the
// shell's code (xterm.js) in a chunk of its own, loaded only by the shell page.
import { copyFile, mkdir, rm } from "node:fs/promises";
import { build } from "esbuild";

const out = new URL("../api/ui/", import.meta.url).pathname;
await rm(out, { recursive: true, force: true }); // no chunk of an earlier build left behind
await mkdir(out, { recursive: true });
await build({
  // The player's styles apart: only the playback page links them (player.ts).
  entryPoints: {
    console: "src/main.ts",
    player: "node_modules/asciinema-player/dist/bundle/asciinema-player.css",
  },
  bundle: true,
  minify: true,
  format: "esm",
  splitting: true,
  chunkNames: "chunk-[hash]",
  target: "es2022",
  outdir: out,
  logLevel: "warning",
});
await copyFile("src/index.html", `${out}index.html`);
