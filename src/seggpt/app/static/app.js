// The SegGPT page: examples with masks (uploaded or painted), targets (images or a video), one request, results.
// Painted masks are kept as one label per image pixel (no anti-aliasing, so no in-between colours) and sent as a
// PNG whose red channel holds the label.
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = {
  info: null,
  examples: [],      // {id, file, w, h, labels: Uint8Array|null, maskFile: File|null, canvas, ctx, imageData, el}
  targets: [],       // File
  video: null,       // File
  nLabels: 1,        // brush labels 1..nLabels
  brushLabel: 1,
  nextId: 0,
  busy: false,
};

// The transformers-compatible palette (seggpt.coloring.build_palette): row 0 black, then a grid from white.
function buildPalette(n) {
  const base = Math.floor(Math.pow(n, 1 / 3) + 1e-9) + 1;
  const margin = Math.floor(256 / base);
  const out = [[0, 0, 0]];
  for (let loc = 0; loc < n; loc++) {
    out.push([255 - Math.floor(loc / (base * base)) * margin,
              255 - Math.floor((loc % (base * base)) / base) * margin,
              255 - (loc % base) * margin]);
  }
  return out;
}
// White (label 1 of any palette) is invisible on light images as an overlay; draw the brush in a visible
// colour instead, while the label sent is still the number.
const DISPLAY = [[0, 0, 0], [255, 40, 40], [40, 200, 60], [40, 110, 255], [255, 200, 0], [220, 60, 220],
                 [0, 210, 210], [255, 130, 30], [140, 90, 40], [120, 120, 120]];
function displayColour(label) {
  if (label < DISPLAY.length) return DISPLAY[label];
  const p = buildPalette(state.nLabels);
  return p[Math.min(label, p.length - 1)];
}

function showError(msg) {
  const box = $("#error");
  box.textContent = msg;
  box.classList.toggle("hidden", !msg);
}
function setStatus(msg) { $("#status").textContent = msg; }
function fmtMB(bytes) { return (bytes / 1048576).toFixed(1) + " MB"; }

// Model information and limits ---------------------------------------------------------------------------
async function loadInfo() {
  try {
    const r = await fetch("/api/info");
    state.info = await r.json();
    const i = state.info;
    $("#model-info").textContent =
      `model: ${i.weights} · ${i.parameters_m} M parameters · ${i.image_size[0]}×${i.image_size[1]} per image · ` +
      `${i.device} · limits: ${i.limits.max_upload_mb} MB per request, ${(i.limits.max_pixels / 1e6).toFixed(0)} MP per image`;
    $("#threshold").placeholder = i.threshold === i.video_threshold
      ? `auto (${i.threshold})` : `auto (${i.threshold}, video ${i.video_threshold})`;
    if (!i.video) {
      $("#video-input").disabled = true;
      document.querySelector("label[for=video-input]").title = "video needs seggpt.video, not installed here";
    }
  } catch (e) {
    $("#model-info").textContent = "model information unavailable: " + e;
  }
}

// Brush --------------------------------------------------------------------------------------------------
function renderLabelButtons() {
  const box = $("#label-buttons");
  box.innerHTML = "";
  for (let l = 1; l <= state.nLabels; l++) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "label-btn" + (l === state.brushLabel ? " active" : "");
    const c = displayColour(l);
    b.style.background = `rgb(${c[0]},${c[1]},${c[2]})`;
    b.textContent = l;
    b.title = `paint label ${l}`;
    b.dataset.label = l;
    b.onclick = () => { state.brushLabel = l; $("#eraser").checked = false; renderLabelButtons(); };
    box.appendChild(b);
  }
}
$("#add-label").onclick = () => {
  if (state.nLabels >= 255) return;
  state.nLabels += 1;
  state.brushLabel = state.nLabels;
  renderLabelButtons();
};

// Examples -----------------------------------------------------------------------------------------------
$("#example-input").addEventListener("change", (ev) => {
  for (const f of ev.target.files) addExample(f);
  ev.target.value = "";
});

function addExample(file) {
  const max = state.info ? state.info.limits.max_examples : 8;
  if (state.examples.length >= max) { showError(`at most ${max} examples`); return; }
  const ex = { id: state.nextId++, file, w: 0, h: 0, labels: null, maskFile: null };
  const el = document.createElement("div");
  el.className = "card example";
  el.innerHTML = `
    <div class="title"></div>
    <div class="stage"><img alt="example"></div>
    <div class="meta"></div>
    <div class="actions">
      <label class="button">Upload mask…<input class="mask-input" type="file" accept="image/*,.tif,.tiff" hidden></label>
      <button type="button" class="clear" title="remove the uploaded or painted mask">Clear</button>
      <button type="button" class="remove">Remove</button>
    </div>`;
  el.querySelector(".title").textContent = file.name;
  el.querySelector(".title").title = file.name;
  ex.el = el;
  const img = el.querySelector("img");
  img.onload = () => setupCanvas(ex, img);
  img.onerror = () => {
    el.querySelector(".stage").innerHTML =
      '<div class="nopreview">no preview: the browser cannot show this file (the server will check it); upload its mask</div>';
    el.querySelector(".meta").textContent = fmtMB(file.size);
  };
  img.src = URL.createObjectURL(file);
  el.querySelector(".mask-input").addEventListener("change", (e) => {
    const f = e.target.files[0];
    if (f) setMaskFile(ex, f);
  });
  el.querySelector(".clear").onclick = () => {
    ex.maskFile = null;
    const prev = el.querySelector(".mask-preview");
    if (prev) prev.remove();
    if (ex.labels) { ex.labels.fill(0); redraw(ex); }
    if (ex.canvas) ex.canvas.classList.remove("hidden");
    updateMeta(ex);
  };
  el.querySelector(".remove").onclick = () => {
    state.examples = state.examples.filter((e) => e !== ex);
    el.remove();
  };
  state.examples.push(ex);
  $("#examples").appendChild(el);
  return ex;
}

function setMaskFile(ex, f) {
  ex.maskFile = f;
  const stage = ex.el.querySelector(".stage");
  const old = stage.querySelector(".mask-preview");
  if (old) old.remove();
  if (ex.canvas) ex.canvas.classList.add("hidden");
  updateMeta(ex);
  // Show the uploaded mask as a tint over its image: black is background, every other colour is drawn
  // (grey and white in the brush's first colour, so binary masks show). The server decodes the file itself.
  const img = new Image();
  img.onload = () => {
    const c = document.createElement("canvas");
    c.className = "mask-preview";
    c.width = img.naturalWidth;
    c.height = img.naturalHeight;
    const ctx = c.getContext("2d");
    ctx.drawImage(img, 0, 0);
    const id = ctx.getImageData(0, 0, c.width, c.height), d = id.data;
    const first = displayColour(1);
    for (let i = 0; i < d.length; i += 4) {
      const r = d[i], g = d[i + 1], b = d[i + 2];
      if (d[i + 3] === 0 || (r | g | b) === 0) { d[i + 3] = 0; continue; }
      if (r === g && g === b) { d[i] = first[0]; d[i + 1] = first[1]; d[i + 2] = first[2]; }
      d[i + 3] = 150;
    }
    ctx.putImageData(id, 0, 0);
    if (ex.maskFile === f) stage.appendChild(c);
  };
  img.src = URL.createObjectURL(f);   // not displayable (TIFF): no tint, the server still reads it
}

function updateMeta(ex) {
  const src = ex.maskFile ? `mask: ${ex.maskFile.name}` : (ex.labels && ex.labels.some((v) => v) ? "mask: painted" : "mask: none yet — paint or upload");
  ex.el.querySelector(".meta").textContent = `${ex.w}×${ex.h} · ${src}`;
}

function setupCanvas(ex, img) {
  ex.w = img.naturalWidth;
  ex.h = img.naturalHeight;
  const c = document.createElement("canvas");
  c.width = ex.w;
  c.height = ex.h;
  c.className = "paint";
  ex.canvas = c;
  ex.ctx = c.getContext("2d");
  ex.imageData = ex.ctx.createImageData(ex.w, ex.h);
  ex.labels = new Uint8Array(ex.w * ex.h);
  img.parentElement.appendChild(c);
  if (ex.maskFile) c.classList.add("hidden");
  let last = null;
  const toImage = (e) => {
    const r = c.getBoundingClientRect();
    return [(e.clientX - r.left) * ex.w / r.width, (e.clientY - r.top) * ex.h / r.height, ex.w / r.width];
  };
  c.addEventListener("pointerdown", (e) => {
    c.setPointerCapture(e.pointerId);
    last = toImage(e);
    stroke(ex, last, last);
  });
  c.addEventListener("pointermove", (e) => {
    if (!last) return;
    const p = toImage(e);
    stroke(ex, last, p);
    last = p;
  });
  const end = () => { last = null; updateMeta(ex); };
  c.addEventListener("pointerup", end);
  c.addEventListener("pointercancel", end);
  updateMeta(ex);
}

// Stamp disks along the segment a -> b (image pixels), writing labels and the display pixels.
function stroke(ex, a, b) {
  const radius = Math.max(1, (+$("#brush-size").value / 2) * a[2]);
  const label = $("#eraser").checked ? 0 : state.brushLabel;
  const dist = Math.hypot(b[0] - a[0], b[1] - a[1]);
  const steps = Math.max(1, Math.ceil(dist / (radius / 2)));
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  for (let s = 0; s <= steps; s++) {
    const cx = a[0] + (b[0] - a[0]) * s / steps, cy = a[1] + (b[1] - a[1]) * s / steps;
    const bx0 = Math.max(0, Math.floor(cx - radius)), bx1 = Math.min(ex.w - 1, Math.ceil(cx + radius));
    const by0 = Math.max(0, Math.floor(cy - radius)), by1 = Math.min(ex.h - 1, Math.ceil(cy + radius));
    for (let y = by0; y <= by1; y++) {
      for (let x = bx0; x <= bx1; x++) {
        if ((x + 0.5 - cx) ** 2 + (y + 0.5 - cy) ** 2 <= radius * radius) ex.labels[y * ex.w + x] = label;
      }
    }
    x0 = Math.min(x0, bx0); y0 = Math.min(y0, by0); x1 = Math.max(x1, bx1); y1 = Math.max(y1, by1);
  }
  if (x1 >= x0 && y1 >= y0) redraw(ex, x0, y0, x1 - x0 + 1, y1 - y0 + 1);
}

function redraw(ex, x = 0, y = 0, w = ex.w, h = ex.h) {
  const d = ex.imageData.data;
  for (let yy = y; yy < y + h; yy++) {
    for (let xx = x; xx < x + w; xx++) {
      const i = yy * ex.w + xx, l = ex.labels[i], c = displayColour(l);
      d[4 * i] = c[0]; d[4 * i + 1] = c[1]; d[4 * i + 2] = c[2]; d[4 * i + 3] = l ? 150 : 0;
    }
  }
  ex.ctx.putImageData(ex.imageData, 0, 0, x, y, w, h);
}

// The painted labels as a PNG: red channel = label, opaque, exact (putImageData with alpha 255 is lossless).
function paintedPNG(ex) {
  const c = document.createElement("canvas");
  c.width = ex.w;
  c.height = ex.h;
  const ctx = c.getContext("2d");
  const id = ctx.createImageData(ex.w, ex.h);
  for (let i = 0; i < ex.labels.length; i++) {
    const l = ex.labels[i];
    id.data[4 * i] = l; id.data[4 * i + 1] = l; id.data[4 * i + 2] = l; id.data[4 * i + 3] = 255;
  }
  ctx.putImageData(id, 0, 0);
  return new Promise((resolve) => c.toBlob(resolve, "image/png"));
}

// Targets ------------------------------------------------------------------------------------------------
$("#target-input").addEventListener("change", (ev) => {
  if (state.video) { state.video = null; $("#video-box").classList.add("hidden"); }
  for (const f of ev.target.files) state.targets.push(f);
  ev.target.value = "";
  renderTargets();
});
$("#video-input").addEventListener("change", (ev) => {
  const f = ev.target.files[0];
  ev.target.value = "";
  if (!f) return;
  state.targets = [];
  state.video = f;
  $("#video-name").textContent = `video: ${f.name} (${fmtMB(f.size)})`;
  $("#video-box").classList.remove("hidden");
  renderTargets();
});
$("#clear-targets").onclick = () => {
  state.targets = [];
  state.video = null;
  $("#video-box").classList.add("hidden");
  renderTargets();
};
$("#first-frame").onclick = async () => {
  if (!state.video) return;
  showError("");
  const fd = new FormData();
  fd.append("video", state.video, state.video.name);
  setStatus("reading the first frame…");
  try {
    const r = await fetch("/api/first_frame", { method: "POST", body: fd });
    if (!r.ok) { showError(await errorText(r)); setStatus(""); return; }
    const blob = await r.blob();
    const name = state.video.name.replace(/\.[^.]*$/, "") + "_frame0.png";
    for (const ex of [...state.examples]) ex.el.querySelector(".remove").click();
    addExample(new File([blob], name, { type: "image/png" }));
    setStatus("paint the object(s) on the first frame, then run");
  } catch (e) { showError("could not reach the server: " + e); setStatus(""); }
};

function renderTargets() {
  const box = $("#targets");
  box.innerHTML = "";
  const items = state.video ? [state.video] : state.targets;
  items.forEach((f, i) => {
    const t = document.createElement("div");
    t.className = "thumb";
    const isVideo = f === state.video && !/\.gif$/i.test(f.name);
    t.innerHTML = isVideo ? "<video muted></video><div class='name'></div>" : "<img alt=''><div class='name'></div>";
    const m = t.firstChild;
    m.src = URL.createObjectURL(f);
    if (isVideo) { m.style.width = "120px"; }
    t.querySelector(".name").textContent = f.name;
    t.title = `${f.name} (${fmtMB(f.size)}) — click to remove`;
    t.onclick = () => {
      if (state.video) { state.video = null; $("#video-box").classList.add("hidden"); }
      else state.targets.splice(i, 1);
      renderTargets();
    };
    box.appendChild(t);
  });
}

// Run ----------------------------------------------------------------------------------------------------
async function errorText(r) {
  try {
    const j = await r.json();
    return j.error || `the server answered ${r.status}`;
  } catch (e) {
    return `the server answered ${r.status} ${r.statusText}`;
  }
}

$("#run").onclick = run;
async function run() {
  if (state.busy) return;
  showError("");
  if (!state.examples.length) { showError("Add at least one example image and give it a mask (step 1)."); return; }
  if (!state.targets.length && !state.video) { showError("Add at least one target image or a video (step 2)."); return; }
  const fd = new FormData();
  fd.append("task", $("#task").value);
  fd.append("ensemble", $("#ensemble").value);
  fd.append("num_labels", $("#num-labels").value);
  fd.append("threshold", $("#threshold").value);
  if ($("#detail").checked) fd.append("detail", "1");
  let total = 0;
  for (const [i, ex] of state.examples.entries()) {
    fd.append(`example_${i}`, ex.file, ex.file.name);
    total += ex.file.size;
    if (ex.maskFile) {
      fd.append(`mask_${i}`, ex.maskFile, ex.maskFile.name);
      total += ex.maskFile.size;
    } else if (ex.labels) {
      if (!ex.labels.some((v) => v)) { showError(`Example ${i + 1} (${ex.file.name}) has no mask: paint the object or upload a mask.`); return; }
      const blob = await paintedPNG(ex);
      fd.append(`painted_${i}`, blob, `painted_${i}.png`);
      total += blob.size;
    }
  }
  if (state.video) { fd.append("video", state.video, state.video.name); total += state.video.size; }
  for (const f of state.targets) { fd.append("target", f, f.name); total += f.size; }
  const limit = state.info ? state.info.limits.max_upload_bytes : Infinity;
  if (total > limit) {
    showError(`The files add up to ${fmtMB(total)}; the limit is ${fmtMB(limit)} per run. Send fewer or smaller files.`);
    return;
  }
  state.busy = true;
  $("#run").disabled = true;
  const t0 = performance.now();
  const tick = setInterval(() => setStatus(`segmenting… ${((performance.now() - t0) / 1000).toFixed(0)} s`), 500);
  setStatus("segmenting…");
  try {
    const r = await fetch("/api/segment", { method: "POST", body: fd });
    if (!r.ok) { showError(await errorText(r)); setStatus("failed"); return; }
    const j = await r.json();
    showResults(j);
    setStatus(`done: ${j.results.length} result${j.results.length === 1 ? "" : "s"} in ${j.seconds} s`);
  } catch (e) {
    showError("Could not reach the server (" + e + "). Is `seggpt app` still running? A request over the size limit can also be cut off.");
    setStatus("failed");
  } finally {
    clearInterval(tick);
    state.busy = false;
    $("#run").disabled = false;
  }
}

function showResults(j) {
  const box = $("#results");
  box.innerHTML = "";
  const zip = $("#dl-zip");
  zip.href = j.zip;
  zip.classList.remove("hidden");
  const links = $("#prompt-links");
  links.innerHTML = "";
  j.prompts.forEach((url, i) => {
    const a = document.createElement("a");
    a.className = "button dl-painted";
    a.href = url;
    a.download = "";
    a.textContent = `painted mask ${i + 1}`;
    a.title = "the mask you painted, as a label map (reuse it as a mask file)";
    links.appendChild(a);
  });
  const anim = $("#animation");
  anim.innerHTML = "";
  anim.classList.add("hidden");
  if (j.results.length && j.results[0].files.animation) {
    anim.innerHTML = `<img alt="overlay animation"> <div><a class="button" download>Download animation (GIF)</a></div>`;
    anim.querySelector("img").src = j.results[0].files.animation;
    anim.querySelector("a").href = j.results[0].files.animation;
    anim.classList.remove("hidden");
  }
  for (const res of j.results) {
    const c = document.createElement("div");
    c.className = "card result";
    c.innerHTML = `
      <div class="title"></div>
      <div class="pair">
        <figure><img class="overlay" alt="overlay"><figcaption>overlay</figcaption></figure>
        <figure><img class="color" alt="label map"><figcaption>label map</figcaption></figure>
      </div>
      <div class="meta"></div>
      <div class="actions">
        <a class="button dl-overlay" download>overlay.png</a>
        <a class="button dl-labels" download>labels.png</a>
        <a class="button dl-color" download>colours.png</a>
      </div>`;
    c.querySelector(".title").textContent = res.name;
    c.querySelector(".overlay").src = res.files.overlay;
    c.querySelector(".color").src = res.files.color;
    c.querySelector(".dl-overlay").href = res.files.overlay;
    c.querySelector(".dl-labels").href = res.files.labels;
    c.querySelector(".dl-color").href = res.files.color;
    c.dataset.width = res.width;
    c.dataset.height = res.height;
    const fg = (100 * res.foreground).toFixed(1);
    c.querySelector(".meta").textContent =
      `${res.width}×${res.height} · labels ${res.labels.join(", ")} · ${fg}% foreground`;
    box.appendChild(c);
  }
}

renderLabelButtons();
loadInfo();
