// asciinema-player, in a chunk of its own: only the playback page loads it, and links
// its styles (player.css, built beside console.css: esbuild loads no lazy chunk's CSS).

import { create } from "asciinema-player";

export function play(screen: HTMLElement, recording: string): void {
  document.head.append(
    Object.assign(document.createElement("link"), {
      rel: "stylesheet",
      href: "/ui/assets/player.css",
    }),
  );
  const player = create({ data: recording }, screen, { fit: "width", autoPlay: true });
  (window as unknown as { player: unknown }).player = player;
}
