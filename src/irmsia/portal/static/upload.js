// IRMSIA upload page: drag and drop of files, folders or zip archives; one request per file,
// so each file shows its own progress and result. The local file name is shown from the
// browser's own File object; it is never sent to the server (the part is named "upload").
"use strict";

(() => {
  const root = document.getElementById("uploader");
  if (!root) return;

  const UPLOAD_URL = root.dataset.uploadUrl;
  const CSRF = root.dataset.csrf;
  const STUDY_URL = root.dataset.studyUrl;
  const CAN_VIEW = root.dataset.canView === "true";
  const CONCURRENCY = 2;
  const LABELS = {
    stored: "Stored",
    duplicate: "Already stored",
    quarantined: "Quarantined for review",
    rejected: "Rejected",
    pending: "Queued",
  };

  const dropZone = document.getElementById("drop-zone");
  const fileInput = document.getElementById("file-input");
  const folderInput = document.getElementById("folder-input");
  const table = document.getElementById("upload-table");
  const rows = document.getElementById("upload-rows");
  const summary = document.getElementById("upload-summary");

  const counts = { total: 0, stored: 0, duplicate: 0, quarantined: 0, rejected: 0, active: 0 };
  const queue = [];
  let running = 0;

  function formatSize(bytes) {
    if (bytes < 1024) return `${bytes} B`;
    if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
    if (bytes < 1024 * 1024 * 1024) return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
    return `${(bytes / 1024 / 1024 / 1024).toFixed(2)} GB`;
  }

  function el(tag, attrs = {}, text = "") {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (key === "className") node.className = value;
      else node.setAttribute(key, value);
    }
    if (text) node.textContent = text;
    return node;
  }

  function badge(status) {
    return el("span", { className: `badge badge-${status}` }, LABELS[status] || status);
  }

  function updateSummary() {
    summary.hidden = counts.total === 0;
    table.hidden = counts.total === 0;
    for (const node of summary.querySelectorAll("[data-count]")) {
      node.textContent = String(counts[node.dataset.count]);
    }
  }

  function addRow(file) {
    const name = file.webkitRelativePath || file.relativePath || file.name;
    const tr = el("tr");
    tr.append(el("td", { className: "file-name" }, name));
    tr.append(el("td", { className: "nowrap num" }, formatSize(file.size)));
    const progressCell = el("td", { className: "nowrap" });
    const progress = el("progress", { max: "100", value: "0", "aria-label": `Upload progress of ${name}` });
    const percent = el("span", { className: "small muted" }, " waiting");
    progressCell.append(progress, percent);
    tr.append(progressCell);
    const result = el("td", { className: "result" });
    result.append(el("span", { className: "badge badge-pending" }, "Waiting"));
    tr.append(result);
    rows.append(tr);
    return { progress, percent, result, row: tr };
  }

  function studyLink(studyId) {
    const link = el("a", { href: STUDY_URL.replace("STUDY_ID", encodeURIComponent(studyId)) }, "View study");
    link.className = "small";
    return link;
  }

  function describe(item) {
    const parts = [badge(item.status)];
    const detail = item.status === "rejected" ? `${item.message} (${item.reason})` : "";
    if (detail) parts.push(el("span", { className: "result-detail" }, detail));
    if (CAN_VIEW && item.study_id && (item.status === "stored" || item.status === "duplicate")) {
      parts.push(document.createTextNode(" "), studyLink(item.study_id));
    }
    return parts;
  }

  function showResults(view, results) {
    view.result.replaceChildren();
    for (const item of results) {
      if (item.status in counts) counts[item.status] += 1;
    }
    if (results.length === 1) {
      view.result.append(...describe(results[0]));
      view.row.dataset.status = results[0].status;
      updateSummary();
      return;
    }
    // A zip archive: one line per status, then each object.
    const tally = {};
    for (const item of results) tally[item.status] = (tally[item.status] || 0) + 1;
    view.result.append(el("span", { className: "small" }, `Archive with ${results.length} objects: `));
    for (const [status, count] of Object.entries(tally)) {
      view.result.append(badge(status), document.createTextNode(` ${count} `));
    }
    const details = el("details");
    details.append(el("summary", { className: "small" }, "Each object"));
    const list = el("ul", { className: "small" });
    results.forEach((item, index) => {
      const li = el("li", {}, `Object ${index + 1}: `);
      li.append(...describe(item));
      list.append(li);
    });
    details.append(list);
    view.result.append(details);
    view.row.dataset.status = tally.rejected === results.length ? "rejected" : "stored";
    updateSummary();
  }

  function showFailure(view, message) {
    counts.rejected += 1;
    view.result.replaceChildren(badge("rejected"), el("span", { className: "result-detail" }, message));
    view.row.dataset.status = "rejected";
    updateSummary();
  }

  function send(job) {
    running += 1;
    counts.active += 1;
    updateSummary();
    const { file, view } = job;
    const xhr = new XMLHttpRequest();
    xhr.open("POST", UPLOAD_URL);
    xhr.setRequestHeader("X-CSRF-Token", CSRF);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", (event) => {
      if (!event.lengthComputable) return;
      const pct = Math.round((event.loaded / event.total) * 100);
      view.progress.value = pct;
      view.percent.textContent = pct >= 100 ? " processing…" : ` ${pct}%`;
    });
    xhr.addEventListener("load", () => {
      view.progress.value = 100;
      view.percent.textContent = " done";
      let body = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch (error) {
        body = null;
      }
      if (xhr.status === 200 && body && Array.isArray(body.results)) {
        showResults(view, body.results);
      } else if (xhr.status === 401) {
        showFailure(view, "Your session has ended. Sign in again and retry.");
      } else {
        showFailure(view, (body && body.detail) || `The server answered ${xhr.status}.`);
      }
    });
    xhr.addEventListener("error", () => showFailure(view, "Network error: the file was not sent."));
    xhr.addEventListener("loadend", () => {
      running -= 1;
      counts.active -= 1;
      updateSummary();
      pump();
    });
    const form = new FormData();
    form.append("files", file, "upload"); // never the local name
    xhr.send(form);
  }

  function pump() {
    while (running < CONCURRENCY && queue.length > 0) send(queue.shift());
  }

  function addFiles(files) {
    for (const file of files) {
      if (file.name.startsWith(".")) continue; // .DS_Store and other hidden files of folders
      counts.total += 1;
      queue.push({ file, view: addRow(file) });
    }
    updateSummary();
    pump();
  }

  // Folders dropped on the page: walk them through the File and Directory Entries API.
  function entryFile(entry) {
    return new Promise((resolve, reject) => entry.file(resolve, reject));
  }

  function readBatch(reader) {
    return new Promise((resolve, reject) => reader.readEntries(resolve, reject));
  }

  async function walk(entry, out, prefix) {
    if (entry.isFile) {
      const file = await entryFile(entry);
      file.relativePath = prefix + file.name;
      out.push(file);
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (let batch = await readBatch(reader); batch.length > 0; batch = await readBatch(reader)) {
        for (const child of batch) await walk(child, out, `${prefix}${entry.name}/`);
      }
    }
  }

  async function droppedFiles(dataTransfer) {
    // Entries must be taken during the drop event: the list is emptied afterwards.
    const entries = [...dataTransfer.items]
      .map((item) => (item.webkitGetAsEntry ? item.webkitGetAsEntry() : null))
      .filter(Boolean);
    if (entries.length === 0) return [...dataTransfer.files];
    const files = [];
    for (const entry of entries) await walk(entry, files, "");
    return files;
  }

  for (const type of ["dragenter", "dragover"]) {
    dropZone.addEventListener(type, (event) => {
      event.preventDefault();
      dropZone.classList.add("dragging");
    });
  }
  dropZone.addEventListener("dragleave", () => dropZone.classList.remove("dragging"));
  dropZone.addEventListener("drop", (event) => {
    event.preventDefault();
    dropZone.classList.remove("dragging");
    droppedFiles(event.dataTransfer).then(addFiles);
  });
  // A file dropped next to the zone must not make the browser navigate away.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());

  for (const input of [fileInput, folderInput]) {
    input.addEventListener("change", () => {
      addFiles([...input.files]);
      input.value = "";
    });
  }
})();
