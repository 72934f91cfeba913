"""The browser pages the integration tests drive: the stimulus page served for a device, and Bokeh
models read and clicked. The browser itself is infra/chromium.py's."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from infra.chromium import headless_chromium
from schemas.signing import Keyring, ensure_key
from tests.conftest import free_port

if TYPE_CHECKING:
    from tests.integration.conftest import BrokerStack


@contextmanager
def stimulus_page(
    broker: BrokerStack, device_id: str, stimulus_env: Mapping[str, str], duration_s: float, query: str = ""
) -> Iterator[tuple[Any, subprocess.Popen[bytes]]]:
    """`neurolake stimulus serve` as ``device_id`` for ``duration_s`` (``stimulus_env``: its
    NEUROLAKE_EDGE__STIMULUS__* settings), with its page open in headless Chromium; yields the driver
    and the server. On the way out the browser is closed, the server stopped and its exit status
    checked (its log's tail in the failure)."""
    port = free_port()
    ensure_key(Keyring(broker.settings.security.keyring), device_id)
    log = open(broker.home / "stimulus.log", "w+")
    # The browser before the server: its start took 10-22 s on a loaded 2-core machine, and the
    # session's clock runs from the server's start (a 30 s session once drew only its last 2 trials).
    driver = headless_chromium()
    serve = None
    try:
        serve = subprocess.Popen(
            [*broker.cli_argv, "stimulus", "serve", "--port", str(port), "--duration", str(duration_s)],
            env={**broker.env, "NEUROLAKE_EDGE__DEVICE_ID": device_id, **stimulus_env},
            cwd=broker.home,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 30
        while True:
            try:
                assert b"presenter.js" in urllib.request.urlopen(url, timeout=1).read()
                break
            except OSError:
                assert time.monotonic() < deadline and serve.poll() is None, log.seek(0) or log.read()[-3000:]
                time.sleep(0.2)
        driver.get(url + query)
        yield driver, serve
    finally:
        driver.quit()
        if serve is not None:
            if serve.poll() is None:
                serve.terminate()
            serve.wait(30)
    log.seek(0)
    assert serve is not None and serve.returncode == 0, log.read()[-3000:]


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


# A Bokeh widget's clickable element (a Button, the index-th button of a button group, the
# index-th header of Tabs), found through BokehJS's own view of the model with that name: the
# widgets live in shadow DOM, so CSS selectors cannot reach them, but selenium can click what
# this returns like a user would.
BOKEH_CLICKABLE_JS = """
const [name, index] = arguments;
if (!window.Bokeh || !Bokeh.documents || !Bokeh.documents.length || !Bokeh.index) return null;
const model = Bokeh.documents[0].get_model_by_name(name);
if (!model) return null;
const view = Bokeh.index.find_one(model);
if (!view) return null;
if (view.button_el) return view.button_el;
if (view._buttons) return view._buttons[index] || null;
if (view.header_els) return view.header_els[index] || null;
return null;
"""

# A named model's property (a Div's text, a Select's value) or a named data source's columns.
BOKEH_MODEL_JS = """
const [name, attribute] = arguments;
if (!window.Bokeh || !Bokeh.documents || !Bokeh.documents.length) return null;
const model = Bokeh.documents[0].get_model_by_name(name);
if (!model) return null;
const value = model[attribute];
if (attribute !== 'data') return value;
const columns = {};
for (const key of Object.keys(value)) columns[key] = Array.from(value[key]);
return columns;
"""


def click_bokeh(browser: Any, name: str, index: int = 0, timeout_s: float = 30.0) -> None:
    """Click the widget ``name`` (see BOKEH_CLICKABLE_JS) once the page has rendered it."""
    import time

    deadline = time.monotonic() + timeout_s
    while (element := browser.execute_script(BOKEH_CLICKABLE_JS, name, index)) is None:
        if time.monotonic() > deadline:
            raise AssertionError(f"no clickable Bokeh widget named {name!r} on the page")
        time.sleep(0.2)
    element.click()


def bokeh_model(browser: Any, name: str, attribute: str) -> Any:
    return browser.execute_script(BOKEH_MODEL_JS, name, attribute)


# (naturalWidth, naturalHeight) of the image a named Div shows, as the browser decoded it.
BOKEH_IMAGE_SIZE_JS = """
const [name] = arguments;
if (!window.Bokeh || !Bokeh.documents || !Bokeh.documents.length || !Bokeh.index) return null;
const model = Bokeh.documents[0].get_model_by_name(name);
const view = model ? Bokeh.index.find_one(model) : null;
const root = view ? (view.shadow_el || view.el.shadowRoot || view.el) : null;
const image = root ? root.querySelector('img') : null;
return image && image.naturalWidth ? [image.naturalWidth, image.naturalHeight] : null;
"""
