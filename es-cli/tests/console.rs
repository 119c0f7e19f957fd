//! The web console in a real headless Chromium: the dashboard, finding a
//! stream and following an event's causation, a rebuild started from its
//! button and seen to finish, a parked event retried; the token, the
//! read-only switch, the same-origin check and bad input. Each test saves
//! screenshots under `target/es-cli/`.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use es_core::{EventStore as _, ExpectedVersion, Metadata, NewEvent, StreamId};
use fantoccini::Locator;
use serde_json::json;
use support::browser::{Browser, ConsoleProcess};
use support::{Fixture, eventually};

/// The text of the element `css`, waiting for it to appear (live updates
/// replace elements, so a found element may go stale: find it again).
async fn text_of(browser: &Browser, css: &str) -> String {
    let mut last_error = String::new();
    for _ in 0..400 {
        match browser.client.find(Locator::Css(css)).await {
            Ok(element) => match element.text().await {
                Ok(text) => return text,
                Err(e) => last_error = e.to_string(),
            },
            Err(e) => last_error = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no element {css}: {last_error}");
}

/// Waits until the element `css` has text for which `check` holds.
async fn wait_for_text(browser: &Browser, css: &str, what: &str, check: impl Fn(&str) -> bool) {
    let mut last = String::new();
    for _ in 0..400 {
        if let Ok(element) = browser.client.find(Locator::Css(css)).await
            && let Ok(text) = element.text().await
        {
            if check(&text) {
                return;
            }
            last = text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}; {css} shows {last:?}");
}

/// A store with 40 counted events (the odd ones parked by the running
/// `picky` projection) and one event in `Audit-7` caused by the first.
async fn parked_store() -> (
    Fixture,
    es_postgres::ProjectionHandle<support::Picky>,
    Vec<es_core::RecordedEvent>,
    uuid::Uuid,
) {
    let fixture = Fixture::migrated().await;
    fixture.broken.store(true, Ordering::SeqCst);
    let handle = fixture.run_projection();
    let counted = fixture.count("Count-1", 1..=40).await;
    let cause = &counted[0];
    let effect = NewEvent::new("Counted", json!({ "n": 100 })).with_metadata(
        Metadata::default()
            .with_causation_id(cause.event_id)
            .with_correlation_id(cause.event_id.to_string()),
    );
    let effect_id = effect.event_id;
    fixture
        .store
        .append(
            &StreamId::new("Audit-7").expect("an id"),
            ExpectedVersion::NoStream,
            vec![effect],
        )
        .await
        .expect("appending");
    eventually("the projection parks the odd events", || async {
        handle
            .status()
            .await
            .is_ok_and(|s| s.lag == 0 && s.parked == 20)
    })
    .await;
    (fixture, handle, counted, effect_id)
}

/// The dashboard: the feed's head, the projection with its lease, and a
/// new append shown live.
async fn dashboard(browser: &Browser, console: &ConsoleProcess, fixture: &Fixture) {
    browser
        .client
        .goto(&console.url("/"))
        .await
        .expect("opening the dashboard");
    let head = fixture.store.head().await.expect("head").expect("events");
    assert_eq!(text_of(browser, "#head").await, head.to_string());
    assert_eq!(text_of(browser, "#events").await, "41");
    let row = text_of(browser, "#projections tr").await;
    assert!(
        row.contains("picky") && row.contains("running") && row.contains("pid "),
        "{row}"
    );
    let more = fixture.count("Count-2", [200]).await;
    wait_for_text(browser, "#head", "the new head", |t| {
        t == more[0].position.to_string()
    })
    .await;
    let dashboard = browser.screenshot("dashboard").await;
    assert!(dashboard.is_file());
}

/// Clicks the element `css` (found again if a live update replaced it).
async fn click(browser: &Browser, css: &str) {
    let mut last_error = String::new();
    for _ in 0..100 {
        match browser.client.find(Locator::Css(css)).await {
            Ok(element) => match element.click().await {
                Ok(()) => return,
                Err(e) => last_error = e.to_string(),
            },
            Err(e) => last_error = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("clicking {css}: {last_error}");
}

/// Find a stream, open its event, follow the causation to the cause.
async fn follow_causation(
    browser: &Browser,
    cause: &es_core::RecordedEvent,
    effect_id: uuid::Uuid,
) {
    let search = browser
        .client
        .find(Locator::Id("search"))
        .await
        .expect("the search box");
    search.send_keys("Audit-7").await.expect("typing");
    click(browser, "form.search button").await;
    assert_eq!(text_of(browser, "#stream-id").await, "Audit-7");
    click(browser, "article.event details summary").await;
    let metadata = text_of(browser, "article.event pre.metadata").await;
    assert!(metadata.contains(&cause.event_id.to_string()), "{metadata}");
    click(browser, "article.event h2 a").await;
    assert_eq!(text_of(browser, "#event-id").await, effect_id.to_string());
    assert!(text_of(browser, "#event-data").await.contains("\"n\": 100"));
    browser.screenshot("event").await;
    click(browser, "#causation").await;
    assert_eq!(
        text_of(browser, "#event-id").await,
        cause.event_id.to_string()
    );
    assert_eq!(text_of(browser, "#event-stream").await, "Count-1");
}

/// Retry a parked event once its cause is fixed; its row goes.
async fn retry_parked(browser: &Browser, console: &ConsoleProcess, fixture: &Fixture) {
    let client = &browser.client;
    client
        .goto(&console.url("/projection?name=picky"))
        .await
        .expect("opening the projection");
    assert_eq!(text_of(browser, "#state").await, "running");
    let parked = fixture.store.parked_events("picky").await.expect("parked");
    assert_eq!(parked.len(), 20);
    fixture.broken.store(false, Ordering::SeqCst);
    click(browser, &format!("#parked-{} button.retry", parked[0].id)).await;
    assert!(
        text_of(browser, "#notice")
            .await
            .starts_with("Retry requested")
    );
    eventually("the retried event applies", || async {
        fixture.seen().await.contains(&1)
    })
    .await;
    let gone = format!("#parked-{}", parked[0].id);
    for _ in 0..400 {
        if client.find(Locator::Css(&gone)).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        client.find(Locator::Css(&gone)).await.is_err(),
        "the retried row stays"
    );
}

/// Rebuild from the button (it asks first) and see it finish.
async fn rebuild(browser: &Browser, fixture: &Fixture) {
    click(browser, "#rebuild").await;
    browser
        .client
        .accept_alert()
        .await
        .expect("confirming the rebuild");
    assert!(
        text_of(browser, "#notice")
            .await
            .starts_with("Rebuild requested")
    );
    eventually("the rebuild runs", || async {
        fixture.resets.load(Ordering::SeqCst) == 1
    })
    .await;
    wait_for_text(browser, "#progress-text", "the rebuild to finish", |t| {
        t == "caught up: 42 events"
    })
    .await;
    browser.screenshot("projection").await;
    let mut expected: Vec<i64> = (1..=40).collect();
    expected.extend([100, 200]);
    assert_eq!(
        fixture.seen().await,
        expected,
        "a rebuild with the cause fixed applies all"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_finds_a_stream_follows_an_event_rebuilds_and_retries() {
    let (fixture, handle, counted, effect_id) = parked_store().await;
    let console = ConsoleProcess::start(&fixture, &[]).await;
    let browser = Browser::start().await;
    dashboard(&browser, &console, &fixture).await;
    follow_causation(&browser, &counted[0], effect_id).await;
    retry_parked(&browser, &console, &fixture).await;
    rebuild(&browser, &fixture).await;
    // Ctrl-C ends the console even with a live page open.
    console.stop().await;
    browser.close().await;
    handle.stop().await.expect("stopping the runner");
}

/// A store with one parked event of the running `picky` projection.
async fn one_parked() -> (Fixture, es_postgres::ProjectionHandle<support::Picky>) {
    let fixture = Fixture::migrated().await;
    fixture.broken.store(true, Ordering::SeqCst);
    let handle = fixture.run_projection();
    fixture.count("Count-1", [1, 2]).await;
    eventually("one event is parked", || async {
        handle
            .status()
            .await
            .is_ok_and(|s| s.lag == 0 && s.parked == 1)
    })
    .await;
    (fixture, handle)
}

const AUTH: (&str, &str) = ("Authorization", "Bearer s3cret-token");

/// Without the token, nothing; with it once in the query, a cookie.
async fn token_in_browser(browser: &Browser, console: &ConsoleProcess) {
    let client = &browser.client;
    client.goto(&console.url("/")).await.expect("opening");
    assert!(text_of(browser, "#error").await.contains("needs its token"));
    browser.screenshot("token-refused").await;
    client
        .goto(&console.url("/?token=wrong"))
        .await
        .expect("opening");
    assert!(text_of(browser, "#error").await.contains("needs its token"));
    client
        .goto(&console.url("/?token=s3cret-token"))
        .await
        .expect("opening with the token");
    assert_eq!(text_of(browser, "#events").await, "2");
    client
        .goto(&console.url("/streams"))
        .await
        .expect("opening");
    assert!(text_of(browser, "#stream-list").await.contains("Count-1"));
}

/// Requests without the token are refused; actions only from the
/// console's own pages.
async fn token_and_origin(console: &ConsoleProcess, fixture: &Fixture) {
    let (status, _) = console.request("GET", "/", &[], "").await;
    assert_eq!(status, 401);
    let (status, _) = console.request("GET", "/", &[AUTH], "").await;
    assert_eq!(status, 200);
    let (status, _) = console
        .request(
            "POST",
            "/projection/rebuild",
            &[AUTH, ("Origin", "http://evil.example")],
            "name=picky",
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = console
        .request("POST", "/projection/rebuild", &[AUTH], "name=picky")
        .await;
    assert_eq!(status, 403, "no Origin and no Referer");
    let origin = console.base.clone();
    let (status, _) = console
        .request(
            "POST",
            "/projection/rebuild",
            &[AUTH, ("Origin", &origin)],
            "name=nowhere",
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = console
        .request(
            "POST",
            "/projection/retry",
            &[AUTH, ("Origin", &origin)],
            "name=%00&id=1",
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        fixture.resets.load(Ordering::SeqCst),
        0,
        "nothing was rebuilt"
    );
}

/// Bad input is a 4xx page, never a 500, and never echoes markup.
async fn bad_input(console: &ConsoleProcess) {
    let long = format!("/stream?id={}", "x".repeat(300));
    for (path, expected) in [
        ("/stream?id=%00bad", 400),
        ("/stream?id=Count-1&limit=999999999", 400),
        ("/stream?id=Count-1&limit=-1", 400),
        ("/stream?id=Count-1&from=abc", 400),
        (long.as_str(), 400),
        ("/stream?id=Nope-1", 404),
        ("/streams?limit=0", 400),
        ("/streams?after=%0A", 400),
        ("/events/not-a-uuid", 400),
        ("/events/00000000-0000-0000-0000-000000000000", 404),
        ("/projection?name=%3Cscript%3E", 404),
        ("/projection", 400),
        ("/projection?name=%00", 400),
        ("/streams?category=%00", 400),
        ("/streams?category=%1B%5B2J", 400),
        ("/live/projection?name=%07", 400),
        ("/live/projection?name=nope", 404),
        ("/nowhere", 404),
    ] {
        let (status, body) = console.request("GET", path, &[AUTH], "").await;
        assert_eq!(status, expected, "GET {path}: {body}");
        assert!(
            !body.contains("<script>"),
            "GET {path} echoes markup: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_required_when_set_and_bad_input_is_refused() {
    let (fixture, handle) = one_parked().await;
    let console = ConsoleProcess::start(&fixture, &["--token", "s3cret-token"]).await;
    let browser = Browser::start().await;
    token_in_browser(&browser, &console).await;
    token_and_origin(&console, &fixture).await;
    bad_input(&console).await;
    browser.close().await;
    console.stop().await;
    handle.stop().await.expect("stopping the runner");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_shows_no_action_and_refuses_each() {
    let (fixture, handle) = one_parked().await;
    let console = ConsoleProcess::start(&fixture, &["--read-only"]).await;
    let browser = Browser::start().await;
    browser
        .client
        .goto(&console.url("/projection?name=picky"))
        .await
        .expect("opening");
    assert_eq!(text_of(&browser, "#state").await, "running");
    assert!(browser.client.find(Locator::Id("rebuild")).await.is_err());
    assert!(
        browser
            .client
            .find(Locator::Css("button.retry"))
            .await
            .is_err()
    );
    browser.screenshot("read-only").await;
    // Without a token, only requests for this machine by name: a page of
    // another site that resolves its name to 127.0.0.1 is refused.
    let (status, _) = console
        .request("GET", "/", &[("Host", "evil.example:7070")], "")
        .await;
    assert_eq!(status, 421, "a foreign Host");
    let origin = console.base.clone();
    for action in [
        "/projection/rebuild",
        "/projection/retry",
        "/projection/discard",
    ] {
        let (status, _) = console
            .request("POST", action, &[("Origin", &origin)], "name=picky&id=1")
            .await;
        assert_eq!(status, 403, "POST {action}");
    }
    assert_eq!(
        fixture
            .store
            .parked_events("picky")
            .await
            .expect("parked")
            .len(),
        1
    );
    browser.close().await;
    console.stop().await;
    handle.stop().await.expect("stopping the runner");
}
