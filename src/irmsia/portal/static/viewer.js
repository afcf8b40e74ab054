// IRMSIA series viewer: scroll through slices and frames, window/level, zoom and pan on a canvas.
//
// Window/level: the automatic window shows the stored 8-bit PNGs (fast to scroll). Any other
// window is rendered by the server from the de-identified DICOM (".../render?center=&width="),
// because stored PNGs already went through one window and cannot show, say, a lung window of a
// CT stored with a soft-tissue one. While the mouse drags the window, the canvas previews it
// by remapping the current 8-bit image through a lookup table (instant, but clipped to what the
// current render holds); when the drag ends the exact render replaces the preview.
//
// AI findings: the page's data holds the newest AI result of each image of the series
// ("ai", by image id); the side panel shows the one of the image on screen, built with
// textContent only (never HTML from data).
"use strict";

(() => {
  const root = document.getElementById("viewer");
  if (!root) return;

  const data = JSON.parse(document.getElementById("viewer-data").textContent);
  const slices = data.slices;
  const presets = data.presets;
  const FRAME_URL = root.dataset.frameUrl;
  const RENDER_URL = root.dataset.renderUrl;
  const DICOM_URL = root.dataset.dicomUrl;
  const CACHE_LIMIT = 160;
  const PRELOAD = 2;
  const MIN_SCALE = 0.25;
  const MAX_SCALE = 16;

  const canvas = document.getElementById("viewer-canvas");
  const stage = document.getElementById("stage");
  const context = canvas.getContext("2d");
  const slider = document.getElementById("slice-slider");
  const sliceLabel = document.getElementById("slice-label");
  const presetSelect = document.getElementById("preset");
  const windowForm = document.getElementById("window-form");
  const centerInput = document.getElementById("wc");
  const widthInput = document.getElementById("ww");
  const zoomLabel = document.getElementById("zoom-label");
  const overlaySlice = document.getElementById("overlay-slice");
  const overlayWindow = document.getElementById("overlay-window");
  const busy = document.getElementById("viewer-busy");
  const status = document.getElementById("viewer-status");
  const download = document.getElementById("download-current");
  const aiBody = document.getElementById("ai-side-body");
  const aiImageLabel = document.getElementById("ai-side-image");
  const aiImageInput = document.getElementById("ai-image");
  const aiResults = data.ai || {};

  const state = {
    index: Math.max(0, Math.min(slices.length - 1, Number(data.start) || 0)),
    window: null, // null: automatic (stored PNG); else {center, width} in modality units
    autoWindow: null, // the automatic window, once a render told us
    colour: false, // the server said the image has no window (colour)
    entry: null, // what is on screen: {bitmap, window, url}
    preview: null, // {center, width} while dragging
    scale: 1,
    tx: 0,
    ty: 0,
  };
  const cache = new Map(); // url -> Promise<{bitmap, window, url}>

  // --- URLs and loading ---------------------------------------------------------------------
  function fill(template, slice) {
    return template.replace("IMAGE_ID", encodeURIComponent(slice.image)).replace("FRAME", String(slice.frame));
  }

  function urlFor(slice, windowValue) {
    if (windowValue === undefined || windowValue === null) return fill(FRAME_URL, slice);
    const query = new URLSearchParams({ center: String(windowValue.center), width: String(windowValue.width) });
    return `${fill(RENDER_URL, slice)}?${query}`;
  }

  function windowFrom(response) {
    const center = response.headers.get("X-Window-Center");
    const width = response.headers.get("X-Window-Width");
    return center !== null && width !== null ? { center: Number(center), width: Number(width) } : null;
  }

  function load(url, windowValue) {
    if (cache.has(url)) {
      const hit = cache.get(url);
      cache.delete(url); // re-insert: the Map's order is the recency order
      cache.set(url, hit);
      return hit;
    }
    const promise = fetch(url, { headers: { Accept: "image/png" }, credentials: "same-origin" }).then(async (response) => {
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const told = windowFrom(response);
      const bitmap = await createImageBitmap(await response.blob());
      return { bitmap, window: told || windowValue || null, url, told: told !== null };
    });
    promise.catch(() => cache.delete(url));
    cache.set(url, promise);
    while (cache.size > CACHE_LIMIT) {
      const [oldest, old] = cache.entries().next().value;
      cache.delete(oldest);
      old.then((entry) => entry.bitmap.close()).catch(() => {});
    }
    return promise;
  }

  // --- drawing -----------------------------------------------------------------------------
  function resize() {
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(stage.clientWidth * ratio));
    const height = Math.max(1, Math.round(stage.clientHeight * ratio));
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
      draw();
    }
  }

  let previewCanvas = null;
  let previewSource = null;
  let previewBase = null;

  function previewImage(entry, target) {
    // Remap the 8-bit render through the new window: v' = (v * w0 / 255 + c0 - w0/2 - (c - w/2)) / w.
    if (!previewCanvas) previewCanvas = document.createElement("canvas");
    if (previewSource !== entry) {
      previewCanvas.width = entry.bitmap.width;
      previewCanvas.height = entry.bitmap.height;
      const ctx = previewCanvas.getContext("2d", { willReadFrequently: true });
      ctx.drawImage(entry.bitmap, 0, 0);
      previewBase = ctx.getImageData(0, 0, previewCanvas.width, previewCanvas.height);
      previewSource = entry;
    }
    const from = entry.window;
    const lut = new Uint8ClampedArray(256);
    for (let v = 0; v < 256; v += 1) {
      const value = (v / 255) * from.width + from.center - from.width / 2;
      lut[v] = Math.round(((value - (target.center - target.width / 2)) / target.width) * 255);
    }
    const out = new ImageData(previewBase.width, previewBase.height);
    const src = previewBase.data;
    const dst = out.data;
    for (let i = 0; i < src.length; i += 4) {
      dst[i] = lut[src[i]];
      dst[i + 1] = lut[src[i + 1]];
      dst[i + 2] = lut[src[i + 2]];
      dst[i + 3] = 255;
    }
    previewCanvas.getContext("2d").putImageData(out, 0, 0);
    return previewCanvas;
  }

  function draw() {
    context.setTransform(1, 0, 0, 1, 0, 0);
    context.fillStyle = "#000";
    context.fillRect(0, 0, canvas.width, canvas.height);
    const entry = state.entry;
    if (!entry) return;
    const image = state.preview && entry.window ? previewImage(entry, state.preview) : entry.bitmap;
    const fit = Math.min(canvas.width / entry.bitmap.width, canvas.height / entry.bitmap.height);
    const scale = fit * state.scale;
    const ratio = window.devicePixelRatio || 1;
    context.imageSmoothingEnabled = true;
    context.imageSmoothingQuality = "high";
    context.setTransform(scale, 0, 0, scale, canvas.width / 2 + state.tx * ratio, canvas.height / 2 + state.ty * ratio);
    context.drawImage(image, -entry.bitmap.width / 2, -entry.bitmap.height / 2);
  }

  let frameRequested = false;
  function scheduleDraw() {
    if (frameRequested) return;
    frameRequested = true;
    requestAnimationFrame(() => {
      frameRequested = false;
      draw();
    });
  }

  // --- AI findings of the image on screen ----------------------------------------------------
  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function aiParts(result) {
    if (!result) return [element("p", "muted", "This image has not been analysed yet.")];
    if (result.status !== "ok") {
      const failure = element("p", "ai-failure");
      failure.append(element("strong", "", "Analysis failed: "), `${result.error || "no reason given"} `);
      if (result.error_code) failure.append(element("span", "mono small", `(${result.error_code})`));
      return [failure];
    }
    const parts = [];
    const risk = element("p", "ai-side-risk");
    risk.append(element("strong", "", `Risk ${result.risk === null ? "—" : result.risk} / 100`));
    if (result.simulated) risk.append(" ", element("span", "badge badge-simulated", "simulated"));
    parts.push(risk);
    if (result.diagnosis) parts.push(element("p", "ai-side-diagnosis", `Suggested diagnosis: ${result.diagnosis}`));
    if (result.findings.length) {
      const list = element("ul", "ai-side-findings");
      for (const finding of result.findings) {
        const item = element("li");
        const where = [finding.location, `${Math.round(finding.confidence * 100)}%`].filter(Boolean).join(" · ");
        item.append(
          element("span", `severity severity-${finding.severity}`, finding.severity),
          " ",
          element("span", "ai-side-finding", finding.description),
          element("span", "muted small", ` (${where})`),
        );
        list.append(item);
      }
      parts.push(list);
    } else {
      parts.push(element("p", "muted", "No findings reported."));
    }
    if (result.recommendations.length) {
      parts.push(element("h3", "ai-subhead", "Recommendations"));
      const list = element("ul", "ai-recommendations");
      for (const recommendation of result.recommendations) list.append(element("li", "", recommendation));
      parts.push(list);
    }
    return parts;
  }

  let aiShown = null;
  function showAI(slice) {
    if (!aiBody || aiShown === slice.image) return;
    aiShown = slice.image;
    const result = aiResults[slice.image];
    const parts = aiParts(result);
    if (result) parts.push(element("p", "provenance small muted", `${result.provider} · ${result.model} · analysed ${result.when}`));
    aiBody.replaceChildren(...parts);
    if (aiImageLabel) aiImageLabel.textContent = slice.number !== null && slice.number !== undefined ? `· image ${slice.number}` : "";
    if (aiImageInput) aiImageInput.value = slice.image;
    root.dataset.aiImage = slice.image;
  }

  // --- state changes -----------------------------------------------------------------------
  function shownWindow() {
    return state.preview || state.window || (state.entry && state.entry.window) || state.autoWindow;
  }

  function describeWindow() {
    if (state.colour) return "Window: not applicable (colour)";
    const w = shownWindow();
    const name = state.window ? "" : " (auto)";
    return w ? `W ${Math.round(w.width)} · L ${Math.round(w.center)}${name}` : "Window: auto";
  }

  function updateLabels() {
    const slice = slices[state.index];
    const text = `Slice ${state.index + 1} of ${slices.length}`;
    sliceLabel.textContent = `${state.index + 1} / ${slices.length}`;
    slider.value = String(state.index + 1);
    const number = slice.number !== null && slice.number !== undefined ? ` · image ${slice.number}` : "";
    const frame = slice.frame > 0 ? ` · frame ${slice.frame + 1}` : "";
    overlaySlice.textContent = `${text}${number}${frame}`;
    overlayWindow.textContent = describeWindow();
    zoomLabel.textContent = `${Math.round(state.scale * 100)}%`;
    canvas.setAttribute("aria-label", `${text}${number}. ${describeWindow()}.`);
    download.href = DICOM_URL.replace("IMAGE_ID", encodeURIComponent(slice.image));
    const w = shownWindow();
    if (w && document.activeElement !== centerInput && document.activeElement !== widthInput) {
      centerInput.value = String(Math.round(w.center * 10) / 10);
      widthInput.value = String(Math.round(w.width * 10) / 10);
    }
    root.dataset.slice = String(state.index);
    showAI(slice);
    root.dataset.window = state.window ? `${state.window.center}/${state.window.width}` : "auto";
  }

  let announceTimer = 0;
  function announce() {
    clearTimeout(announceTimer);
    announceTimer = setTimeout(() => {
      status.textContent = `Slice ${state.index + 1} of ${slices.length}. ${describeWindow()}.`;
    }, 400);
  }

  let busyTimer = 0;
  function show() {
    const slice = slices[state.index];
    const wanted = state.window;
    const url = urlFor(slice, wanted);
    updateLabels();
    clearTimeout(busyTimer);
    busyTimer = setTimeout(() => { busy.hidden = false; }, 200);
    load(url, wanted).then(
      (entry) => {
        if (url !== urlFor(slices[state.index], state.window)) return; // the user moved on
        clearTimeout(busyTimer);
        busy.hidden = true;
        state.entry = entry;
        if (entry.told && !state.window) state.autoWindow = entry.window;
        root.dataset.loaded = url;
        updateLabels();
        draw();
      },
      () => {
        clearTimeout(busyTimer);
        busy.hidden = false;
        busy.textContent = "This image could not be loaded.";
      },
    );
    for (let step = 1; step <= PRELOAD; step += 1) {
      for (const neighbour of [state.index + step, state.index - step]) {
        if (neighbour >= 0 && neighbour < slices.length) load(urlFor(slices[neighbour], wanted), wanted).catch(() => {});
      }
    }
    announce();
  }

  function goTo(index) {
    const next = Math.max(0, Math.min(slices.length - 1, index));
    if (next === state.index && state.entry) return;
    state.index = next;
    show();
  }

  function setWindow(windowValue, presetValue) {
    state.window = windowValue;
    state.preview = null;
    presetSelect.value = presetValue;
    show();
  }

  function choosePreset(position) {
    const preset = presets[position];
    if (!preset) return;
    setWindow(preset.center === null ? null : { center: preset.center, width: preset.width }, String(position));
  }

  function zoomAt(factor, x, y) {
    const next = Math.max(MIN_SCALE, Math.min(MAX_SCALE, state.scale * factor));
    const ratio = next / state.scale;
    // Keep the image point under (x, y) (CSS pixels from the canvas centre) where it is.
    state.tx = x - (x - state.tx) * ratio;
    state.ty = y - (y - state.ty) * ratio;
    state.scale = next;
    updateLabels();
    scheduleDraw();
  }

  function resetView() {
    state.scale = 1;
    state.tx = 0;
    state.ty = 0;
    updateLabels();
    scheduleDraw();
  }

  // The automatic window is only known once the server rendered a frame with it.
  async function knownWindow() {
    if (state.window) return state.window;
    if (state.entry && state.entry.window) return state.entry.window;
    const entry = await load(fill(RENDER_URL, slices[state.index]), null);
    if (!entry.told) {
      state.colour = true;
      updateLabels();
      return null;
    }
    state.autoWindow = entry.window;
    state.entry = entry;
    return entry.window;
  }

  // --- input ---------------------------------------------------------------------------------
  slider.addEventListener("input", () => goTo(Number(slider.value) - 1));

  presetSelect.addEventListener("change", () => {
    if (presetSelect.value === "custom") {
      centerInput.focus();
      return;
    }
    choosePreset(Number(presetSelect.value));
  });

  windowForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const center = Number(centerInput.value);
    const width = Number(widthInput.value);
    if (!Number.isFinite(center) || !Number.isFinite(width) || width < 1) {
      status.textContent = "The width must be at least 1.";
      widthInput.focus();
      return;
    }
    setWindow({ center, width }, "custom");
  });

  document.getElementById("zoom-in").addEventListener("click", () => zoomAt(1.25, 0, 0));
  document.getElementById("zoom-out").addEventListener("click", () => zoomAt(0.8, 0, 0));
  document.getElementById("reset-view").addEventListener("click", resetView);

  let wheelRest = 0;
  canvas.addEventListener(
    "wheel",
    (event) => {
      event.preventDefault();
      const rect = canvas.getBoundingClientRect();
      if (event.ctrlKey) {
        const x = event.clientX - rect.left - rect.width / 2;
        const y = event.clientY - rect.top - rect.height / 2;
        zoomAt(Math.exp(-event.deltaY * 0.002), x, y);
        return;
      }
      // Trackpads send many small deltas: step one slice per 40 pixels of scrolling.
      const pixels = event.deltaMode === 1 ? event.deltaY * 40 : event.deltaY;
      wheelRest += pixels;
      const steps = Math.trunc(wheelRest / 40) || (Math.abs(pixels) >= 40 ? Math.sign(pixels) : 0);
      if (steps !== 0) {
        wheelRest = 0;
        goTo(state.index + steps);
      }
    },
    { passive: false },
  );

  canvas.addEventListener("keydown", (event) => {
    const keys = {
      ArrowUp: () => goTo(state.index - 1),
      ArrowLeft: () => goTo(state.index - 1),
      ArrowDown: () => goTo(state.index + 1),
      ArrowRight: () => goTo(state.index + 1),
      PageUp: () => goTo(state.index - 10),
      PageDown: () => goTo(state.index + 10),
      Home: () => goTo(0),
      End: () => goTo(slices.length - 1),
      "+": () => zoomAt(1.25, 0, 0),
      "=": () => zoomAt(1.25, 0, 0),
      "-": () => zoomAt(0.8, 0, 0),
      0: resetView,
      r: resetView,
      R: resetView,
    };
    let action = keys[event.key];
    if (!action && /^[1-9]$/.test(event.key)) action = () => choosePreset(Number(event.key) - 1);
    if (action) {
      event.preventDefault();
      action();
    }
  });

  canvas.addEventListener("contextmenu", (event) => event.preventDefault());

  let drag = null;
  canvas.addEventListener("pointerdown", async (event) => {
    const tool = document.querySelector('input[name="tool"]:checked').value;
    const windowing = event.button === 2 || (event.button === 0 && tool === "window");
    const panning = event.button === 1 || (event.button === 0 && tool === "pan");
    if (!windowing && !panning) return;
    event.preventDefault();
    canvas.focus();
    canvas.setPointerCapture(event.pointerId);
    drag = { x: event.clientX, y: event.clientY, windowing, start: null, tx: state.tx, ty: state.ty };
    if (windowing) {
      const start = await knownWindow();
      if (drag) drag.start = start;
    }
  });

  canvas.addEventListener("pointermove", (event) => {
    if (!drag) return;
    const dx = event.clientX - drag.x;
    const dy = event.clientY - drag.y;
    if (!drag.windowing) {
      state.tx = drag.tx + dx;
      state.ty = drag.ty + dy;
      scheduleDraw();
      return;
    }
    if (!drag.start) return;
    // Sensitivity follows the width, so narrow and wide windows both feel controllable.
    const step = Math.max(drag.start.width / 256, 0.5);
    state.preview = {
      center: drag.start.center + dy * step,
      width: Math.max(1, drag.start.width + dx * step),
    };
    updateLabels();
    scheduleDraw();
  });

  function endDrag(event) {
    if (!drag) return;
    if (canvas.hasPointerCapture(event.pointerId)) canvas.releasePointerCapture(event.pointerId);
    const finished = drag;
    drag = null;
    if (finished.windowing && state.preview) {
      const chosen = { center: Math.round(state.preview.center), width: Math.max(1, Math.round(state.preview.width)) };
      setWindow(chosen, "custom");
    }
  }
  canvas.addEventListener("pointerup", endDrag);
  canvas.addEventListener("pointercancel", endDrag);

  document.querySelectorAll('input[name="tool"]').forEach((radio) => {
    radio.addEventListener("change", () => canvas.classList.toggle("panning", radio.value === "pan" && radio.checked));
  });

  new ResizeObserver(resize).observe(stage);
  resize();
  const firstPreset = presets.findIndex((preset) => preset.center === null);
  presetSelect.value = String(firstPreset >= 0 ? firstPreset : 0);
  if (firstPreset < 0) choosePreset(0);
  else show();
})();
