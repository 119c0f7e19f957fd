//! A headless Chromium driven over `WebDriver`, and the console run as a
//! process.
//!
//! The support finds `chromium` and `chromedriver` (on `PATH` or where
//! Debian installs them); when they are missing it installs Debian's
//! `chromium` and `chromium-driver` when running as root, or fails with the
//! command that installs them. It never skips. `WEBDRIVER_URL` points the
//! tests at a `WebDriver` server already running instead. Each test starts
//! its own driver on a free port, in a process group of its own that is
//! killed when the test ends, also after a panic.

use std::fmt::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, BufReader};

use super::{Fixture, artifacts};

/// The command that installs what the browser tests need.
const INSTALL: &str = "apt-get install -y chromium chromium-driver";

/// Browser sessions started by this process (each gets its own profile).
static SESSIONS: AtomicUsize = AtomicUsize::new(0);

/// Installs run one at a time.
static INSTALLING: Mutex<()> = Mutex::new(());

fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(["/usr/bin", "/usr/lib/chromium", "/snap/bin"].map(PathBuf::from));
    names
        .iter()
        .flat_map(|name| dirs.iter().map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

fn installed() -> Option<(PathBuf, PathBuf)> {
    let browser = find(&["chromium", "chromium-browser", "google-chrome"])?;
    let driver = find(&["chromedriver"])?;
    Some((browser, driver))
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

/// Chromium and its driver, installed first if need be.
fn ensure_installed() -> (PathBuf, PathBuf) {
    let _one_at_a_time = INSTALLING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(found) = installed() {
        return found;
    }
    assert!(
        is_root() && find(&["apt-get"]).is_some(),
        "the browser tests need Chromium and ChromeDriver: install them with `sudo {INSTALL}` \
         (or set WEBDRIVER_URL to a running WebDriver server)"
    );
    eprintln!("installing Chromium and ChromeDriver: {INSTALL}");
    let install = || {
        std::process::Command::new("apt-get")
            .args(["install", "-y", "chromium", "chromium-driver"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|status| status.success())
    };
    if !install() {
        let updated = std::process::Command::new("apt-get")
            .arg("update")
            .status()
            .is_ok_and(|status| status.success());
        assert!(
            updated && install(),
            "`{INSTALL}` failed; run it by hand to see why"
        );
    }
    installed()
        .unwrap_or_else(|| panic!("`{INSTALL}` ran but chromium or chromedriver is still missing"))
}

/// A `WebDriver` server of this test's own; killed with its browsers on drop.
struct Driver {
    child: Child,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The driver leads a process group that holds its browsers too.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // `--` first: procps' kill reads `-PID` before it as `-1`,
            // which is every process.
            let _ = std::process::Command::new("kill")
                .args(["-s", "KILL", "--", &format!("-{pid}")])
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("finding a free port")
        .port()
}

fn start_driver(driver: &Path) -> (Driver, String) {
    let port = free_port();
    let child = std::process::Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", driver.display()));
    let driver = Driver { child };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "chromedriver did not listen on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (driver, format!("http://127.0.0.1:{port}"))
}

/// A headless browser session.
pub struct Browser {
    pub client: Client,
    _driver: Option<Driver>,
    profile: PathBuf,
}

impl Browser {
    /// Starts a driver (unless `WEBDRIVER_URL` names one) and a headless
    /// Chromium session with a fresh profile.
    pub async fn start() -> Self {
        let (binary, driver, url) = if let Ok(url) = std::env::var("WEBDRIVER_URL") {
            let binary = find(&["chromium", "chromium-browser", "google-chrome"]);
            (binary, None, url)
        } else {
            let (binary, path) = tokio::task::spawn_blocking(ensure_installed)
                .await
                .expect("installing the browser");
            let (driver, url) = start_driver(&path);
            (Some(binary), Some(driver), url)
        };
        let profile = std::env::temp_dir().join(format!(
            "es-cli-chromium-{}-{}",
            std::process::id(),
            SESSIONS.fetch_add(1, Ordering::Relaxed)
        ));
        let mut options = json!({
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                "--window-size=1280,900",
                format!("--user-data-dir={}", profile.display()),
            ]
        });
        if let Some(binary) = binary {
            options["binary"] = json!(binary);
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("goog:chromeOptions".to_owned(), options);
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("starting a Chromium session through {url}: {e}"));
        Self {
            client,
            _driver: driver,
            profile,
        }
    }

    /// Saves a screenshot of the page as `target/es-cli/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("taking a screenshot");
        let path = artifacts().join(format!("{name}.png"));
        std::fs::write(&path, png).expect("saving the screenshot");
        path
    }

    /// Ends the session.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// `es console` running as a process on a free loopback port.
pub struct ConsoleProcess {
    pub base: String,
    child: tokio::process::Child,
}

impl ConsoleProcess {
    /// Starts `es console` with `extra` arguments and waits until it
    /// listens.
    pub async fn start(fixture: &Fixture, extra: &[&str]) -> Self {
        let mut args = vec!["console", "--bind", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let mut command = fixture.es(&args);
        command.stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = command.spawn().expect("starting es console");
        let stdout = child.stdout.take().expect("its output");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("es console did not start within 30 s")
            .expect("reading its output")
            .expect("es console exited before listening");
        let base = line
            .split_whitespace()
            .find(|word| word.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .trim_end_matches('/')
            .to_owned();
        Self { base, child }
    }

    /// The console's URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends a raw HTTP/1.1 request (with the console's `Host` unless
    /// `headers` name one) and returns the status code and the response.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, String) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let host = self.base.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(host)
            .await
            .expect("connecting to the console");
        let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
        if !headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("host"))
        {
            let _ = write!(request, "Host: {host}\r\n");
        }
        for (name, value) in headers {
            let _ = write!(request, "{name}: {value}\r\n");
        }
        if !body.is_empty() {
            request.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
        }
        let _ = write!(request, "Content-Length: {}\r\n\r\n{body}", body.len());
        stream.write_all(request.as_bytes()).await.expect("sending");
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .await
            .expect("reading the response");
        let response = String::from_utf8_lossy(&response).into_owned();
        let status = response
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no status in {response:?}"));
        (status, response)
    }

    /// Stops the console as Ctrl-C would; it must exit with status 0.
    pub async fn stop(mut self) {
        super::interrupt(&self.child).await;
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("the console did not stop on SIGINT")
            .expect("waiting for the console");
        assert!(status.success(), "the console exited with {status}");
    }
}
