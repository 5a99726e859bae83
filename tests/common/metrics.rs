//! Scraping pullgate's `/metrics` endpoint as Prometheus would, over plain HTTP/1.1.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An HTTP response, as read off the wire.
pub struct Scraped {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

impl Scraped {
    /// The value of one series, written exactly as exposed (`name{label="v",...}`); 0 when the
    /// series does not exist yet, as Prometheus treats a counter that was never incremented.
    pub fn value(&self, series: &str) -> f64 {
        let prefix = format!("{series} ");
        self.body
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .map_or(0.0, |value| value.trim().parse().unwrap_or_else(|_| panic!("{series}: not a number: {value}")))
    }
}

pub async fn get(address: SocketAddr, path: &str) -> Scraped {
    let mut stream = TcpStream::connect(address).await.expect("connect to the metrics endpoint");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.expect("read the metrics response");
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or_else(|| panic!("not an HTTP response: {raw}"));
    let status = head.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("status code");
    let content_type = head
        .lines()
        .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-type: ").map(str::to_owned))
        .unwrap_or_default();
    Scraped { status, content_type, body: body.to_owned() }
}

pub async fn scrape(address: SocketAddr) -> Scraped {
    let scraped = get(address, "/metrics").await;
    assert_eq!(scraped.status, 200, "{}", scraped.body);
    scraped
}
