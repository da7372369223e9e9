/*
 * tlaudit review workbench: the queue page and the case page.
 *
 * Security: every string from the run is put into the page as a DOM text node (textContent,
 * createTextNode, setAttribute); this file never assigns innerHTML. API calls send the session
 * token in the X-Tlaudit-Token header; only <img> URLs carry it as ?token=.
 *
 * Stable hooks for tests (ids and data-testid attributes):
 *   body[data-page]                 "queue" or "case"
 *   body[data-case-ready]           the study key of the case last drawn, image included (set when
 *                                   the radiograph has decoded and the boxes are on it; a test
 *                                   times key press -> drawn by waiting for it to change)
 *   body[data-case-error]           set when the radiograph could not be shown
 *   banner                          the synthetic-model banner (when the model card says so)
 *   domain-banner                   the scan's out-of-domain banner (when cases.json has one)
 *   progress                        "n of N reviewed"
 *   queue page:
 *     queue-section-flagged, queue-section-sample   the two parts of the queue
 *     queue-row [data-study, data-status, data-out-of-distribution, data-levels, data-probability,
 *                data-reviewed]   data-out-of-distribution: how many of its vertebrae are
 *     queue-status                 the study's status as the reports word it, in its row
 *     filter-status, filter-level, filter-probability, filter-reviewed
 *   case page:
 *     case [data-study]             the case root (data-study follows navigation)
 *     prev-case, next-case, position, study-line (its case-status as in the queue), queue-link
 *     save-state                    "" | "saving…" | "saved" | "error: <message>" (data-state
 *                                   "idle" | "saving" | "saved" | "error")
 *     radiograph, overlay, viewport, brightness, contrast, heatmap-opacity, reset-view
 *     box [data-box, data-level]    each vertebra box (an SVG <g>); data-selected when selected
 *     heatmap [data-box]            a heatmap overlay (an SVG <image>)
 *     vertebra [data-box, data-level, data-decision]   its row in the vertebrae table, holding
 *       level-select, decide-fracture, decide-no_fracture, decide-unsure, ao-select,
 *       genant-select, delete-box (restore-box for a deleted box), and out-of-distribution
 *       beside the probability when the scan marked the call so
 *     add-box                       then drag a rectangle on the image; new-box-dialog with
 *                                   new-level, new-box-ok, new-box-cancel
 *     verdict-confirmed_miss, verdict-not_a_fracture, verdict-already_known, verdict-unsure
 *                                   (aria-pressed="true" when set; class "proposed" when proposed)
 *     comment, impression, mentions, mention (data-level, data-mention), disagreement,
 *     image-error
 *
 * Keys: queue page: j / k open the next / previous case (after the one last opened), arrows move
 * between rows, Enter opens. Case page: j, k, arrows: next / previous case; 1-4: verdict; f, n, u:
 * decision on the selected vertebra; a: add a box; 0: fit; q or Escape: back to the queue.
 */
(() => {
  "use strict";

  const TOKEN = document.querySelector('meta[name="tlaudit-token"]').getAttribute("content");
  const TOKEN_HEADER = "X-Tlaudit-Token";
  const ORDER_KEY = "tlaudit.review.order";
  const FILTER_KEY = "tlaudit.review.filters";
  const LAST_KEY = "tlaudit.review.last";
  const VERDICTS = ["confirmed miss", "not a fracture", "already known", "unsure"];
  const DECISIONS = [
    ["fracture", "F", "fracture"],
    ["no_fracture", "N", "no fracture"],
    ["unsure", "?", "unsure"],
  ];
  const SVG_NS = "http://www.w3.org/2000/svg";

  // -- small helpers ---------------------------------------------------------------------------

  /** A URL of this server carrying the token, for GET navigation and <img> sources. */
  function tokenUrl(path, params) {
    const query = new URLSearchParams(params || {});
    query.set("token", TOKEN);
    return `${path}?${query.toString()}`;
  }

  /** Create an element; attrs set by setAttribute, children appended (strings as text). */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined && value !== false) {
        node.setAttribute(name, value === true ? "" : String(value));
      }
    }
    node.append(...children.filter((c) => c !== null && c !== undefined));
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    return node;
  }

  async function apiGet(path, params) {
    const query = new URLSearchParams(params || {}).toString();
    const response = await fetch(`${path}?${query}`, { headers: { [TOKEN_HEADER]: TOKEN } });
    if (!response.ok) throw new Error(await errorText(response));
    return response.json();
  }

  async function apiPost(path, body) {
    const response = await fetch(path, {
      method: "POST",
      headers: { [TOKEN_HEADER]: TOKEN, "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    if (!response.ok) throw new Error(await errorText(response));
    return response.json();
  }

  async function errorText(response) {
    try {
      const data = await response.json();
      if (data && data.error) return data.error;
    } catch (err) {
      // not JSON: fall through to the status line
    }
    return `${response.status} ${response.statusText}`;
  }

  function typing(event) {
    const target = event.target;
    return (
      target instanceof HTMLInputElement ||
      target instanceof HTMLTextAreaElement ||
      target instanceof HTMLSelectElement ||
      (target instanceof HTMLElement && target.isContentEditable)
    );
  }

  function modified(event) {
    return event.altKey || event.ctrlKey || event.metaKey;
  }

  function readJSON(key, fallback) {
    try {
      const value = JSON.parse(sessionStorage.getItem(key));
      return value === null ? fallback : value;
    } catch (err) {
      return fallback;
    }
  }

  // -- queue page ------------------------------------------------------------------------------

  function queuePage() {
    const rows = Array.from(document.querySelectorAll('[data-testid="queue-row"]'));
    const controls = {
      status: document.getElementById("filter-status"),
      level: document.getElementById("filter-level"),
      probability: document.getElementById("filter-probability"),
      reviewed: document.getElementById("filter-reviewed"),
    };
    const saved = readJSON(FILTER_KEY, {});
    for (const [name, control] of Object.entries(controls)) {
      if (saved[name] !== undefined) control.value = saved[name];
    }

    function visible() {
      return rows.filter((row) => !row.hidden);
    }

    function apply() {
      const status = controls.status.value;
      const level = controls.level.value;
      const minimum = parseFloat(controls.probability.value) || 0;
      const reviewed = controls.reviewed.value;
      for (const row of rows) {
        const levels = row.dataset.levels ? row.dataset.levels.split(" ") : [];
        const p = row.dataset.probability === "" ? null : parseFloat(row.dataset.probability);
        row.hidden = !(
          (!status || row.dataset.status === status) &&
          (!level || levels.includes(level)) &&
          (minimum <= 0 || (p !== null && p >= minimum)) &&
          (!reviewed || row.dataset.reviewed === reviewed)
        );
      }
      const values = {};
      for (const [name, control] of Object.entries(controls)) values[name] = control.value;
      sessionStorage.setItem(FILTER_KEY, JSON.stringify(values));
      sessionStorage.setItem(ORDER_KEY, JSON.stringify(visible().map((r) => r.dataset.study)));
      document.getElementById("none-shown").hidden = visible().length > 0;
    }

    for (const control of Object.values(controls)) {
      control.addEventListener("input", apply);
      control.addEventListener("change", apply);
    }
    document.getElementById("filters").addEventListener("submit", (e) => e.preventDefault());
    for (const row of rows) {
      row.addEventListener("click", (event) => {
        if (event.target instanceof HTMLAnchorElement) return;
        open(row);
      });
    }
    apply();

    function open(row) {
      sessionStorage.setItem(LAST_KEY, row.dataset.study);
      window.location.assign(row.dataset.href);
    }

    /** The row j (step 1) or k (step -1) opens: next to the last case opened, else the first
     * not yet reviewed (j) or the last (k). */
    function neighbour(step) {
      const shown = visible();
      if (!shown.length) return null;
      const last = shown.findIndex((r) => r.dataset.study === sessionStorage.getItem(LAST_KEY));
      if (last >= 0) return shown[last + step] || null;
      if (step > 0) return shown.find((r) => r.dataset.reviewed === "no") || shown[0];
      return shown[shown.length - 1];
    }

    document.addEventListener("keydown", (event) => {
      if (typing(event) || modified(event)) return;
      const shown = visible();
      const focused = shown.indexOf(document.activeElement);
      if (event.key === "j" || event.key === "k") {
        const row = neighbour(event.key === "j" ? 1 : -1);
        if (row) open(row);
      } else if (event.key === "ArrowDown" || event.key === "ArrowUp") {
        const next = shown[focused + (event.key === "ArrowDown" ? 1 : -1)] || shown[0];
        if (next) {
          next.focus();
          event.preventDefault();
        }
      } else if (event.key === "Enter" && focused >= 0) {
        open(shown[focused]);
      }
    });
  }

  // -- case page -------------------------------------------------------------------------------

  function casePage() {
    const body = document.body;
    const root = document.getElementById("case");
    const levels = body.dataset.levels.split(" ");
    const aoTypes = body.dataset.aoTypes.split(" ");
    const genantGrades = body.dataset.genantGrades.split(" ");
    const outOfDistribution = body.dataset.outOfDistribution; // the reports' wording
    const img = document.getElementById("radiograph");
    const overlay = document.getElementById("overlay");
    const stage = document.getElementById("stage");
    const viewport = document.getElementById("viewport");
    const saveState = document.getElementById("save-state");
    const comment = document.getElementById("comment");
    const brightness = document.getElementById("brightness");
    const contrast = document.getElementById("contrast");
    const heatmapOpacity = document.getElementById("heatmap-opacity");
    const addBoxButton = document.getElementById("add-box");
    const newBoxDialog = document.getElementById("new-box");
    const newLevel = document.getElementById("new-level");

    const cache = new Map(); // study key -> Promise of case JSON
    const images = new Map(); // image URL -> Promise of a decoded Image (prefetch)
    let order = readJSON(ORDER_KEY, null);
    let current = null; // the case JSON drawn
    let imageIndex = 0;
    let selected = null; // box id
    let fitScale = 1;
    let size = { width: 0, height: 0 };
    let adding = false;
    let drawSerial = 0;
    let pending = Promise.resolve(); // POSTs, one after another
    let commentTimer = null;

    const panzoom = window.Panzoom(stage, {
      canvas: true,
      maxScale: 40,
      minScale: 0.02,
      step: 0.2,
      cursor: "grab",
      excludeClass: "panzoom-exclude",
    });
    viewport.addEventListener("wheel", (event) => {
      if (!adding) panzoom.zoomWithWheel(event);
    });

    for (const level of levels) newLevel.append(el("option", { value: level }, level));

    // Window / level: a CSS filter on the radiograph only (not on the boxes or heatmaps).
    function applyFilter() {
      img.style.filter = `brightness(${brightness.value}%) contrast(${contrast.value}%)`;
    }
    function applyHeatmapOpacity() {
      overlay.style.setProperty("--heatmap-opacity", String(heatmapOpacity.value / 100));
    }
    brightness.addEventListener("input", applyFilter);
    contrast.addEventListener("input", applyFilter);
    heatmapOpacity.addEventListener("input", applyHeatmapOpacity);
    applyHeatmapOpacity();

    // -- loading ------------------------------------------------------------------------------

    function loadCase(key) {
      if (!cache.has(key)) {
        const promise = apiGet("/api/case", { study: key });
        promise.catch(() => cache.delete(key));
        cache.set(key, promise);
      }
      return cache.get(key);
    }

    function imageUrl(ref) {
      return tokenUrl("/image", { ref });
    }

    function heatmapUrl(study, ref, box) {
      return tokenUrl("/heatmap", { study, ref, box });
    }

    function prefetchImage(ref) {
      const url = imageUrl(ref);
      if (!images.has(url)) {
        const image = new Image();
        image.src = url;
        const promise = image.decode().then(() => image);
        promise.catch(() => images.delete(url));
        images.set(url, promise);
        if (images.size > 8) images.delete(images.keys().next().value);
      }
      return images.get(url);
    }

    async function ensureOrder() {
      if (Array.isArray(order) && order.length) return order;
      const queue = await apiGet("/api/queue", {});
      order = queue.studies.map((s) => s.key);
      return order;
    }

    function neighbours(key) {
      const index = (order || []).indexOf(key);
      if (index < 0) return [null, null];
      return [order[index - 1] || null, order[index + 1] || null];
    }

    function prefetch(key) {
      for (const other of neighbours(key)) {
        if (!other) continue;
        loadCase(other)
          .then((data) => {
            if (data.images.length) prefetchImage(data.images[0].ref);
          })
          .catch(() => {});
      }
    }

    // -- drawing ------------------------------------------------------------------------------

    async function show(key, push) {
      const serial = ++drawSerial;
      flushComment();
      const data = await loadCase(key).catch((err) => {
        setSave("error", err.message);
        return null;
      });
      if (!data || serial !== drawSerial) return;
      if (push) history.pushState({ study: key }, "", tokenUrl("/case", { study: key }));
      sessionStorage.setItem(LAST_KEY, key);
      current = data;
      imageIndex = 0;
      selected = null;
      setAdding(false);
      drawInfo();
      drawPanel();
      const ok = await drawImage(serial);
      if (serial !== drawSerial) return;
      body.dataset.caseReady = key;
      if (!ok) body.dataset.caseError = key;
      else delete body.dataset.caseError;
      prefetch(key);
    }

    function drawInfo() {
      root.dataset.study = current.key;
      body.dataset.study = current.key;
      document.title = `${current.study_date} ${current.accession_number} · tlaudit review`;
      const line = document.getElementById("study-line");
      line.replaceChildren(
        el(
          "span",
          { class: `status status-${current.status_slug}`, "data-testid": "case-status" },
          current.status_text,
        ),
        " ",
        el("span", { title: "Study date" }, current.study_date || "—"),
        " · ",
        el("span", { title: "Accession number" }, current.accession_number || "—"),
        " · ",
        el("span", { class: "muted", title: "Study description" }, current.description || ""),
        " ",
        el("span", { class: "uid", title: current.study_uid }, current.study_uid),
      );
      const position = document.getElementById("position");
      const index = (order || []).indexOf(current.key);
      position.textContent = index >= 0 ? `${index + 1} / ${order.length}` : "not in the queue";
      const [prev, next] = neighbours(current.key);
      document.getElementById("prev-case").disabled = !prev;
      document.getElementById("next-case").disabled = !next;
      drawProgress();
      drawImpression();
      drawImageTabs();
    }

    function drawProgress() {
      const p = current.progress;
      document.getElementById("progress").textContent = `${p.reviewed} of ${p.total} reviewed`;
    }

    /** The read's impression with the reported levels marked, built from text nodes. */
    function drawImpression() {
      const target = document.getElementById("impression");
      const read = current.read;
      if (!read) {
        target.replaceChildren(el("span", { class: "muted" }, "No read for this study."));
        return;
      }
      const parts = [];
      const names = read.reported_levels.map((level) => {
        const [, letter, number] = /^([A-Z]+)(\d+)$/.exec(level) || [null, level, ""];
        return `${letter}[\\s\\-_.]?${number}`;
      });
      if (names.length) {
        const pattern = new RegExp(`\\b(?:${names.join("|")})\\b`, "gi");
        let last = 0;
        for (const match of read.impression.matchAll(pattern)) {
          parts.push(read.impression.slice(last, match.index));
          parts.push(el("mark", { "data-testid": "reported-level" }, match[0]));
          last = match.index + match[0].length;
        }
        parts.push(read.impression.slice(last));
      } else {
        parts.push(read.impression);
      }
      const reported = read.reported_levels.length
        ? `reported: ${read.reported_levels.join(", ")}`
        : read.fracture_reported
          ? "fracture reported, no level"
          : "no fracture reported";
      target.replaceChildren(...parts, " ", el("span", { class: "muted" }, `(${reported})`));
      drawMentions(read);
    }

    /** What the report's text says per level (affirmed, old, uncertain, negated), each with the
     * sentence it came from, and where the text and the structured columns disagree. */
    function drawMentions(read) {
      const list = document.getElementById("mentions");
      const items = (read.mentions || []).map((m) =>
        el(
          "li",
          { "data-testid": "mention", "data-level": m.level, "data-mention": m.mention },
          el("span", { class: `mention mention-${m.mention}` },
            `${m.level === "*" ? "whole study" : m.level}: ${m.mention}`),
          " ",
          el("q", {}, m.sentence),
        ),
      );
      if (read.disagreement) {
        items.push(el("li", { class: "disagreement", "data-testid": "disagreement" },
          read.disagreement));
      }
      list.replaceChildren(...items);
    }

    function drawImageTabs() {
      const tabs = document.getElementById("image-tabs");
      tabs.replaceChildren();
      if (current.images.length < 2) return;
      current.images.forEach((image, index) => {
        const tab = el(
          "button",
          { type: "button", "data-testid": "image-tab", "aria-pressed": String(index === imageIndex) },
          `image ${index + 1}`,
        );
        tab.title = image.image;
        tab.addEventListener("click", () => {
          imageIndex = index;
          selected = null;
          drawImageTabs();
          drawPanel();
          drawImage(drawSerial);
        });
        tabs.append(tab);
      });
    }

    function image() {
      return current.images[imageIndex] || null;
    }

    async function drawImage(serial) {
      const errorBox = document.getElementById("image-error");
      overlay.replaceChildren();
      const shown = image();
      if (!shown) {
        img.removeAttribute("src");
        errorBox.textContent = "This study has no classified image.";
        errorBox.hidden = false;
        return false;
      }
      let decoded;
      try {
        decoded = await prefetchImage(shown.ref);
      } catch (err) {
        if (serial !== drawSerial) return false;
        img.removeAttribute("src");
        errorBox.textContent = "The radiograph cannot be shown (the server could not read it).";
        errorBox.hidden = false;
        return false;
      }
      if (serial !== drawSerial) return false;
      errorBox.hidden = true;
      img.src = decoded.src;
      size = { width: decoded.naturalWidth, height: decoded.naturalHeight };
      for (const node of [stage, img, overlay]) {
        node.style.width = `${size.width}px`;
        node.style.height = `${size.height}px`;
      }
      overlay.setAttribute("viewBox", `0 0 ${size.width} ${size.height}`);
      overlay.setAttribute("width", String(size.width));
      overlay.setAttribute("height", String(size.height));
      fit();
      drawBoxes();
      return true;
    }

    function fit() {
      const width = viewport.clientWidth;
      const height = viewport.clientHeight;
      if (!size.width || !width || !height) return;
      fitScale = Math.min(width / size.width, height / size.height);
      // transform-origin is the stage's centre: centre it in the viewport at fitScale
      const x = (width - size.width) / 2 / fitScale;
      const y = (height - size.height) / 2 / fitScale;
      panzoom.setOptions({ startScale: fitScale, startX: x, startY: y });
      panzoom.reset({ animate: false });
      scaleMarks(fitScale);
    }

    /** Keep strokes, labels and handles the same size on screen at any zoom. */
    function scaleMarks(scale) {
      overlay.style.setProperty("--label-size", `${13 / scale}px`);
      overlay.style.setProperty("--stroke", `${1.5 / scale}px`);
      overlay.style.setProperty("--handle", `${10 / scale}px`);
    }
    stage.addEventListener("panzoomchange", (event) => scaleMarks(event.detail.scale));

    /** Image pixel coordinates of a pointer event (through the pan-zoom transform). */
    function toImage(event) {
      const rect = overlay.getBoundingClientRect();
      const scale = rect.width / size.width; // panzoom.getScale() at the current zoom
      return {
        x: Math.min(size.width, Math.max(0, (event.clientX - rect.left) / scale)),
        y: Math.min(size.height, Math.max(0, (event.clientY - rect.top) / scale)),
      };
    }

    function vertebrae() {
      const shown = image();
      return shown ? shown.vertebrae : [];
    }

    function drawBoxes() {
      overlay.replaceChildren();
      const shown = image();
      if (!shown) return;
      const hit = svg("rect", {
        class: "hit",
        x: 0,
        y: 0,
        width: size.width,
        height: size.height,
      });
      hit.addEventListener("pointerdown", startNewBox);
      overlay.append(hit);
      for (const v of shown.vertebrae) {
        if (v.heatmap && v.window && !v.deleted) {
          const [x, y, side] = v.window;
          const heat = svg("image", {
            class: "heatmap",
            "data-testid": "heatmap",
            "data-box": v.box,
            x,
            y,
            width: side,
            height: side,
            preserveAspectRatio: "none",
            href: heatmapUrl(current.key, shown.ref, v.box),
          });
          overlay.append(heat);
        }
      }
      for (const v of shown.vertebrae) overlay.append(boxGroup(v));
    }

    function boxClass(v) {
      const classes = ["box"];
      classes.push(v.positive ? "positive" : "negative");
      if (v.decision) classes.push(`decided-${v.decision}`);
      if (v.added) classes.push("added");
      if (v.deleted) classes.push("deleted");
      if (v.box === selected) classes.push("selected");
      return classes.join(" ");
    }

    function boxGroup(v) {
      const [x0, y0, x1, y1] = v.xyxy;
      const group = svg("g", { class: boxClass(v), "data-testid": "box", "data-box": v.box });
      group.setAttribute("data-level", v.level);
      if (v.box === selected) group.setAttribute("data-selected", "");
      const rect = svg("rect", {
        class: "box-rect panzoom-exclude",
        x: x0,
        y: y0,
        width: x1 - x0,
        height: y1 - y0,
      });
      const label = svg("text", { class: "box-label", x: x1, y: y0 });
      const p = v.probability === null ? "" : ` ${v.probability.toFixed(2)}`;
      const mark = v.decision ? ` ${DECISIONS.find((d) => d[0] === v.decision)[1]}` : "";
      label.textContent = `${v.level}${p}${mark}`;
      const title = svg("title", {});
      const ood = v.out_of_distribution ? `; ${outOfDistribution}` : "";
      title.textContent = `${v.level}${p}${ood}${v.added ? " (added)" : ""}${v.deleted ? " (deleted)" : ""}`;
      group.append(title, rect, label);
      if (!v.deleted) {
        rect.addEventListener("pointerdown", (event) => startDrag(event, v, "move"));
        if (v.box === selected) {
          for (const corner of ["nw", "ne", "sw", "se"]) {
            const hx = corner.includes("w") ? x0 : x1;
            const hy = corner.includes("n") ? y0 : y1;
            const side = 10 / panzoom.getScale();
            const handle = svg("rect", {
              class: `handle panzoom-exclude handle-${corner}`,
              "data-testid": `handle-${corner}`,
              x: hx - side / 2,
              y: hy - side / 2,
              width: side,
              height: side,
            });
            handle.addEventListener("pointerdown", (event) => startDrag(event, v, corner));
            group.append(handle);
          }
        }
      } else {
        rect.addEventListener("pointerdown", (event) => {
          event.stopImmediatePropagation();
          select(v.box);
        });
      }
      return group;
    }

    /** Move (mode "move") or resize (a corner "nw".."se") a box; one BOX event on pointerup. */
    function startDrag(event, v, mode) {
      if (adding || event.button !== 0) return;
      event.stopImmediatePropagation();
      event.preventDefault();
      if (selected !== v.box) {
        select(v.box);
        if (mode !== "move") return;
      }
      const group = overlay.querySelector(`g[data-box="${CSS.escape(v.box)}"]`);
      const rect = group.querySelector(".box-rect");
      const start = toImage(event);
      const origin = v.xyxy.slice();
      let box = origin.slice();
      // capture on the overlay: select() may have redrawn the box under the pointer
      const target = overlay;
      target.setPointerCapture(event.pointerId);
      function move(e) {
        const point = toImage(e);
        const dx = point.x - start.x;
        const dy = point.y - start.y;
        let [x0, y0, x1, y1] = origin;
        if (mode === "move") {
          const w = x1 - x0;
          const h = y1 - y0;
          x0 = Math.min(Math.max(0, x0 + dx), size.width - w);
          y0 = Math.min(Math.max(0, y0 + dy), size.height - h);
          x1 = x0 + w;
          y1 = y0 + h;
        } else {
          if (mode.includes("w")) x0 = Math.min(x0 + dx, x1 - 2);
          if (mode.includes("e")) x1 = Math.max(x1 + dx, x0 + 2);
          if (mode.includes("n")) y0 = Math.min(y0 + dy, y1 - 2);
          if (mode.includes("s")) y1 = Math.max(y1 + dy, y0 + 2);
          x0 = Math.max(0, x0);
          y0 = Math.max(0, y0);
          x1 = Math.min(size.width, x1);
          y1 = Math.min(size.height, y1);
        }
        box = [x0, y0, x1, y1];
        rect.setAttribute("x", x0);
        rect.setAttribute("y", y0);
        rect.setAttribute("width", x1 - x0);
        rect.setAttribute("height", y1 - y0);
        for (const handle of group.querySelectorAll(".handle")) handle.remove();
      }
      function up() {
        target.removeEventListener("pointermove", move);
        target.removeEventListener("pointerup", up);
        target.removeEventListener("pointercancel", up);
        const moved = box.some((value, i) => Math.abs(value - origin[i]) >= 0.5);
        if (moved) {
          const rounded = box.map((value) => Math.round(value * 100) / 100);
          record({ field: "box", value: rounded, image: image().ref, box: v.box });
        } else {
          drawBoxes();
        }
      }
      target.addEventListener("pointermove", move);
      target.addEventListener("pointerup", up);
      target.addEventListener("pointercancel", up);
    }

    function setAdding(on) {
      adding = on;
      addBoxButton.setAttribute("aria-pressed", String(on));
      viewport.classList.toggle("adding", on);
      panzoom.setOptions({ disablePan: on, disableZoom: on });
      if (!on) newBoxDialog.hidden = true;
    }

    /** Add-box mode: drag a rectangle, then choose its level in the dialog. */
    function startNewBox(event) {
      if (!adding || event.button !== 0) return;
      event.stopImmediatePropagation();
      event.preventDefault();
      const start = toImage(event);
      const draft = svg("rect", { class: "draft", x: start.x, y: start.y, width: 0, height: 0 });
      overlay.append(draft);
      const target = overlay;
      target.setPointerCapture(event.pointerId);
      let box = null;
      function move(e) {
        const point = toImage(e);
        box = [
          Math.min(start.x, point.x),
          Math.min(start.y, point.y),
          Math.max(start.x, point.x),
          Math.max(start.y, point.y),
        ];
        draft.setAttribute("x", box[0]);
        draft.setAttribute("y", box[1]);
        draft.setAttribute("width", box[2] - box[0]);
        draft.setAttribute("height", box[3] - box[1]);
      }
      function up() {
        target.removeEventListener("pointermove", move);
        target.removeEventListener("pointerup", up);
        target.removeEventListener("pointercancel", up);
        if (!box || box[2] - box[0] < 3 || box[3] - box[1] < 3) {
          draft.remove();
          return;
        }
        askLevel(box.map((value) => Math.round(value * 100) / 100), draft);
      }
      target.addEventListener("pointermove", move);
      target.addEventListener("pointerup", up);
      target.addEventListener("pointercancel", up);
    }

    /** The level a new box most likely has: the one after the box above it, or before the one
     * below it (levels run cranial to caudal, top to bottom on a lateral film). */
    function guessLevel(box) {
      const centre = (box[1] + box[3]) / 2;
      const others = vertebrae()
        .filter((v) => !v.deleted)
        .map((v) => ({ y: (v.xyxy[1] + v.xyxy[3]) / 2, index: levels.indexOf(v.level) }))
        .sort((a, b) => a.y - b.y);
      const above = others.filter((o) => o.y < centre).pop();
      const below = others.find((o) => o.y >= centre);
      let index = above ? above.index + 1 : below ? below.index - 1 : levels.indexOf("L1");
      index = Math.min(levels.length - 1, Math.max(0, index));
      return levels[index];
    }

    function askLevel(box, draft) {
      newLevel.value = guessLevel(box);
      newBoxDialog.hidden = false;
      newLevel.focus();
      const ok = document.getElementById("new-box-ok");
      const cancel = document.getElementById("new-box-cancel");
      function done(add) {
        ok.removeEventListener("click", onOk);
        cancel.removeEventListener("click", onCancel);
        newBoxDialog.hidden = true;
        draft.remove();
        setAdding(false);
        if (add) {
          save(
            () =>
              apiPost("/api/add-box", {
                study: current.key,
                image: image().ref,
                level: newLevel.value,
                xyxy: box,
              }),
            (answer) => {
              selected = answer.box;
            },
          );
        }
      }
      function onOk() {
        done(true);
      }
      function onCancel() {
        done(false);
      }
      ok.addEventListener("click", onOk);
      cancel.addEventListener("click", onCancel);
    }

    function select(box) {
      selected = box;
      drawBoxes();
      for (const row of document.querySelectorAll('[data-testid="vertebra"]')) {
        const on = row.dataset.box === box;
        row.classList.toggle("selected", on);
        if (on) row.scrollIntoView({ block: "nearest" });
      }
    }

    // -- the panel ----------------------------------------------------------------------------

    function options(values, chosen, blank) {
      const list = [];
      if (blank !== undefined) list.push(el("option", { value: "" }, blank));
      for (const value of values) {
        list.push(el("option", { value, selected: String(value) === String(chosen) }, value));
      }
      return list;
    }

    function drawPanel() {
      const tbody = document.getElementById("vertebrae");
      const rows = vertebrae().map((v) => vertebraRow(v));
      if (!rows.length) {
        rows.push(el("tr", {}, el("td", { colspan: 6, class: "muted" }, "No boxes on this image.")));
      }
      tbody.replaceChildren(...rows);
      drawVerdicts();
    }

    function vertebraRow(v) {
      const row = el("tr", {
        "data-testid": "vertebra",
        "data-box": v.box,
        "data-level": v.level,
        "data-decision": v.decision || "",
        class: [v.box === selected ? "selected" : "", v.deleted ? "deleted" : ""].join(" "),
      });
      row.addEventListener("click", (event) => {
        if (!(event.target instanceof HTMLButtonElement || event.target instanceof HTMLSelectElement)) {
          select(v.box);
        }
      });
      const level = el(
        "select",
        { "data-testid": "level-select", title: "Level", disabled: v.deleted },
        ...options(levels, v.level),
      );
      level.addEventListener("change", () =>
        record({ field: "level", value: level.value, image: image().ref, box: v.box }),
      );
      const notes = [];
      if (v.added) notes.push("added");
      else if (v.scan_level && v.scan_level !== v.level) notes.push(`was ${v.scan_level}`);
      if (v.moved) notes.push("moved");
      const p =
        v.probability === null ? "—" : el("span", { class: v.positive ? "pos" : "" }, v.probability.toFixed(2));
      const ood = v.out_of_distribution
        ? el(
            "span",
            {
              class: "note ood",
              "data-testid": "out-of-distribution",
              title: "The crop is unlike the model's training data: its call means little",
            },
            outOfDistribution,
          )
        : null;
      const buttons = DECISIONS.map(([value, short, long]) => {
        const button = el(
          "button",
          {
            type: "button",
            class: `decide decide-${value}`,
            "data-testid": `decide-${value}`,
            "aria-pressed": String(v.decision === value),
            title: long,
            disabled: v.deleted,
          },
          short,
        );
        button.addEventListener("click", () => {
          select(v.box);
          record({ field: "decision", value, image: image().ref, box: v.box });
        });
        return button;
      });
      const ao = el(
        "select",
        { "data-testid": "ao-select", title: "AO Spine type", disabled: v.deleted },
        ...options(aoTypes, v.ao_type, "–"),
      );
      ao.addEventListener("change", () =>
        record({ field: "ao_type", value: ao.value, image: image().ref, box: v.box }),
      );
      const genant = el(
        "select",
        { "data-testid": "genant-select", title: "Genant grade", disabled: v.deleted },
        ...options(genantGrades, v.genant_grade === null ? "" : v.genant_grade, "–"),
      );
      genant.addEventListener("change", () =>
        record({
          field: "genant_grade",
          value: genant.value === "" ? null : Number(genant.value),
          image: image().ref,
          box: v.box,
        }),
      );
      const remove = v.deleted
        ? el("button", { type: "button", "data-testid": "restore-box", title: "Restore this box" }, "↺")
        : el("button", { type: "button", "data-testid": "delete-box", title: "Delete this box (a false box)" }, "✕");
      remove.addEventListener("click", () =>
        record({ field: "deleted", value: !v.deleted, image: image().ref, box: v.box }),
      );
      row.append(
        el("td", { class: "level-cell" }, level, notes.length ? el("span", { class: "note" }, notes.join(", ")) : null),
        el("td", { class: "num" }, p, ood),
        el("td", { class: "decisions" }, ...buttons),
        el("td", {}, ao),
        el("td", {}, genant),
        el("td", {}, remove),
      );
      return row;
    }

    function drawVerdicts() {
      const set = current.verdict;
      const proposed = set ? null : current.proposed;
      for (const button of document.querySelectorAll("#verdicts .verdict")) {
        const value = button.dataset.verdict;
        button.setAttribute("aria-pressed", String(value === set));
        button.classList.toggle("proposed", value === proposed);
      }
      document.getElementById("verdict-note").textContent = set
        ? ""
        : proposed
          ? `proposed: ${proposed} (not saved until chosen)`
          : "none yet";
      if (document.activeElement !== comment) comment.value = current.comment;
    }

    // -- saving -------------------------------------------------------------------------------

    function setSave(state, message) {
      saveState.dataset.state = state;
      saveState.textContent =
        state === "saving" ? "saving…" : state === "saved" ? "saved" : state === "error" ? `error: ${message}` : "";
      saveState.title = state === "error" ? message : "";
    }

    /** Queue one POST (they run in order); redraw from the case JSON the server answers with. */
    function save(post, after) {
      const key = current.key;
      setSave("saving");
      pending = pending
        .then(post)
        .then((answer) => {
          cache.set(key, Promise.resolve(answer.case));
          if (current && current.key === key) {
            current = answer.case;
            if (after) after(answer);
            drawProgress();
            drawPanel();
            drawBoxes();
          }
          setSave("saved");
        })
        .catch((err) => {
          setSave("error", err.message);
          cache.delete(key);
        });
      return pending;
    }

    function record(change) {
      return save(() => apiPost("/api/record", { study: current.key, ...change }));
    }

    function flushComment() {
      if (commentTimer === null || !current) return;
      clearTimeout(commentTimer);
      commentTimer = null;
      if (comment.value !== current.comment) record({ field: "comment", value: comment.value });
    }

    comment.addEventListener("input", () => {
      if (commentTimer !== null) clearTimeout(commentTimer);
      commentTimer = setTimeout(flushComment, 800);
    });
    comment.addEventListener("change", () => {
      if (commentTimer === null) commentTimer = 0;
      flushComment();
    });

    for (const button of document.querySelectorAll("#verdicts .verdict")) {
      button.addEventListener("click", () => record({ field: "verdict", value: button.dataset.verdict }));
    }

    // -- navigation and keys ------------------------------------------------------------------

    async function go(step) {
      if (!current) return;
      await ensureOrder();
      const [prev, next] = neighbours(current.key);
      const target = step > 0 ? next : prev;
      if (target) show(target, true);
    }

    document.getElementById("prev-case").addEventListener("click", () => go(-1));
    document.getElementById("next-case").addEventListener("click", () => go(1));
    document.getElementById("reset-view").addEventListener("click", () => {
      brightness.value = 100;
      contrast.value = 100;
      applyFilter();
      fit();
    });
    addBoxButton.addEventListener("click", () => setAdding(!adding));
    window.addEventListener("popstate", (event) => {
      if (event.state && event.state.study) show(event.state.study, false);
    });
    window.addEventListener("resize", () => {
      fit();
      drawBoxes();
    });

    document.addEventListener("keydown", (event) => {
      if (typing(event) || modified(event) || !current) return;
      const key = event.key;
      if (key === "j" || key === "ArrowRight" || key === "ArrowDown") {
        go(1);
      } else if (key === "k" || key === "ArrowLeft" || key === "ArrowUp") {
        go(-1);
      } else if (/^[1-4]$/.test(key)) {
        record({ field: "verdict", value: VERDICTS[Number(key) - 1] });
      } else if ((key === "f" || key === "n" || key === "u") && selected) {
        const value = { f: "fracture", n: "no_fracture", u: "unsure" }[key];
        record({ field: "decision", value, image: image().ref, box: selected });
      } else if (key === "a") {
        setAdding(!adding);
      } else if (key === "0") {
        fit();
        drawBoxes();
      } else if (key === "q" || key === "Escape") {
        if (adding) setAdding(false);
        else window.location.assign(document.querySelector('[data-testid="queue-link"]').href);
      } else {
        return;
      }
      event.preventDefault();
    });

    window.addEventListener("beforeunload", flushComment);

    history.replaceState({ study: body.dataset.study }, "", window.location.href);
    ensureOrder()
      .catch(() => [])
      .then(() => show(body.dataset.study, false));
  }

  document.addEventListener("DOMContentLoaded", () => {
    if (document.body.dataset.page === "queue") queuePage();
    else if (document.body.dataset.page === "case") casePage();
  });
})();
