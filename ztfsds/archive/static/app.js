// The archive's web page: search by ZTF object id, lightcurve id or position; show the lightcurve plot,
// image cutouts and alert cutouts. Every request goes through fetch() so that a partner token (sent as
// "Authorization: Bearer <token>") applies to images too; images are shown from blob URLs.
"use strict";

const $ = (id) => document.getElementById(id);
const MAX_IMAGES = 6;
const MAX_ALERTS = 3;

function authHeaders() {
  const token = $("token").value.trim();
  return token ? { Authorization: "Bearer " + token } : {};
}

async function request(url) {
  const response = await fetch(url, { headers: authHeaders() });
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try {
      const body = await response.json();
      message = body.message || (typeof body.detail === "string" ? body.detail : message);
    } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

// JSON with 64-bit ids (candid, sourceid: 18-19 digits) kept exact: integers of 16 digits or more are
// read as strings (a JavaScript number would round them)
async function getJSON(url) {
  const text = await (await request(url)).text();
  return JSON.parse(text.replace(/([:\[,]\s*)(-?\d{16,})(?=\s*[,\]}])/g, '$1"$2"'));
}

async function showImage(img, url) {
  const blob = await (await request(url)).blob();
  img.src = URL.createObjectURL(blob);
  await img.decode();
}

function sexagesimal(text, hours) {
  const sign = text.trim().startsWith("-") ? -1 : 1;
  const parts = text.replace(/^[+-]/, "").split(/[:hdms\s]+/).filter((p) => p).map(Number);
  const value = (parts[0] || 0) + (parts[1] || 0) / 60 + (parts[2] || 0) / 3600;
  return sign * value * (hours ? 15 : 1);
}

// -> {objectid} | {oid} | {ra, dec}, or throws
function parseQuery(text) {
  text = text.trim();
  if (/^ZTF\d{2}[a-z]{7}$/.test(text)) return { objectid: text };
  if (/^\d+$/.test(text)) return { oid: text };
  const parts = text.split(/[\s,]+/).filter((p) => p);
  if (parts.length === 2) {
    const colon = parts[0].includes(":");
    const ra = colon ? sexagesimal(parts[0], true) : Number(parts[0]);
    const dec = colon ? sexagesimal(parts[1], false) : Number(parts[1]);
    if (Number.isFinite(ra) && Number.isFinite(dec) && dec >= -90 && dec <= 90) return { ra: ((ra % 360) + 360) % 360, dec };
  }
  throw new Error("enter a ZTF object id (ZTF18abcdefg), a lightcurve id (digits) or 'ra dec'");
}

function parseCSV(text) {
  const lines = text.trim().split(/\r?\n/);
  const names = lines[0].split(",");
  return lines.slice(1).filter((l) => l).map((line) => {
    const values = line.split(",");
    const row = {};
    names.forEach((n, i) => { row[n] = values[i]; });
    return row;
  });
}

function figure(caption) {
  const fig = document.createElement("figure");
  const img = document.createElement("img");
  const cap = document.createElement("figcaption");
  cap.textContent = caption;
  fig.append(img, cap);
  return [fig, img];
}

async function lightcurve(lcQuery) {
  const rows = parseCSV(await (await request("/lightcurves?" + lcQuery + "&FORMAT=CSV")).text());
  const oids = new Set(rows.map((r) => r.oid));
  $("lc-summary").textContent = rows.length
    ? `${oids.size} object(s), ${rows.length} epoch(s)` : "no lightcurve here";
  await showImage($("lcplot"), "/lightcurves/plot?" + lcQuery);
  return rows;
}

async function images(ra, dec) {
  const found = await getJSON(`/api/images?ra=${ra}&dec=${dec}&limit=${MAX_IMAGES}`);
  const box = $("images");
  if (!found.count) { box.textContent = "no image covers this position"; return; }
  await Promise.all(found.rows.map((row) => {
    const [fig, img] = figure(`pid ${row.pid} ${row.filtercode} JD ${row.jd.toFixed(4)}`);
    img.className = "image-cutout";
    box.append(fig);
    return showImage(img, `/api/images/${row.pid}/cutout?ra=${ra}&dec=${dec}&size_arcsec=40&format=png`);
  }));
}

async function alerts(search) {
  const found = await getJSON("/api/alerts?" + search);
  const box = $("alerts");
  if (!found.count) { box.textContent = "no alert here"; return found; }
  const shown = found.rows.slice(-MAX_ALERTS).reverse();   // the latest
  await Promise.all(shown.map((row) => {
    const div = document.createElement("div");
    div.className = "alert";
    const title = document.createElement("h3");
    const link = document.createElement("a");
    link.href = `/api/alerts/${row.candid}`;
    link.textContent = `${row.objectid} candid ${row.candid}`;
    title.append(link, ` JD ${row.jd.toFixed(4)} magpsf ${row.magpsf === null ? "-" : row.magpsf.toFixed(2)}`);
    const gallery = document.createElement("div");
    gallery.className = "gallery";
    div.append(title, gallery);
    box.append(div);
    return Promise.all(["science", "template", "difference"].map((kind) => {
      const [fig, img] = figure(kind);
      img.className = "alert-cutout";
      gallery.append(fig);
      return showImage(img, `/api/alerts/${row.candid}/cutouts/${kind}?format=png`).catch(() => fig.remove());
    }));
  }));
  return found;
}

async function search(event) {
  event.preventDefault();
  document.body.dataset.state = "busy";
  const status = $("status");
  status.className = "";
  status.textContent = "searching ...";
  $("lc-summary").textContent = "";
  $("lcplot").removeAttribute("src");
  $("images").replaceChildren();
  $("alerts").replaceChildren();
  const failures = [];
  const note = (what) => (err) => failures.push(`${what}: ${err.message}`);
  try {
    const query = parseQuery($("query").value);
    const radius = Math.max(Number($("radius").value) || 5, 0.1);
    let ra = query.ra, dec = query.dec;
    if (query.objectid) {
      const found = await alerts("objectid=" + query.objectid);
      if (!found.count) throw new Error(`no alert of ${query.objectid}`);
      ra = found.rows[found.rows.length - 1].ra;
      dec = found.rows[found.rows.length - 1].dec;
    }
    let lcQuery = `POS=CIRCLE+${ra}+${dec}+${radius / 3600}`;
    if (query.oid) {
      lcQuery = "ID=" + query.oid;
      const rows = await lightcurve(lcQuery);
      if (!rows.length) throw new Error(`no lightcurve with id ${query.oid}`);
      ra = Number(rows[0].ra);
      dec = Number(rows[0].dec);
    } else {
      await lightcurve(lcQuery).catch(note("lightcurve"));
    }
    const tasks = [images(ra, dec).catch(note("images"))];
    if (!query.objectid) tasks.push(alerts(`ra=${ra}&dec=${dec}&radius_arcsec=${radius}`).catch(note("alerts")));
    await Promise.all(tasks);
    status.textContent = `ra ${ra.toFixed(6)} dec ${dec.toFixed(6)}` + (failures.length ? " - " + failures.join("; ") : "");
    if (failures.length) status.className = "error";
  } catch (err) {
    status.className = "error";
    status.textContent = err.message;
  }
  document.body.dataset.state = "done";
}

document.addEventListener("DOMContentLoaded", () => {
  $("search-form").addEventListener("submit", search);
});
