//! Traces over OTLP: with an endpoint configured, the spans of a command
//! (`es.execute`, `es.append`, ...) reach the collector as OTLP/HTTP
//! protobuf posts to `/v1/traces`. The collector here is a plain HTTP
//! listener that keeps what it is sent. This test binary installs the
//! process's tracing subscriber, so it holds this one test.

mod common;

use std::sync::{Arc, Mutex, PoisonError};

use orders::domain::{AddItem, PlaceOrder};
use orders::service::{Shop, order_stream};
use orders::telemetry;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};

/// What the collector received: each request's path, content type and body.
type Received = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

/// Answers every HTTP request on `listener` with 200, keeping it.
async fn collect(listener: tokio::net::TcpListener, received: Received) {
    while let Ok((socket, _)) = listener.accept().await {
        let received = Arc::clone(&received);
        tokio::spawn(async move {
            let mut reader = BufReader::new(socket);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
                let (mut length, mut content_type) = (0, String::new());
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let header = header.trim_end();
                    if header.is_empty() {
                        break;
                    }
                    let (name, value) = header.split_once(':').unwrap_or((header, ""));
                    match name.to_ascii_lowercase().as_str() {
                        "content-length" => length = value.trim().parse().unwrap_or(0),
                        "content-type" => value.trim().clone_into(&mut content_type),
                        _ => {}
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).await.is_err() {
                    return;
                }
                received
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((path, content_type, body));
                let reply = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                if reader.get_mut().write_all(reply).await.is_err() {
                    return;
                }
            }
        });
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spans_of_a_command_reach_the_collector() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding the collector");
    let endpoint = format!("http://{}", listener.local_addr().expect("its address"));
    let received = Received::default();
    tokio::spawn(collect(listener, Arc::clone(&received)));
    let traces = telemetry::export_traces(&endpoint).expect("exporting");

    let store = common::fresh_store().await;
    let shop = Shop::open(store).await.expect("opening the shop");
    let stream = order_stream("77").expect("an order id");
    let context = es_core::CommandContext::new();
    shop.execute(
        &stream,
        &PlaceOrder {
            customer_id: "ada".into(),
        },
        &context,
    )
    .await
    .expect("placing");
    let item = AddItem {
        sku: "TEA-01".into(),
        quantity: 1,
        unit_price_cents: 450,
    };
    shop.execute(&stream, &item, &context)
        .await
        .expect("adding");

    // Shutting down sends the batch that is left.
    tokio::task::spawn_blocking(move || traces.shutdown())
        .await
        .expect("the shutdown task")
        .expect("the last spans are sent");
    let received = received.lock().unwrap_or_else(PoisonError::into_inner);
    assert!(!received.is_empty(), "the collector received nothing");
    let body: Vec<u8> = received
        .iter()
        .flat_map(|(_, _, body)| body.clone())
        .collect();
    for (path, content_type, _) in received.iter() {
        assert_eq!(path, "/v1/traces");
        assert_eq!(content_type, "application/x-protobuf");
    }
    for name in [
        &b"es.execute"[..],
        b"es.append",
        b"es.aggregate",
        b"Order-77",
        b"orders",
    ] {
        assert!(
            contains(&body, name),
            "no {:?} in what was exported",
            String::from_utf8_lossy(name)
        );
    }
}
