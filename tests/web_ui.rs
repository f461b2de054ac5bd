//! The chat page at `/` (ui/, served by src/api/ui.rs) in a real browser: headless Chromium
//! driven by Selenium (tests/python/web_ui.py, in a pinned virtual environment) against the
//! real server on loopback. Chromium and its driver are Debian's `chromium` and
//! `chromium-driver`, installed on first run when missing (as root, as CI runs); when they
//! cannot be installed the tests fail saying so: nothing is skipped.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// The Selenium release the script is checked against (4.53.0, the newest, asked for a
/// certifi release that the package index reachable here did not have yet).
const SELENIUM: &str = "4.50.0";
/// The key of the key-protected server.
const KEY: &str = "ui-test-key-4f1c";

struct Browser {
    chromium: PathBuf,
    driver: PathBuf,
}

/// An executable on the PATH.
fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

fn find_browser() -> Option<Browser> {
    Some(Browser {
        chromium: on_path(&["chromium", "chromium-browser"])?,
        driver: on_path(&["chromedriver"])?,
    })
}

/// Chromium and chromedriver, installed from Debian's packages when missing.
fn browser() -> &'static Browser {
    static BROWSER: OnceLock<Browser> = OnceLock::new();
    BROWSER.get_or_init(|| {
        if let Some(found) = find_browser() {
            return found;
        }
        let install = "apt-get update -q && \
                       DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver";
        let status = Command::new("sh").args(["-c", install]).status();
        find_browser().unwrap_or_else(|| {
            panic!(
                "the web UI tests need Chromium and chromedriver (Debian: `apt-get install \
                 chromium chromium-driver`), and installing them failed ({status:?}); install \
                 them, or put `chromium` and `chromedriver` on the PATH"
            )
        })
    })
}

fn venv() -> PathBuf {
    common::python::pinned_venv("selenium", "selenium", SELENIUM)
}

/// A server of its own that asks for [`KEY`].
fn keyed_server() -> String {
    static SERVER: OnceLock<std::net::SocketAddr> = OnceLock::new();
    let addr = SERVER.get_or_init(|| {
        let mut args = wick::config::ServeArgs::local_ephemeral();
        args.ctx_size = Some(1024);
        args.parallel = 2;
        args.service.api_keys = vec![KEY.into()];
        common::start_server(args)
    });
    format!("http://{addr}")
}

/// Run one check of tests/python/web_ui.py; it must exit 0 and say it passed.
fn run_check(check: &str, args: &[String]) {
    // One browser at a time: the checks time streams and the stop button, which a machine
    // busy with several Chromiums and generations at once would make slow and uneven.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let browser = browser();
    let python = venv();
    let base = common::base_url();
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/web_ui.py");
    common::python::run_check(
        Command::new(python)
            .arg(script)
            .arg(check)
            .args(if args.is_empty() {
                vec![base]
            } else {
                args.to_vec()
            })
            .env("WICK_CHROMIUM", &browser.chromium)
            .env("WICK_CHROMEDRIVER", &browser.driver),
        &format!("web ui check passed: {check}"),
    );
}

#[test]
fn the_page_loads_offline_without_console_errors_and_fits_a_phone() {
    run_check("page", &[]);
}

#[test]
fn a_typed_message_streams_an_answer_with_its_tier_badge() {
    run_check("stream", &[]);
}

/// Also takes the README's screenshot (docs/web-ui.png is a copy of it).
#[test]
fn the_tradition_reaches_the_request_and_the_badge() {
    let screenshot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("web-ui.png");
    let _ = std::fs::remove_file(&screenshot);
    run_check(
        "tradition",
        &[common::base_url(), screenshot.display().to_string()],
    );
    let png = std::fs::read(&screenshot).expect("the screenshot was written");
    assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
    println!("screenshot: {}", screenshot.display());
}

#[test]
fn the_stop_button_ends_a_stream() {
    run_check("stop", &[]);
}

#[test]
fn markup_in_model_and_user_text_stays_text() {
    run_check("xss", &[]);
}

#[test]
fn a_streamed_tool_call_is_shown() {
    run_check("tools", &[]);
}

#[test]
fn a_thinking_models_reasoning_is_shown_collapsed() {
    let base = format!("http://{}", common::thinking::server());
    run_check("reasoning", &[base, common::thinking::OPENS.into()]);
}

#[test]
fn api_errors_are_shown() {
    run_check("errors", &[]);
}

#[test]
fn a_key_protected_server_asks_for_the_key() {
    run_check("key", &[keyed_server(), KEY.into()]);
}

async fn get(url: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let response = reqwest::get(url).await.expect("request sent");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.expect("body read"))
}

#[tokio::test]
async fn the_page_is_served_with_a_strict_content_security_policy() {
    let base = common::base_url();
    for (path, kind) in [
        ("/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
        ("/ui/icon.svg", "image/svg+xml"),
    ] {
        let (status, headers, _) = get(&format!("{base}{path}")).await;
        assert_eq!(status, 200, "{path}");
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        };
        assert!(
            header("content-type").starts_with(kind),
            "{path}: {headers:?}"
        );
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        let csp = header("content-security-policy");
        for directive in [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(
            !csp.contains("unsafe") && !csp.contains("http"),
            "{path}: {csp}"
        );
    }
    // Nothing inline that the policy would refuse, and nothing from elsewhere.
    let (_, _, html) = get(&format!("{base}/")).await;
    assert_eq!(html.matches("<script").count(), 1, "{html}");
    assert!(html.contains(r#"<script src="/ui/app.js""#), "{html}");
    assert!(
        !html.contains("style=") && !html.contains("<style"),
        "{html}"
    );
    assert!(!has_event_attribute(&html), "{html}");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );
    // The script builds every element from text; it never parses HTML.
    let (_, _, js) = get(&format!("{base}/ui/app.js")).await;
    for parser in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        "setAttribute('style'",
    ] {
        assert!(!js.contains(parser), "ui/app.js uses {parser}");
    }
}

/// Whether HTML has an inline event handler attribute (` onclick=`, ` onerror=`, ...).
fn has_event_attribute(html: &str) -> bool {
    html.match_indices(" on").any(|(at, _)| {
        let rest = &html[at + 3..];
        let name = rest.bytes().take_while(u8::is_ascii_lowercase).count();
        name > 0 && rest[name..].starts_with('=')
    })
}

#[tokio::test]
async fn no_ui_turns_the_page_off() {
    let mut args = wick::config::ServeArgs::local_ephemeral();
    args.ctx_size = Some(512);
    args.parallel = 1;
    args.no_ui = true;
    let base = format!("http://{}", common::start_server(args));
    for path in ["/", "/ui/app.js"] {
        let (status, _, body) = get(&format!("{base}{path}")).await;
        assert_eq!(status, 404, "{path}: {body}");
        let body: serde_json::Value = serde_json::from_str(&body).expect("a JSON error");
        assert!(body["error"]["message"].is_string(), "{body}");
    }
    let (status, _, _) = get(&format!("{base}/health")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_page_needs_no_key_but_the_api_does() {
    let base = keyed_server();
    let (status, _, html) = get(&format!("{base}/")).await;
    assert_eq!(status, 200);
    assert!(html.contains("key-overlay"), "{html}");
    let (status, _, _) = get(&format!("{base}/v1/models")).await;
    assert_eq!(status, 401);
}
