"""Headless Debian Chromium through selenium, with the flags this closed network needs."""

from __future__ import annotations

import tempfile
from typing import Any

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def headless_chromium() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tempfile.mkdtemp(prefix='neurolake-chromium-')}",
        "--window-size=1400,1800",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


# What the page shows, read from the Bokeh document in the browser (the canvas has no DOM to read).
PAGE_STATE_JS = """
if (!window.Bokeh || !Bokeh.documents || !Bokeh.documents.length) {
  return {traces: {rows: 0, last: null}, predictions: {rows: 0, last: null}, headmap_pixels: 0,
          status: null, message: null, prediction_text: null};
}
const doc = Bokeh.documents[0];
const source = (name) => {
  const model = doc.get_model_by_name(name);
  if (!model) return {rows: 0, last: null};
  const keys = Object.keys(model.data);
  const rows = keys.length ? model.data[keys[0]].length : 0;
  const t = model.data['t'];
  return {rows: rows, last: t && t.length ? t[t.length - 1] : null};
};
const text = (name) => { const m = doc.get_model_by_name(name); return m ? m.text : null; };
const head = doc.get_model_by_name('headmap_source');
const image = head && head.data.image.length ? head.data.image[0] : null;
let painted = 0;
if (image) { for (const v of image) { if (!Number.isNaN(v)) painted++; } }
return {traces: source('traces_source'), predictions: source('predictions_source'),
        headmap_pixels: painted, status: text('session_status'), message: text('message'),
        prediction_text: text('prediction_text')};
"""
