"""wick's chat page (ui/) in headless Chromium, driven by Selenium, against the real server.

Run by tests/web_ui.rs: web_ui.py CHECK BASE_URL [ARGS...]. Each check prints
"web ui check passed: CHECK" at its end; any failed expectation raises and exits non-zero.
"""

import json
import os
import re
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

# Generations share two busy cores with other tests: be patient, but not forever.
SLOW = 180


def browser(width=1280, height=800):
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ["WICK_CHROMIUM"]
    for arg in [
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
    ]:
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    service = Service(executable_path=os.environ["WICK_CHROMEDRIVER"])
    return webdriver.Chrome(options=options, service=service)


def wait(driver, condition, what, timeout=SLOW):
    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(
        lambda d: condition(d), message=f"timed out waiting for {what}"
    )


def console_errors(driver, allowed=()):
    """The console's errors since the last call, less those matching `allowed` patterns."""
    errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    return [e for e in errors if not any(re.search(p, e) for p in allowed)]


def assert_no_console_errors(driver, allowed=()):
    errors = console_errors(driver, allowed)
    assert not errors, f"console errors: {errors}"


def open_page(driver, base):
    driver.get(base + "/")
    wait(
        driver,
        lambda d: d.execute_script("return document.querySelectorAll('#model option').length") > 0,
        "the model picker to fill from /v1/models",
    )


def answers(driver):
    """Every answer on the page, read in one go (the streaming one is redrawn each frame)."""
    return driver.execute_script(
        """
        return [...document.querySelectorAll('article.msg-assistant')].map(a => ({
          state: a.dataset.state,
          chunks: Number(a.dataset.chunks),
          text: (a.querySelector(':scope > .body') || {textContent: ''}).textContent,
          reasoning: (a.querySelector('details.reasoning') || {textContent: ''}).textContent,
          badge: Object.fromEntries([...a.querySelectorAll('.badge span')]
            .map(s => [s.dataset.field, s.textContent])),
          error: [...a.querySelectorAll('.error')].map(e => e.textContent).join('\\n'),
        }));
        """
    )


def send(driver, text):
    box = driver.find_element(By.ID, "input")
    box.send_keys(text)
    box.send_keys(Keys.ENTER)


def wait_answer(driver, number):
    """The `number`th answer (1-based) once it has finished, however it finished."""

    def finished(d):
        found = answers(d)
        if len(found) >= number and found[number - 1]["state"] != "streaming":
            return found[number - 1]
        return None

    return wait(driver, finished, f"answer {number} to finish")


def set_setting(driver, field_id, value):
    if not driver.find_element(By.ID, "settings").is_displayed():
        driver.find_element(By.ID, "toggle-settings").click()
    field = driver.find_element(By.ID, field_id)
    field.clear()
    field.send_keys(str(value))
    field.send_keys(Keys.TAB)  # the change event saves it


def choose_model(driver, model):
    """Direct model selection (auto routing would send some queries to bigger models)."""
    Select(driver.find_element(By.ID, "routing")).select_by_value("model")
    Select(driver.find_element(By.ID, "model")).select_by_value(model)


def close_settings(driver):
    if driver.find_element(By.ID, "settings").is_displayed():
        driver.find_element(By.ID, "toggle-settings").click()


def stored(driver, key):
    return json.loads(driver.execute_script("return localStorage.getItem(arguments[0])", key) or "null")


def chat_request_bodies(driver):
    """The bodies of the page's POSTs to /v2/chat/completions, from Chromium's network log."""
    bodies = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") != "Network.requestWillBeSent":
            continue
        request = message["params"]["request"]
        if not request["url"].endswith("/v2/chat/completions"):
            continue
        data = request.get("postData")
        if data is None and request.get("hasPostData"):
            data = driver.execute_cdp_cmd(
                "Network.getRequestPostData", {"requestId": message["params"]["requestId"]}
            )["postData"]
        bodies.append(json.loads(data))
    return bodies


# ---- checks -------------------------------------------------------------------------------


def check_page(base):
    """Loads offline with no console error, lists the catalog, and has a phone layout."""
    driver = browser()
    try:
        open_page(driver, base)
        options = driver.execute_script(
            "return [...document.querySelectorAll('#model option')].map(o => o.textContent)"
        )
        assert any("smollm2-135m-instruct" in o and "tier_" in o for o in options), options
        assert any("loaded" in o for o in options), options
        assert driver.execute_script("return document.activeElement.id") == "input"
        assert driver.find_element(By.ID, "stop").is_displayed() is False
        # The routing switch shows the family picker only for family routing.
        routing = Select(driver.find_element(By.ID, "routing"))
        assert routing.first_selected_option.get_attribute("value") == "auto"
        assert not driver.find_element(By.ID, "family-field").is_displayed()
        routing.select_by_value("family")
        assert driver.find_element(By.ID, "family-field").is_displayed()
        routing.select_by_value("auto")
        assert_no_console_errors(driver)

        # A phone: the conversation list slides in over the chat, nothing is wider than it.
        # (Chromium's windows are at least 500 pixels wide: a phone's viewport is emulated.)
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True},
        )
        width = driver.execute_script("return window.innerWidth")
        assert width == 390, width
        toggle = driver.find_element(By.ID, "toggle-sidebar")
        assert toggle.is_displayed(), "no conversation toggle on a narrow screen"
        side = lambda: driver.execute_script(
            "return document.getElementById('sidebar').getBoundingClientRect().right"
        )
        wait(driver, lambda d: side() <= 0, "the sidebar to be off screen", 5)
        assert driver.execute_script("return document.documentElement.scrollWidth") <= width
        assert driver.find_element(By.ID, "input").is_displayed()
        toggle.click()
        wait(driver, lambda d: side() > 100, "the sidebar to slide in", 5)
        ActionChains(driver).send_keys(Keys.ESCAPE).perform()
        wait(driver, lambda d: side() <= 0, "Escape to close the sidebar", 5)
        assert_no_console_errors(driver)
    finally:
        driver.quit()


def check_stream(base):
    """A typed message streams an answer; auto routing shows its tier; the chat is kept."""
    driver = browser()
    try:
        open_page(driver, base)
        set_setting(driver, "max_tokens", 48)
        set_setting(driver, "temperature", 0)
        close_settings(driver)
        send(driver, "Say hello and tell me what a candle is.")
        # Streaming: the stop button shows while the answer arrives.
        wait(driver, lambda d: d.find_element(By.ID, "stop").is_displayed(), "the stop button", 30)
        answer = wait_answer(driver, 1)
        assert answer["state"] == "done", answer
        assert answer["text"].strip(), answer
        assert answer["chunks"] > 1, f"the answer came in one piece, not streamed: {answer}"
        badge = answer["badge"]
        assert re.fullmatch(r"tier_[1-4]", badge.get("tier", "")), badge
        assert badge.get("mechanism") == "auto_routing", badge
        # Whichever catalog model the router chose (the learned router's choice, not pinned).
        assert badge.get("model") in {
            "smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"
        }, badge
        assert re.fullmatch(r"confidence [01]\.\d\d", badge.get("confidence", "")), badge
        assert re.fullmatch(r"first token \d+ ms", badge.get("ttft", "")), badge
        assert re.fullmatch(r"\d+\.\d tok/s", badge.get("tps", "")), badge
        assert "tradition" not in badge, badge
        assert not driver.find_element(By.ID, "stop").is_displayed()

        [body] = chat_request_bodies(driver)
        assert body["auto_routing"] is True and body["stream"] is True, body
        assert "model" not in body and "model_family" not in body, body
        assert body["max_tokens"] == 48 and body["temperature"] == 0, body
        assert body["messages"] == [
            {"role": "user", "content": "Say hello and tell me what a candle is."}
        ], body

        # Kept in local storage: a reload shows the conversation again.
        driver.refresh()
        wait(driver, lambda d: len(answers(d)) == 1, "the kept conversation after a reload", 10)
        assert answers(driver)[0]["text"] == answer["text"]
        titles = driver.execute_script(
            "return [...document.querySelectorAll('#conversations .open')].map(b => b.textContent)"
        )
        assert titles == ["Say hello and tell me what a candle is."], titles

        # Regenerate replaces the last answer with a new one.
        driver.find_element(By.CSS_SELECTOR, "article.msg-assistant .regenerate").click()
        again = wait_answer(driver, 1)
        assert again["state"] == "done" and again["badge"].get("tier"), again
        assert len(answers(driver)) == 1
        assert_no_console_errors(driver)
    finally:
        driver.quit()


def check_tradition(base, screenshot):
    """The chosen tradition reaches the request and comes back in the badge; screenshot."""
    driver = browser()
    try:
        open_page(driver, base)
        Select(driver.find_element(By.ID, "tradition")).select_by_value("catholic")
        set_setting(driver, "max_tokens", 60)
        set_setting(driver, "temperature", 0)
        close_settings(driver)
        send(driver, "What is grace?")
        answer = wait_answer(driver, 1)
        assert answer["state"] == "done", answer
        assert answer["badge"].get("tradition") == "catholic", answer["badge"]
        assert re.fullmatch(r"tier_[1-4]", answer["badge"].get("tier", "")), answer["badge"]
        [body] = chat_request_bodies(driver)
        assert body["tradition"] == "catholic", body
        assert body["auto_routing"] is True, body

        # Direct model selection: the model named, no tier.
        choose_model(driver, "smollm2-135m-instruct")
        send(driver, "And in one sentence?")
        second = wait_answer(driver, 2)
        assert second["state"] == "done", second
        assert second["badge"].get("mechanism") == "direct_model_selection", second["badge"]
        assert "tier" not in second["badge"], second["badge"]
        [body] = chat_request_bodies(driver)
        assert body["model"] == "smollm2-135m-instruct" and "auto_routing" not in body, body
        assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"], body
        Select(driver.find_element(By.ID, "routing")).select_by_value("auto")
        assert_no_console_errors(driver)
        driver.execute_script(
            "document.activeElement.blur(); document.getElementById('transcript').scrollTop = 0"
        )
        driver.save_screenshot(screenshot)
    finally:
        driver.quit()


def check_stop(base):
    """The stop button ends a stream: the answer stops growing and is marked stopped."""
    driver = browser()
    try:
        open_page(driver, base)
        # A long story routes to a bigger tier: the small model streams it fast enough to stop.
        choose_model(driver, "smollm2-135m-instruct")
        set_setting(driver, "max_tokens", 1500)
        set_setting(driver, "temperature", 0.8)
        close_settings(driver)
        send(driver, "Write a very long story, in many chapters, about a dragon who learns to read.")
        wait(driver, lambda d: (answers(d) or [{"chunks": 0}])[0]["chunks"] >= 2, "the stream to start", SLOW)
        driver.find_element(By.ID, "stop").click()
        answer = wait(
            driver,
            lambda d: answers(d)[0]["state"] != "streaming" and answers(d)[0],
            "the stream to end after stop",
            10,
        )
        assert answer["state"] == "stopped", answer
        assert "Stopped." in answer["error"], answer
        assert driver.find_element(By.ID, "send").is_displayed()
        assert not driver.find_element(By.ID, "stop").is_displayed()
        kept = stored(driver, "wick.conversations")[0]["messages"][1]
        assert kept["state"] == "stopped" and "finish" not in kept, kept
        time.sleep(1.5)
        later = stored(driver, "wick.conversations")[0]["messages"][1]
        assert later["content"] == kept["content"], "the answer kept growing after stop"
        # Chromium logs nothing for an aborted fetch; anything else would be an error.
        assert_no_console_errors(driver)
    finally:
        driver.quit()


XSS_TYPED = '<img src=x onerror="window.__xss=1"> [click](javascript:window.__xss=2) <script>window.__xss=3</script>'
XSS_ANSWER = "\n".join(
    [
        'Here is an image: <img src=x onerror="window.__xss=5">',
        "[click me](javascript:window.__xss=6) and [a safe link](https://example.com/a)",
        "**bold <i>x</i>** and `<b>code</b>`",
        "```html",
        "<script>window.__xss=7</script>",
        "```",
        "- <iframe src=javascript:window.__xss=8></iframe>",
    ]
)


def check_xss(base):
    """Markup in user and model text is shown as text, never made into elements or links."""
    driver = browser()
    try:
        open_page(driver, base)
        choose_model(driver, "smollm2-135m-instruct")
        set_setting(driver, "max_tokens", 16)
        close_settings(driver)
        send(driver, XSS_TYPED)
        wait_answer(driver, 1)
        user = driver.find_element(By.CSS_SELECTOR, "article.msg-user .body").text
        assert user == XSS_TYPED, user

        # A model answer full of markup, as the page keeps answers (local storage), then read
        # back through the same rendering as a streamed one.
        conversation = {
            "id": "cxss",
            "title": "<img src=x onerror=window.__xss=9>",
            "messages": [
                {"role": "user", "content": "show me"},
                {
                    "role": "assistant",
                    "content": XSS_ANSWER,
                    "reasoning": '<img src=x onerror="window.__xss=10">',
                    "tool_calls": [{"id": "c1", "name": "<b>f</b>", "arguments": '{"x": "<img src=x>"}'}],
                    "meta": {"model": "<img src=x onerror=window.__xss=11>", "routing_mechanism": "auto_routing"},
                    "state": "done",
                },
            ],
        }
        driver.execute_script(
            "localStorage.setItem('wick.conversations', JSON.stringify([arguments[0]]));"
            "localStorage.setItem('wick.current', JSON.stringify('cxss'));",
            conversation,
        )
        driver.refresh()
        wait(driver, lambda d: len(answers(d)) == 1, "the stored answer to render", 10)
        time.sleep(0.5)  # an image's onerror would have fired by now
        page = driver.find_element(By.ID, "app")
        for tag in ["img", "script", "iframe", "i", "b", "object", "embed"]:
            found = driver.execute_script(
                "return document.querySelectorAll('#transcript ' + arguments[0] + ', #conversations ' + arguments[0]).length",
                tag,
            )
            assert found == 0, f"model or user text became a <{tag}> element"
        links = driver.execute_script(
            "return [...document.querySelectorAll('#transcript a')].map(a => [a.getAttribute('href'), a.rel, a.textContent])"
        )
        assert links == [["https://example.com/a", "noopener noreferrer", "a safe link"]], links
        text = page.text
        for shown in [
            '<img src=x onerror="window.__xss=5">',
            "[click me](javascript:window.__xss=6)",
            "<script>window.__xss=7</script>",
            "<b>code</b>",
            "<i>x</i>",
            "<iframe src=javascript:window.__xss=8></iframe>",
            "<img src=x onerror=window.__xss=11>",
            "<img src=x onerror=window.__xss=9>",
        ]:
            assert shown in text, f"{shown!r} is not shown as text in:\n{text}"
        # The reasoning is there, collapsed; the tool call shows its name and arguments as text.
        reasoning = driver.find_element(By.CSS_SELECTOR, "details.reasoning")
        assert reasoning.get_attribute("open") is None, "the reasoning is not collapsed"
        assert driver.execute_script(
            "return document.querySelector('details.reasoning .body').textContent"
        ) == '<img src=x onerror="window.__xss=10">'
        call = driver.execute_script(
            "const d = document.querySelector('details.tool-call');"
            "return [d.querySelector('summary').textContent, d.querySelector('code').textContent]"
        )
        assert call == ["Tool call: <b>f</b>", '{\n  "x": "<img src=x>"\n}'], call
                # Formatting that is not markup still works.
        assert driver.execute_script("return document.querySelectorAll('#transcript strong').length") == 1
        assert driver.execute_script("return document.querySelectorAll('#transcript pre code').length") >= 2
        assert driver.execute_script("return window.__xss") is None, "a script ran"
        assert_no_console_errors(driver)
    finally:
        driver.quit()


WEATHER_TOOL = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def check_tools(base):
    """A streamed tool call is shown as its name and arguments."""
    driver = browser()
    try:
        open_page(driver, base)
        # Auto routing would lift a request with tools to tier 3: the small model takes it.
        choose_model(driver, "smollm2-135m-instruct")
        set_setting(driver, "max_tokens", 64)
        set_setting(driver, "temperature", 0)
        set_setting(driver, "tools", json.dumps(WEATHER_TOOL))
        Select(driver.find_element(By.ID, "tool_choice")).select_by_value("required")
        close_settings(driver)
        send(driver, "What is the weather in Paris?")
        answer = wait_answer(driver, 1)
        assert answer["state"] == "done", answer
        assert answer["badge"].get("finish") == "finish: tool_calls", answer
        summary, arguments = driver.execute_script(
            "const d = document.querySelector('article.msg-assistant details.tool-call');"
            "return [d.querySelector('summary').textContent, d.querySelector('code').textContent]"
        )
        assert summary == "Tool call: get_weather", summary
        assert isinstance(json.loads(arguments)["city"], str), arguments
        [body] = chat_request_bodies(driver)
        assert body["tools"] == WEATHER_TOOL and body["tool_choice"] == "required", body
        assert_no_console_errors(driver)
    finally:
        driver.quit()


def check_reasoning(base, model):
    """A thinking model's reasoning streams into a collapsed block, apart from the answer."""
    driver = browser()
    try:
        open_page(driver, base)
        choose_model(driver, model)
        set_setting(driver, "max_tokens", 24)
        set_setting(driver, "temperature", 0)
        close_settings(driver)
        send(driver, "Why is the sky blue?")
        answer = wait_answer(driver, 1)
        assert answer["state"] == "done", answer
        # This model's template opens the thinking block and the model never closes it: the
        # whole output is thinking (tests/common/thinking.rs).
        assert answer["text"] == "", answer
        assert answer["reasoning"].startswith("Reasoning") and len(answer["reasoning"]) > 10, answer
        details = driver.find_element(By.CSS_SELECTOR, "article.msg-assistant details.reasoning")
        assert details.get_attribute("open") is None, "the reasoning is not collapsed"
        assert not details.find_element(By.CSS_SELECTOR, ".body").is_displayed()
        details.find_element(By.TAG_NAME, "summary").click()
        assert details.find_element(By.CSS_SELECTOR, ".body").is_displayed()
        assert_no_console_errors(driver)
    finally:
        driver.quit()


def check_errors(base):
    """An error from the API is shown with the answer, with the server's message."""
    driver = browser()
    try:
        open_page(driver, base)
        set_setting(driver, "temperature", 3)
        close_settings(driver)
        send(driver, "Hello?")
        answer = wait_answer(driver, 1)
        assert answer["state"] == "error", answer
        assert answer["error"].startswith("400: ") and "temperature" in answer["error"], answer
        # The browser logs the failed request itself: that one error is expected.
        assert_no_console_errors(driver, allowed=[r"/v2/chat/completions .*status of 400"])
        # Invalid tools JSON is refused before anything is sent.
        set_setting(driver, "temperature", 0)
        set_setting(driver, "tools", "[{not json")
        close_settings(driver)
        send(driver, "Hello again?")
        second = wait_answer(driver, 2)
        assert second["state"] == "error" and "tools are not valid JSON" in second["error"], second
        assert_no_console_errors(driver)
    finally:
        driver.quit()


def check_key(base, key):
    """A key-protected server: the page asks for the key, keeps it, and sends it."""
    driver = browser()
    unauthorized = [r"/v1/models .*status of 401"]
    try:
        driver.get(base + "/")
        overlay = driver.find_element(By.ID, "key-overlay")
        wait(driver, lambda d: overlay.is_displayed(), "the page to ask for a key", 30)
        assert driver.execute_script("return document.querySelectorAll('#model option').length") == 0
        field = driver.find_element(By.ID, "key-input")
        assert field.get_attribute("type") == "password"
        field.send_keys("not-the-key")
        field.send_keys(Keys.ENTER)
        wait(
            driver,
            lambda d: "Incorrect API key" in d.find_element(By.ID, "key-error").text,
            "a wrong key to be refused",
            30,
        )
        assert overlay.is_displayed()
        field.send_keys(key)
        field.send_keys(Keys.ENTER)
        wait(
            driver,
            lambda d: d.execute_script("return document.querySelectorAll('#model option').length") > 0,
            "the models to load with the key",
            30,
        )
        assert not overlay.is_displayed()
        assert driver.execute_script("return localStorage.getItem('wick.apiKey')") == key
        set_setting(driver, "max_tokens", 16)
        close_settings(driver)
        send(driver, "Hi!")
        answer = wait_answer(driver, 1)
        assert answer["state"] == "done", answer
        assert answer["badge"].get("tier"), answer
        assert_no_console_errors(driver, allowed=unauthorized)
        # Kept in this browser: a reload needs no key again.
        driver.refresh()
        open_page(driver, base)
        assert not driver.find_element(By.ID, "key-overlay").is_displayed()
        assert driver.find_element(By.ID, "forget-key").is_displayed()
        assert_no_console_errors(driver)
    finally:
        driver.quit()


def main():
    check, base, *rest = sys.argv[1:]
    {
        "page": check_page,
        "stream": check_stream,
        "tradition": check_tradition,
        "stop": check_stop,
        "xss": check_xss,
        "errors": check_errors,
        "tools": check_tools,
        "reasoning": check_reasoning,
        "key": check_key,
    }[check](base, *rest)
    print(f"web ui check passed: {check}")


if __name__ == "__main__":
    main()
