"""Text generation in the browser: tokens from the real text-generate arrive through the UI one by one."""

from __future__ import annotations

import pytest
import yaml

from conftest import REPO
from gateway_helpers import GatewayProcess
from test_ui_browser import SHOTS, Tab, browser, ui_url  # noqa: F401  (fixtures shared with the browser tests)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gateway(model_store, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ui-chat")
    doc = yaml.safe_load((REPO / "stack.yml").read_text())
    doc["functions"] = {"text-generate": dict(doc["functions"]["text-generate"],
                                              handler=str(REPO / "functions" / "text-generate"))}
    (tmp / "stack.yml").write_text(yaml.safe_dump(doc))
    gw = GatewayProcess(tmp / "stack.yml", tmp / "state")
    yield gw
    gw.stop()


def test_chat_tokens_stream_into_the_page(browser, ui_url, gateway):  # noqa: F811
    t = Tab(browser, ui_url)
    page = t.go("/functions/text-generate")
    page.fill("#password", gateway.auth[1])
    page.click("#login-form button[type=submit]")
    page.wait_for_url("**/functions/text-generate")
    assert page.locator("#chat-model option").first.inner_text() == "smollm2-135m"
    # count every change of the output while it is written: buffered, there would be one
    page.evaluate("""() => {
        window.updates = [];
        new MutationObserver(() => window.updates.push(document.getElementById('chat-output').textContent.length))
            .observe(document.getElementById('chat-output'), {childList: true, characterData: true, subtree: true});
    }""")
    page.fill("#chat-prompt", "Name the capital of France.")  # the bare question: see test_text_generate_e2e
    page.fill("#chat-max", "24")
    page.fill("#chat-temperature", "0")  # greedy, so the answer is known
    page.click("#chat-form button[type=submit]")
    page.wait_for_selector("#chat-stats:has-text('chunks in')", timeout=240_000)  # a cold start loads the model
    text = page.inner_text("#chat-output")
    assert "Paris" in text, text
    updates = page.evaluate("() => window.updates.filter(n => n > 0)")
    assert len(set(updates)) >= 5 and updates == sorted(updates), updates
    t.shot("10-chat")
    assert not t.errors, t.errors
    t.context.close()
