"""Two videos played as one: autoplay, loop, in sync, and a frame slider that steps both.

One self-contained HTML block (the videos inline as data URIs, so it works behind any
proxy and needs no media server). Both ``<video>`` elements get the same CSS size, so
neither is shown larger or sharper than the other. The left video is the clock: the
right one is pulled to its time whenever they drift by more than half a frame.
"""

from __future__ import annotations

import base64
import html

import streamlit as st

_SCRIPT = """
<script>
const vids = Array.from(document.querySelectorAll('video.pair'));
const slider = document.getElementById('frame');
const label = document.getElementById('framelabel');
const btn = document.getElementById('play');
const fps = FPS, frames = FRAMES;
let scrubbing = false;
function show(k) { label.textContent = 'frame ' + (k + 1) + ' / ' + frames; }
function seek(k) { vids.forEach(v => { v.currentTime = Math.min((k + 0.5) / fps, (v.duration || 1e9) - 1e-3); }); show(k); }
function tick() {
  const lead = vids[0];
  if (!lead.paused) {
    for (const v of vids.slice(1)) { if (Math.abs(v.currentTime - lead.currentTime) > 0.5 / fps) v.currentTime = lead.currentTime; }
    if (!scrubbing) { const k = Math.min(frames - 1, Math.floor(lead.currentTime * fps)); slider.value = k; show(k); }
  }
  requestAnimationFrame(tick);
}
btn.onclick = () => {
  if (vids[0].paused) { vids.forEach(v => v.play()); btn.textContent = 'Pause'; }
  else { vids.forEach(v => v.pause()); btn.textContent = 'Play'; }
};
slider.oninput = () => { scrubbing = true; vids.forEach(v => v.pause()); btn.textContent = 'Play'; seek(+slider.value); scrubbing = false; };
vids.forEach(v => v.addEventListener('loadedmetadata', () => { if (vids.every(x => x.readyState >= 1)) { vids.forEach(x => { x.currentTime = 0; x.play().catch(() => {}); }); } }));
requestAnimationFrame(tick);
show(0);
</script>
"""


def pair_html(videos: list[bytes], captions: list[str], hw: tuple[int, int], fps: float, n_frames: int) -> str:
    """The HTML of the synced pair: ``videos`` (mp4 bytes, already at display size ``hw``) side by side."""
    h, w = hw
    cells = "".join(
        f'<figure style="margin:0 12px 0 0"><video class="pair" width="{w}" height="{h}" style="width:{w}px;height:{h}px;display:block;'
        f'background:#000" muted loop autoplay playsinline preload="auto" src="data:video/mp4;base64,{base64.b64encode(v).decode()}"></video>'
        f'<figcaption style="font:600 15px sans-serif;margin-top:4px">{html.escape(c)}</figcaption></figure>'
        for v, c in zip(videos, captions)
    )
    controls = (
        '<div style="display:flex;align-items:center;gap:10px;margin-top:8px;font:14px sans-serif">'
        '<button id="play" style="min-width:64px">Pause</button>'
        f'<input id="frame" type="range" min="0" max="{max(0, n_frames - 1)}" step="1" value="0" style="width:{max(120, 2 * w - 160)}px" '
        'aria-label="frame (steps both videos)"><span id="framelabel"></span></div>'
    )
    script = _SCRIPT.replace("FPS", repr(float(fps))).replace("FRAMES", str(int(n_frames)))
    return f'<div style="display:flex">{cells}</div>{controls}{script}'


def show_pair(paths: list[str], captions: list[str], hw: tuple[int, int], fps: float, n_frames: int) -> None:
    """Render the synced pair of local mp4 files (display size ``hw``) in the page."""
    data = []
    for p in paths:
        with open(p, "rb") as f:
            data.append(f.read())
    st.iframe(pair_html(data, captions, hw, fps, n_frames), height=hw[0] + 90)
