//! A tiny W3C WebDriver client over reqwest, enough to drive headless Chromium through
//! `chromedriver` in the dashboard tests: open a page, find, click, type, read text,
//! wait for a condition and take screenshots. A heavy browser-automation crate would
//! cost more build time than these few endpoints are worth.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use serde_json::{json, Value};

/// The key W3C WebDriver uses for element references.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Debian's packages; `SETTLE_CHROMIUM` and `SETTLE_CHROMEDRIVER` override them.
pub fn chromium_path() -> String {
    std::env::var("SETTLE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

pub fn chromedriver_path() -> String {
    std::env::var("SETTLE_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into())
}

/// Why the browser tests cannot run here, or `None` when both programs exist.
pub fn missing_browser() -> Option<String> {
    let missing: Vec<String> = [chromium_path(), chromedriver_path()]
        .into_iter()
        .filter(|p| !Path::new(p).is_file())
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "the browser tests need headless Chromium and chromedriver, missing: {}. \
             Install them with: sudo apt-get install -y chromium chromium-driver \
             (or run scripts/services.sh with INSTALL_MISSING=1, as .ci/run does)",
            missing.join(", ")
        )
    })
}

/// An element found on the page.
#[derive(Debug, Clone)]
pub struct Element(String);

/// One headless Chromium session driven through its own chromedriver process.
pub struct Browser {
    http: reqwest::Client,
    session: String,
    driver_url: String,
    driver: Child,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless Chromium session.
    pub async fn launch() -> Result<Browser> {
        if let Some(why) = missing_browser() {
            bail!(why);
        }
        let port = crate::free_port();
        let log = crate::artifacts_dir().join(format!("chromedriver-{port}.log"));
        let driver = Command::new(chromedriver_path())
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so Chromium goes too when a failed test drops it.
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", chromedriver_path()))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        let mut browser = Browser {
            http,
            session: String::new(),
            driver_url: format!("http://127.0.0.1:{port}"),
            driver,
        };
        browser.wait_for_driver().await?;
        let created = browser
            .send(
                reqwest::Method::POST,
                "/session",
                Some(json!({
                    "capabilities": { "alwaysMatch": {
                        "browserName": "chrome",
                        "goog:loggingPrefs": { "browser": "ALL" },
                        "goog:chromeOptions": {
                            "binary": chromium_path(),
                            "args": [
                                "--headless=new",
                                "--no-sandbox",
                                "--disable-gpu",
                                "--disable-dev-shm-usage",
                                "--window-size=1400,1000",
                            ],
                        },
                    }},
                })),
            )
            .await
            .context("opening a Chromium session")?;
        browser.session = created["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow!("no sessionId in {created}"))?
            .to_string();
        Ok(browser)
    }

    async fn wait_for_driver(&mut self) -> Result<()> {
        for _ in 0..200 {
            if let Ok(r) = self
                .http
                .get(format!("{}/status", self.driver_url))
                .send()
                .await
            {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if let Some(status) = self.driver.try_wait()? {
                bail!("chromedriver exited early with {status}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("chromedriver did not answer on {}", self.driver_url)
    }

    /// One WebDriver command; answers the `value` of a success, or the error it named.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.driver_url));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let answer: Value = response
            .json()
            .await
            .with_context(|| format!("{method} {path}: reading the answer"))?;
        let value = answer.get("value").cloned().unwrap_or(Value::Null);
        if !status.is_success() {
            bail!(
                "{method} {path}: {status} {}: {}",
                value["error"].as_str().unwrap_or("?"),
                value["message"].as_str().unwrap_or("")
            );
        }
        Ok(value)
    }

    fn at(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    pub async fn goto(&self, url: &str) -> Result<()> {
        self.send(
            reqwest::Method::POST,
            &self.at("/url"),
            Some(json!({ "url": url })),
        )
        .await
        .map(drop)
    }

    /// The first element matching `css`, or an error when there is none right now.
    pub async fn find(&self, css: &str) -> Result<Element> {
        let found = self
            .send(
                reqwest::Method::POST,
                &self.at("/element"),
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await?;
        found[ELEMENT_KEY]
            .as_str()
            .map(|id| Element(id.to_string()))
            .ok_or_else(|| anyhow!("no element reference for {css} in {found}"))
    }

    pub async fn click(&self, element: &Element) -> Result<()> {
        self.send(
            reqwest::Method::POST,
            &self.at(&format!("/element/{}/click", element.0)),
            Some(json!({})),
        )
        .await
        .map(drop)
    }

    pub async fn send_keys(&self, element: &Element, text: &str) -> Result<()> {
        self.send(
            reqwest::Method::POST,
            &self.at(&format!("/element/{}/value", element.0)),
            Some(json!({ "text": text })),
        )
        .await
        .map(drop)
    }

    /// Empties an input or textarea.
    pub async fn clear(&self, element: &Element) -> Result<()> {
        self.send(
            reqwest::Method::POST,
            &self.at(&format!("/element/{}/clear", element.0)),
            Some(json!({})),
        )
        .await
        .map(drop)
    }

    /// The rendered text of an element.
    pub async fn text(&self, element: &Element) -> Result<String> {
        let value = self
            .send(
                reqwest::Method::GET,
                &self.at(&format!("/element/{}/text", element.0)),
                None,
            )
            .await?;
        Ok(value.as_str().unwrap_or_default().to_string())
    }

    /// The text of the first element matching `css`.
    pub async fn text_of(&self, css: &str) -> Result<String> {
        let element = self.find(css).await?;
        self.text(&element).await
    }

    /// Polls every 100 ms, at most `polls` times, until `css` matches an element whose
    /// text satisfies `accept`; the error says what was last seen.
    pub async fn wait_until(
        &self,
        css: &str,
        polls: u32,
        accept: impl Fn(&str) -> bool,
    ) -> Result<Element> {
        Ok(self.wait_until_text(css, polls, accept).await?.0)
    }

    /// [`Browser::wait_until`], with the text that was accepted. Read it from here:
    /// the page may render the element anew at any time after (a list refreshing
    /// itself), and a second read of the element would find it stale.
    pub async fn wait_until_text(
        &self,
        css: &str,
        polls: u32,
        accept: impl Fn(&str) -> bool,
    ) -> Result<(Element, String)> {
        let mut last = String::from("no such element");
        for _ in 0..polls {
            if let Ok(element) = self.find(css).await {
                match self.text(&element).await {
                    Ok(text) if accept(&text) => return Ok((element, text)),
                    Ok(text) => last = format!("text {text:?}"),
                    Err(e) => last = e.to_string(),
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("{css} never matched after {polls} polls; last seen: {last}")
    }

    /// Waits for any element matching `css`.
    pub async fn wait_for(&self, css: &str, polls: u32) -> Result<Element> {
        self.wait_until(css, polls, |_| true).await
    }

    /// Saves a PNG of the viewport, creating the directory.
    pub async fn screenshot(&self, path: &Path) -> Result<()> {
        let encoded = self
            .send(reqwest::Method::GET, &self.at("/screenshot"), None)
            .await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .context("decoding the screenshot")?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub async fn execute(&self, script: &str, args: Value) -> Result<Value> {
        self.send(
            reqwest::Method::POST,
            &self.at("/execute/sync"),
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    pub async fn set_window_size(&self, width: u64, height: u64) -> Result<()> {
        self.send(
            reqwest::Method::POST,
            &self.at("/window/rect"),
            Some(json!({ "width": width, "height": height })),
        )
        .await
        .map(drop)
    }

    /// Saves a PNG of the whole page: the window grows to the page's height for the
    /// shot (at most 8000 px) and returns to 1400x1000 after.
    pub async fn full_page_screenshot(&self, path: &Path) -> Result<()> {
        let height = self
            .execute("return document.documentElement.scrollHeight;", json!([]))
            .await?
            .as_u64()
            .unwrap_or(1000);
        // The window's frame is taller than the page's viewport in headless mode too.
        self.set_window_size(1400, (height + 140).clamp(1000, 8000))
            .await?;
        let shot = self.screenshot(path).await;
        self.set_window_size(1400, 1000).await?;
        shot
    }

    /// The page's console messages since the last call (chromedriver's log endpoint),
    /// as `LEVEL message` lines: script errors and Content-Security-Policy violations land here.
    pub async fn console(&self) -> Result<Vec<String>> {
        let entries = self
            .send(
                reqwest::Method::POST,
                &self.at("/se/log"),
                Some(json!({ "type": "browser" })),
            )
            .await?;
        Ok(entries
            .as_array()
            .map(|all| {
                all.iter()
                    .map(|e| {
                        format!(
                            "{} {}",
                            e["level"].as_str().unwrap_or("?"),
                            e["message"].as_str().unwrap_or("")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Closes the browser and stops chromedriver.
    pub async fn quit(mut self) {
        let path = self.at("");
        let _ = self.send(reqwest::Method::DELETE, &path, None).await;
        self.stop_driver();
    }

    /// Ends the process group this browser started (chromedriver and its Chromium).
    fn stop_driver(&mut self) {
        if self.driver.try_wait().ok().flatten().is_some() {
            return;
        }
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.stop_driver();
    }
}
